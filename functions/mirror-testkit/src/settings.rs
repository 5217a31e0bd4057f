//! The settings the tests give the functions: one owner, one VNI, one tag per selection path.

use mirror::settings::{MirrorSettings, ReconcileSettings, SettingsError};

pub const REGION: &str = "us-east-1";
/// Our sessions carry `mirrorfleet:owner=<OWNER>`.
pub const OWNER: &str = "itest";
pub const VNI: u32 = 4242;
/// ENIs with this tag are mirrored (`MIRROR_ENI_FILTERS`).
pub const ENI_TAG: (&str, &str) = ("mirror", "true");
/// Instances with this tag have all their ENIs mirrored (`MIRROR_INSTANCE_FILTERS`).
pub const INSTANCE_TAG: (&str, &str) = ("mirror-instance", "true");
/// The mirror target and filter ids of the fake EC2 (moto tests use the seeded ones).
pub const TARGET: &str = "tmt-target";
pub const FILTER: &str = "tmf-filter";

/// The settings of onboard-eni / reconcile-mirrors for this target and filter, with `extra`
/// added or replacing.
pub fn mirror_env(
    target_id: &str,
    filter_id: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("MIRROR_TARGET_ID".into(), target_id.into()),
        ("MIRROR_FILTER_ID".into(), filter_id.into()),
        ("MIRROR_VNI".into(), VNI.to_string()),
        ("MIRROR_OWNER".into(), OWNER.into()),
        (
            "MIRROR_ENI_FILTERS".into(),
            format!("Name=tag:{},Values={}", ENI_TAG.0, ENI_TAG.1),
        ),
        (
            "MIRROR_INSTANCE_FILTERS".into(),
            format!(
                "Name=tag:{},Values={} Name=instance-state-name,Values=running",
                INSTANCE_TAG.0, INSTANCE_TAG.1
            ),
        ),
    ];
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

/// [`mirror_env`] parsed, for handlers run in-process.
pub fn mirror_settings(target_id: &str, filter_id: &str, extra: &[(&str, &str)]) -> MirrorSettings {
    parse(&mirror_env(target_id, filter_id, extra)).expect("valid test settings")
}

/// reconcile-mirrors' settings for this target and filter with `extra` (e.g. the S3 URIs).
pub fn reconcile_settings(
    target_id: &str,
    filter_id: &str,
    extra: &[(&str, &str)],
) -> ReconcileSettings {
    let env = mirror_env(target_id, filter_id, extra);
    ReconcileSettings::from_env(&|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .expect("valid test settings")
}

/// The stack's bucket in the tests, and where the source map and the refusals go in it.
pub const BUCKET: &str = "mirrorfleet-test";
pub const SOURCES_URI: &str = "s3://mirrorfleet-test/sources.json";
pub const REFUSALS_URI: &str = "s3://mirrorfleet-test/state/refusals.json";
/// The settings naming those two objects (reconcile-mirrors, teardown).
pub const OBJECTS: [(&str, &str); 2] = [
    ("MIRROR_SOURCES_S3_URI", SOURCES_URI),
    ("MIRROR_REFUSALS_S3_URI", REFUSALS_URI),
];

/// [`mirror_settings`] for the fake EC2's target and filter.
pub fn settings(extra: &[(&str, &str)]) -> MirrorSettings {
    mirror_settings(TARGET, FILTER, extra)
}

/// The fake EC2's settings with `extra`, which may be invalid.
pub fn try_settings(extra: &[(&str, &str)]) -> Result<MirrorSettings, SettingsError> {
    parse(&mirror_env(TARGET, FILTER, extra))
}

fn parse(env: &[(String, String)]) -> Result<MirrorSettings, SettingsError> {
    MirrorSettings::from_env(&|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
}
