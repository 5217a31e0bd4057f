//! Handler tests against an in-memory EC2 / Auto Scaling that enforces the AWS rules moto
//! does not (3 sessions per ENI, unique numbers per ENI, the ENI must exist, ClientToken
//! idempotency) and can be told to fail a given ENI with a given error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mirror::capacity::{CapacityPolicy, SCALE_IN_HISTORY_TAG};
use mirror::filters::{EniFilters, Filter, InstanceFilters};
use mirror::model::{Eni, Instance, MirrorTarget, OWNER_TAG_KEY, Session, Tags};
use mirror::report::ErrorClass;
use mirror::selection::SkipReason;
use mirror::settings::{FleetSettings, MirrorSettings};
use mirror_aws::ec2::{Ec2Api, NewSession, PacketLengthChange, SessionUpdate};
use mirror_aws::error::AwsError;
use mirror_aws::fleet::{FleetApi, Group};
use mirror_aws::handlers::{self, HandlerError, MirrorRun};
use serde_json::Value;

const TARGET: &str = "tmt-target";
const FILTER: &str = "tmf-filter";
const OWNER: &str = "test-owner";

#[derive(Default)]
struct World {
    enis: Vec<Eni>,
    instances: Vec<Instance>,
    sessions: Vec<Session>,
    targets: Vec<MirrorTarget>,
    tokens: HashMap<String, String>,
    next_id: u64,
    /// ENI id → the error CreateTrafficMirrorSession answers for it.
    create_failures: HashMap<String, AwsError>,
    /// When set, every describe fails with this.
    describe_failure: Option<AwsError>,
}

