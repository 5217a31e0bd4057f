//! `onboard-eni` and `reconcile-mirrors` running at the same time on the same ENIs never
//! create two sessions.
//!
//! Both handlers observe → plan → apply against one in-memory EC2 that honours ClientToken
//! like AWS (the test kit's `fake_ec2`, on `mirror::sim`). Every API call of every handler is surrounded by a seeded number
//! of yields (and, on the multi-threaded runtime, short sleeps), so the runs interleave at
//! every observe/apply boundary; each seed is one schedule, reproducible. The tests count how
//! many schedules really raced (both handlers sent a create for the same ENI) so they cannot
//! pass by never racing, and a negative control shows the same schedules without ClientToken
//! (what moto does) do produce duplicates — which the next reconcile then removes.

use std::collections::{BTreeMap, BTreeSet};

use mirror::plan::Scope;
use mirror_aws::events;
use mirror_aws::handlers::{self, HandlerError, MirrorRun};
use mirror_testkit::settings::settings;
use mirror_testkit::{Call, Ec2World, FakeEc2, eni_event, instance_event, sample_event};
use serde_json::Value;

/// 2026-11-26T02:30:00Z: mid-hour, so both handlers' tokens fall in the same bucket.
const NOW: u64 = 1_795_660_200;
const ENIS: [&str; 4] = ["eni-a", "eni-b", "eni-c", "eni-d"];

/// The world every schedule starts from: a tagged standalone ENI, an ENI of a tagged
/// instance, a tagged ENI already carrying someone else's session number 1 (ours still takes
/// the highest free number, 32766), and a tagged ENI no event names (only the reconcile reaches
/// it).
fn world(w: Ec2World) -> Ec2World {
    w.add_eni("eni-a", None, &[("mirror", "true")]);
    w.add_instance("i-1", &[("mirror-instance", "true")]);
    w.add_eni("eni-b", Some("i-1"), &[]);
    w.add_eni("eni-c", None, &[("mirror", "true")]);
    w.add_session("eni-c", 1, None);
    w.add_eni("eni-d", None, &[("mirror", "true")]);
    w
}

/// What a handler does for `payload`, with a fixed clock (the entry points read the clock;
/// `handlers_entry_points_race_safely` below runs those).
async fn handle(ec2: FakeEc2, function: &'static str, payload: Value) -> Result<(), HandlerError> {
    let triggered = events::parse(payload)?;
    let run = MirrorRun::new(function, settings(&[]));
    handlers::run_mirror(&ec2, &handlers::NoStore, &run, &triggered.scope, NOW)
        .await
        .map(drop)
}

/// The four runs of one schedule: three onboard events and one scheduled reconcile.
fn runs(w: &Ec2World, seed: u64, max_sleep_us: u64) -> Vec<(FakeEc2, &'static str, Value)> {
    vec![
        (
            w.chaotic_client("onboard:eni-a", seed, max_sleep_us),
            "onboard-eni",
            eni_event("eni-a"),
        ),
        (
            w.chaotic_client("onboard:i-1", seed.wrapping_mul(3), max_sleep_us),
            "onboard-eni",
            instance_event("i-1"),
        ),
        (
            w.chaotic_client("onboard:eni-c", seed.wrapping_mul(5), max_sleep_us),
            "onboard-eni",
            eni_event("eni-c"),
        ),
        (
            w.chaotic_client("reconcile", seed.wrapping_mul(7) ^ 0xabcdef, max_sleep_us),
            "reconcile-mirrors",
            sample_event("scheduled.json"),
        ),
    ]
}

#[derive(Default, Debug)]
struct Tally {
    schedules: u64,
    /// Schedules in which two or more handlers sent a create for the same ENI.
    raced: u64,
    /// Creates that returned an existing session because of its ClientToken.
    token_replays: u64,
}

