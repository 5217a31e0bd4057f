//! An in-memory EC2 behind `mirror_aws::Ec2Api`, for the tests moto cannot serve: its session
//! rules are those of [`mirror::sim`] (ClientToken idempotency, 3 sessions per ENI, unique
//! session numbers in 1..=32766, the ENI must exist), answered with EC2's error codes, and
//! describes evaluate the same filters the server would ([`mirror::filters`]).
//!
//! [`Ec2World`] is the shared state; [`Ec2World::client`] hands out clients that record every
//! call with the caller's name, and [`Ec2World::chaotic_client`] clients that also yield and
//! sleep a seeded, reproducible amount around each call, so that handlers sharing one world
//! interleave at every observe/apply boundary. A write hook lets a test change the world
//! between observe and apply or answer a write with an error; [`Ec2World::moto_like`] ignores
//! ClientToken and number reuse, as moto does, for negative controls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mirror::filters::{EniFilters, Filter, InstanceFilters};
use mirror::model::{Eni, Instance, MirrorTarget, OWNER_TAG_KEY, Observed, Session};
use mirror::plan::{CreateSession, DeleteSession, ModifySession};
use mirror::sim::{Ec2Sim, Rules, SimError};
use mirror_aws::ec2::{Ec2Api, Ec2Op, MAX_FILTER_VALUES};
use mirror_aws::error::AwsError;

use crate::settings::{FILTER, TARGET};

pub use mirror::model::tags;

/// The error EC2 answers `op` with `code`.
pub fn api_error(op: Ec2Op, code: &str) -> AwsError {
    AwsError::classify(op.as_str(), code, "answered by the in-memory EC2")
}

/// One API call as the world saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Describe {
        who: &'static str,
        op: Ec2Op,
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

/// Run (under the world's lock) just before a write is applied, with the world as it is: may
/// change it (delete an ENI between observe and apply) or answer the write with an error.
pub type WriteHook = Box<dyn FnMut(&mut Observed, &Call) -> Option<AwsError> + Send>;

struct State {
    sim: Ec2Sim,
    calls: Vec<Call>,
    write_hook: Option<WriteHook>,
    /// When set, every describe answers this error.
    describe_failure: Option<AwsError>,
    seeded: u64,
}

impl State {
    /// The write hook's answer to `call`, if it has one.
    fn hook(&mut self, call: &Call) -> Option<AwsError> {
        let mut hook = self.write_hook.take()?;
        let out = hook(&mut self.sim.world, call);
        self.write_hook = Some(hook);
        out
    }
}

/// The shared state of the in-memory EC2.
#[derive(Clone)]
pub struct Ec2World {
    state: Arc<Mutex<State>>,
}

impl Default for Ec2World {
    fn default() -> Self {
        Ec2World::new(Rules::AWS)
    }
}

impl Ec2World {
    pub fn new(rules: Rules) -> Self {
        Ec2World {
            state: Arc::new(Mutex::new(State {
                sim: Ec2Sim::new(Observed::default(), rules),
                calls: Vec::new(),
                write_hook: None,
                describe_failure: None,
                seeded: 0,
            })),
        }
    }

