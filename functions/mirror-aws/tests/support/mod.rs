//! A faithful in-memory EC2 for the hardening tests (concurrency, faults, bad input).
//!
//! It enforces the rules of the real API that matter for races, where moto does not:
//! - `ClientToken`: the same token with the same parameters returns the session the first
//!   request created (no second session); the same token with different parameters fails with
//!   `IdempotentParameterMismatch`. A token is remembered even after its session is deleted
//!   (AWS keeps tokens for a while; the planner's token changes every hour for that reason).
//! - the source ENI must exist (`InvalidNetworkInterfaceID.NotFound`), at most 3 sessions per
//!   ENI (`TrafficMirrorSessionsPerInterfaceLimitExceeded`), session numbers are unique per
//!   ENI and within 1..=32766 (`InvalidParameterValue`).
//!
//! [`Ec2World::client`] hands out clients that record every call with the caller's name and
//! can inject yields and short sleeps before and after each call (a seeded, reproducible
//! schedule), so that two handlers sharing one world interleave at every observe/apply
//! boundary. `honour_tokens = false` turns the world into what moto does (tokens ignored) for
//! the negative control.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mirror::filters::{EniFilters, Filter, InstanceFilters};
use mirror::model::{Eni, Instance, MirrorTarget, OWNER_TAG_KEY, Session, Tags};
use mirror::settings::MirrorSettings;
use mirror_aws::ec2::{Ec2Api, NewSession, PacketLengthChange, SessionUpdate};
use mirror_aws::error::AwsError;
use serde_json::Value;

pub const TARGET: &str = "tmt-target";
pub const FILTER: &str = "tmf-filter";
pub const OWNER: &str = "test-owner";

pub fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn api_error(op: &'static str, code: &str) -> AwsError {
    AwsError::classify(op, code, "answered by the in-memory EC2")
}

/// One API call as the world saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Describe {
        who: &'static str,
        op: &'static str,
    },
    Create {
        who: &'static str,
        eni_id: String,
        number: u32,
        token: String,
        /// The session id answered, or the error code.
        result: Result<String, String>,
    },
    Delete {
        who: &'static str,
        session_id: String,
    },
    Modify {
        who: &'static str,
        session_id: String,
    },
}

impl Call {
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Describe { .. })
    }
}

/// A hook run (under the world's lock) just before a write is applied: lets a test delete an
/// ENI between observe and apply, or answer a write with an error.
pub type WriteHook = Box<dyn FnMut(&mut State, &Call) -> Option<AwsError> + Send>;

pub struct State {
    pub enis: Vec<Eni>,
    pub instances: Vec<Instance>,
    pub sessions: Vec<Session>,
    pub targets: Vec<MirrorTarget>,
    /// token → (the parameters it was first used with, the session id it created).
    pub tokens: HashMap<String, (NewSession, String)>,
    pub next_id: u64,
    pub honour_tokens: bool,
    /// Reject a session number already used on the ENI (moto does not).
    pub unique_numbers: bool,
    pub calls: Vec<Call>,
    pub write_hook: Option<WriteHook>,
    /// When set, every describe answers this error.
    pub describe_failure: Option<AwsError>,
}

#[derive(Clone)]
pub struct Ec2World {
    pub state: Arc<Mutex<State>>,
}

impl Default for Ec2World {
    fn default() -> Self {
        Ec2World::new(true)
    }
}

impl Ec2World {
    pub fn new(honour_tokens: bool) -> Self {
        Ec2World {
            state: Arc::new(Mutex::new(State {
                enis: Vec::new(),
                instances: Vec::new(),
                sessions: Vec::new(),
                targets: Vec::new(),
                tokens: HashMap::new(),
                next_id: 0,
                honour_tokens,
                unique_numbers: true,
                calls: Vec::new(),
                write_hook: None,
                describe_failure: None,
            })),
        }
    }

