//! The IAM actions of `mirror::permissions` against the calls the adapters really make.
//!
//! The template test checks that each function's role allows exactly the actions listed in
//! `mirror::permissions`; these tests close the other half: every AWS SDK operation called in
//! this crate's source is listed for a function (a new call without its permission fails here,
//! not in production with AccessDenied), and every listed action is used by some call (no
//! permission kept after its call went away).
//!
//! Operation → action, per the Service Authorization Reference: most operations are their own
//! action; S3's `HeadObject` needs `s3:GetObject` ("HeadObject ... you must have READ access to
//! the object", S3 API reference), `ListObjectVersions` needs `s3:ListBucketVersions`, a
//! `DeleteObject` with a version id needs `s3:DeleteObjectVersion`, and `GetObject` of a key that
//! does not exist answers 404 instead of 403 only with `s3:ListBucket`. `CreateTrafficMirrorSession`
//! with `TagSpecifications` needs `ec2:CreateTags` ("To tag a resource during creation, you must
//! have permissions for ec2:CreateTags", EC2 User Guide, "Grant permission to tag resources during
//! creation").

use std::collections::BTreeSet;
use std::path::Path;

use mirror::permissions::{FUNCTION_ACTIONS, actions_of};

/// `(service, operation in snake case)` of every SDK call in the crate's sources: a `client`
/// followed by `.operation()` (`self.client.put_object()`, split over lines or not).
fn sdk_calls() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut calls = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // The production part only: unit tests may call anything.
        let text = text.split("#[cfg(test)]").next().unwrap();
        for (i, _) in text.match_indices("client") {
            let rest = text[i + "client".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('.') else {
                continue;
            };
            let rest = rest.trim_start();
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() || !rest[name.len()..].starts_with("()") || name == "clone" {
                continue;
            }
            calls.insert((service_of(&path, text), name));
        }
    }
    calls
}

/// The service a source file's client belongs to.
fn service_of(path: &Path, text: &str) -> String {
    for (crate_name, service) in [
        ("aws_sdk_ec2", "ec2"),
        ("aws_sdk_autoscaling", "autoscaling"),
        ("aws_sdk_cloudwatch", "cloudwatch"),
        ("aws_sdk_s3", "s3"),
    ] {
        if text.contains(&format!("{crate_name}::Client")) {
            return service.to_owned();
        }
    }
    panic!("{}: calls .send() on no known SDK client", path.display());
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The IAM actions one call needs (the module documentation gives the sources).
fn actions_for(service: &str, op: &str) -> Vec<String> {
    match (service, op) {
        ("s3", "head_object") => vec!["s3:GetObject".into()],
        ("s3", "get_object") => vec!["s3:GetObject".into(), "s3:ListBucket".into()],
        ("s3", "list_object_versions") => vec!["s3:ListBucketVersions".into()],
        ("s3", "delete_object") => {
            vec!["s3:DeleteObject".into(), "s3:DeleteObjectVersion".into()]
        }
        ("ec2", "create_traffic_mirror_session") => vec![
            "ec2:CreateTrafficMirrorSession".into(),
            "ec2:CreateTags".into(),
        ],
        _ => vec![format!("{service}:{}", pascal(op))],
    }
}

fn listed() -> BTreeSet<&'static str> {
    FUNCTION_ACTIONS
        .iter()
        .flat_map(|(f, _)| actions_of(f))
        .filter(|a| !a.starts_with("logs:") && !a.starts_with("sqs:"))
        .collect()
}

#[test]
fn the_source_scan_finds_the_calls_of_every_service() {
    // Guards the scan itself: were it to find nothing, the tests below would pass vacuously.
    let calls = sdk_calls();
    for service in ["ec2", "autoscaling", "cloudwatch", "s3"] {
        assert!(
            calls.iter().any(|(s, _)| s == service),
            "no {service} call found in {calls:?}"
        );
    }
    assert!(calls.contains(&("ec2".into(), "create_traffic_mirror_session".into())));
    assert!(calls.len() >= 15, "{calls:?}");
}

#[test]
fn every_aws_call_the_adapters_make_is_allowed_to_some_function() {
    let listed = listed();
    let missing: Vec<String> = sdk_calls()
        .iter()
        .flat_map(|(s, op)| actions_for(s, op))
        .filter(|a| !listed.contains(a.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "called but in no function's permissions (mirror::permissions): {missing:?}"
    );
}

#[test]
fn every_listed_action_is_needed_by_a_call_the_adapters_make() {
    let needed: BTreeSet<String> = sdk_calls()
        .iter()
        .flat_map(|(s, op)| actions_for(s, op))
        .collect();
    let unused: Vec<&str> = listed()
        .into_iter()
        .filter(|a| !needed.contains(*a))
        .collect();
    assert!(
        unused.is_empty(),
        "listed in mirror::permissions but called nowhere: {unused:?}"
    );
}
