//! teardown as a binary behind the Lambda Runtime API (`cargo lambda watch`), invoked with the
//! CloudFormation custom resource requests of `events/` (their ResponseURL pointed at a local
//! server standing in for the presigned S3 URL), checked in moto with the test kit's documented
//! AWS behaviours — among them, that a target or filter in use by a session cannot be deleted.

use std::path::Path;
use std::time::{Duration, Instant};

use mirror::settings::TeardownSettings;
use mirror_aws::custom_resource::{Status, put_response};
use mirror_aws::handlers::{self, MirrorRun};
use mirror_aws::teardown::{Teardown, parse_request};
use mirror_aws::{SdkEc2, SdkStore};
use mirror_testkit::sdk::ec2::error::ProvideErrorMetadata;
use mirror_testkit::settings::{BUCKET, OBJECTS};
use mirror_testkit::{ENI_TAG, Harness, OWNER, ResponseUrl, Seed, is_owned, sample_event};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_teardown");

fn request(kind: &str, response_url: &str) -> Value {
    let mut v = sample_event(&format!("cloudformation-{kind}.json"));
    v["ResponseURL"] = response_url.into();
    v
}

fn objects(seed: &Seed) -> Vec<(String, String)> {
    seed.mirror_env(&OBJECTS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_stack_delete_removes_our_sessions_and_objects_so_the_target_filter_and_bucket_go() {
    let Some(h) = Harness::start("teardown") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let s3 = h.moto.s3();
    seed.bucket(&s3, BUCKET).await;
    // The stack at work: reconcile-mirrors created sessions and published the source map
    // (twice, so that the bucket holds versions).
    let enis = [seed.eni(0, &[ENI_TAG]).await, seed.eni(1, &[ENI_TAG]).await];
    let env = objects(&seed);
    let settings = mirror::settings::ReconcileSettings::from_env(&|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    let (ec2, store) = (SdkEc2::new(h.moto.ec2()), SdkStore::new(h.moto.s3()));
    let run = MirrorRun::reconcile(settings);
    handlers::reconcile_with(&ec2, &store, &run, sample_event("scheduled.json"))
        .await
        .unwrap();
    seed.add_tag(&enis[1], "app", "shop").await;
    let mut run = run;
    run.publish.source_tags = vec!["app".into()];
    handlers::reconcile_with(&ec2, &store, &run, sample_event("scheduled.json"))
        .await
        .unwrap();
    assert_eq!(
        seed.object(&s3, BUCKET, "sources.json")
            .await
            .map(|(_, v)| v),
        Some(2)
    );
    let owned = || async {
        seed.all_sessions()
            .await
            .into_iter()
            .filter(is_owned)
            .count()
    };
    assert_eq!(owned().await, 2);
    assert!(seed.object(&s3, BUCKET, "sources.json").await.is_some());
    // Another tool's session on one of the ENIs, to another target: never ours to delete.
    let untouched = seed
        .foreign_session(&enis[0], 1, Some("someone-else"))
        .await;
    // As on AWS, the target and filter cannot be deleted while our sessions use them.
    let delete_target = seed
        .ec2
        .delete_traffic_mirror_target()
        .traffic_mirror_target_id(&seed.target_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        delete_target.as_service_error().and_then(|e| e.code()),
        Some("TrafficMirrorTargetInUseException")
    );

    let f = h.function(Path::new(BIN), &objects(&seed));
    // Create and Update: nothing to do, SUCCESS at once.
    for kind in ["create", "update"] {
        let catcher = ResponseUrl::start();
        let r = h.invoke(&f, &request(kind, &catcher.url)).await.unwrap();
        assert_eq!(r["Status"], "SUCCESS", "{kind}: {r}");
        let put = catcher.caught(Duration::from_secs(30)).expect("a response");
        assert_eq!(put.json()["Status"], "SUCCESS");
        assert_eq!(owned().await, 2, "{kind} removes nothing");
    }

    // Delete.
    let catcher = ResponseUrl::start();
    let r = h
        .invoke(&f, &request("delete", &catcher.url))
        .await
        .unwrap();
    assert_eq!(r["Status"], "SUCCESS", "{r}");
    let put = catcher.caught(Duration::from_secs(30)).expect("a response");
    assert_eq!(put.method, "PUT");
    assert_eq!(
        put.header("content-type"),
        Some(""),
        "signed without a content type"
    );
    assert!(
        put.target.contains("X-Amz-Signature=test"),
        "{}",
        put.target
    );
    let body = put.json();
    let want = sample_event("cloudformation-delete.json");
    for field in [
        "StackId",
        "RequestId",
        "LogicalResourceId",
        "PhysicalResourceId",
    ] {
        assert_eq!(body[field], want[field], "{field} copied from the request");
    }
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(body["Data"]["SessionsDeleted"], "2", "{body}");
    assert_eq!(owned().await, 0);
    let left: Vec<String> = seed
        .all_sessions()
        .await
        .iter()
        .filter_map(|s| s.traffic_mirror_session_id().map(str::to_owned))
        .collect();
    assert_eq!(left, vec![untouched.clone()]);

    // What CloudFormation does next succeeds: the bucket (versions and all) and, once the
    // other tool removes its own session, the target and filter.
    assert!(seed.object(&s3, BUCKET, "sources.json").await.is_none());
    s3.delete_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("an empty bucket is deleted");
    seed.ec2
        .delete_traffic_mirror_session()
        .traffic_mirror_session_id(&untouched)
        .send()
        .await
        .unwrap();
    seed.ec2
        .delete_traffic_mirror_target()
        .traffic_mirror_target_id(&seed.target_id)
        .send()
        .await
        .expect("the target is free");
    seed.ec2
        .delete_traffic_mirror_filter()
        .traffic_mirror_filter_id(&seed.filter_id)
        .send()
        .await
        .expect("the filter is free");
}

/// A teardown that cannot finish in time answers FAILED with the reason, and does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_a_teardown_out_of_time_reports_failed_with_the_reason() {
    let Some(h) = Harness::start("teardown-failed") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let eni = seed.eni(0, &[ENI_TAG]).await;
    seed.foreign_session(&eni, 1, Some(OWNER)).await;
    let env = objects(&seed);
    let settings =
        TeardownSettings::from_env(&|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .unwrap();
    let teardown = Teardown {
        settings,
        settle: Duration::ZERO,
    };
    let catcher = ResponseUrl::start();
    let req = parse_request(request("delete", &catcher.url)).unwrap();
    let started = Instant::now();
    // The invocation's deadline has already passed.
    let response = teardown
        .respond(
            &SdkEc2::new(h.moto.ec2()),
            &SdkStore::new(h.moto.s3()),
            &req,
            Instant::now(),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(response.status, Status::Failed);
    let reason = response.reason.clone().unwrap();
    assert!(reason.contains("still use target"), "{reason}");
    put_response(&catcher.url, response.body()).await.unwrap();
    let put = catcher.caught(Duration::from_secs(30)).unwrap();
    assert_eq!(put.json()["Status"], "FAILED");
    assert_eq!(put.json()["Reason"], reason.as_str());
}
