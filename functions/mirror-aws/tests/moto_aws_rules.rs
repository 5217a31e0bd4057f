//! The test AWS behaves like AWS where the control plane depends on it: each documented
//! behaviour the test kit's moto layer (`functions/mirror-testkit/moto_aws.py`) adds, checked
//! through the Rust SDK against a running server. Without the layer (a bare moto) every one of
//! these fails, and so would the control-plane tests that rely on them.

use aws_sdk_ec2::types::{InstanceType, TrafficMirrorSessionField};
use mirror_testkit::sdk::cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use mirror_testkit::{Harness, Moto, Seed, scratch, tools};

type Ec2Error = aws_sdk_ec2::error::SdkError<
    aws_sdk_ec2::operation::create_traffic_mirror_session::CreateTrafficMirrorSessionError,
>;

fn code<E: aws_smithy_types::error::metadata::ProvideErrorMetadata, R>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("not a service error")
        .to_owned()
}

async fn start() -> Option<(Moto, Seed, mirror_testkit::TempDir)> {
    let tools = tools()?;
    let dir = scratch("moto-rules");
    let moto = Moto::start(&tools, &dir);
    let seed = Seed::create(&moto).await;
    Some((moto, seed, dir))
}

async fn create(
    seed: &Seed,
    eni: &str,
    number: i32,
    token: Option<&str>,
) -> Result<String, Ec2Error> {
    seed.ec2
        .create_traffic_mirror_session()
        .network_interface_id(eni)
        .traffic_mirror_target_id(&seed.target_id)
        .traffic_mirror_filter_id(&seed.filter_id)
        .session_number(number)
        .virtual_network_id(7)
        .set_client_token(token.map(str::to_owned))
        .send()
        .await
        .map(|o| {
            o.traffic_mirror_session()
                .and_then(|s| s.traffic_mirror_session_id())
                .unwrap_or_default()
                .to_owned()
        })
}

async fn packet_length(seed: &Seed, eni: String) -> Option<i32> {
    seed.sessions_on(&eni).await[0].packet_length()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_rules_an_nlb_target_describes_a_session_without_packet_length_with_8500() {
    let Some((_moto, seed, _dir)) = start().await else {
        return;
    };
    let eni = seed.eni(0, &[]).await;
    let id = create(&seed, &eni, 1, None).await.unwrap();
    assert_eq!(packet_length(&seed, eni.clone()).await, Some(8500));
    seed.ec2
        .modify_traffic_mirror_session()
        .traffic_mirror_session_id(&id)
        .packet_length(100)
        .send()
        .await
        .unwrap();
    assert_eq!(packet_length(&seed, eni.clone()).await, Some(100));
    seed.ec2
        .modify_traffic_mirror_session()
        .traffic_mirror_session_id(&id)
        .remove_fields(TrafficMirrorSessionField::PacketLength)
        .send()
        .await
        .unwrap();
    assert_eq!(
        packet_length(&seed, eni).await,
        Some(8500),
        "removed = set to the default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_rules_sessions_are_limited_unique_idempotent_and_need_an_existing_eni() {
    let Some((_moto, seed, _dir)) = start().await else {
        return;
    };
    let eni = seed.eni(0, &[]).await;
    let first = create(&seed, &eni, 1, Some("token-1")).await.unwrap();
    assert_eq!(
        create(&seed, &eni, 1, Some("token-1")).await.unwrap(),
        first,
        "the same token and parameters: the first session again"
    );
    let e = create(&seed, &eni, 2, Some("token-1")).await.unwrap_err();
    assert_eq!(code(&e), "IdempotentParameterMismatch");
    let e = create(&seed, &eni, 1, Some("token-2")).await.unwrap_err();
    assert_eq!(code(&e), "InvalidParameterValue", "number 1 is taken");
    create(&seed, &eni, 2, None).await.unwrap();
    create(&seed, &eni, 3, None).await.unwrap();
    let e = create(&seed, &eni, 4, None).await.unwrap_err();
    assert_eq!(code(&e), "TrafficMirrorSessionsPerInterfaceLimitExceeded");
    let e = create(&seed, "eni-0000000000000dead", 1, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidNetworkInterfaceID.NotFound");
    let e = seed
        .ec2
        .delete_traffic_mirror_session()
        .traffic_mirror_session_id("tms-0000000000000dead")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidTrafficMirrorSessionId.NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_rules_a_target_or_filter_in_use_cannot_be_deleted() {
    let Some((_moto, seed, _dir)) = start().await else {
        return;
    };
    let eni = seed.eni(0, &[]).await;
    let id = create(&seed, &eni, 1, None).await.unwrap();
    let delete_target = || {
        seed.ec2
            .delete_traffic_mirror_target()
            .traffic_mirror_target_id(&seed.target_id)
            .send()
    };
    let delete_filter = || {
        seed.ec2
            .delete_traffic_mirror_filter()
            .traffic_mirror_filter_id(&seed.filter_id)
            .send()
    };
    assert_eq!(
        code(&delete_target().await.unwrap_err()),
        "TrafficMirrorTargetInUseException"
    );
    assert_eq!(
        code(&delete_filter().await.unwrap_err()),
        "TrafficMirrorFilterInUse"
    );
    seed.ec2
        .delete_traffic_mirror_session()
        .traffic_mirror_session_id(&id)
        .send()
        .await
        .unwrap();
    delete_target().await.unwrap();
    delete_filter().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_rules_an_instance_type_without_traffic_mirroring_is_refused() {
    let Some((_moto, seed, _dir)) = start().await else {
        return;
    };
    let (_, eni) = seed.instance_of_type(InstanceType::M6iLarge, &[]).await;
    let e = create(&seed, &eni, 1, None).await.unwrap_err();
    assert_eq!(code(&e), "NetworkInterfaceNotSupported");
    let (_, eni) = seed.instance_of_type(InstanceType::M5Large, &[]).await;
    create(&seed, &eni, 1, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_rules_cloudwatch_answers_the_rust_sdk_in_its_cbor_protocol() {
    let Some(h) = Harness::start("moto-rules-cw") else {
        return;
    };
    let cw = h.moto.cloudwatch();
    let seed = Seed::create(&h.moto).await;
    seed.put_fleet_metric(
        &cw,
        "mirrorfleet/test",
        "g",
        "DatagramsReceived",
        2,
        600_000.0,
    )
    .await;
    let now = aws_smithy_types::DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let out = cw
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("d")
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace("mirrorfleet/test")
                                .metric_name("DatagramsReceived")
                                .dimensions(
                                    Dimension::builder()
                                        .name("AutoScalingGroupName")
                                        .value("g")
                                        .build(),
                                )
                                .build(),
                        )
                        .period(60)
                        .stat("Sum")
                        .build(),
                )
                .build(),
        )
        .start_time(aws_smithy_types::DateTime::from_secs(now.secs() - 600))
        .end_time(now)
        .send()
        .await
        .unwrap();
    let r = &out.metric_data_results()[0];
    assert_eq!(r.values(), [600_000.0]);
    assert_eq!(r.timestamps().len(), 1);
    // An error comes back as a CBOR error document the SDK reads.
    let e = cw
        .get_metric_data()
        .metric_data_queries(MetricDataQuery::builder().id("d").expression("1").build())
        .start_time(now)
        .end_time(now)
        .send()
        .await
        .unwrap_err();
    // The JSON and CBOR protocols name it `ValidationException` (the query protocol,
    // `ValidationError`).
    assert_eq!(code(&e), "ValidationException", "{e:?}");
}
