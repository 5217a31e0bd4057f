//! AWS failures classified into a closed set. Each variant doubles as a metric label and says
//! whether retrying the whole run later can help.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use mirror::report::ErrorClass;

/// A classified AWS failure. The classification relies on the API's error code (never on a
/// static list of instance types): EC2 tells us when a source is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// The ENI (or its instance, or its session) no longer exists: it went away mid-run.
    #[error("{op}: resource gone ({code}): {message}")]
    EniGone {
        op: &'static str,
        code: String,
        message: String,
    },
    /// EC2 refuses this ENI as a mirror source (instance type or interface type not supported).
    #[error("{op}: not supported as a mirror source ({code}): {message}")]
    UnsupportedSource {
        op: &'static str,
        code: String,
        message: String,
    },
    /// The ENI already has the maximum number of mirror sessions.
    #[error("{op}: per-ENI session limit ({code}): {message}")]
    SessionLimit {
        op: &'static str,
        code: String,
        message: String,
    },
    /// Still throttled after the SDK's retries with backoff.
    #[error("{op}: throttled ({code}): {message}")]
    Throttled {
        op: &'static str,
        code: String,
        message: String,
    },
    /// IAM says no.
    #[error("{op}: permission denied ({code}): {message}")]
    PermissionDenied {
        op: &'static str,
        code: String,
        message: String,
    },
    /// Anything else (server errors, timeouts, I/O, unexpected codes): retried by Lambda.
    #[error("{op}: {code}: {message}")]
    Other {
        op: &'static str,
        code: String,
        message: String,
    },
}

impl AwsError {
    /// Bounded metric label.
    pub fn label(&self) -> &'static str {
        match self {
            AwsError::EniGone { .. } => "eni_gone",
            AwsError::UnsupportedSource { .. } => "unsupported_source",
            AwsError::SessionLimit { .. } => "session_limit",
            AwsError::Throttled { .. } => "throttled",
            AwsError::PermissionDenied { .. } => "permission_denied",
            AwsError::Other { .. } => "other",
        }
    }

    /// The report's error class (same closed set).
    pub fn class(&self) -> ErrorClass {
        match self {
            AwsError::EniGone { .. } => ErrorClass::EniGone,
            AwsError::UnsupportedSource { .. } => ErrorClass::UnsupportedSource,
            AwsError::SessionLimit { .. } => ErrorClass::SessionLimit,
            AwsError::Throttled { .. } => ErrorClass::Throttled,
            AwsError::PermissionDenied { .. } => ErrorClass::PermissionDenied,
            AwsError::Other { .. } => ErrorClass::Other,
        }
    }

    /// Whether a later attempt of the same run may succeed (the Lambda then returns an error so
    /// that it is retried or lands in the DLQ): throttling and unclassified failures.
    pub fn retryable(&self) -> bool {
        self.class().is_retryable()
    }

    /// The AWS error code (or a transport description).
    pub fn code(&self) -> &str {
        match self {
            AwsError::EniGone { code, .. }
            | AwsError::UnsupportedSource { code, .. }
            | AwsError::SessionLimit { code, .. }
            | AwsError::Throttled { code, .. }
            | AwsError::PermissionDenied { code, .. }
            | AwsError::Other { code, .. } => code,
        }
    }

    /// Classify an error code and message as EC2 / Auto Scaling return them.
    pub fn classify(op: &'static str, code: &str, message: &str) -> AwsError {
        let code_s = code.to_owned();
        let message_s = message.to_owned();
        let lower = message.to_ascii_lowercase();
        if is_throttling(code) {
            return AwsError::Throttled {
                op,
                code: code_s,
                message: message_s,
            };
        }
        if matches!(
            code,
            "UnauthorizedOperation"
                | "AccessDenied"
                | "AccessDeniedException"
                | "AuthFailure"
                | "OptInRequired"
                | "Blocked"
                | "InvalidClientTokenId"
        ) {
            return AwsError::PermissionDenied {
                op,
                code: code_s,
                message: message_s,
            };
        }
        if code.ends_with(".NotFound")
            && (code.starts_with("InvalidNetworkInterface")
                || code.starts_with("InvalidInstanceID")
                || code.starts_with("InvalidTrafficMirrorSession"))
        {
            return AwsError::EniGone {
                op,
                code: code_s,
                message: message_s,
            };
        }
        // `TrafficMirrorSessionsPerInterfaceLimitExceeded`: the per-source-ENI limit (the
        // per-target limits are not about this ENI and stay `Other`).
        if code.ends_with("LimitExceeded")
            && code.contains("Session")
            && (code.contains("Interface") || code.contains("Eni") || code.contains("Source"))
        {
            return AwsError::SessionLimit {
                op,
                code: code_s,
                message: message_s,
            };
        }
        // EC2 answers an unsupported source with `NetworkInterfaceNotSupported` (or another
        // `*NotSupported` code), or with an invalid-parameter code saying "not supported".
        let says_unsupported = lower.contains("not supported") || lower.contains("unsupported");
        if code.contains("NotSupported")
            || code == "UnsupportedOperation"
            || code == "Unsupported"
            || code.starts_with("UnsupportedInstanceType")
            || (matches!(
                code,
                "InvalidParameterValue" | "InvalidParameter" | "InvalidParameterCombination"
            ) && says_unsupported
                && (lower.contains("mirror")
                    || lower.contains("instance type")
                    || lower.contains("network interface")))
        {
            return AwsError::UnsupportedSource {
                op,
                code: code_s,
                message: message_s,
            };
        }
        AwsError::Other {
            op,
            code: code_s,
            message: message_s,
        }
    }

    /// Classify an SDK error from any operation.
    pub fn from_sdk<E, R>(op: &'static str, err: &SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        match err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                let code = e.code().unwrap_or("Unknown");
                let message = e.message().unwrap_or_default();
                AwsError::classify(op, code, message)
            }
            SdkError::TimeoutError(_) => AwsError::Other {
                op,
                code: "Timeout".into(),
                message: format!("{}", DisplayChain(err)),
            },
            SdkError::DispatchFailure(_) => AwsError::Other {
                op,
                code: "DispatchFailure".into(),
                message: format!("{}", DisplayChain(err)),
            },
            SdkError::ResponseError(_) => AwsError::Other {
                op,
                code: "ResponseError".into(),
                message: format!("{}", DisplayChain(err)),
            },
            _ => AwsError::Other {
                op,
                code: "ConstructionFailure".into(),
                message: format!("{}", DisplayChain(err)),
            },
        }
    }
}

