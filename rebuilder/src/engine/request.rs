//! The engine's output: one HTTP/1.x request rebuilt from mirrored traffic, with the response
//! the server gave it ([`HttpResponse`]) or the reason that response is missing
//! ([`ResponseMissing`]): a transaction.

use std::net::{IpAddr, SocketAddr};

use crate::engine::stats::Anomalies;

pub use crate::engine::stats::ResponseMissing;

/// One HTTP/1.0 or HTTP/1.1 request extracted from the client→server direction of a flow.
///
/// Invariants (upheld by [`crate::engine::Engine`]):
/// - every byte of the head and of `body` came from the wire in order, with no gap and no
///   byte of another message: a request that lost bytes is dropped, never emitted;
/// - `body` is the decoded body (chunked framing removed); when the body exceeded the
///   configured cap, `body` holds its first `max_body_bytes` bytes and `body_truncated` is set;
/// - for a chunked body, trailer fields (if any) are in `trailers`, never in `headers` (a
///   `Host` trailer must not read as a second Host header);
/// - `anomalies` names every leniency the parser needed to read the request and every
///   framing origin servers disagree on (see [`crate::engine::stats::Anomaly`]);
/// - emitted by the engine, exactly one of `response` and `response_missing` is set: the
///   request is emitted when its response is complete, or when it was given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Capture/receive time (µs since the UNIX epoch) of the packet that began the request.
    pub ts_us: u64,
    /// VXLAN VNI (0 for a plain, non-VXLAN capture).
    pub vni: u32,
    /// The real client: the source named by the stream's PROXY protocol header when there
    /// is one, else the inner TCP source (`peer`).
    pub client: SocketAddr,
    /// Inner TCP source of the request direction (a load balancer when the stream carried
    /// a PROXY header).
    pub peer: SocketAddr,
    /// Inner TCP destination.
    pub server: SocketAddr,
    /// The Gateway Load Balancer endpoint the mirrored traffic came through (AWS GENEVE
    /// option class 0x0108, type 1; [`HttpRequest::gwlbe_name`] gives its `vpce-` name).
    /// `None` for VXLAN received directly (NLB or ENI target) and plain captures. Part of the
    /// flow key: two VPCs behind one fleet may reuse the same private addresses.
    pub gwlbe: Option<u64>,
    /// The IP source of the VXLAN datagrams that carried the request's flow: the mirror
    /// session's source ENI (its primary IP). The UDP peer in NLB mode, the inner IP header's
    /// source in GWLB mode, the outer IP source in a replay; `None` for plain (already
    /// decapsulated) captures and when the caller did not say (`Engine::on_vxlan_payload`).
    pub mirror_source: Option<IpAddr>,
    /// Duplicate mirroring (`crate::dedup`): the source key of the load balancer's copy of
    /// this request, collapsed into this one (the copy from the load balancer to its target).
    /// Boxed: rare, and every request would carry its size otherwise.
    pub via: Option<Box<crate::engine::source::SourceKey>>,
    /// Request method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Request target as sent (origin form, absolute form, authority form or `*`). Bytes that
    /// are not UTF-8 (raw Latin-1, which nginx, Apache and Go accept) are percent-encoded
    /// (`%E9`) and the request carries [`crate::engine::stats::Anomaly::TargetObsText`].
    pub target: String,
    /// Minor version: HTTP/`version_major`.`version` (0 or 1 for HTTP/1.0 and 1.1; up to 99:
    /// nginx reads `HTTP/1.10` as minor 10).
    pub version: u8,
    /// Header fields in order, names as sent, values raw.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Decoded body (chunked framing removed), at most `max_body_bytes` long.
    pub body: Vec<u8>,
    /// The body arrived with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body exceeded the cap and was cut.
    pub body_truncated: bool,
    /// Major version: 1 for HTTP/1.x; 0 for HTTP/0.9 (a simple request `GET target` without
    /// version, or `HTTP/0.9` written out); 2 to 9 when an HTTP/1 request line names another
    /// major (Apache serves `HTTP/2.0` to `HTTP/9.9`, Node `HTTP/2.0`).
    pub version_major: u8,
    /// Trailer fields of a chunked body, in order, names as sent, values raw.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Leniencies needed to read this request and framing readings origins disagree on.
    pub anomalies: Anomalies,
    /// The final response the server gave this request (interim 1xx responses other than
    /// 101 are not it), every byte of it seen; `None` when it is missing.
    pub response: Option<Box<HttpResponse>>,
    /// Why `response` is `None` (set by the engine on every request it emits without one).
    pub response_missing: Option<ResponseMissing>,
}