    /// A client that records calls as `who` and does not perturb the schedule.
    pub fn client(&self, who: &'static str) -> FakeEc2 {
        FakeEc2 {
            world: self.clone(),
            who,
            chaos: None,
        }
    }

    /// A client that yields / sleeps a seeded, pseudo-random amount around every call.
    pub fn chaotic_client(&self, who: &'static str, seed: u64, max_sleep_us: u64) -> FakeEc2 {
        FakeEc2 {
            world: self.clone(),
            who,
            chaos: Some(Arc::new(Chaos {
                state: AtomicU64::new(seed ^ 0x9e37_79b9_7f4a_7c15),
                max_sleep_us,
            })),
        }
    }

    /// What moto does: tokens ignored, session numbers not checked.
    pub fn moto_like() -> Self {
        let w = Ec2World::new(false);
        w.state.lock().unwrap().unique_numbers = false;
        w
    }

    pub fn add_eni(&self, id: &str, instance: Option<&str>, t: &[(&str, &str)]) {
        self.state.lock().unwrap().enis.push(Eni {
            id: id.to_owned(),
            subnet_id: "subnet-1".into(),
            vpc_id: "vpc-1".into(),
            interface_type: "interface".into(),
            status: Some("in-use".into()),
            attachment_instance_id: instance.map(str::to_owned),
            tags: tags(t),
            ..Eni::default()
        });
    }

    pub fn add_instance(&self, id: &str, t: &[(&str, &str)]) {
        self.state.lock().unwrap().instances.push(Instance {
            id: id.to_owned(),
            instance_type: "m5.large".into(),
            state: Some("running".into()),
            tags: tags(t),
            ..Instance::default()
        });
    }

    pub fn add_session(&self, eni: &str, number: u32, owner: Option<&str>) -> String {
        let mut w = self.state.lock().unwrap();
        w.next_id += 1;
        let id = format!("tms-seed{}", w.next_id);
        w.sessions.push(Session {
            id: id.clone(),
            eni_id: eni.to_owned(),
            target_id: TARGET.into(),
            filter_id: FILTER.into(),
            number,
            vni: Some(99),
            packet_length: None,
            tags: owner
                .map(|o| tags(&[(OWNER_TAG_KEY, o)]))
                .unwrap_or_default(),
        });
        id
    }

    pub fn sessions_on(&self, eni: &str) -> Vec<Session> {
        self.state
            .lock()
            .unwrap()
            .sessions
            .iter()
            .filter(|s| s.eni_id == eni)
            .cloned()
            .collect()
    }

    pub fn owned_on(&self, eni: &str) -> Vec<Session> {
        self.sessions_on(eni)
            .into_iter()
            .filter(|s| s.is_owned_by(OWNER))
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn writes(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::is_write).collect()
    }

    pub fn set_write_hook(&self, hook: WriteHook) {
        self.state.lock().unwrap().write_hook = Some(hook);
    }
}

struct Chaos {
    state: AtomicU64,
    max_sleep_us: u64,
}

