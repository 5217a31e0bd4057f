//! Duplicate mirroring: when a load balancer's ENI and its targets' ENIs are both mirrored,
//! one client request is rebuilt twice: the client → load balancer copy (from the load
//! balancer's ENI) and the load balancer → target copy (from the target's ENI, or the load
//! balancer's egress). With `--dedup`, the pair is collapsed into one record: the
//! **target-side copy**, whose source is the workload that served the request, carrying the
//! load balancer's copy's source key as `via`. The load balancer's copy is not emitted
//! (counted: `collapsed`).
//!
//! # Which two requests are one
//!
//! An Application Load Balancer forwards the request line, Host and body as received, opens
//! its own connection to the target from its node's address (the address the client
//! connected to), and adds `X-Amzn-Trace-Id` and `X-Forwarded-For` (the client address
//! appended last) ("HTTP headers and Application Load Balancers", Elastic Load Balancing
//! User Guide). So a target-side copy `T` and a load-balancer-side copy `L` are a pair when:
//!
//! - the method, target, Host value and body are equal (a fingerprint);
//! - `T` carries `X-Amzn-Trace-Id` (`L` may carry none, or the client's own);
//! - `T`'s TCP peer is `L`'s server (the load balancer node's address);
//! - when `T` has `X-Forwarded-For`, its last element is `L`'s TCP peer.
//!
//! # Holding, bounded
//!
//! The target-side copy is emitted first as a rule (the load balancer answers its client
//! after its target answered it), so a request that may be one half of a pair waits up to
//! `--dedup-window-ms` for the other half: every request with `X-Amzn-Trace-Id`, and every
//! request whose source the source map names as a load balancer's ENI. Other requests pass
//! at once. A held request is emitted alone when the window ends (`released`); the held bytes
//! are charged to `--dedup-max-bytes`, and a request that does not fit is emitted at once
//! (`over_budget`), never dropped. Enabling it therefore delays requests through a load
//! balancer by up to the window: enable it where load balancers and their targets are both
//! mirrored (docs/sources.md).
//!
//! Pure: no clock (times come from the caller), no locking (the daemon shares one behind a
//! mutex between its receive workers, so a pair whose copies reach different workers is
//! still found; copies that reach different rebuilders are not).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use crate::engine::request::HttpRequest;

/// Command-line and environment settings (`rebuilder run`, `rebuilder replay`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DedupArgs {
    /// Collapse the two copies of a request seen when a load balancer's ENI and its targets'
    /// ENIs are both mirrored: the target's copy is kept, with the load balancer's source as
    /// `via`. Delays requests that may be half of a pair by up to --dedup-window-ms.
    #[arg(long, env = "REBUILDER_DEDUP", help_heading = "Sources")]
    pub dedup: bool,
    /// How long a request that may be half of a pair waits for the other half, ms.
    #[arg(
        long,
        env = "REBUILDER_DEDUP_WINDOW_MS",
        default_value_t = 1000,
        help_heading = "Sources"
    )]
    pub dedup_window_ms: u64,
    /// Bytes of requests held waiting for their other half at most; a request beyond it is
    /// emitted at once (counted).
    #[arg(long, env = "REBUILDER_DEDUP_MAX_BYTES", default_value_t = 16 * 1024 * 1024, help_heading = "Sources")]
    pub dedup_max_bytes: usize,
}

impl DedupArgs {
    /// The settings, when `--dedup` is on.
    pub fn config(&self) -> Option<DedupConfig> {
        self.dedup.then(|| DedupConfig {
            window_us: self.dedup_window_ms.saturating_mul(1000),
            max_bytes: self.dedup_max_bytes,
        })
    }
}

/// Settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long a request that may be half of a pair waits for the other half, µs.
    pub window_us: u64,
    /// Bytes of requests held at most (their [`HttpRequest::held_bytes`]).
    pub max_bytes: usize,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Requests held to wait for their other half.
    pub held: u64,
    /// Pairs collapsed (one load-balancer-side copy not emitted for each).
    pub collapsed: u64,
    /// Held requests emitted alone when the window ended (or at the end of input).
    pub released: u64,
    /// Requests that could have been held but did not fit in `max_bytes` (emitted at once).
    pub over_budget: u64,
}

