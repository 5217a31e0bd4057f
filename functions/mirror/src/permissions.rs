//! The IAM actions each function needs, listed once: the template test checks that each
//! function's role allows exactly these (nothing unused), and `mirror-aws/tests/permissions.rs`
//! checks them against the SDK calls in the adapters' source: every call's actions are listed,
//! every listed action is needed by a call.

/// What every function needs to log and to hand failed asynchronous events to the DLQ.
pub const COMMON: &[&str] = &[
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "sqs:SendMessage",
];

/// onboard-eni and reconcile-mirrors: observe, then create / modify / delete our sessions
/// (`ec2:CreateTags` to tag a session at creation).
pub const MIRROR: &[&str] = &[
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeInstances",
    "ec2:DescribeTrafficMirrorSessions",
    "ec2:DescribeTrafficMirrorTargets",
    "ec2:CreateTrafficMirrorSession",
    "ec2:CreateTags",
    "ec2:DeleteTrafficMirrorSession",
    "ec2:ModifyTrafficMirrorSession",
];

/// reconcile-mirrors also keeps the source map and the refusals (GetObject and HeadObject are
/// `s3:GetObject`; `s3:ListBucket` makes a missing object a 404).
pub const RECONCILE: &[&str] = &["s3:GetObject", "s3:PutObject", "s3:ListBucket"];

/// size-fleet.
pub const FLEET: &[&str] = &[
    "ec2:DescribeTrafficMirrorSessions",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:CreateOrUpdateTags",
    "cloudwatch:GetMetricData",
];

/// teardown (ListObjectVersions is `s3:ListBucketVersions`; deleting a version,
/// `s3:DeleteObjectVersion`).
pub const TEARDOWN: &[&str] = &[
    "ec2:DescribeTrafficMirrorSessions",
    "ec2:DeleteTrafficMirrorSession",
    "s3:ListBucketVersions",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
];

/// Each function (its binary) and the lists of actions it needs.
pub const FUNCTION_ACTIONS: [(&str, &[&[&str]]); 4] = [
    ("onboard-eni", &[COMMON, MIRROR]),
    ("reconcile-mirrors", &[COMMON, MIRROR, RECONCILE]),
    ("size-fleet", &[COMMON, FLEET]),
    ("teardown", &[COMMON, TEARDOWN]),
];

/// The actions `function` needs, sorted and deduplicated; empty for an unknown function.
pub fn actions_of(function: &str) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = FUNCTION_ACTIONS
        .iter()
        .filter(|(f, _)| *f == function)
        .flat_map(|(_, lists)| lists.iter().flat_map(|l| l.iter().copied()))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_of_the_settings_has_its_actions() {
        for (function, _) in crate::settings::FUNCTION_VARS {
            assert!(actions_of(function).len() > COMMON.len(), "{function}");
        }
        assert!(actions_of("nope").is_empty());
        assert!(actions_of("reconcile-mirrors").contains(&"s3:PutObject"));
        assert!(!actions_of("onboard-eni").contains(&"s3:PutObject"));
    }
}
