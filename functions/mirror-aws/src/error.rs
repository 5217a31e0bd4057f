//! Failures: an AWS call's ([`AwsError`], classified into the closed set [`ErrorClass`], which
//! doubles as a metric label and says whether retrying the whole run later can help), and a
//! whole run's ([`HandlerError`], what the Lambda returns).

use std::fmt;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use lambda_runtime::Diagnostic;
use mirror::report::ErrorClass;

use crate::events::EventError;

/// A classified AWS failure: the class (a closed set, see [`ErrorClass`]) and what the API
/// said. The classification relies on the API's error code (never on a static list of instance
/// types): EC2 tells us when a source is not supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// What kind of failure: the report's error class and the metric label.
    pub class: ErrorClass,
    /// The operation, e.g. `CreateTrafficMirrorSession`.
    pub op: &'static str,
    /// The AWS error code (or a transport description such as `Timeout`).
    pub code: String,
    pub message: String,
}

/// How the message of each class reads: `<op>: <words> (<code>): <message>`.
fn words(class: ErrorClass) -> Option<&'static str> {
    match class {
        // The ENI (or its instance, or its session) no longer exists: it went away mid-run.
        ErrorClass::EniGone => Some("resource gone"),
        // EC2 refuses this ENI as a mirror source (instance or interface type not supported).
        ErrorClass::UnsupportedSource => Some("not supported as a mirror source"),
        // The ENI already has the maximum number of mirror sessions.
        ErrorClass::SessionLimit => Some("per-ENI session limit"),
        // Still throttled after the SDK's retries with backoff.
        ErrorClass::Throttled => Some("throttled"),
        // IAM says no.
        ErrorClass::PermissionDenied => Some("permission denied"),
        // Server errors, timeouts, I/O, unexpected codes (retried by Lambda): `<op>: <code>: …`.
        ErrorClass::Other => None,
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, code, message) = (self.op, &self.code, &self.message);
        match words(self.class) {
            Some(words) => write!(f, "{op}: {words} ({code}): {message}"),
            None => write!(f, "{op}: {code}: {message}"),
        }
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    /// A failure of class `class`.
    pub fn new(
        class: ErrorClass,
        op: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> AwsError {
        AwsError {
            class,
            op,
            code: code.into(),
            message: message.into(),
        }
    }

    /// Whether a later attempt of the same run may succeed (the Lambda then returns an error so
    /// that it is retried or lands in the DLQ): throttling and unclassified failures.
    pub fn retryable(&self) -> bool {
        self.class.is_retryable()
    }

    /// Classify an error code and message as EC2 / Auto Scaling return them.
    pub fn classify(op: &'static str, code: &str, message: &str) -> AwsError {
        AwsError::new(classify(code, message), op, code, message)
    }

    /// Classify an SDK error from any operation.
    pub fn from_sdk<E, R>(op: &'static str, err: &SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let transport = match err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                let code = e.code().unwrap_or("Unknown");
                return AwsError::classify(op, code, e.message().unwrap_or_default());
            }
            SdkError::TimeoutError(_) => "Timeout",
            SdkError::DispatchFailure(_) => "DispatchFailure",
            SdkError::ResponseError(_) => "ResponseError",
            _ => "ConstructionFailure",
        };
        AwsError::new(
            ErrorClass::Other,
            op,
            transport,
            DisplayChain(err).to_string(),
        )
    }
}

/// The class of an error code (and its message, for the codes that need it).
fn classify(code: &str, message: &str) -> ErrorClass {
    let lower = message.to_ascii_lowercase();
    if is_throttling(code) {
        return ErrorClass::Throttled;
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
        return ErrorClass::PermissionDenied;
    }
    if code.ends_with(".NotFound")
        && (code.starts_with("InvalidNetworkInterface")
            || code.starts_with("InvalidInstanceID")
            || code.starts_with("InvalidTrafficMirrorSession"))
    {
        return ErrorClass::EniGone;
    }
    // `TrafficMirrorSessionsPerInterfaceLimitExceeded`: the per-source-ENI limit (the
    // per-target limits are not about this ENI and stay `Other`).
    if code.ends_with("LimitExceeded")
        && code.contains("Session")
        && (code.contains("Interface") || code.contains("Eni") || code.contains("Source"))
    {
        return ErrorClass::SessionLimit;
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
        return ErrorClass::UnsupportedSource;
    }
    ErrorClass::Other
}

