//! The onboard-eni binary (behind `cargo lambda watch`) refuses an event for another region
//! or account before any API call: the tagged ENI it names gets no session, and the same
//! event from the function's own account and region is then handled.

use std::path::Path;

use mirror_testkit::{ENI_TAG, Harness, Seed, event_for, is_owned};

const BIN: &str = env!("CARGO_BIN_EXE_onboard-eni");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_an_event_for_another_region_or_account_is_refused_by_the_binary() {
    let Some(h) = Harness::start("foreign") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &seed.mirror_env(&[]));
    let eni = seed.eni(0, &[ENI_TAG]).await;
    let home = event_for("tag-change-eni.json", Some(&eni), None);

    // The region comes from the SDK configuration (AWS_REGION=us-east-1 here).
    let mut elsewhere = home.clone();
    elsewhere["region"] = "eu-west-1".into();
    let err = h.invoke(&f, &elsewhere).await.unwrap_err();
    assert!(err.contains("foreign_event"), "{err}");
    assert!(err.contains("eu-west-1"), "{err}");
    assert!(seed.sessions_on(&eni).await.is_empty());

    let report = h.invoke(&f, &home).await.unwrap();
    assert_eq!(report["created"]["count"].as_u64(), Some(1), "{report}");
    let owned = seed
        .sessions_on(&eni)
        .await
        .into_iter()
        .filter(is_owned)
        .count();
    assert_eq!(owned, 1);

    // The account comes from the invoked function ARN. On Lambda it always names one; the
    // local Runtime API may send none, and then only the region is checked (the function
    // logs `home_account: unchecked`).
    let other = seed.eni(1, &[ENI_TAG]).await;
    let mut other_account = event_for("tag-change-eni.json", Some(&other), None);
    other_account["account"] = "000000000000".into();
    match h.invoke(&f, &other_account).await {
        Err(err) => {
            assert!(err.contains("foreign_event"), "{err}");
            assert!(err.contains("000000000000"), "{err}");
            assert!(seed.sessions_on(&other).await.is_empty());
        }
        Ok(report) => {
            let log = f.log_text();
            assert!(
                log.contains("\"home_account\":\"unchecked\""),
                "handled although the account is known: {report}\n{log}"
            );
            eprintln!("the local Runtime API sends no function ARN account: region checked only");
        }
    }
}