impl HttpRequest {
    /// An HTTP/1.1 request `method target` from `client` (also its `peer`) to `server`, with
    /// no field, no body and nothing else set: time 0, VNI 0, no tunnel, no response. Fill
    /// the rest with struct update syntax (`HttpRequest { body, ..HttpRequest::new(..) }`).
    pub fn new(
        method: impl Into<String>,
        target: impl Into<String>,
        client: SocketAddr,
        server: SocketAddr,
    ) -> HttpRequest {
        HttpRequest {
            ts_us: 0,
            vni: 0,
            client,
            peer: client,
            server,
            gwlbe: None,
            mirror_source: None,
            via: None,
            method: method.into(),
            target: target.into(),
            version: 1,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            body_truncated: false,
            version_major: 1,
            trailers: Vec::new(),
            anomalies: Default::default(),
            response: None,
            response_missing: None,
        }
    }

    /// The GWLB endpoint's AWS name (`vpce-` and 17 hex digits), when there is one.
    pub fn gwlbe_name(&self) -> Option<String> {
        self.gwlbe.map(crate::engine::encap::geneve::endpoint_name)
    }

    /// The key of the source the request is attributed to (`docs/sources.md`).
    pub fn source_key(&self) -> crate::engine::source::SourceKey {
        crate::engine::source::SourceKey {
            gwlbe: self.gwlbe,
            sender: self.mirror_source,
            vni: Some(self.vni),
        }
    }

    /// Bytes this request holds in memory: the struct and the capacity of every buffer (what
    /// the engine charges to its budget while the request waits for its response).
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<HttpRequest>()
            + self.method.capacity()
            + self.target.capacity()
            + self.headers.capacity() * std::mem::size_of::<(String, Vec<u8>)>()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity())
                .sum::<usize>()
            + self.body.capacity()
            + self.trailers.capacity() * std::mem::size_of::<(String, Vec<u8>)>()
            + self
                .trailers
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity())
                .sum::<usize>()
            + self.response.as_ref().map_or(0, |r| r.held_bytes())
    }

    /// Time from the first byte of the request to the first byte of its response (capture
    /// clock), µs.
    pub fn latency_us(&self) -> Option<u64> {
        self.response
            .as_ref()
            .map(|r| r.ts_us.saturating_sub(self.ts_us))
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// One HTTP/1.x response rebuilt from the server→client direction: the final answer to a
/// request (interim `100 Continue` / `103 Early Hints` are not kept; `101 Switching Protocols`
/// is a final answer).
///
/// Invariants (upheld by [`crate::engine::Engine`]): every byte of the head and of the body
/// was seen in order with no gap; `body` is the body as framed (chunked coding removed, any
/// content coding kept), at most `max_body_bytes` of it (`body_truncated` when cut); `body_len`
/// is the length of the whole body as framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Capture time (µs since the UNIX epoch) of the packet that began the response.
    pub ts_us: u64,
    /// Minor version: HTTP/1.`version`.
    pub version: u8,
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent (may be empty).
    pub reason: String,
    /// Header fields in order, names as sent, values raw; trailer fields of a chunked body
    /// follow them.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body as framed (de-chunked, not decompressed), cut at the cap.
    pub body: Vec<u8>,
    /// Length of the whole body as framed (also past the cap).
    pub body_len: u64,
    /// The body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body exceeded the cap and was cut.
    pub body_truncated: bool,
}

impl HttpResponse {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Bytes this response holds in memory (struct and buffer capacities).
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<HttpResponse>()
            + self.reason.capacity()
            + self.headers.capacity() * std::mem::size_of::<(String, Vec<u8>)>()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity())
                .sum::<usize>()
            + self.body.capacity()
    }
}