/// What the pairing reads of a held request.
#[derive(Debug)]
struct Held {
    req: HttpRequest,
    fp: u64,
    bytes: usize,
    trace: bool,
    xff_last: Option<IpAddr>,
}

/// The duplicate-mirroring filter (see the module documentation).
#[derive(Debug)]
pub struct Dedup {
    cfg: DedupConfig,
    hasher: foldhash::fast::RandomState,
    next_id: u64,
    held: HashMap<u64, Held>,
    /// Held ids by fingerprint.
    by_fp: HashMap<u64, Vec<u64>>,
    /// (deadline, id) in arrival order (deadlines only grow).
    order: VecDeque<(u64, u64)>,
    held_bytes: usize,
    stats: DedupStats,
}

const TRACE_HEADER: &str = "x-amzn-trace-id";
const XFF_HEADER: &str = "x-forwarded-for";

/// The last address of the last `X-Forwarded-For` field.
fn xff_last(r: &HttpRequest) -> Option<IpAddr> {
    let v = r
        .headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(XFF_HEADER))?;
    let s = std::str::from_utf8(v.1).ok()?;
    s.rsplit(',').next()?.trim().parse().ok()
}

impl Dedup {
    pub fn new(cfg: DedupConfig) -> Dedup {
        Dedup {
            cfg,
            hasher: foldhash::fast::RandomState::default(),
            next_id: 0,
            held: HashMap::new(),
            by_fp: HashMap::new(),
            order: VecDeque::new(),
            held_bytes: 0,
            stats: DedupStats::default(),
        }
    }

    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Requests held now.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    fn fingerprint(&self, r: &HttpRequest) -> u64 {
        let mut h = self.hasher.build_hasher();
        r.method.hash(&mut h);
        r.target.hash(&mut h);
        r.header("host").hash(&mut h);
        r.body.hash(&mut h);
        r.body_truncated.hash(&mut h);
        h.finish()
    }

    /// Whether `t` (target side) and `l` (load-balancer side) are one request.
    fn pair(t: &HttpRequest, t_trace: bool, t_xff: Option<IpAddr>, l: &HttpRequest) -> bool {
        t_trace
            && t.peer.ip() == l.server.ip()
            && t_xff.is_none_or(|a| a == l.peer.ip())
            && t.method == l.method
            && t.target == l.target
            && t.header("host") == l.header("host")
            && t.body == l.body
    }