/// Codes AWS uses for throttling (the SDK's standard retry already backed off on them).
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "LimitExceededException"
            | "RequestThrottled"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
    )
}

/// Formats an error and its sources on one line.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limit_exceeded_is_throttling_and_retryable() {
        let e = AwsError::classify(
            "CreateTrafficMirrorSession",
            "RequestLimitExceeded",
            "Request limit exceeded.",
        );
        assert_eq!(e.label(), "throttled");
        assert!(e.retryable());
    }

    #[test]
    fn a_missing_eni_is_gone_and_not_retryable() {
        let e = AwsError::classify(
            "CreateTrafficMirrorSession",
            "InvalidNetworkInterfaceID.NotFound",
            "The networkInterface ID 'eni-1' does not exist",
        );
        assert_eq!(e.label(), "eni_gone");
        assert!(!e.retryable());
    }

    #[test]
    fn a_deleted_session_counts_as_gone() {
        let e = AwsError::classify(
            "ModifyTrafficMirrorSession",
            "InvalidTrafficMirrorSessionId.NotFound",
            "",
        );
        assert_eq!(e.label(), "eni_gone");
    }

    #[test]
    fn the_per_interface_session_limit_is_its_own_class() {
        let e = AwsError::classify(
            "CreateTrafficMirrorSession",
            "TrafficMirrorSessionsPerInterfaceLimitExceeded",
            "The maximum number of sessions per interface has been reached",
        );
        assert_eq!(e.label(), "session_limit");
        assert!(!e.retryable());
    }

    #[test]
    fn an_unsupported_instance_type_is_recognised_by_the_api_answer() {
        let e = AwsError::classify(
            "CreateTrafficMirrorSession",
            "InvalidParameterValue",
            "The instance type of eni-1 is not supported for traffic mirroring",
        );
        assert_eq!(e.label(), "unsupported_source");
        let e = AwsError::classify(
            "CreateTrafficMirrorSession",
            "NetworkInterfaceNotSupported",
            "The network interface is not supported for Traffic Mirroring.",
        );
        assert_eq!(e.label(), "unsupported_source");
    }

    #[test]
    fn an_invalid_parameter_about_something_else_stays_other() {
        let e = AwsError::classify(
            "CreateTrafficMirrorSession",
            "InvalidParameterValue",
            "session number 0 out of range",
        );
        assert_eq!(e.label(), "other");
    }

    #[test]
    fn the_per_target_limit_is_not_a_per_eni_limit() {
        let e = AwsError::classify(
            "CreateTrafficMirrorSession",
            "TrafficMirrorSessionsPerTargetLimitExceeded",
            "",
        );
        assert_eq!(e.label(), "other");
    }

    #[test]
    fn iam_refusals_are_permission_denied() {
        for code in ["UnauthorizedOperation", "AccessDenied"] {
            let e = AwsError::classify("DescribeNetworkInterfaces", code, "no");
            assert_eq!(e.label(), "permission_denied");
            assert!(!e.retryable());
        }
    }

    #[test]
    fn server_errors_are_other_and_retryable() {
        let e = AwsError::classify("DescribeNetworkInterfaces", "InternalError", "oops");
        assert_eq!(e.label(), "other");
        assert!(e.retryable());
    }

    #[test]
    fn labels_match_the_report_error_classes() {
        for e in [
            AwsError::classify("x", "RequestLimitExceeded", ""),
            AwsError::classify("x", "AccessDenied", ""),
            AwsError::classify("x", "InvalidNetworkInterfaceID.NotFound", ""),
            AwsError::classify("x", "TrafficMirrorSessionsPerInterfaceLimitExceeded", ""),
            AwsError::classify("x", "UnsupportedOperation", ""),
            AwsError::classify("x", "Bizarre", ""),
        ] {
            assert_eq!(e.label(), e.class().as_str());
        }
    }
}