impl Chaos {
    /// splitmix64 step (lock-free; the sequence is reproducible per seed on one thread).
    fn next(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    async fn perturb(&self) {
        let r = self.next();
        for _ in 0..(r % 4) {
            tokio::task::yield_now().await;
        }
        if self.max_sleep_us > 0 && (r >> 8).is_multiple_of(3) {
            let us = (r >> 16) % self.max_sleep_us;
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }
}

#[derive(Clone)]
pub struct FakeEc2 {
    pub world: Ec2World,
    pub who: &'static str,
    chaos: Option<Arc<Chaos>>,
}

impl FakeEc2 {
    async fn perturb(&self) {
        if let Some(c) = &self.chaos {
            c.perturb().await;
        }
    }

    fn describe(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, State>, AwsError> {
        let mut w = self.world.state.lock().unwrap();
        w.calls.push(Call::Describe { who: self.who, op });
        match &w.describe_failure {
            Some(e) => Err(e.clone()),
            None => Ok(w),
        }
    }

    /// Run the write hook (if any) for `call`; its error answers the call.
    fn hook(w: &mut State, call: &Call) -> Option<AwsError> {
        let mut hook = w.write_hook.take()?;
        let out = hook(w, call);
        w.write_hook = Some(hook);
        out
    }
}

fn same_parameters(a: &NewSession, b: &NewSession) -> bool {
    a == b
}

fn create_in(w: &mut State, req: &NewSession) -> Result<String, AwsError> {
    const OP: &str = "CreateTrafficMirrorSession";
    if w.honour_tokens
        && let Some((first, id)) = w.tokens.get(&req.client_token)
    {
        return if same_parameters(first, req) {
            Ok(id.clone())
        } else {
            Err(api_error(OP, "IdempotentParameterMismatch"))
        };
    }
    if !w.enis.iter().any(|e| e.id == req.eni_id) {
        return Err(api_error(OP, "InvalidNetworkInterfaceID.NotFound"));
    }
    let on_eni: Vec<&Session> = w
        .sessions
        .iter()
        .filter(|s| s.eni_id == req.eni_id)
        .collect();
    if on_eni.len() >= 3 {
        return Err(api_error(
            OP,
            "TrafficMirrorSessionsPerInterfaceLimitExceeded",
        ));
    }
    if (w.unique_numbers && on_eni.iter().any(|s| s.number == req.number))
        || !(1..=32766).contains(&req.number)
    {
        return Err(api_error(OP, "InvalidParameterValue"));
    }
    w.next_id += 1;
    let id = format!("tms-new{}", w.next_id);
    if w.honour_tokens {
        w.tokens
            .insert(req.client_token.clone(), (req.clone(), id.clone()));
    }
    w.sessions.push(Session {
        id: id.clone(),
        eni_id: req.eni_id.clone(),
        target_id: req.target_id.clone(),
        filter_id: req.filter_id.clone(),
        number: req.number,
        vni: Some(req.vni),
        packet_length: req.packet_length,
        tags: req.tags.clone(),
    });
    Ok(id)
}

fn id_filter<'a>(filters: &'a [Filter], name: &str) -> Option<&'a [String]> {
    filters
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.values.as_slice())
}

