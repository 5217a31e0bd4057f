//! The `http_split` target: one request stream cut anywhere, parsed whole and split.

use super::*;

/// Input of the HTTP target: a byte stream and the points where it is split.
#[derive(Arbitrary, Debug, Clone)]
pub struct HttpInput {
    /// The stream start (SYN) was seen.
    pub at_start: bool,
    /// Tiny caps instead of the defaults.
    pub small_caps: bool,
    /// Split points (positions modulo the stream length).
    pub cuts: Vec<u16>,
    /// Some pieces are followed by a gap of this length (second, gap-tolerant pass).
    pub gaps: Vec<(u16, u16)>,
    /// The sender (10.0.0.1) is a trusted PROXY protocol peer.
    pub trust_proxy: bool,
    pub wire: Vec<u8>,
}

/// One parser run: the test kit's harness (which checks after every step that the bytes held
/// are what is charged to the budget) plus the checks of this target.
struct HttpRun(ParserHarness);

impl HttpRun {
    fn new(at_start: bool, small: bool, trust_proxy: bool) -> HttpRun {
        HttpRun::with_bodies(at_start, small, trust_proxy, true, true)
    }
    /// `keep_bodies`: bodies kept, or only measured; `keep_heads`: targets and fields kept.
    fn with_bodies(
        at_start: bool,
        small: bool,
        trust_proxy: bool,
        keep_bodies: bool,
        keep_heads: bool,
    ) -> HttpRun {
        let proxy_protocol_from = if trust_proxy {
            AddrRanges::parse("10.0.0.0/8").expect("a range")
        } else {
            AddrRanges::NONE
        };
        let (limits, budget) = if small {
            (
                HttpLimits {
                    max_header_bytes: 128,
                    max_headers: 6,
                    max_body_bytes: 16,
                    keep_bodies,
                    keep_heads,
                    health_checks: HealthCheckRule::OFF,
                    proxy_protocol_from,
                },
                512,
            )
        } else {
            (
                HttpLimits {
                    max_header_bytes: 32 * 1024,
                    max_headers: 1000,
                    max_body_bytes: 1 << 20,
                    keep_bodies,
                    keep_heads,
                    health_checks: HealthCheckRule::OFF,
                    proxy_protocol_from,
                },
                1 << 20,
            )
        };
        HttpRun(ParserHarness::with(at_start, limits, budget))
    }
    fn data(&mut self, bytes: &[u8]) {
        self.0.feed(bytes);
        self.check();
    }
    fn gap(&mut self, len: u64) {
        self.0.gap(len);
        self.check();
    }
    fn end(&mut self) {
        self.0.end();
        self.check();
    }
    /// Feeds `wire` whole to this run, and checks it gives `whole`'s requests once `strip`
    /// took out of both what this run leaves out (`what`), and the same counters.
    fn same_as_but(
        mut self,
        whole: &HttpRun,
        wire: &[u8],
        what: &str,
        strip: impl Fn(&HttpRequest) -> HttpRequest,
    ) -> HttpRun {
        self.data(wire);
        self.end();
        let stripped = |out: &[HttpRequest]| out.iter().map(&strip).collect::<Vec<_>>();
        assert_eq!(
            stripped(&self.0.out),
            stripped(&whole.0.out),
            "{what} differ"
        );
        assert_eq!(self.0.stats, whole.0.stats, "{what} change counters");
        self
    }
    fn check(&self) {
        let h = &self.0;
        check_requests(&h.out);
        assert_eq!(h.stats.requests, h.out.len() as u64);
        for r in &h.out {
            assert!(r.body.len() <= h.limits.max_body_bytes, "body over the cap");
            assert!(
                r.body_len() <= h.limits.max_body_bytes as u64,
                "length over the cap"
            );
        }
    }
}

/// Whole stream vs. the same stream split anywhere: identical requests and counters. Then
/// the stream with gaps: the parser's accounting stays exact and nothing panics.
pub fn run_http(input: &HttpInput) {
    let wire = &input.wire;
    let mut whole = HttpRun::new(input.at_start, input.small_caps, input.trust_proxy);
    whole.data(wire);
    whole.end();

    let points = cut_points(&input.cuts, wire.len());
    let mut split = HttpRun::new(input.at_start, input.small_caps, input.trust_proxy);
    for w in points.windows(2) {
        split.data(&wire[w[0]..w[1]]);
    }
    split.end();
    assert_eq!(split.0.out, whole.0.out, "split points change the requests");
    assert_eq!(
        split.0.stats, whole.0.stats,
        "split points change the counters"
    );

    if !input.small_caps {
        // Bodies measured instead of kept (a budget no body here reaches): the same requests
        // less their bodies' bytes, the same counters.
        let measured = HttpRun::with_bodies(input.at_start, false, input.trust_proxy, false, true);
        let measured = measured.same_as_but(&whole, wire, "measured bodies", |r| HttpRequest {
            body: Vec::new(),
            measured_body_len: Some(r.body_len()),
            ..r.clone()
        });
        assert!(measured.0.out.iter().all(|r| r.body.is_empty()));
        // Heads not copied out (no output shows them): the same requests less their
        // targets and fields, the same counters.
        let headless = HttpRun::with_bodies(input.at_start, false, input.trust_proxy, true, false);
        let headless = headless.same_as_but(&whole, wire, "heads left out", |r| HttpRequest {
            target: String::new(),
            headers: Default::default(),
            ..r.clone()
        });
        assert!(
            headless
                .0
                .out
                .iter()
                .all(|r| r.target.is_empty() && r.headers.is_empty())
        );
    }

    if !input.gaps.is_empty() {
        let mut gappy = HttpRun::new(input.at_start, input.small_caps, input.trust_proxy);
        let mut gaps: Vec<(usize, u64)> = input
            .gaps
            .iter()
            .map(|(at, len)| (usize::from(*at) % (wire.len() + 1), u64::from(*len) + 1))
            .collect();
        gaps.sort_unstable();
        let mut pos = 0;
        for (at, len) in gaps {
            // The bytes of the gap are not delivered.
            let at = at.max(pos);
            gappy.data(&wire[pos..at]);
            gappy.gap(len);
            pos = (at + len as usize).min(wire.len());
        }
        gappy.data(&wire[pos..]);
        gappy.end();
        // A request emitted despite gaps is one of the whole stream's requests or lies
        // wholly inside bytes the whole run did not emit a request for (resync on a
        // request line inside a body): it never holds bytes across a gap, which the
        // per-request check cannot see; the exact accounting above is what is asserted.
        assert!(gappy.0.out.len() <= wire.len());
    }
}
