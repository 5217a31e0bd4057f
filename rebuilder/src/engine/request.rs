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
    pub headers: Fields,
    /// Decoded body (chunked framing removed), at most `max_body_bytes` long.
    pub body: Vec<u8>,
    /// When the body was measured but not kept (`EngineConfig::keep_request_bodies` off):
    /// the length `body` would have had; `None` when `body` holds it.
    pub measured_body_len: Option<u64>,
    /// The body arrived with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body exceeded the cap and was cut.
    pub body_truncated: bool,
    /// Major version: 1 for HTTP/1.x; 0 for HTTP/0.9 (a simple request `GET target` without
    /// version, or `HTTP/0.9` written out); 2 to 9 when an HTTP/1 request line names another
    /// major (Apache serves `HTTP/2.0` to `HTTP/9.9`, Node `HTTP/2.0`).
    pub version_major: u8,
    /// Trailer fields of a chunked body, in order, names as sent, values raw.
    pub trailers: Fields,
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
            headers: Fields::new(),
            body: Vec::new(),
            measured_body_len: None,
            chunked: false,
            body_truncated: false,
            version_major: 1,
            trailers: Fields::new(),
            anomalies: Default::default(),
            response: None,
            response_missing: None,
        }
    }

    /// Length of the body, kept or only measured (at most `max_body_bytes`).
    pub fn body_len(&self) -> u64 {
        self.measured_body_len.unwrap_or(self.body.len() as u64)
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
            + self.headers.held_bytes()
            + self.body.capacity()
            + self.trailers.held_bytes()
            + self.response.as_ref().map_or(0, |r| r.held_bytes())
    }

    /// Frees the method, target and fields (`EngineConfig::keep_request_heads` off: the
    /// request is only counted).
    pub fn forget_head(&mut self) {
        self.method = String::new();
        self.target = String::new();
        self.headers = Fields::new();
        self.trailers = Fields::new();
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
        self.headers.find(name)
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
    pub headers: Fields,
    /// The body as framed (de-chunked, not decompressed), cut at the cap.
    pub body: Vec<u8>,
    /// Length of the whole body as framed (also past the cap).
    pub body_len: u64,
    /// The body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body exceeded the cap and was cut.
    pub body_truncated: bool,
    /// The head had more than `max_response_header_bytes` bytes or `max_headers` fields: the
    /// fields are the ones read within the cap, then the framing fields (`Content-Length`,
    /// `Transfer-Encoding`) found past it; the response is framed as the whole head says.
    pub head_truncated: bool,
}

impl HttpResponse {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.find(name)
    }

    /// Bytes this response holds in memory (struct and buffer capacities).
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<HttpResponse>()
            + self.reason.capacity()
            + self.headers.held_bytes()
            + self.body.capacity()
    }
}

/// Header (or trailer) fields in order: names as sent, values raw.
///
/// Stored packed — the names in one string, the values in one buffer, one index entry per
/// field — so that a list holds three allocations however many fields it has, instead of
/// two per field: the allocations were most of what reading a head cost, and a request is
/// freed on another thread than the one that built it (the forwarder's), where each
/// allocation is a cross-thread free.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Fields {
    names: String,
    values: Vec<u8>,
    /// End of field `i`'s name in `names` and of its value in `values`.
    ends: Vec<(usize, usize)>,
}