#[derive(Clone, Default)]
struct FakeEc2 {
    world: Arc<Mutex<World>>,
    describes: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn aws_error(code: &str) -> AwsError {
    AwsError::classify("CreateTrafficMirrorSession", code, "injected by the test")
}

impl FakeEc2 {
    fn add_eni(&self, id: &str, instance: Option<&str>, t: &[(&str, &str)]) {
        self.world.lock().unwrap().enis.push(Eni {
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

    fn add_instance(&self, id: &str, t: &[(&str, &str)]) {
        self.world.lock().unwrap().instances.push(Instance {
            id: id.to_owned(),
            instance_type: "m5.large".into(),
            state: Some("running".into()),
            tags: tags(t),
            ..Instance::default()
        });
    }

    fn add_session(&self, eni: &str, number: u32, vni: u32, owner: Option<&str>) -> String {
        let mut w = self.world.lock().unwrap();
        w.next_id += 1;
        let id = format!("tms-seed{}", w.next_id);
        w.sessions.push(Session {
            id: id.clone(),
            eni_id: eni.to_owned(),
            target_id: TARGET.into(),
            filter_id: FILTER.into(),
            number,
            vni: Some(vni),
            packet_length: None,
            tags: owner
                .map(|o| tags(&[(OWNER_TAG_KEY, o)]))
                .unwrap_or_default(),
        });
        id
    }

    fn set_eni_tags(&self, id: &str, t: &[(&str, &str)]) {
        let mut w = self.world.lock().unwrap();
        let eni = w.enis.iter_mut().find(|e| e.id == id).unwrap();
        eni.tags = tags(t);
    }

    fn sessions_on(&self, eni: &str) -> Vec<Session> {
        let w = self.world.lock().unwrap();
        w.sessions
            .iter()
            .filter(|s| s.eni_id == eni)
            .cloned()
            .collect()
    }

    fn fail_create(&self, eni: &str, code: &str) {
        self.world
            .lock()
            .unwrap()
            .create_failures
            .insert(eni.to_owned(), aws_error(code));
    }
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
        self.describes.fetch_add(1, Ordering::Relaxed);
        let w = self.world.lock().unwrap();
        if let Some(e) = &w.describe_failure {
            return Err(e.clone());
        }
        let matcher = EniFilters::new(filters).expect("the handler sends valid ENI filters");
        Ok(w.enis
            .iter()
            .filter(|e| matcher.matches(e))
            .cloned()
            .collect())
    }

    async fn describe_instances(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, AwsError> {
        self.describes.fetch_add(1, Ordering::Relaxed);
        let w = self.world.lock().unwrap();
        if let Some(e) = &w.describe_failure {
            return Err(e.clone());
        }
        let matcher = InstanceFilters::new(filters).expect("valid instance filters");
        Ok(w.instances
            .iter()
            .filter(|i| matcher.matches(i))
            .cloned()
            .collect())
    }

    async fn describe_sessions(&self, filters: Vec<Filter>) -> Result<Vec<Session>, AwsError> {
        self.describes.fetch_add(1, Ordering::Relaxed);
        let w = self.world.lock().unwrap();
        if let Some(e) = &w.describe_failure {
            return Err(e.clone());
        }
        for f in &filters {
            assert!(
                ["network-interface-id", "traffic-mirror-target-id"].contains(&f.name.as_str()),
                "unexpected session filter {}",
                f.name
            );
            assert!(f.values.len() <= 200, "more than 200 filter values");
        }
        let enis = id_filter(&filters, "network-interface-id");
        let targets = id_filter(&filters, "traffic-mirror-target-id");
        Ok(w.sessions
            .iter()
            .filter(|s| enis.is_none_or(|ids| ids.contains(&s.eni_id)))
            .filter(|s| targets.is_none_or(|ids| ids.contains(&s.target_id)))
            .cloned()
            .collect())
    }

    async fn describe_targets(&self) -> Result<Vec<MirrorTarget>, AwsError> {
        self.describes.fetch_add(1, Ordering::Relaxed);
        Ok(self.world.lock().unwrap().targets.clone())
    }

    async fn create_session(&self, req: NewSession) -> Result<String, AwsError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut w = self.world.lock().unwrap();
        if let Some(e) = w.create_failures.get(&req.eni_id) {
            return Err(e.clone());
        }
        if let Some(id) = w.tokens.get(&req.client_token) {
            return Ok(id.clone());
        }
        if !w.enis.iter().any(|e| e.id == req.eni_id) {
            return Err(aws_error("InvalidNetworkInterfaceID.NotFound"));
        }
        let on_eni: Vec<&Session> = w
            .sessions
            .iter()
            .filter(|s| s.eni_id == req.eni_id)
            .collect();
        if on_eni.len() >= 3 {
            return Err(aws_error("TrafficMirrorSessionsPerInterfaceLimitExceeded"));
        }
        if on_eni.iter().any(|s| s.number == req.number) || !(1..=32766).contains(&req.number) {
            return Err(aws_error("InvalidParameterValue"));
        }
        w.next_id += 1;
        let id = format!("tms-new{}", w.next_id);
        w.tokens.insert(req.client_token.clone(), id.clone());
        w.sessions.push(Session {
            id: id.clone(),
            eni_id: req.eni_id,
            target_id: req.target_id,
            filter_id: req.filter_id,
            number: req.number,
            vni: Some(req.vni),
            packet_length: req.packet_length,
            tags: req.tags,
        });
        Ok(id)
    }

    async fn delete_session(&self, session_id: String) -> Result<(), AwsError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.world
            .lock()
            .unwrap()
            .sessions
            .retain(|s| s.id != session_id);
        Ok(())
    }

    async fn modify_session(&self, req: SessionUpdate) -> Result<(), AwsError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut w = self.world.lock().unwrap();
        let Some(s) = w.sessions.iter_mut().find(|s| s.id == req.session_id) else {
            return Err(aws_error("InvalidTrafficMirrorSessionId.NotFound"));
        };
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
}

fn settings(extra: &[(&str, &str)]) -> MirrorSettings {
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

fn run(function: &'static str, extra: &[(&str, &str)]) -> MirrorRun {
    MirrorRun::new(function, settings(extra))
}

fn event(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn eni_event(eni: &str) -> Value {
    let mut v = event("tag-change-eni.json");
    v["resources"] = serde_json::json!([format!(
        "arn:aws:ec2:us-east-1:123456789012:network-interface/{eni}"
    )]);
    v
}

fn instance_event(instance: &str) -> Value {
    let mut v = event("instance-running.json");
    v["detail"]["instance-id"] = instance.into();
    v
}

fn owned(sessions: &[Session]) -> Vec<&Session> {
    sessions.iter().filter(|s| s.is_owned_by(OWNER)).collect()
}

#[tokio::test]
async fn onboard_gives_a_tagged_eni_exactly_one_owned_session() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    let report = handlers::onboard(&ec2, &run("onboard-eni", &[]), eni_event("eni-a"))
        .await
        .unwrap();
    assert_eq!(report.created.count, 1);
    let sessions = ec2.sessions_on("eni-a");
    assert_eq!(owned(&sessions).len(), 1);
    let s = &sessions[0];
    assert_eq!((s.number, s.vni, s.packet_length), (1, Some(4242), None));
    assert_eq!(s.target_id, TARGET);
    assert_eq!(s.filter_id, FILTER);
}

#[tokio::test]
async fn the_same_event_ten_times_still_gives_one_session() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    let r = run("onboard-eni", &[]);
    for _ in 0..10 {
        handlers::onboard(&ec2, &r, eni_event("eni-a"))
            .await
            .unwrap();
    }
    assert_eq!(ec2.sessions_on("eni-a").len(), 1);
    assert_eq!(
        ec2.writes.load(Ordering::Relaxed),
        1,
        "observe before create"
    );
}

#[tokio::test]
async fn an_instance_event_covers_every_eni_of_that_instance_and_nothing_else() {
    let ec2 = FakeEc2::default();
    ec2.add_instance("i-1", &[("mirror-instance", "true")]);
    ec2.add_eni("eni-a", Some("i-1"), &[]);
    ec2.add_eni("eni-b", Some("i-1"), &[]);
    ec2.add_eni("eni-other", None, &[("mirror", "true")]);
    let report = handlers::onboard(&ec2, &run("onboard-eni", &[]), instance_event("i-1"))
        .await
        .unwrap();
    assert_eq!(report.created.count, 2);
    assert_eq!(ec2.sessions_on("eni-a").len(), 1);
    assert_eq!(ec2.sessions_on("eni-b").len(), 1);
    assert!(
        ec2.sessions_on("eni-other").is_empty(),
        "outside the event's scope"
    );
}

#[tokio::test]
async fn an_untagged_eni_in_an_event_is_skipped_with_a_reason() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[]);
    let report = handlers::onboard(&ec2, &run("onboard-eni", &[]), eni_event("eni-a"))
        .await
        .unwrap();
    assert_eq!(report.created.count, 0);
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::NotSelected),
        Some(&1)
    );
}

