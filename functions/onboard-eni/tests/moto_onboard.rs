//! onboard-eni as a binary behind the Lambda Runtime API (`cargo lambda watch`), invoked with
//! the sample events from `events/` (ids replaced by the ones seeded in moto), checked in moto.

use std::path::Path;

use mirror_testkit::{ENI_TAG, Harness, INSTANCE_TAG, Seed, VNI, event_for, is_owned};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_onboard-eni");

fn count(report: &Value, list: &str) -> u64 {
    report[list]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("report has no {list}.count: {report}"))
}

async fn assert_one_owned_session(seed: &Seed, eni: &str, what: &str) {
    let sessions = seed.sessions_on(eni).await;
    let owned: Vec<_> = sessions.iter().filter(|s| is_owned(s)).collect();
    assert_eq!(owned.len(), 1, "{what}: {eni} has {sessions:?}");
    let s = owned[0];
    assert_eq!(
        s.traffic_mirror_target_id(),
        Some(seed.target_id.as_str()),
        "{what}"
    );
    assert_eq!(
        s.traffic_mirror_filter_id(),
        Some(seed.filter_id.as_str()),
        "{what}"
    );
    assert_eq!(s.virtual_network_id(), Some(VNI as i32), "{what}");
    // Created without a packet length: AWS describes the NLB target's default.
    assert_eq!(s.packet_length(), Some(8500), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_every_trigger_gives_its_wanted_enis_exactly_one_owned_session() {
    let Some(h) = Harness::start("onboard") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &seed.mirror_env(&[]));

    // CloudTrail CreateNetworkInterface for a tagged ENI.
    let created = seed.eni(0, &[ENI_TAG]).await;
    let r = h
        .invoke(
            &f,
            &event_for(
                "cloudtrail-create-network-interface.json",
                Some(&created),
                None,
            ),
        )
        .await
        .unwrap();
    assert_eq!(count(&r, "created"), 1, "{r}");
    assert_one_owned_session(&seed, &created, "create-network-interface").await;

    // Tag change on an ENI.
    let tagged = seed.eni(1, &[ENI_TAG]).await;
    let r = h
        .invoke(&f, &event_for("tag-change-eni.json", Some(&tagged), None))
        .await
        .unwrap();
    assert_eq!(count(&r, "created"), 1, "{r}");
    assert_one_owned_session(&seed, &tagged, "tag-change-eni").await;

    // An instance with the instance tag starts running.
    let (running, running_eni) = seed.instance(&[INSTANCE_TAG]).await;
    let r = h
        .invoke(
            &f,
            &event_for("instance-running.json", None, Some(&running)),
        )
        .await
        .unwrap();
    assert_eq!(count(&r, "created"), 1, "{r}");
    assert_one_owned_session(&seed, &running_eni, "instance-running").await;

    // Tag change on an instance.
    let (retagged, retagged_eni) = seed.instance(&[INSTANCE_TAG]).await;
    let r = h
        .invoke(
            &f,
            &event_for("tag-change-instance.json", None, Some(&retagged)),
        )
        .await
        .unwrap();
    assert_eq!(count(&r, "created"), 1, "{r}");
    assert_one_owned_session(&seed, &retagged_eni, "tag-change-instance").await;

    // An untagged ENI attached to a tagged instance: wanted through its instance.
    let attached = seed.eni(0, &[]).await;
    seed.attach(&attached, &retagged, 1).await;
    let r = h
        .invoke(
            &f,
            &event_for(
                "cloudtrail-attach-network-interface.json",
                Some(&attached),
                Some(&retagged),
            ),
        )
        .await
        .unwrap();
    assert_eq!(count(&r, "created"), 1, "{r}");
    assert_one_owned_session(&seed, &attached, "attach-network-interface").await;

    // An untagged ENI is skipped with a reason, and nothing else changed.
    let untagged = seed.eni(0, &[("team", "x")]).await;
    let r = h
        .invoke(&f, &event_for("tag-change-eni.json", Some(&untagged), None))
        .await
        .unwrap();
    assert_eq!(count(&r, "created"), 0, "{r}");
    assert_eq!(r["skipped_by_reason"]["not_selected"], 1, "{r}");
    assert!(seed.sessions_on(&untagged).await.is_empty());
    assert_eq!(seed.all_sessions().await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_the_same_event_delivered_ten_times_still_gives_one_session() {
    let Some(h) = Harness::start("onboard-repeat") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &seed.mirror_env(&[]));
    let eni = seed.eni(0, &[ENI_TAG]).await;
    let event = event_for("tag-change-eni.json", Some(&eni), None);
    let mut created = 0;
    for _ in 0..10 {
        let r = h.invoke(&f, &event).await.unwrap();
        created += count(&r, "created");
    }
    assert_eq!(created, 1);
    assert_one_owned_session(&seed, &eni, "ten deliveries").await;
    assert_eq!(seed.all_sessions().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_a_bad_event_fails_the_invocation_with_a_typed_error() {
    let Some(h) = Harness::start("onboard-bad") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &seed.mirror_env(&[]));
    let mut event = event_for("cloudtrail-attach-network-interface.json", None, None);
    event["detail"]["eventName"] = "DetachNetworkInterface".into();
    let err = h.invoke(&f, &event).await.unwrap_err();
    assert!(err.contains("DetachNetworkInterface"), "{err}");
    assert!(seed.all_sessions().await.is_empty());
}