/// Why a run failed as a whole (the Lambda then returns an error: Lambda retries the event,
/// then the dead-letter queue keeps it).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("bad event: {0}")]
    Event(#[from] EventError),
    #[error("{function} does not handle {trigger} events")]
    WrongTrigger {
        function: &'static str,
        trigger: &'static str,
    },
    #[error("observing failed: {0}")]
    Observe(#[source] AwsError),
    #[error("{count} retryable failure(s), first: {first}")]
    Retryable { count: usize, first: String },
    #[error("auto scaling group {0:?} not found")]
    GroupNotFound(String),
    #[error("fleet: {0}")]
    Fleet(#[source] AwsError),
}

impl HandlerError {
    /// Bounded label (error type in the Lambda response, metric dimension).
    pub fn label(&self) -> &'static str {
        match self {
            HandlerError::Event(e) => e.label(),
            HandlerError::WrongTrigger { .. } => "wrong_trigger",
            HandlerError::Observe(_) => "observe_failed",
            HandlerError::Retryable { .. } => "retryable_failures",
            HandlerError::GroupNotFound(_) => "group_not_found",
            HandlerError::Fleet(_) => "fleet_failed",
        }
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        Diagnostic {
            error_type: format!("mirrorfleet.{}", e.label()),
            error_message: e.to_string(),
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
    fn codes_are_classified_by_what_the_api_answered() {
        use ErrorClass::*;
        #[rustfmt::skip]
        let cases = [
            ("RequestLimitExceeded", "Request limit exceeded.", Throttled),
            ("Throttling", "Rate exceeded", Throttled),
            ("InvalidNetworkInterfaceID.NotFound", "eni-1 does not exist", EniGone),
            ("InvalidTrafficMirrorSessionId.NotFound", "", EniGone),
            ("TrafficMirrorSessionsPerInterfaceLimitExceeded", "", SessionLimit),
            // The per-target limit is not about this ENI.
            ("TrafficMirrorSessionsPerTargetLimitExceeded", "", Other),
            ("InvalidParameterValue", "instance type not supported", UnsupportedSource),
            ("NetworkInterfaceNotSupported", "", UnsupportedSource),
            ("UnsupportedOperation", "", UnsupportedSource),
            // An invalid parameter about something else.
            ("InvalidParameterValue", "session number 0 out of range", Other),
            ("UnauthorizedOperation", "no", PermissionDenied),
            ("AccessDenied", "no", PermissionDenied),
            ("InternalError", "oops", Other),
            ("Bizarre", "", Other),
        ];
        for (code, message, class) in cases {
            let e = AwsError::classify("CreateTrafficMirrorSession", code, message);
            assert_eq!(e.class, class, "{code}: {message}");
            assert_eq!(e.code, code);
        }
    }

    #[test]
    fn only_throttling_and_unclassified_failures_are_retryable() {
        for class in ErrorClass::ALL {
            let e = AwsError::new(class, "x", "Code", "");
            let want = matches!(class, ErrorClass::Throttled | ErrorClass::Other);
            assert_eq!(e.retryable(), want, "{}", class.as_str());
        }
    }

    #[test]
    fn the_message_names_the_operation_the_class_and_the_code() {
        let e = AwsError::classify("CreateTrafficMirrorSession", "RequestLimitExceeded", "slow");
        assert_eq!(
            e.to_string(),
            "CreateTrafficMirrorSession: throttled (RequestLimitExceeded): slow"
        );
        let e = AwsError::classify("DescribeInstances", "InternalError", "oops");
        assert_eq!(e.to_string(), "DescribeInstances: InternalError: oops");
        let e = AwsError::classify("X", "InvalidNetworkInterfaceID.NotFound", "gone");
        assert_eq!(
            e.to_string(),
            "X: resource gone (InvalidNetworkInterfaceID.NotFound): gone"
        );
    }
}
