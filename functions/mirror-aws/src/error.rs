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
fn words(class: ErrorClass) -> &'static str {
    match class {
        // The ENI (or its instance, or its session) no longer exists: it went away mid-run.
        ErrorClass::EniGone => "resource gone",
        // EC2 refuses this ENI as a mirror source (instance or interface type not supported).
        ErrorClass::UnsupportedSource => "not supported as a mirror source",
        // The ENI already has the maximum number of mirror sessions.
        ErrorClass::SessionLimit => "per-ENI session limit",
        ErrorClass::AccountLimit => "account or target limit",
        // IAM says no.
        ErrorClass::PermissionDenied => "permission denied",
        ErrorClass::InvalidRequest => "invalid request",
        // Still throttled after the SDK's retries with backoff.
        ErrorClass::Throttled => "throttled",
        ErrorClass::ServerError => "server error",
        ErrorClass::Timeout => "no answer",
        ErrorClass::Other => "refused",
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, code, message) = (self.op, &self.code, &self.message);
        write!(f, "{op}: {} ({code}): {message}", words(self.class))
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
    /// that it is retried or lands in the DLQ): throttling, server errors and timeouts only.
    pub fn retryable(&self) -> bool {
        self.class.is_retryable()
    }

    /// Classify an error code and message as EC2 / Auto Scaling / S3 / CloudWatch return
    /// them (no HTTP status known).
    pub fn classify(op: &'static str, code: &str, message: &str) -> AwsError {
        AwsError::new(classify(code, message, None), op, code, message)
    }

    /// Classify an SDK error from any operation: the service's error code (with the HTTP
    /// status for codes we do not know), or the transport failure.
    pub fn from_sdk<E, R>(op: &'static str, err: &SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: HttpStatus + std::fmt::Debug + 'static,
    {
        let (class, code) = match err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                let code = e.code().unwrap_or(UNKNOWN_CODE);
                let message = e.message().unwrap_or_default();
                let status = ctx.raw().status_code();
                return AwsError::new(classify(code, message, status), op, code, message);
            }
            // No answer in time, or no connection: worth retrying.
            SdkError::TimeoutError(_) => (ErrorClass::Timeout, "Timeout"),
            SdkError::DispatchFailure(_) => (ErrorClass::Timeout, "DispatchFailure"),
            // An answer that could not be read: a 5xx (moto's HTML error pages) is a server
            // error, anything else is not understood.
            SdkError::ResponseError(ctx) => match ctx.raw().status_code() {
                Some(s) if (500..600).contains(&s) => (ErrorClass::ServerError, "ResponseError"),
                _ => (ErrorClass::Other, "ResponseError"),
            },
            _ => (ErrorClass::InvalidRequest, "ConstructionFailure"),
        };
        AwsError::new(class, op, code, DisplayChain(err).to_string())
    }
}

/// The HTTP status of a raw response, for classifying answers without a known code.
pub trait HttpStatus {
    fn status_code(&self) -> Option<u16>;
}

impl HttpStatus for aws_smithy_runtime_api::client::orchestrator::HttpResponse {
    fn status_code(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// What the SDK reports when the answer carries no error code.
pub const UNKNOWN_CODE: &str = "Unknown";

/// Codes AWS uses for throttling. EC2's is `RequestLimitExceeded` ("The maximum request rate
/// permitted by the Amazon EC2 APIs has been exceeded for your account", "Error codes for the
/// Amazon EC2 API"); Auto Scaling, CloudWatch and S3 use the others.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Server-side codes ("Server error codes", EC2 error codes; Auto Scaling's
/// `ResourceContention` is "HTTP Status Code: 500").
const SERVER: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServerInternal",
    "ServiceUnavailable",
    "Unavailable",
    "ResourceContention",
    "InternalServiceError",
    "RequestTimeout",
    "RequestTimeoutException",
];

const PERMISSION: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "OptInRequired",
    "Blocked",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
];

/// Not-found codes about the source (the ENI, its instance) or our session: the thing went
/// away. The Traffic Mirroring ones come in two spellings: the errors page writes
/// `InvalidTrafficMirrorSessionNotFound` (and `InvalidTrafficMirrorTargetNoFound`, sic), the API
/// sends `InvalidTrafficMirrorSessionId.NotFound` (as SDK waiters and the Terraform provider
/// match them); both are recognised.
const GONE: &[&str] = &[
    "InvalidNetworkInterfaceID.NotFound",
    "InvalidNetworkInterfaceId.NotFound",
    "InvalidNetworkInterface.NotFound",
    "InvalidInstanceID.NotFound",
    "InvalidTrafficMirrorSessionId.NotFound",
    "InvalidTrafficMirrorSessionNotFound",
];