    /// What moto does: tokens ignored, session numbers not checked.
    pub fn moto_like() -> Self {
        Ec2World::new(Rules::MOTO)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads or changes the world directly (no call recorded).
    pub fn with<T>(&self, f: impl FnOnce(&mut Observed) -> T) -> T {
        f(&mut self.lock().sim.world)
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

    /// An ENI of `vpc-1` / `subnet-1`; its primary address is `10.0.<n / 250>.<n % 250 + 4>`
    /// for the n-th ENI added.
    pub fn add_eni(&self, id: &str, instance: Option<&str>, t: &[(&str, &str)]) {
        self.with(|w| {
            let n = w.enis.len();
            w.enis.push(Eni {
                id: id.to_owned(),
                subnet_id: "subnet-1".into(),
                vpc_id: "vpc-1".into(),
                interface_type: "interface".into(),
                status: Some("in-use".into()),
                attachment_instance_id: instance.map(str::to_owned),
                private_ip: Some(format!("10.0.{}.{}", n / 250, n % 250 + 4)),
                tags: tags(t),
                ..Eni::default()
            })
        });
    }

    /// An ENI exactly as given.
    pub fn add_eni_as(&self, eni: Eni) {
        self.with(|w| w.enis.push(eni));
    }

    pub fn add_instance(&self, id: &str, t: &[(&str, &str)]) {
        self.with(|w| {
            w.instances.push(Instance {
                id: id.to_owned(),
                instance_type: "m5.large".into(),
                state: Some("running".into()),
                tags: tags(t),
                ..Instance::default()
            })
        });
    }

    pub fn add_target(&self, target: MirrorTarget) {
        self.with(|w| w.targets.push(target));
    }

    /// A session to [`TARGET`] with [`FILTER`] and VNI 99, owned by `owner` (no owner tag for
    /// `None`); returns its id.
    pub fn add_session(&self, eni: &str, number: u32, owner: Option<&str>) -> String {
        let mut state = self.lock();
        state.seeded += 1;
        let id = format!("tms-seed{}", state.seeded);
        state.sim.world.sessions.push(Session {
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

    pub fn set_eni_tags(&self, id: &str, t: &[(&str, &str)]) {
        self.with(|w| {
            let eni = w.enis.iter_mut().find(|e| e.id == id).expect("known ENI");
            eni.tags = tags(t);
        });
    }

    pub fn sessions_on(&self, eni: &str) -> Vec<Session> {
        self.with(|w| {
            w.sessions
                .iter()
                .filter(|s| s.eni_id == eni)
                .cloned()
                .collect()
        })
    }

    /// The sessions on `eni` owned by [`crate::OWNER`].
    pub fn owned_on(&self, eni: &str) -> Vec<Session> {
        self.sessions_on(eni)
            .into_iter()
            .filter(|s| s.is_owned_by(crate::OWNER))
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn writes(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::is_write).collect()
    }

    pub fn describes(&self) -> usize {
        self.calls().iter().filter(|c| !c.is_write()).count()
    }

    pub fn set_write_hook(&self, hook: WriteHook) {
        self.lock().write_hook = Some(hook);
    }

    pub fn clear_write_hook(&self) {
        self.lock().write_hook = None;
    }

    /// Every create for `eni` is answered with `code`.
    pub fn fail_create(&self, eni: &str, code: &'static str) {
        let eni = eni.to_owned();
        self.set_write_hook(Box::new(move |_, call| match call {
            Call::Create { eni_id, .. } if *eni_id == eni => {
                Some(api_error(Ec2Op::CreateTrafficMirrorSession, code))
            }
            _ => None,
        }));
    }

    /// Every describe is answered with `error`.
    pub fn fail_describes(&self, error: AwsError) {
        self.lock().describe_failure = Some(error);
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

/// A client of an [`Ec2World`].
#[derive(Clone)]
pub struct FakeEc2 {
    pub world: Ec2World,
    pub who: &'static str,
    chaos: Option<Arc<Chaos>>,
}

fn values<'a>(filters: &'a [Filter], name: &str) -> Option<&'a [String]> {
    filters
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.values.as_slice())
}

impl FakeEc2 {
    async fn perturb(&self) {
        if let Some(c) = &self.chaos {
            c.perturb().await;
        }
    }

    /// A describe: recorded, perturbed, failed if told so, else `answer` over the world.
    async fn describe<T>(
        &self,
        op: Ec2Op,
        filters: &[Filter],
        answer: impl FnOnce(&Observed) -> Vec<T>,
    ) -> Result<Vec<T>, AwsError> {
        for f in filters {
            assert!(
                f.values.len() <= MAX_FILTER_VALUES,
                "{}: more than {MAX_FILTER_VALUES} values in filter {}",
                op.as_str(),
                f.name
            );
        }
        self.perturb().await;
        let out = {
            let mut state = self.world.lock();
            state.calls.push(Call::Describe { who: self.who, op });
            match &state.describe_failure {
                Some(e) => Err(e.clone()),
                None => Ok(answer(&state.sim.world)),
            }
        };
        self.perturb().await;
        out
    }

    /// A write: perturbed, answered by the hook or by the simulator, recorded (after `note`
    /// has added the answer to the call).
    async fn write<T>(
        &self,
        op: Ec2Op,
        mut call: Call,
        apply: impl FnOnce(&mut Ec2Sim) -> Result<T, SimError>,
        note: impl FnOnce(&mut Call, &Result<T, AwsError>),
    ) -> Result<T, AwsError> {
        self.perturb().await;
        let result = {
            let mut state = self.world.lock();
            let result = match state.hook(&call) {
                Some(e) => Err(e),
                None => apply(&mut state.sim).map_err(|e| api_error(op, e.code())),
            };
            note(&mut call, &result);
            state.calls.push(call);
            result
        };
        self.perturb().await;
        result
    }
}

impl Ec2Api for FakeEc2 {
    async fn describe_network_interfaces(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<Eni>, AwsError> {
        let matcher =
            EniFilters::new(filters.clone()).expect("the handler sends valid ENI filters");
        self.describe(Ec2Op::DescribeNetworkInterfaces, &filters, |w| {
            w.enis
                .iter()
                .filter(|e| matcher.matches(e))
                .cloned()
                .collect()
        })
        .await
    }

    async fn describe_instances(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, AwsError> {
        let matcher = InstanceFilters::new(filters.clone()).expect("valid instance filters");
        self.describe(Ec2Op::DescribeInstances, &filters, |w| {
            w.instances
                .iter()
                .filter(|i| matcher.matches(i))
                .cloned()
                .collect()
        })
        .await
    }

    async fn describe_sessions(&self, filters: Vec<Filter>) -> Result<Vec<Session>, AwsError> {
        for f in &filters {
            assert!(
                ["network-interface-id", "traffic-mirror-target-id"].contains(&f.name.as_str()),
                "the fake does not evaluate the session filter {}",
                f.name
            );
        }
        let enis = values(&filters, "network-interface-id");
        let targets = values(&filters, "traffic-mirror-target-id");
        self.describe(Ec2Op::DescribeTrafficMirrorSessions, &filters, |w| {
            w.sessions
                .iter()
                .filter(|s| enis.is_none_or(|ids| ids.contains(&s.eni_id)))
                .filter(|s| targets.is_none_or(|ids| ids.contains(&s.target_id)))
                .cloned()
                .collect()
        })
        .await
    }

    async fn describe_targets(&self) -> Result<Vec<MirrorTarget>, AwsError> {
        self.describe(Ec2Op::DescribeTrafficMirrorTargets, &[], |w| {
            w.targets.clone()
        })
        .await
    }

    async fn create_session(&self, req: &CreateSession) -> Result<String, AwsError> {
        let call = Call::Create {
            who: self.who,
            eni_id: req.eni_id.clone(),
            number: req.number,
            token: req.client_token.clone(),
            result: Err(String::new()),
        };
        let apply = |sim: &mut Ec2Sim| sim.create(req);
        self.write(Ec2Op::CreateTrafficMirrorSession, call, apply, |call, r| {
            if let Call::Create { result, .. } = call {
                *result = r.clone().map_err(|e| e.code.clone());
            }
        })
        .await
    }

    async fn delete_session(&self, req: &DeleteSession) -> Result<(), AwsError> {
        let call = Call::Delete {
            who: self.who,
            session_id: req.session_id.clone(),
        };
        let apply = |sim: &mut Ec2Sim| match sim.delete(&req.session_id) {
            // The trait's contract: a session already gone is not an error.
            Err(SimError::NoSuchSession(_)) => Ok(()),
            other => other,
        };
        self.write(Ec2Op::DeleteTrafficMirrorSession, call, apply, |_, _| {})
            .await
    }

    async fn modify_session(&self, req: &ModifySession) -> Result<(), AwsError> {
        let call = Call::Modify {
            who: self.who,
            session_id: req.session_id.clone(),
        };
        let apply = |sim: &mut Ec2Sim| sim.modify(req);
        self.write(Ec2Op::ModifyTrafficMirrorSession, call, apply, |_, _| {})
            .await
    }
}