impl Ec2Api for FakeEc2 {
    async fn describe_network_interfaces(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<Eni>, AwsError> {
        self.perturb().await;
        let out = {
            let w = self.describe("DescribeNetworkInterfaces")?;
            let matcher = EniFilters::new(filters).expect("the handler sends valid ENI filters");
            w.enis
                .iter()
                .filter(|e| matcher.matches(e))
                .cloned()
                .collect()
        };
        self.perturb().await;
        Ok(out)
    }

    async fn describe_instances(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, AwsError> {
        self.perturb().await;
        let out = {
            let w = self.describe("DescribeInstances")?;
            let matcher = InstanceFilters::new(filters).expect("valid instance filters");
            w.instances
                .iter()
                .filter(|i| matcher.matches(i))
                .cloned()
                .collect()
        };
        self.perturb().await;
        Ok(out)
    }

    async fn describe_sessions(&self, filters: Vec<Filter>) -> Result<Vec<Session>, AwsError> {
        self.perturb().await;
        let out = {
            let w = self.describe("DescribeTrafficMirrorSessions")?;
            let enis = id_filter(&filters, "network-interface-id");
            let targets = id_filter(&filters, "traffic-mirror-target-id");
            w.sessions
                .iter()
                .filter(|s| enis.is_none_or(|ids| ids.contains(&s.eni_id)))
                .filter(|s| targets.is_none_or(|ids| ids.contains(&s.target_id)))
                .cloned()
                .collect()
        };
        self.perturb().await;
        Ok(out)
    }

    async fn describe_targets(&self) -> Result<Vec<MirrorTarget>, AwsError> {
        self.perturb().await;
        let out = self
            .describe("DescribeTrafficMirrorTargets")?
            .targets
            .clone();
        self.perturb().await;
        Ok(out)
    }

    async fn create_session(&self, req: NewSession) -> Result<String, AwsError> {
        self.perturb().await;
        let result = {
            let mut w = self.world.state.lock().unwrap();
            let mut call = Call::Create {
                who: self.who,
                eni_id: req.eni_id.clone(),
                number: req.number,
                token: req.client_token.clone(),
                result: Err(String::new()),
            };
            let result = match Self::hook(&mut w, &call) {
                Some(e) => Err(e),
                None => create_in(&mut w, &req),
            };
            if let Call::Create { result: r, .. } = &mut call {
                *r = result.clone().map_err(|e| e.code().to_owned());
            }
            w.calls.push(call);
            result
        };
        self.perturb().await;
        result
    }

    async fn delete_session(&self, session_id: String) -> Result<(), AwsError> {
        self.perturb().await;
        let result = {
            let mut w = self.world.state.lock().unwrap();
            let call = Call::Delete {
                who: self.who,
                session_id: session_id.clone(),
            };
            let r = match Self::hook(&mut w, &call) {
                Some(e) => Err(e),
                None => {
                    w.sessions.retain(|s| s.id != session_id);
                    Ok(())
                }
            };
            w.calls.push(call);
            r
        };
        self.perturb().await;
        result
    }

    async fn modify_session(&self, req: SessionUpdate) -> Result<(), AwsError> {
        self.perturb().await;
        let result = {
            let mut w = self.world.state.lock().unwrap();
            let call = Call::Modify {
                who: self.who,
                session_id: req.session_id.clone(),
            };
            let r = match Self::hook(&mut w, &call) {
                Some(e) => Err(e),
                None => match w.sessions.iter_mut().find(|s| s.id == req.session_id) {
                    None => Err(api_error(
                        "ModifyTrafficMirrorSession",
                        "InvalidTrafficMirrorSessionId.NotFound",
                    )),
                    Some(s) => {
                        if let Some(t) = req.target_id {
                            s.target_id = t;
                        }
                        if let Some(f) = req.filter_id {
                            s.filter_id = f;
                        }
                        if let Some(v) = req.vni {
                            s.vni = Some(v);
                        }
                        match req.packet_length {
                            PacketLengthChange::Keep => {}
                            PacketLengthChange::Set(p) => s.packet_length = Some(p),
                            PacketLengthChange::Remove => s.packet_length = None,
                        }
                        Ok(())
                    }
                },
            };
            w.calls.push(call);
            r
        };
        self.perturb().await;
        result
    }
}

/// Test settings (ENIs tagged `mirror=true`, instances tagged `mirror-instance=true`).
pub fn settings(extra: &[(&str, &str)]) -> MirrorSettings {
    let mut env: BTreeMap<String, String> = [
        ("MIRROR_TARGET_ID", TARGET),
        ("MIRROR_FILTER_ID", FILTER),
        ("MIRROR_VNI", "4242"),
        ("MIRROR_OWNER", OWNER),
        ("MIRROR_ENI_FILTERS", "Name=tag:mirror,Values=true"),
        (
            "MIRROR_INSTANCE_FILTERS",
            "Name=tag:mirror-instance,Values=true",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    MirrorSettings::from_env(&|k| env.get(k).cloned()).expect("valid test settings")
}

pub fn event(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn eni_event(eni: &str) -> Value {
    let mut v = event("tag-change-eni.json");
    v["resources"] = serde_json::json!([format!(
        "arn:aws:ec2:us-east-1:123456789012:network-interface/{eni}"
    )]);
    v
}

pub fn instance_event(instance: &str) -> Value {
    let mut v = event("instance-running.json");
    v["detail"]["instance-id"] = instance.into();
    v
}