/// Not-found codes about our target or filter (a configuration problem, not transient), and the
/// other invalid-request codes.
const INVALID: &[&str] = &[
    "InvalidTrafficMirrorTargetId.NotFound",
    "InvalidTrafficMirrorTargetNoFound",
    "InvalidTrafficMirrorTargetNotFound",
    "InvalidTrafficMirrorFilterId.NotFound",
    "InvalidTrafficMirrorFilterNotFound",
    "InvalidTrafficMirrorFilterRuleId.NotFound",
    "InvalidTrafficMirrorFilterRuleNotFound",
    "IdempotentParameterMismatch",
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "MissingParameter",
    "UnknownParameter",
    "ValidationError",
    "ValidationException",
    "InvalidNetworkInterfaceId.Malformed",
    "InvalidNetworkInterfaceID.Malformed",
    "InvalidInstanceID.Malformed",
    "InvalidAction",
    "NoSuchBucket",
    "InvalidBucketName",
    "InvalidParameterCombinationException",
    "InvalidParameterValueException",
];

/// The ENI cannot be a source: `NetworkInterfaceNotSupported` ("The network interface is not
/// supported for Traffic Mirroring"), or it is bound to a target or session already
/// (`InterfaceInUseByTrafficMirrorTarget` / `...Session`).
const UNSUPPORTED: &[&str] = &[
    "NetworkInterfaceNotSupported",
    "InterfaceInUseByTrafficMirrorTarget",
    "InterfaceInUseByTrafficMirrorSession",
    "UnsupportedOperation",
    "Unsupported",
];

