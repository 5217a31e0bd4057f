//! reconcile-mirrors as a binary behind the Lambda Runtime API (`cargo lambda watch`), invoked
//! with `events/scheduled.json`, checked in moto.

use std::path::Path;

use mirror_testkit::sdk::ec2::types::TrafficMirrorSession;
use mirror_testkit::{ENI_TAG, Harness, INSTANCE_TAG, Seed, VNI, is_owned, sample_event};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_reconcile-mirrors");

fn count(report: &Value, list: &str) -> u64 {
    report[list]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("report has no {list}.count: {report}"))
}

async fn owned_on(seed: &Seed, eni: &str) -> Vec<TrafficMirrorSession> {
    seed.sessions_on(eni)
        .await
        .into_iter()
        .filter(is_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_reconcile_gives_every_wanted_eni_one_session_and_leaves_unowned_ones_alone() {
    let Some(h) = Harness::start("reconcile") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &seed.mirror_env(&[]));

    let a = seed.eni(0, &[ENI_TAG]).await;
    let b = seed.eni(1, &[ENI_TAG]).await;
    let (_, instance_eni) = seed.instance(&[INSTANCE_TAG]).await;
    let (_, plain_instance_eni) = seed.instance(&[("team", "x")]).await;
    let excluded = seed
        .eni(0, &[ENI_TAG, ("mirrorfleet:exclude", "true")])
        .await;
    let untagged = seed.eni(1, &[]).await;
    // Someone else's sessions: one on an untagged ENI, one (number 1) on a tagged ENI.
    let foreign_untagged = seed.foreign_session(&untagged, 1, None).await;
    let foreign_on_b = seed.foreign_session(&b, 1, Some("another-team")).await;

    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(count(&r, "created"), 3, "{r}");
    assert_eq!(count(&r, "errors"), 0, "{r}");
    for eni in [&a, &b, &instance_eni] {
        let owned = owned_on(&seed, eni).await;
        assert_eq!(owned.len(), 1, "{eni}: {owned:?}");
        assert_eq!(owned[0].virtual_network_id(), Some(VNI as i32));
    }
    // Our session on b took the lowest free number next to the foreign one.
    assert_eq!(owned_on(&seed, &b).await[0].session_number(), Some(2));
    assert!(seed.sessions_on(&excluded).await.is_empty());
    assert!(seed.sessions_on(&plain_instance_eni).await.is_empty());
    let u = seed.sessions_on(&untagged).await;
    assert_eq!(u.len(), 1);
    assert_eq!(
        u[0].traffic_mirror_session_id(),
        Some(foreign_untagged.as_str())
    );
    assert_eq!(
        u[0].virtual_network_id(),
        Some(99),
        "an unowned session is never modified"
    );

    // Level-triggered: a second run finds nothing to do.
    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(
        (
            count(&r, "created"),
            count(&r, "deleted"),
            count(&r, "modified")
        ),
        (0, 0, 0),
        "{r}"
    );
    assert_eq!(count(&r, "unchanged"), 3, "{r}");
    let all = seed.all_sessions().await;
    assert_eq!(all.len(), 5);
    assert!(
        all.iter()
            .any(|s| s.traffic_mirror_session_id() == Some(foreign_on_b.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_removing_the_tag_deletes_the_session_and_a_drifted_vni_is_modified_back() {
    let Some(h) = Harness::start("reconcile-drift") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &seed.mirror_env(&[]));
    let a = seed.eni(0, &[ENI_TAG]).await;
    let b = seed.eni(1, &[ENI_TAG]).await;
    let untagged = seed.eni(1, &[]).await;
    let foreign = seed.foreign_session(&untagged, 1, None).await;
    h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    let on_b = owned_on(&seed, &b).await;
    assert_eq!(on_b.len(), 1);

    seed.remove_tag(&a, ENI_TAG.0).await;
    seed.set_session_vni(on_b[0].traffic_mirror_session_id().unwrap(), 7)
        .await;
    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(count(&r, "deleted"), 1, "{r}");
    assert_eq!(
        r["deleted"]["items"][0]["reason"]["unwanted"]["because"], "not_selected",
        "{r}"
    );
    assert_eq!(count(&r, "modified"), 1, "{r}");
    assert_eq!(r["modified"]["items"][0]["fields"][0], "vni", "{r}");
    assert!(seed.sessions_on(&a).await.is_empty());
    let now_b = owned_on(&seed, &b).await;
    assert_eq!(now_b.len(), 1);
    assert_eq!(
        now_b[0].traffic_mirror_session_id(),
        on_b[0].traffic_mirror_session_id(),
        "modified in place, not recreated"
    );
    assert_eq!(now_b[0].virtual_network_id(), Some(VNI as i32));
    let u = seed.sessions_on(&untagged).await;
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].traffic_mirror_session_id(), Some(foreign.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_dry_run_reports_the_plan_without_acting() {
    let Some(h) = Harness::start("reconcile-dry") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &seed.mirror_env(&[("DRY_RUN", "true")]));
    for subnet in 0..3 {
        seed.eni(subnet, &[ENI_TAG]).await;
    }
    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(count(&r, "created"), 3, "{r}");
    assert!(seed.all_sessions().await.is_empty());
}