impl Fields {
    /// No field.
    pub const fn new() -> Fields {
        Fields {
            names: String::new(),
            values: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// No field, with room for `fields` fields of `name_bytes` and `value_bytes` in all.
    pub fn with_capacity(fields: usize, name_bytes: usize, value_bytes: usize) -> Fields {
        Fields {
            names: String::with_capacity(name_bytes),
            values: Vec::with_capacity(value_bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// The fields of `pairs`, each buffer allocated once at its exact size (`pairs` is
    /// walked twice).
    pub fn collect_sized<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])> + Clone) -> Fields {
        let (n, names, values) = sizes(pairs.clone());
        let mut out = Fields::with_capacity(n, names, values);
        for (name, value) in pairs {
            out.push(name, value);
        }
        out
    }

    /// Adds the fields of `pairs` after the others, each buffer grown once by exactly what
    /// they need (`pairs` is walked twice).
    pub fn extend_sized<'a>(&mut self, pairs: impl Iterator<Item = (&'a str, &'a [u8])> + Clone) {
        let (n, names, values) = sizes(pairs.clone());
        self.reserve(n, names, values);
        for (name, value) in pairs {
            self.push(name, value);
        }
    }

    /// The three buffers' capacities (as [`Fields::capacities`]) once grown by exactly what
    /// `fields` more fields of `names` and `values` bytes in all need ([`Fields::reserve`],
    /// [`Fields::extend_sized`]): what they would cost, known before anything is allocated.
    pub fn capacities_with(&self, fields: usize, names: usize, values: usize) -> [usize; 3] {
        let each = std::mem::size_of::<(usize, usize)>();
        [
            self.names.capacity().max(self.names.len() + names),
            self.values.capacity().max(self.values.len() + values),
            self.ends.capacity().max(self.ends.len() + fields) * each,
        ]
    }

    /// [`Fields::held_bytes`] once `pairs` are added by [`Fields::extend_sized`].
    pub fn held_bytes_with<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> usize {
        let (n, names, values) = sizes(pairs);
        self.capacities_with(n, names, values).into_iter().sum()
    }

    /// Grows the buffers by exactly what `fields` more fields of `names` and `values` bytes
    /// in all need, where they lack room.
    pub fn reserve(&mut self, fields: usize, names: usize, values: usize) {
        self.names.reserve_exact(names);
        self.values.reserve_exact(values);
        self.ends.reserve_exact(fields);
    }

    /// Adds a field after the others.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.names.push_str(name);
        self.values.extend_from_slice(value);
        self.ends.push((self.names.len(), self.values.len()));
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No field.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i` as `(name, value)`.
    pub fn get(&self, i: usize) -> Option<(&str, &[u8])> {
        let &(name_end, value_end) = self.ends.get(i)?;
        let (name_start, value_start) = match i.checked_sub(1) {
            Some(p) => self.ends[p],
            None => (0, 0),
        };
        Some((
            &self.names[name_start..name_end],
            &self.values[value_start..value_end],
        ))
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> FieldsIter<'_> {
        FieldsIter {
            names: &self.names,
            values: &self.values,
            ends: &self.ends,
            starts: (0, 0),
        }
    }

    /// Every name, one after the other, and every value, one after the other (how they are
    /// stored): for a writer that checks all of them at once.
    pub fn packed(&self) -> (&str, &[u8]) {
        (&self.names, &self.values)
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn find(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.names.clear();
        self.values.clear();
        self.ends.clear();
    }

    /// Heap bytes held (the capacity of the three buffers).
    pub fn held_bytes(&self) -> usize {
        self.capacities().into_iter().sum()
    }

    /// The three buffers' capacities (for an allocator's rounding of each).
    pub fn capacities(&self) -> [usize; 3] {
        [
            self.names.capacity(),
            self.values.capacity(),
            self.ends.capacity() * std::mem::size_of::<(usize, usize)>(),
        ]
    }

    /// The fields as owned pairs (tests and tools comparing with other lists).
    pub fn to_vec(&self) -> Vec<(String, Vec<u8>)> {
        self.iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect()
    }
}

/// How many fields `pairs` has, and the bytes of their names and of their values.
fn sizes<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> (usize, usize, usize) {
    pairs.fold((0, 0, 0), |(n, a, b), (name, value)| {
        (n + 1, a + name.len(), b + value.len())
    })
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Fields {
        let mut out = Fields::new();
        out.extend(iter);
        out
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> Extend<(N, V)> for Fields {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (n, v) in iter {
            self.push(n.as_ref(), v.as_ref());
        }
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> From<Vec<(N, V)>> for Fields {
    fn from(v: Vec<(N, V)>) -> Fields {
        v.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = FieldsIter<'a>;
    fn into_iter(self) -> FieldsIter<'a> {
        self.iter()
    }
}

/// The fields of a [`Fields`] in order.
#[derive(Clone)]
pub struct FieldsIter<'a> {
    names: &'a str,
    values: &'a [u8],
    /// Ends of the fields not yet given (from either side).
    ends: &'a [(usize, usize)],
    /// Where the next field from the front starts.
    starts: (usize, usize),
}

impl<'a> Iterator for FieldsIter<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<(&'a str, &'a [u8])> {
        let (&(name_end, value_end), rest) = self.ends.split_first()?;
        let (name_start, value_start) = std::mem::replace(&mut self.starts, (name_end, value_end));
        self.ends = rest;
        Some((
            &self.names[name_start..name_end],
            &self.values[value_start..value_end],
        ))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ends.len(), Some(self.ends.len()))
    }
}

impl DoubleEndedIterator for FieldsIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let (&(name_end, value_end), rest) = self.ends.split_last()?;
        self.ends = rest;
        let (name_start, value_start) = rest.last().copied().unwrap_or(self.starts);
        Some((
            &self.names[name_start..name_end],
            &self.values[value_start..value_end],
        ))
    }
}

impl ExactSizeIterator for FieldsIter<'_> {}

#[cfg(test)]
mod fields_tests {
    use super::Fields;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn packed_fields_give_back_exactly_the_pairs_pushed(
            pairs in proptest::collection::vec(("\\PC{0,12}", proptest::collection::vec(any::<u8>(), 0..20)), 0..12),
            sides in proptest::collection::vec(any::<bool>(), 0..16),
        ) {
            let f: Fields = pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
            prop_assert_eq!(f.len(), pairs.len());
            prop_assert_eq!(f.to_vec(), pairs.clone());
            let back: Vec<(String, Vec<u8>)> =
                f.iter().rev().map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
            let mut want = pairs.clone();
            want.reverse();
            prop_assert_eq!(back, want);
            for (i, (n, v)) in pairs.iter().enumerate() {
                prop_assert_eq!(f.get(i), Some((n.as_str(), v.as_slice())));
            }
            prop_assert_eq!(f.get(pairs.len()), None);
            // Taken from both ends in any order: the same pairs as from a list.
            let mut it = f.iter();
            let mut model: std::collections::VecDeque<_> = pairs.iter().collect();
            for &front in &sides {
                prop_assert_eq!(it.len(), model.len());
                let (got, want) = if front {
                    (it.next(), model.pop_front())
                } else {
                    (it.next_back(), model.pop_back())
                };
                prop_assert_eq!(got, want.map(|(n, v)| (n.as_str(), v.as_slice())));
            }
            // Equal contents compare equal however the buffers were sized.
            let mut g = Fields::with_capacity(64, 256, 256);
            g.extend(pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
            prop_assert_eq!(&f, &g);
        }
    }

    #[test]
    fn find_gives_the_first_field_of_the_name_in_any_case() {
        let f = Fields::from(vec![("Host", "a"), ("X", "1"), ("host", "b")]);
        assert_eq!(f.find("HOST"), Some(&b"a"[..]));
        assert_eq!(f.find("y"), None);
        let mut g = f.clone();
        g.clear();
        assert!(g.is_empty() && g.find("host").is_none());
    }

    #[test]
    fn fields_whose_names_or_values_differ_only_by_where_they_split_are_not_equal() {
        let a = Fields::from(vec![("ab", "c")]);
        let b = Fields::from(vec![("a", "bc")]);
        let c = Fields::from(vec![("a", ""), ("b", "c")]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }
}
