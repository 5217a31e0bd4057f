//! The closed label sets of the daemon's metrics (the engine's own is
//! [`crate::engine::stats::DropReason`]). Every value is a `&'static str`, so label sets stay
//! bounded; tests and benchmarks iterate `ALL` instead of retyping the lists.

label_enum! {
    /// Why a request extracted from the mirror was not delivered to the upstream
    /// (`rebuilder_requests_dropped_total{reason}`).
    pub enum RequestDropReason {
        /// The queue between workers and senders held `--queue-capacity` requests.
        QueueFull => "queue_full",
        /// The queue held `--queue-max-bytes` bytes.
        QueueBytes => "queue_bytes",
        /// The request cannot be expressed as an upstream request (bad method, target or header).
        Invalid => "invalid_request",
        /// The upstream could not be connected to.
        UpstreamConnect => "upstream_connect",
        /// The upstream did not answer within `--request-timeout-ms`.
        UpstreamTimeout => "upstream_timeout",
        /// The connection failed while sending or reading the response.
        UpstreamIo => "upstream_io",
        /// Still queued when the shutdown drain deadline passed.
        Shutdown => "shutdown",
    }
}

label_enum! {
    /// Class of an upstream failure (`rebuilder_upstream_errors_total{class}`).
    pub enum UpstreamErrorClass {
        /// No connection (TCP or TLS) could be made.
        Connect => "connect",
        /// No complete answer within the request timeout.
        Timeout => "timeout",
        /// The upstream answered with a 5xx status (the request was delivered).
        Status5xx => "status_5xx",
        /// Connection reset, protocol error, TLS failure after connect, ...
        Io => "io",
    }
}

label_enum! {
    /// Status class of an upstream answer (`rebuilder_requests_forwarded_total{status}`).
    pub enum StatusClass {
        /// 1xx.
        Informational => "1xx",
        /// 2xx.
        Success => "2xx",
        /// 3xx.
        Redirection => "3xx",
        /// 4xx.
        ClientError => "4xx",
        /// 5xx (and anything above).
        ServerError => "5xx",
    }
}

impl StatusClass {
    /// The class of an HTTP status code (codes outside 100..=599 go to the nearest class).
    pub fn of(status: u16) -> StatusClass {
        StatusClass::ALL[usize::from((status / 100).clamp(1, 5)) - 1]
    }
}

label_enum! {
    /// Result of an idle-time connection probe (`rebuilder_upstream_probes_total{result}`).
    pub enum ProbeResult {
        /// No connection could be made.
        Failure => "failure",
        /// The upstream accepted a connection (and the TLS handshake for https).
        Success => "success",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_fall_into_their_class() {
        assert_eq!(StatusClass::of(100), StatusClass::Informational);
        assert_eq!(StatusClass::of(204), StatusClass::Success);
        assert_eq!(StatusClass::of(404).as_str(), "4xx");
        assert_eq!(StatusClass::of(503), StatusClass::ServerError);
        assert_eq!(StatusClass::of(0), StatusClass::Informational);
        assert_eq!(StatusClass::of(999), StatusClass::ServerError);
    }

    #[test]
    fn labels_are_unique_within_each_set() {
        fn unique<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> bool {
            let set: std::collections::HashSet<_> = all.iter().map(|v| label(*v)).collect();
            set.len() == all.len()
        }
        assert!(unique(&RequestDropReason::ALL, RequestDropReason::as_str));
        assert!(unique(&UpstreamErrorClass::ALL, UpstreamErrorClass::as_str));
        assert!(unique(&StatusClass::ALL, StatusClass::as_str));
        assert!(unique(&ProbeResult::ALL, ProbeResult::as_str));
    }
}