    /// One request out of the engine, at `now_us`; `lb_source`: the source map names its
    /// source as a load balancer's ENI. What may be emitted now goes to `out`.
    pub fn push(
        &mut self,
        req: HttpRequest,
        lb_source: bool,
        now_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        let fp = self.fingerprint(&req);
        let trace = req.header(TRACE_HEADER).is_some();
        let xff = xff_last(&req);
        if let Some(ids) = self.by_fp.get(&fp) {
            let found = ids.iter().copied().find_map(|id| {
                let h = &self.held[&id];
                if Dedup::pair(&req, trace, xff, &h.req) {
                    Some((id, true))
                } else if Dedup::pair(&h.req, h.trace, h.xff_last, &req) {
                    Some((id, false))
                } else {
                    None
                }
            });
            if let Some((id, new_is_target)) = found {
                let h = self.take(id);
                self.stats.collapsed += 1;
                let (mut target, lb) = if new_is_target {
                    (req, h.req)
                } else {
                    (h.req, req)
                };
                target.via = Some(Box::new(lb.source_key()));
                out.push(target);
                return;
            }
        }
        if !(trace || lb_source) {
            out.push(req);
            return;
        }
        let bytes = req.held_bytes();
        if self.held_bytes + bytes > self.cfg.max_bytes {
            self.stats.over_budget += 1;
            out.push(req);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.held_bytes += bytes;
        self.stats.held += 1;
        self.by_fp.entry(fp).or_default().push(id);
        self.order
            .push_back((now_us.saturating_add(self.cfg.window_us), id));
        self.held.insert(
            id,
            Held {
                req,
                fp,
                bytes,
                trace,
                xff_last: xff,
            },
        );
    }

    fn take(&mut self, id: u64) -> Held {
        let h = self.held.remove(&id).expect("a held id");
        self.held_bytes -= h.bytes;
        if let Some(ids) = self.by_fp.get_mut(&h.fp) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_fp.remove(&h.fp);
            }
        }
        h
    }

    /// Emits the held requests whose window ended by `now_us`.
    pub fn expire(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        while let Some(&(deadline, id)) = self.order.front() {
            if deadline > now_us {
                break;
            }
            self.order.pop_front();
            if self.held.contains_key(&id) {
                let h = self.take(id);
                self.stats.released += 1;
                out.push(h.req);
            }
        }
        if self.held.is_empty() {
            self.order.clear();
        }
    }

    /// Emits everything held (end of input, shutdown).
    pub fn flush(&mut self, out: &mut Vec<HttpRequest>) {
        self.expire(u64::MAX, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, server: &str, headers: &[(&str, &str)], sender: &str) -> HttpRequest {
        HttpRequest {
            ts_us: 1,
            vni: 7,
            mirror_source: Some(sender.parse().unwrap()),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: b"amount=10".to_vec(),
            ..HttpRequest::new(
                "POST",
                "/pay?x=1",
                peer.parse().unwrap(),
                server.parse().unwrap(),
            )
        }
    }

    fn cfg() -> DedupConfig {
        DedupConfig {
            window_us: 1_000_000,
            max_bytes: 1 << 20,
        }
    }

    /// The client → ALB copy (mirrored from the ALB's ENI 10.0.0.5) and the ALB → target
    /// copy (mirrored from the target's ENI 10.0.1.7).
    fn pair() -> (HttpRequest, HttpRequest) {
        let lb = req(
            "203.0.113.9:51000",
            "10.0.0.5:443",
            &[("Host", "shop.example")],
            "10.0.0.5",
        );
        let target = req(
            "10.0.0.5:33000",
            "10.0.1.7:8080",
            &[
                ("Host", "shop.example"),
                ("X-Forwarded-For", "203.0.113.9"),
                (
                    "X-Amzn-Trace-Id",
                    "Root=1-67891233-abcdef012345678912345678",
                ),
            ],
            "10.0.1.7",
        );
        (lb, target)
    }

    #[test]
    fn the_target_side_copy_is_kept_with_the_load_balancer_copy_as_via() {
        let (lb, target) = pair();
        let mut d = Dedup::new(cfg());
        let mut out = Vec::new();
        d.push(target.clone(), false, 10, &mut out);
        assert!(out.is_empty(), "held for its other half");
        d.push(lb.clone(), true, 20, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].mirror_source, target.mirror_source);
        assert_eq!(out[0].via.as_deref(), Some(&lb.source_key()));
        assert_eq!(d.stats().collapsed, 1);
        assert_eq!(d.held_bytes(), 0);
        // The other order: the load balancer's copy first (its source is a load balancer).
        let mut out = Vec::new();
        d.push(lb.clone(), true, 30, &mut out);
        d.push(target.clone(), false, 40, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].via.as_deref(), Some(&lb.source_key()));
        assert_eq!(d.stats().collapsed, 2);
        assert_eq!(d.held_len(), 0);
    }

    #[test]
    fn a_request_without_its_other_half_goes_out_alone_when_the_window_ends() {
        let (_, target) = pair();
        let mut d = Dedup::new(cfg());
        let mut out = Vec::new();
        d.push(target, false, 10, &mut out);
        d.expire(500_000, &mut out);
        assert!(out.is_empty());
        d.expire(1_000_010, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].via, None);
        assert_eq!(d.stats().released, 1);
    }

    #[test]
    fn requests_that_differ_or_do_not_chain_through_the_load_balancer_are_not_collapsed() {
        let (lb, target) = pair();
        let mut d = Dedup::new(cfg());
        let mut out = Vec::new();
        // The same request text from another client (X-Forwarded-For names someone else).
        let mut other_client = lb.clone();
        other_client.peer = "198.51.100.1:1000".parse().unwrap();
        other_client.client = other_client.peer;
        d.push(target.clone(), false, 10, &mut out);
        d.push(other_client, true, 11, &mut out);
        // Another body.
        let mut other_body = lb.clone();
        other_body.body = b"amount=99".to_vec();
        d.push(other_body, true, 12, &mut out);
        // Not through this load balancer node.
        let mut elsewhere = lb.clone();
        elsewhere.server = "10.0.0.6:443".parse().unwrap();
        d.push(elsewhere, true, 13, &mut out);
        assert_eq!(d.stats().collapsed, 0);
        // Requests that cannot be half of a pair are never held.
        let mut plain = lb.clone();
        plain.target = "/plain".into();
        d.push(plain, false, 14, &mut out);
        assert_eq!(out.len(), 1);
        d.flush(&mut out);
        assert_eq!(out.len(), 5, "nothing lost");
        assert_eq!(d.held_bytes(), 0);
    }

    proptest::proptest! {
        /// Whatever arrives and whenever the windows end: every request goes out exactly once
        /// except the collapsed load-balancer copies, the bytes held never pass the cap, and
        /// nothing is held after a flush.
        #[test]
        fn nothing_is_lost_but_collapsed_copies_and_the_cap_holds(
            steps in proptest::collection::vec((0..4u8, 0..3u8, 0..2_000_000u64), 1..60),
            cap_requests in 1..6usize,
        ) {
            let (lb, target) = pair();
            let cap = target.held_bytes().max(lb.held_bytes()) * cap_requests;
            let mut d = Dedup::new(DedupConfig { window_us: 1_000_000, max_bytes: cap });
            let mut out = Vec::new();
            let mut now = 0u64;
            let mut pushed = 0u64;
            for (kind, variant, advance) in steps {
                now += advance;
                let mut r = match kind {
                    0 => target.clone(),
                    1 => lb.clone(),
                    2 => {
                        let mut r = lb.clone();
                        r.target = "/other".into();
                        r
                    }
                    _ => {
                        d.expire(now, &mut out);
                        continue;
                    }
                };
                // Variants of the body: only equal bodies pair.
                r.body.push(b'0' + variant);
                r.ts_us = pushed;
                pushed += 1;
                d.push(r, kind == 1, now, &mut out);
                proptest::prop_assert!(d.held_bytes() <= cap);
            }
            d.flush(&mut out);
            let s = d.stats();
            proptest::prop_assert_eq!(out.len() as u64 + s.collapsed, pushed);
            proptest::prop_assert_eq!(d.held_len(), 0);
            proptest::prop_assert_eq!(d.held_bytes(), 0);
            // A collapse takes one held request; the others are released.
            proptest::prop_assert_eq!(s.held, s.released + s.collapsed);
            let mut seen: Vec<u64> = out.iter().map(|r| r.ts_us).collect();
            seen.sort_unstable();
            seen.dedup();
            proptest::prop_assert_eq!(seen.len(), out.len(), "each request once");
            proptest::prop_assert_eq!(out.iter().filter(|r| r.via.is_some()).count() as u64, s.collapsed);
        }
    }

    #[test]
    fn requests_beyond_the_byte_cap_go_out_at_once_and_are_counted() {
        let (_, target) = pair();
        let mut d = Dedup::new(DedupConfig {
            window_us: 1_000_000,
            max_bytes: target.held_bytes() + 10,
        });
        let mut out = Vec::new();
        d.push(target.clone(), false, 1, &mut out);
        d.push(target.clone(), false, 2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(d.stats().over_budget, 1);
        assert!(d.held_bytes() <= target.held_bytes() + 10);
    }
}
