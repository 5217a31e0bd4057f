//! reconcile-mirrors as a binary behind the Lambda Runtime API (`cargo lambda watch`), invoked
//! with `events/scheduled.json`, checked in moto (with the test kit's documented AWS
//! behaviours: the NLB target's default packet length, unsupported instance types, ...).

use std::collections::BTreeMap;
use std::path::Path;

use mirror_testkit::sdk::ec2::types::{InstanceType, TrafficMirrorSession};
use mirror_testkit::settings::{BUCKET, OBJECTS};
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
    // Our sessions take the highest free number: the foreign one on b keeps its traffic, and
    // is reported as shadowing ours.
    assert_eq!(owned_on(&seed, &b).await[0].session_number(), Some(32766));
    assert_eq!(count(&r, "shadowed"), 1, "{r}");
    assert_eq!(
        r["shadowed"]["items"][0]["by_session_id"],
        foreign_on_b.as_str(),
        "{r}"
    );
    // AWS fills in 8500 for a session to an NLB target created without a packet length.
    assert_eq!(owned_on(&seed, &a).await[0].packet_length(), Some(8500));
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

    // Level-triggered: a second run finds nothing to do — the 8500 AWS described is what
    // "whole packets" means on an NLB target, not drift.
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

/// The settings of reconcile-mirrors with its S3 objects in [`BUCKET`].
fn publishing_env(seed: &Seed) -> Vec<(String, String)> {
    seed.mirror_env(&[OBJECTS[0], OBJECTS[1], ("MIRROR_SOURCE_TAGS", "app,Name")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_an_eni_aws_refuses_is_reported_once_then_skipped_until_it_changes() {
    let Some(h) = Harness::start("reconcile-refused") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let s3 = h.moto.s3();
    seed.bucket(&s3, BUCKET).await;
    let f = h.function(Path::new(BIN), &publishing_env(&seed));
    // Traffic Mirroring is not available on M6i (the test AWS refuses it as AWS documents).
    let (_, refused) = seed
        .instance_of_type(InstanceType::M6iLarge, &[INSTANCE_TAG])
        .await;
    let ok = seed.eni(0, &[ENI_TAG]).await;

    let r = h
        .invoke(&f, &sample_event("scheduled.json"))
        .await
        .expect("not retryable");
    assert_eq!(count(&r, "created"), 1, "{r}");
    assert_eq!(r["errors_by_class"]["unsupported_source"], 1, "{r}");
    assert_eq!(owned_on(&seed, &ok).await.len(), 1);
    for _ in 0..2 {
        let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
        assert_eq!(count(&r, "errors"), 0, "not sent again: {r}");
        assert_eq!(count(&r, "refused"), 1, "{r}");
        assert_eq!(r["refused"]["items"][0]["eni_id"], refused.as_str(), "{r}");
        assert_eq!(
            r["refused"]["items"][0]["code"], "NetworkInterfaceNotSupported",
            "{r}"
        );
    }
    let (memory, _) = seed
        .object(&s3, BUCKET, "state/refusals.json")
        .await
        .expect("the refusals are kept in S3");
    let memory: Value = serde_json::from_slice(&memory).unwrap();
    assert_eq!(memory["enis"][&refused]["class"], "unsupported_source");
    // A change of the ENI (a tag) makes it worth one more try.
    seed.add_tag(&refused, "retry", "1").await;
    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(
        r["errors_by_class"]["unsupported_source"], 1,
        "tried again: {r}"
    );
}

/// The map's sources by ENI: (session, sender ip, vni).
fn sources(map: &Value) -> BTreeMap<String, (String, String, u64)> {
    map["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["eni"].as_str().unwrap().to_owned(),
                (
                    s["session"].as_str().unwrap().to_owned(),
                    s["sender_ip"].as_str().unwrap().to_owned(),
                    s["vni"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Our sessions in moto by ENI: (session, the ENI's primary address, vni).
async fn expected(seed: &Seed) -> BTreeMap<String, (String, String, u64)> {
    let mut out = BTreeMap::new();
    for s in seed.all_sessions().await.iter().filter(|s| is_owned(s)) {
        let eni = s.network_interface_id().unwrap().to_owned();
        let ip = seed
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(&eni)
            .send()
            .await
            .unwrap()
            .network_interfaces()[0]
            .private_ip_address()
            .unwrap()
            .to_owned();
        out.insert(
            eni,
            (
                s.traffic_mirror_session_id().unwrap().to_owned(),
                ip,
                s.virtual_network_id().unwrap() as u64,
            ),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_the_published_source_map_matches_the_sessions_as_they_are_created_deleted_and_retagged()
 {
    let Some(h) = Harness::start("reconcile-sources") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let s3 = h.moto.s3();
    seed.bucket(&s3, BUCKET).await;
    let f = h.function(Path::new(BIN), &publishing_env(&seed));
    let a = seed.eni(0, &[ENI_TAG, ("app", "shop")]).await;
    let b = seed.eni(1, &[ENI_TAG]).await;
    let (instance, on_instance) = seed
        .instance(&[INSTANCE_TAG, ("Name", "web-1"), ("app", "api")])
        .await;
    let untagged = seed.eni(1, &[]).await;
    seed.foreign_session(&untagged, 1, None).await;
    let map_now = || async {
        let (body, versions) = seed
            .object(&s3, BUCKET, "sources.json")
            .await
            .expect("the source map is published");
        (serde_json::from_slice::<Value>(&body).unwrap(), versions)
    };

    // Created.
    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(r["source_map"]["written"], true, "{r}");
    let (map, versions) = map_now().await;
    assert_eq!((map["version"].as_u64(), versions), (Some(1), 1));
    assert_eq!(sources(&map), expected(&seed).await);
    assert_eq!(sources(&map).len(), 3, "our sessions only");
    let by_eni = |map: &Value, eni: &str| -> Value {
        map["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["eni"] == eni)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let on = by_eni(&map, &on_instance);
    assert_eq!(on["instance"]["id"], instance.as_str());
    assert_eq!(on["instance"]["name"], "web-1");
    assert_eq!(on["tags"]["app"], "api");
    assert_eq!(by_eni(&map, &a)["tags"]["app"], "shop");
    assert_eq!(by_eni(&map, &a)["vpc"], seed.vpc_id.as_str());
    assert_eq!(on["vni"], VNI);

    // Nothing changed: not written again.
    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!(r["source_map"]["written"], false, "{r}");
    assert_eq!(map_now().await.1, 1);

    // Deleted: b loses its tag, its session goes, and so does its source.
    seed.remove_tag(&b, ENI_TAG.0).await;
    h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    let (map, versions) = map_now().await;
    assert_eq!(versions, 2);
    assert_eq!(sources(&map), expected(&seed).await);
    assert!(by_eni(&map, &b).is_null());

    // Retagged: the instance's name changes, the session does not; the map follows.
    seed.add_tag(&instance, "Name", "web-1-renamed").await;
    let r = h.invoke(&f, &sample_event("scheduled.json")).await.unwrap();
    assert_eq!((count(&r, "created"), count(&r, "deleted")), (0, 0), "{r}");
    let (map, versions) = map_now().await;
    assert_eq!(versions, 3);
    assert_eq!(
        by_eni(&map, &on_instance)["instance"]["name"],
        "web-1-renamed"
    );
    assert_eq!(sources(&map), expected(&seed).await);
}