#[tokio::test]
async fn the_lowest_free_number_is_used_next_to_someone_elses_session() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    ec2.add_session("eni-a", 1, 7, None);
    handlers::onboard(&ec2, &run("onboard-eni", &[]), eni_event("eni-a"))
        .await
        .unwrap();
    let sessions = ec2.sessions_on("eni-a");
    assert_eq!(sessions.len(), 2);
    assert_eq!(owned(&sessions)[0].number, 2);
}

#[tokio::test]
async fn an_eni_with_three_foreign_sessions_is_skipped_not_failed() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    for n in 1..=3 {
        ec2.add_session("eni-a", n, 7, Some("someone-else"));
    }
    let report = handlers::onboard(&ec2, &run("onboard-eni", &[]), eni_event("eni-a"))
        .await
        .unwrap();
    assert_eq!(report.errors.count, 0);
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::SessionLimit),
        Some(&1)
    );
    assert_eq!(ec2.writes.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn reconcile_deletes_our_session_once_the_tag_is_removed_and_leaves_others_alone() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    ec2.add_eni("eni-b", None, &[]);
    let foreign = ec2.add_session("eni-b", 1, 99, None);
    let r = run("reconcile-mirrors", &[]);
    handlers::reconcile(&ec2, &r, event("scheduled.json"))
        .await
        .unwrap();
    assert_eq!(owned(&ec2.sessions_on("eni-a")).len(), 1);

    ec2.set_eni_tags("eni-a", &[]);
    let report = handlers::reconcile(&ec2, &r, event("scheduled.json"))
        .await
        .unwrap();
    assert_eq!(report.deleted.count, 1);
    assert!(ec2.sessions_on("eni-a").is_empty());
    let b = ec2.sessions_on("eni-b");
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].id.as_str(), b[0].vni), (foreign.as_str(), Some(99)));
}