/// One create as the world saw it: caller, token, answer (session id or error code).
type CreateSeen = (&'static str, String, Result<String, String>);

/// Every ENI has exactly one owned session with the expected number; every create for the
/// same ENI carried the same token and got the same session id. Returns (raced, replays).
fn check_schedule(w: &Ec2World, seed: u64) -> (bool, u64) {
    for eni in ENIS {
        let owned = w.owned_on(eni);
        assert_eq!(owned.len(), 1, "seed {seed}: {eni} has {owned:?}");
        assert_eq!(owned[0].number, 32766, "seed {seed}: {eni}");
    }
    let mut by_eni: BTreeMap<String, Vec<CreateSeen>> = BTreeMap::new();
    for call in w.calls() {
        if let Call::Create {
            who,
            eni_id,
            token,
            result,
            ..
        } = call
        {
            by_eni.entry(eni_id).or_default().push((who, token, result));
        }
    }
    let mut raced = false;
    let mut replays = 0;
    for (eni, creates) in &by_eni {
        let tokens: BTreeSet<&String> = creates.iter().map(|(_, t, _)| t).collect();
        assert_eq!(
            tokens.len(),
            1,
            "seed {seed}: {eni} tokens differ: {creates:?}"
        );
        let ids: BTreeSet<&Result<String, String>> = creates.iter().map(|(_, _, r)| r).collect();
        assert_eq!(
            ids.len(),
            1,
            "seed {seed}: {eni} answers differ: {creates:?}"
        );
        assert!(creates[0].2.is_ok(), "seed {seed}: {eni}: {creates:?}");
        let callers: BTreeSet<&str> = creates.iter().map(|(who, _, _)| *who).collect();
        if callers.len() > 1 {
            raced = true;
        }
        replays += creates.len() as u64 - 1;
    }
    (raced, replays)
}

async fn steady_state_has_no_writes(w: &Ec2World, seed: u64) {
    let before = w.writes().len();
    handle(
        w.client("reconcile-after"),
        "reconcile-mirrors",
        sample_event("scheduled.json"),
    )
    .await
    .unwrap();
    assert_eq!(w.writes().len(), before, "seed {seed}: not converged");
}

/// Single-threaded runtime: the schedules are exactly reproducible from the seed.
const SCHEDULES_CURRENT_THREAD: u64 = 2_000;
/// Multi-threaded runtime with sleeps up to 300 µs around each call: real parallelism.
const SCHEDULES_MULTI_THREAD: u64 = 300;

#[tokio::test]
async fn onboard_and_reconcile_racing_on_the_same_enis_never_create_two_sessions() {
    let mut tally = Tally::default();
    for seed in 0..SCHEDULES_CURRENT_THREAD {
        let w = world(Ec2World::default());
        let futures = runs(&w, seed, 0)
            .into_iter()
            .map(|(c, f, p)| handle(c, f, p));
        for r in join_vec(futures.collect()).await {
            r.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        let (raced, replays) = check_schedule(&w, seed);
        tally.schedules += 1;
        tally.raced += u64::from(raced);
        tally.token_replays += replays;
        steady_state_has_no_writes(&w, seed).await;
    }
    eprintln!("current-thread schedules: {tally:?}");
    assert!(
        tally.raced >= SCHEDULES_CURRENT_THREAD / 10,
        "too few schedules raced to show anything: {tally:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_on_four_threads_with_sleeps_still_gives_one_session_per_eni() {
    let mut tally = Tally::default();
    for seed in 0..SCHEDULES_MULTI_THREAD {
        let w = world(Ec2World::default());
        let handles: Vec<_> = runs(&w, seed, 300)
            .into_iter()
            .map(|(c, f, p)| tokio::spawn(handle(c, f, p)))
            .collect();
        for h in handles {
            h.await
                .unwrap()
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        let (raced, replays) = check_schedule(&w, seed);
        tally.schedules += 1;
        tally.raced += u64::from(raced);
        tally.token_replays += replays;
        steady_state_has_no_writes(&w, seed).await;
    }
    eprintln!("multi-thread schedules: {tally:?}");
    assert!(tally.raced > 0, "no schedule raced: {tally:?}");
}

/// The real entry points (`handlers::onboard` / `handlers::reconcile`, clock included).
#[tokio::test]
async fn handlers_entry_points_race_safely() {
    for seed in 0..200 {
        let w = world(Ec2World::default());
        let onboard_run = MirrorRun::new("onboard-eni", settings(&[]));
        let reconcile_run = MirrorRun::new("reconcile-mirrors", settings(&[]));
        let a = w.chaotic_client("onboard", seed, 0);
        let b = w.chaotic_client("reconcile", !seed, 0);
        let (ra, rb) = tokio::join!(
            handlers::onboard(&a, &onboard_run, eni_event("eni-a")),
            handlers::reconcile(&b, &reconcile_run, sample_event("scheduled.json")),
        );
        // Across an hour boundary the two tokens differ; the loser's create then clashes on
        // the session number and is reported for that ENI. One session either way, and no
        // error Lambda would retry.
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(
                    matches!(e, HandlerError::Retryable { .. }),
                    "seed {seed}: {e}"
                );
            }
        }
        for eni in ENIS {
            assert_eq!(w.owned_on(eni).len(), 1, "seed {seed}: {eni}");
        }
    }
}

/// Two observations on either side of an hour boundary give different tokens: the number
/// clash (EC2 rejects a session number already used on the ENI) keeps it to one session; the
/// losing run reports the refused create for that ENI (an invalid request, not retried: the
/// ENI has its session), and a later run changes nothing.
#[tokio::test]
async fn across_the_hour_boundary_the_number_clash_keeps_one_session() {
    let mut clashes = 0;
    for seed in 0..500u64 {
        let w = world(Ec2World::default());
        let run = MirrorRun::new("onboard-eni", settings(&[]));
        let reconcile = MirrorRun::new("reconcile-mirrors", settings(&[]));
        let hour = 3600 * (NOW / 3600 + 1);
        let a = w.chaotic_client("onboard", seed, 0);
        let b = w.chaotic_client("reconcile", seed ^ 0x5555, 0);
        let scope = Scope::enis(["eni-a"]);
        let (ra, rb) = tokio::join!(
            handlers::run_mirror(&a, &handlers::NoStore, &run, &scope, hour - 1),
            handlers::run_mirror(&b, &handlers::NoStore, &reconcile, &Scope::All, hour),
        );
        for eni in ENIS {
            assert_eq!(w.owned_on(eni).len(), 1, "seed {seed}: {eni}");
        }
        for r in [ra, rb] {
            let report = r.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            if report.errors.count > 0 {
                let e = &report.errors.items[0];
                assert_eq!(
                    (e.eni_id.as_str(), e.class),
                    ("eni-a", mirror::report::ErrorClass::InvalidRequest),
                    "seed {seed}: {e:?}"
                );
                clashes += 1;
            }
        }
        // Lambda's retry: observes the session, writes nothing.
        let writes = w.writes().len();
        handlers::run_mirror(
            &w.client("retry"),
            &handlers::NoStore,
            &run,
            &scope,
            hour + 5,
        )
        .await
        .unwrap();
        assert_eq!(w.writes().len(), writes, "seed {seed}");
    }
    eprintln!("hour-boundary schedules with a number clash: {clashes}/500");
    assert!(clashes > 0, "the boundary race never happened");
}

/// Negative control: the same schedules against a world that ignores ClientToken and
/// session-number uniqueness (moto) do create duplicates — the token is what closes the
/// race — and the next reconcile deletes the extra sessions (`duplicate`).
#[tokio::test]
async fn without_client_token_the_race_duplicates_and_the_next_reconcile_heals_it() {
    let mut duplicated = 0;
    for seed in 0..SCHEDULES_CURRENT_THREAD {
        let w = world(Ec2World::moto_like());
        let futures = runs(&w, seed, 0)
            .into_iter()
            .map(|(c, f, p)| handle(c, f, p));
        for r in join_vec(futures.collect()).await {
            r.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        if ENIS.iter().any(|e| w.owned_on(e).len() > 1) {
            duplicated += 1;
        }
        handle(
            w.client("heal"),
            "reconcile-mirrors",
            sample_event("scheduled.json"),
        )
        .await
        .unwrap();
        for eni in ENIS {
            assert_eq!(w.owned_on(eni).len(), 1, "seed {seed}: {eni} not healed");
        }
    }
    eprintln!("moto-like schedules with a duplicate: {duplicated}/{SCHEDULES_CURRENT_THREAD}");
    assert!(
        duplicated > 0,
        "the control never duplicated: the schedules do not race"
    );
}

/// The two handlers derive the same token for the same ENI, number, spec and hour, and a
/// different one when any of them differs.
#[test]
fn both_handlers_derive_the_same_token_for_the_same_create() {
    let spec = settings(&[]).spec;
    let t = |eni: &str, n: u32, at: u64| mirror::plan::client_token(eni, &spec, n, at);
    assert_eq!(t("eni-a", 1, NOW), t("eni-a", 1, NOW + 60));
    assert_ne!(t("eni-a", 1, NOW), t("eni-a", 2, NOW));
    assert_ne!(t("eni-a", 1, NOW), t("eni-b", 1, NOW));
    assert_ne!(t("eni-a", 1, NOW), t("eni-a", 1, NOW + 3600));
}

/// `join_all` without the futures crate: poll every future to completion concurrently on
/// the current task.
async fn join_vec<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