/// The class of an error code, its message (for answers without a code, or whose code is too
/// generic) and the HTTP status (for codes not listed). CloudTrail writes EC2 codes with a
/// `Client.` / `Server.` prefix ("If your requests have been throttled, you get the following
/// error: `Client.RequestLimitExceeded`", EC2 error codes): it is ignored.
pub fn classify(code: &str, message: &str, status: Option<u16>) -> ErrorClass {
    let code = code
        .strip_prefix("Client.")
        .or_else(|| code.strip_prefix("Server."))
        .unwrap_or(code);
    let lower = message.to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if THROTTLING.contains(&code) {
        return ErrorClass::Throttled;
    }
    if SERVER.contains(&code) {
        return ErrorClass::ServerError;
    }
    if PERMISSION.contains(&code) {
        return ErrorClass::PermissionDenied;
    }
    if GONE.contains(&code) {
        return ErrorClass::EniGone;
    }
    if code == "TrafficMirrorSessionsPerInterfaceLimitExceeded" {
        return ErrorClass::SessionLimit;
    }
    if UNSUPPORTED.contains(&code)
        || (code.ends_with("NotSupported") && code != "NotSupported")
        || code.starts_with("UnsupportedInstanceType")
    {
        return ErrorClass::UnsupportedSource;
    }
    // Other limits: sessions per account, per target, sources per target, Auto Scaling's
    // `LimitExceeded` (the throttling "limits" are matched above).
    if code.ends_with("LimitExceeded") || code == "LimitExceededException" {
        return ErrorClass::AccountLimit;
    }
    if INVALID.contains(&code) {
        // An invalid-parameter answer that says the ENI is not supported is about the source.
        let unsupported = says(&["not supported", "unsupported"])
            && says(&["mirror", "instance type", "network interface"]);
        return if unsupported {
            ErrorClass::UnsupportedSource
        } else {
            ErrorClass::InvalidRequest
        };
    }
    if code == UNKNOWN_CODE || code.is_empty() {
        // No code: the message, then the status, decide.
        if says(&["throttl", "rate exceeded", "slow down", "too many requests"]) {
            return ErrorClass::Throttled;
        }
        if says(&["timed out", "timeout"]) {
            return ErrorClass::Timeout;
        }
        if says(&["not authorized", "access denied", "unauthorized"]) {
            return ErrorClass::PermissionDenied;
        }
        if says(&["does not exist", "not found"]) && says(&["network interface", "instance"]) {
            return ErrorClass::EniGone;
        }
        if says(&["not supported"]) && says(&["mirror", "network interface"]) {
            return ErrorClass::UnsupportedSource;
        }
    }
    match status {
        Some(s) if (500..600).contains(&s) => ErrorClass::ServerError,
        Some(429) => ErrorClass::Throttled,
        _ => ErrorClass::Other,
    }
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
            ("Client.RequestLimitExceeded", "", Throttled),
            ("Throttling", "Rate exceeded", Throttled),
            ("InternalError", "oops", ServerError),
            ("Server.InternalError", "", ServerError),
            ("ServiceUnavailable", "", ServerError),
            ("Unavailable", "", ServerError),
            ("ResourceContention", "pending update", ServerError),
            ("InvalidNetworkInterfaceID.NotFound", "eni-1 does not exist", EniGone),
            ("InvalidTrafficMirrorSessionId.NotFound", "", EniGone),
            ("InvalidTrafficMirrorSessionNotFound", "", EniGone),
            ("InvalidInstanceID.NotFound", "", EniGone),
            ("TrafficMirrorSessionsPerInterfaceLimitExceeded", "", SessionLimit),
            ("TrafficMirrorSessionLimitExceeded", "", AccountLimit),
            ("TrafficMirrorSessionsPerTargetLimitExceeded", "", AccountLimit),
            ("TrafficMirrorSourcesPerTargetLimitExceeded", "Sources per interface-target limit reached (11)", AccountLimit),
            ("LimitExceeded", "", AccountLimit),
            ("NetworkInterfaceNotSupported", "", UnsupportedSource),
            ("InterfaceInUseByTrafficMirrorTarget", "", UnsupportedSource),
            ("UnsupportedOperation", "", UnsupportedSource),
            ("InvalidParameterValue", "instance type not supported for traffic mirroring", UnsupportedSource),
            ("InvalidParameterValue", "session number 0 out of range", InvalidRequest),
            ("InvalidTrafficMirrorTargetId.NotFound", "", InvalidRequest),
            ("InvalidTrafficMirrorTargetNoFound", "", InvalidRequest),
            ("InvalidTrafficMirrorFilterNotFound", "", InvalidRequest),
            ("IdempotentParameterMismatch", "", InvalidRequest),
            ("ValidationError", "New SetDesiredCapacity value 3 is above max value 2", InvalidRequest),
            ("UnauthorizedOperation", "no", PermissionDenied),
            ("Client.UnauthorizedOperation", "no", PermissionDenied),
            ("AccessDenied", "no", PermissionDenied),
            ("Bizarre", "", Other),
        ];
        for (code, message, class) in cases {
            let e = AwsError::classify("CreateTrafficMirrorSession", code, message);
            assert_eq!(e.class, class, "{code}: {message}");
            assert_eq!(e.code, code);
        }
    }

    #[test]
    fn answers_without_a_code_are_classified_by_message_then_status() {
        use ErrorClass::*;
        #[rustfmt::skip]
        let cases = [
            ("Rate exceeded", None, Throttled),
            ("Request timed out", None, Timeout),
            ("You are not authorized to perform this operation.", None, PermissionDenied),
            ("The network interface 'eni-1' does not exist", None, EniGone),
            ("The network interface is not supported for Traffic Mirroring.", None, UnsupportedSource),
            ("<html>Internal Server Error</html>", Some(500), ServerError),
            ("", Some(503), ServerError),
            ("", Some(429), Throttled),
            ("something", Some(400), Other),
            ("", None, Other),
        ];
        for (message, status, class) in cases {
            assert_eq!(
                classify(UNKNOWN_CODE, message, status),
                class,
                "{message:?} {status:?}"
            );
        }
        // A code we do not know: a 5xx is a server error, a 4xx is not retried.
        assert_eq!(classify("NewCode", "", Some(502)), ServerError);
        assert_eq!(classify("NewCode", "", Some(400)), Other);
    }

    #[test]
    fn only_throttling_server_errors_and_timeouts_are_retryable() {
        for class in ErrorClass::ALL {
            let e = AwsError::new(class, "x", "Code", "");
            let want = matches!(
                class,
                ErrorClass::Throttled | ErrorClass::ServerError | ErrorClass::Timeout
            );
            assert_eq!(e.retryable(), want, "{}", class.as_str());
        }
        assert!(!AwsError::classify("X", "Bizarre", "").retryable());
    }

    #[test]
    fn the_message_names_the_operation_the_class_and_the_code() {
        let e = AwsError::classify("CreateTrafficMirrorSession", "RequestLimitExceeded", "slow");
        assert_eq!(
            e.to_string(),
            "CreateTrafficMirrorSession: throttled (RequestLimitExceeded): slow"
        );
        let e = AwsError::classify("DescribeInstances", "InternalError", "oops");
        assert_eq!(
            e.to_string(),
            "DescribeInstances: server error (InternalError): oops"
        );
        let e = AwsError::classify("X", "InvalidNetworkInterfaceID.NotFound", "gone");
        assert_eq!(
            e.to_string(),
            "X: resource gone (InvalidNetworkInterfaceID.NotFound): gone"
        );
    }
}