#[tokio::test]
async fn reconcile_brings_a_drifted_vni_and_packet_length_back() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    let id = ec2.add_session("eni-a", 1, 7, Some(OWNER));
    ec2.world.lock().unwrap().sessions[0].packet_length = Some(100);
    let report = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        event("scheduled.json"),
    )
    .await
    .unwrap();
    assert_eq!(report.modified.count, 1);
    let s = &ec2.sessions_on("eni-a")[0];
    assert_eq!(
        (s.id.as_str(), s.vni, s.packet_length),
        (id.as_str(), Some(4242), None)
    );
}

#[tokio::test]
async fn dry_run_reports_the_plan_and_changes_nothing() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    let report = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[("DRY_RUN", "true")]),
        event("scheduled.json"),
    )
    .await
    .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.created.count, 1);
    assert_eq!(ec2.writes.load(Ordering::Relaxed), 0);
    assert!(ec2.sessions_on("eni-a").is_empty());
}

#[tokio::test]
async fn one_unsupported_eni_does_not_stop_the_others_nor_fail_the_run() {
    let ec2 = FakeEc2::default();
    for id in ["eni-a", "eni-b", "eni-c"] {
        ec2.add_eni(id, None, &[("mirror", "true")]);
    }
    ec2.fail_create("eni-b", "NetworkInterfaceNotSupported");
    let report = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        event("scheduled.json"),
    )
    .await
    .unwrap();
    assert_eq!(report.created.count, 2);
    assert_eq!(
        report.errors_by_class.get(&ErrorClass::UnsupportedSource),
        Some(&1)
    );
    assert_eq!(report.errors.items[0].eni_id, "eni-b");
    assert_eq!(ec2.sessions_on("eni-a").len(), 1);
    assert_eq!(ec2.sessions_on("eni-c").len(), 1);
}

#[tokio::test]
async fn a_throttled_eni_fails_the_run_after_the_others_are_done() {
    let ec2 = FakeEc2::default();
    for id in ["eni-a", "eni-b"] {
        ec2.add_eni(id, None, &[("mirror", "true")]);
    }
    ec2.fail_create("eni-a", "RequestLimitExceeded");
    let err = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        event("scheduled.json"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, HandlerError::Retryable { count: 1, .. }),
        "{err}"
    );
    assert_eq!(
        ec2.sessions_on("eni-b").len(),
        1,
        "the other ENI was still handled"
    );
}

#[tokio::test]
async fn the_per_eni_limit_from_the_api_is_reported_as_session_limit() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    ec2.fail_create("eni-a", "TrafficMirrorSessionsPerInterfaceLimitExceeded");
    let report = handlers::onboard(&ec2, &run("onboard-eni", &[]), eni_event("eni-a"))
        .await
        .unwrap();
    assert_eq!(
        report.errors_by_class.get(&ErrorClass::SessionLimit),
        Some(&1)
    );
}

#[tokio::test]
async fn an_eni_deleted_between_observe_and_create_is_reported_as_gone() {
    let ec2 = FakeEc2::default();
    ec2.add_eni("eni-a", None, &[("mirror", "true")]);
    ec2.fail_create("eni-a", "InvalidNetworkInterfaceID.NotFound");
    let report = handlers::onboard(&ec2, &run("onboard-eni", &[]), eni_event("eni-a"))
        .await
        .unwrap();
    assert_eq!(report.errors_by_class.get(&ErrorClass::EniGone), Some(&1));
}

#[tokio::test]
async fn a_failed_observe_fails_the_run_with_its_class() {
    let ec2 = FakeEc2::default();
    ec2.world.lock().unwrap().describe_failure = Some(AwsError::classify(
        "DescribeNetworkInterfaces",
        "UnauthorizedOperation",
        "no",
    ));
    let err = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        event("scheduled.json"),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        HandlerError::Observe(AwsError::PermissionDenied { .. })
    ));
}

#[tokio::test]
async fn a_bad_event_fails_with_a_typed_error_and_touches_nothing() {
    let ec2 = FakeEc2::default();
    let mut v = event("cloudtrail-create-network-interface.json");
    v["detail"]["responseElements"] = Value::Null;
    let err = handlers::onboard(&ec2, &run("onboard-eni", &[]), v)
        .await
        .unwrap_err();
    assert_eq!(err.label(), "missing_field");
    assert_eq!(ec2.describes.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn each_function_rejects_the_other_functions_triggers() {
    let ec2 = FakeEc2::default();
    let err = handlers::onboard(&ec2, &run("onboard-eni", &[]), event("scheduled.json"))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "wrong_trigger");
    let err = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        event("tag-change-eni.json"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.label(), "wrong_trigger");
}

#[tokio::test]
async fn every_sample_event_drives_onboard_or_reconcile() {
    let ec2 = FakeEc2::default();
    ec2.add_instance("i-0abcd1234ef567890", &[("mirror-instance", "true")]);
    ec2.add_eni("eni-0123456789abcdef0", Some("i-0abcd1234ef567890"), &[]);
    for name in [
        "instance-running.json",
        "cloudtrail-create-network-interface.json",
        "cloudtrail-attach-network-interface.json",
        "tag-change-instance.json",
        "tag-change-eni.json",
    ] {
        handlers::onboard(&ec2, &run("onboard-eni", &[]), event(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ec2.sessions_on("eni-0123456789abcdef0").len(), 1, "{name}");
    }
    handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        event("scheduled.json"),
    )
    .await
    .unwrap();
    assert_eq!(ec2.sessions_on("eni-0123456789abcdef0").len(), 1);
}

#[tokio::test]
async fn the_rebuilder_fleet_and_the_target_eni_are_never_mirrored() {
    let ec2 = FakeEc2::default();
    ec2.add_instance("i-fleet", &[("aws:autoscaling:groupName", "rebuilders")]);
    ec2.add_eni("eni-fleet", Some("i-fleet"), &[("mirror", "true")]);
    ec2.add_eni("eni-target", None, &[("mirror", "true")]);
    ec2.world.lock().unwrap().targets.push(MirrorTarget {
        id: TARGET.into(),
        network_interface_id: Some("eni-target".into()),
        network_load_balancer_arn: None,
    });
    let report = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[("FLEET_ASG_NAME", "rebuilders")]),
        event("scheduled.json"),
    )
    .await
    .unwrap();
    assert_eq!(report.created.count, 0);
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::RebuilderFleet),
        Some(&1)
    );
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::IsMirrorTarget),
        Some(&1)
    );
}

#[tokio::test]
async fn a_full_reconcile_describes_by_pages_not_per_eni() {
    let ec2 = FakeEc2::default();
    for i in 0..500 {
        ec2.add_eni(&format!("eni-{i:04}"), None, &[("mirror", "true")]);
    }
    handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        event("scheduled.json"),
    )
    .await
    .unwrap();
    // targets, ENIs by filter, instances by filter, sessions: a constant, not 500.
    assert!(
        ec2.describes.load(Ordering::Relaxed) <= 6,
        "{}",
        ec2.describes.load(Ordering::Relaxed)
    );
    assert_eq!(ec2.writes.load(Ordering::Relaxed), 500);
}

// ---- size-fleet ----

#[derive(Default)]
struct FakeFleet {
    group: Mutex<Option<Group>>,
    set_calls: AtomicU64,
}

impl FakeFleet {
    fn with(min: u32, max: u32, desired: u32) -> Self {
        FakeFleet {
            group: Mutex::new(Some(Group {
                name: "rebuilders".into(),
                min_size: min,
                max_size: max,
                desired_capacity: desired,
                tags: BTreeMap::new(),
            })),
            set_calls: AtomicU64::new(0),
        }
    }

    fn desired(&self) -> u32 {
        self.group
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .desired_capacity
    }
}

impl FleetApi for FakeFleet {
    async fn describe_group(&self, name: &str) -> Result<Option<Group>, AwsError> {
        Ok(self
            .group
            .lock()
            .unwrap()
            .clone()
            .filter(|g| g.name == name))
    }

    async fn set_desired_capacity(&self, _name: &str, desired: u32) -> Result<(), AwsError> {
        self.set_calls.fetch_add(1, Ordering::Relaxed);
        let mut g = self.group.lock().unwrap();
        let g = g.as_mut().unwrap();
        if desired < g.min_size || desired > g.max_size {
            return Err(AwsError::classify(
                "SetDesiredCapacity",
                "ValidationError",
                "out of bounds",
            ));
        }
        g.desired_capacity = desired;
        Ok(())
    }

    async fn put_group_tag(&self, _name: &str, key: &str, value: &str) -> Result<(), AwsError> {
        let mut g = self.group.lock().unwrap();
        g.as_mut()
            .unwrap()
            .tags
            .insert(key.to_owned(), value.to_owned());
        Ok(())
    }
}

fn fleet_settings(min: u32, max: u32, per: u32, after: u32) -> FleetSettings {
    FleetSettings {
        asg_name: "rebuilders".into(),
        target_id: TARGET.into(),
        policy: CapacityPolicy {
            min,
            max,
            sessions_per_instance: per,
            scale_in_after: after,
        },
        dry_run: false,
    }
}

fn with_sessions(n: u32) -> FakeEc2 {
    let ec2 = FakeEc2::default();
    for i in 0..n {
        let eni = format!("eni-{i}");
        ec2.add_eni(&eni, None, &[]);
        ec2.add_session(&eni, 1, 1, Some(OWNER));
    }
    ec2
}

#[tokio::test]
async fn size_fleet_scales_out_at_once_from_the_session_count() {
    let ec2 = with_sessions(25);
    let fleet = FakeFleet::with(1, 10, 1);
    let report = handlers::size_fleet(
        &ec2,
        &fleet,
        &fleet_settings(1, 10, 10, 3),
        "size-fleet",
        event("scheduled.json"),
    )
    .await
    .unwrap();
    assert_eq!(report.sessions, 25);
    assert!(report.applied);
    assert_eq!(fleet.desired(), 3);
}

#[tokio::test]
async fn size_fleet_respects_max_and_does_not_call_when_unchanged() {
    let ec2 = with_sessions(100);
    let fleet = FakeFleet::with(1, 10, 1);
    let s = fleet_settings(1, 4, 10, 3);
    handlers::size_fleet(&ec2, &fleet, &s, "size-fleet", event("scheduled.json"))
        .await
        .unwrap();
    assert_eq!(fleet.desired(), 4);
    handlers::size_fleet(&ec2, &fleet, &s, "size-fleet", event("scheduled.json"))
        .await
        .unwrap();
    assert_eq!(
        fleet.set_calls.load(Ordering::Relaxed),
        1,
        "only when different"
    );
}

#[tokio::test]
async fn size_fleet_never_asks_beyond_the_groups_own_bounds() {
    let ec2 = with_sessions(0);
    let fleet = FakeFleet::with(2, 10, 5);
    let s = fleet_settings(0, 10, 10, 1);
    let report = handlers::size_fleet(&ec2, &fleet, &s, "size-fleet", event("scheduled.json"))
        .await
        .unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(fleet.desired(), 2, "the group's min wins over FLEET_MIN=0");
}

#[tokio::test]
async fn size_fleet_scales_in_only_after_consecutive_lower_readings_kept_on_the_group() {
    let ec2 = with_sessions(5);
    let fleet = FakeFleet::with(1, 10, 4);
    let s = fleet_settings(1, 10, 10, 3);
    for reading in 1..=2 {
        handlers::size_fleet(&ec2, &fleet, &s, "size-fleet", event("scheduled.json"))
            .await
            .unwrap();
        assert_eq!(fleet.desired(), 4, "reading {reading} keeps the size");
        let g = fleet.group.lock().unwrap().clone().unwrap();
        assert!(g.tags.contains_key(SCALE_IN_HISTORY_TAG));
    }
    handlers::size_fleet(&ec2, &fleet, &s, "size-fleet", event("scheduled.json"))
        .await
        .unwrap();
    assert_eq!(fleet.desired(), 1);
}

#[tokio::test]
async fn size_fleet_dry_run_changes_nothing() {
    let ec2 = with_sessions(30);
    let fleet = FakeFleet::with(1, 10, 1);
    let mut s = fleet_settings(1, 10, 10, 3);
    s.dry_run = true;
    let report = handlers::size_fleet(&ec2, &fleet, &s, "size-fleet", event("scheduled.json"))
        .await
        .unwrap();
    assert_eq!(report.decision.desired, 3);
    assert!(!report.applied);
    assert_eq!(fleet.desired(), 1);
}

#[tokio::test]
async fn size_fleet_names_a_missing_group() {
    let ec2 = with_sessions(1);
    let fleet = FakeFleet::default();
    let err = handlers::size_fleet(
        &ec2,
        &fleet,
        &fleet_settings(1, 2, 1, 1),
        "size-fleet",
        event("scheduled.json"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("rebuilders"), "{err}");
}
