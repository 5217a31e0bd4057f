//! The knobs of the generator.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The knobs of the generator. [`SynthConfig::default`] is clean traffic: a handful of keep-alive
/// IPv4 connections over VXLAN, both directions, no loss, no mutation.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Connections in the whole capture.
    pub connections: usize,
    /// Connections open (and interleaved) at any time.
    pub concurrency: usize,
    /// Requests per connection (`min..=max`); 1 when `keep_alive` is false.
    pub min_requests: usize,
    pub max_requests: usize,
    /// Methods, chosen uniformly. POST, PUT and PATCH carry a body.
    pub methods: Vec<String>,
    /// Body size of requests that carry one (`min..=max` bytes).
    pub min_body: usize,
    pub max_body: usize,
    /// Fraction of bodies sent with `Transfer-Encoding: chunked` (HTTP/1.1 only).
    pub chunked: f64,
    /// Force a segment boundary inside every chunked body's `0\r\n\r\n` terminator.
    pub split_chunk_terminator: bool,
    /// Fraction of body requests sent with `Expect: 100-continue` (head, interim 100, body).
    pub expect_continue: f64,
    /// Fraction of connections that pipeline all their requests in one write.
    pub pipelining: f64,
    /// Persistent connections (several requests); otherwise one request and `Connection: close`.
    pub keep_alive: bool,
    /// Fraction of connections speaking HTTP/1.0.
    pub http10: f64,
    /// Fraction of writes cut into random small segments (instead of MSS-sized ones).
    pub small_segments: f64,
    /// Probability that a client data segment is swapped with the next one.
    pub reorder: f64,
    /// Probability that a client data segment is retransmitted unchanged a little later.
    pub retransmit: f64,
    /// Probability that a retransmission partially overlapping two segments follows a segment.
    pub overlap: f64,
    /// Probability that a client data segment is lost (never captured).
    pub loss: f64,
    /// AWS PacketLength: inner frames longer than this are cut to this many bytes.
    pub packet_length: Option<usize>,
    /// Fraction of connections over IPv6 (inner).
    pub ipv6: f64,
    /// Outer (VXLAN carrier) packets over IPv6.
    pub outer_ipv6: bool,
    /// Fraction of connections opened by a load balancer with a PROXY protocol v1 line
    /// naming another client (`TCP4`/`TCP6` following the inner family).
    pub proxy_v1: f64,
    /// Fraction of connections with a PROXY protocol v2 header (after `proxy_v1` is drawn;
    /// with a TLV, as an NLB sends).
    pub proxy_v2: f64,
    /// Fraction of connections that are a load balancer's health check: one
    /// `GET /health` with `User-Agent: ELB-HealthChecker/2.0`, as an ALB sends it (dropped by
    /// the engine's default health-check rule; the truth lists it as captured).
    pub health_checks: f64,
    /// Fraction of connections whose inner frames carry an 802.1Q tag.
    pub vlan: f64,
    /// Fraction of tagged connections that use two tags (QinQ) instead of one.
    pub qinq: f64,
    /// Inner MTU (1500, or 9001 for jumbo frames).
    pub mtu: usize,
    /// Probability that a packet is mirrored twice (second copy from another outer source).
    pub duplicate_mirror: f64,
    /// The capture starts mid-stream: the first connections are already in progress.
    pub mid_stream: bool,
    /// Server responses present (server -> client direction).
    pub responses: bool,
    /// Pure ACK packets present.
    pub acks: bool,
    /// Fraction of connections closed by RST instead of FIN.
    pub rst: f64,
    /// Fraction of connections that use TCP timestamps (a 12-byte option on every segment).
    pub tcp_timestamps: f64,
    /// Fraction of connections whose initial sequence numbers are just below 2^32 (wraparound).
    pub isn_wrap: f64,
    /// Encapsulate in VXLAN (otherwise a plain Ethernet capture; VNI 0 in the truth).
    pub vxlan: bool,
    /// Deliver every VXLAN datagram as a Gateway Load Balancer does when a GWLB endpoint is the
    /// mirror target: as an IP packet inside GENEVE (UDP/6081, from a GWLB node, IPv4) with
    /// AWS's options. The inner traffic is the same as without it (no random draw depends on
    /// it); the truth names the endpoint.
    pub geneve: bool,
    /// GWLB endpoint ids (`geneve`), one per connection in turn (an empty list: one default
    /// endpoint).
    pub gwlb_endpoints: Vec<u64>,
    /// VNIs, one chosen per connection.
    pub vnis: Vec<u32>,
    /// Timestamp of the first frame (µs since the UNIX epoch).
    pub start_ts_us: u64,
    /// Each frame is 1..=max_step_us µs after the previous one.
    pub max_step_us: u64,
    /// Server response body size (`0..=max`).
    pub max_response_body: usize,
    /// Fraction of responses sent chunked (HTTP/1.1).
    pub response_chunked: f64,
    /// Probability that a server data segment is lost (never captured).
    pub response_loss: f64,
    /// Fraction of connections that end with a websocket upgrade (`101`, then frames).
    pub upgrades: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            connections: 20,
            concurrency: 4,
            min_requests: 1,
            max_requests: 5,
            methods: ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
                .iter()
                .map(|m| m.to_string())
                .collect(),
            min_body: 0,
            max_body: 4000,
            chunked: 0.0,
            split_chunk_terminator: false,
            expect_continue: 0.0,
            pipelining: 0.0,
            keep_alive: true,
            http10: 0.0,
            small_segments: 0.0,
            reorder: 0.0,
            retransmit: 0.0,
            overlap: 0.0,
            loss: 0.0,
            packet_length: None,
            ipv6: 0.0,
            outer_ipv6: false,
            proxy_v1: 0.0,
            proxy_v2: 0.0,
            health_checks: 0.0,
            vlan: 0.0,
            qinq: 0.0,
            mtu: 1500,
            duplicate_mirror: 0.0,
            mid_stream: false,
            responses: true,
            acks: true,
            rst: 0.0,
            tcp_timestamps: 0.0,
            isn_wrap: 0.0,
            vxlan: true,
            geneve: false,
            gwlb_endpoints: Vec::new(),
            vnis: vec![4242],
            start_ts_us: 1_700_000_000_000_000,
            max_step_us: 20,
            max_response_body: 2000,
            response_chunked: 0.2,
            response_loss: 0.0,
            upgrades: 0.0,
        }
    }
}

impl SynthConfig {
    /// A realistic production-like mix for benchmarks: many interleaved keep-alive connections,
    /// both directions, a little pipelining, chunked uploads, IPv6 and VLAN tags, a few
    /// retransmissions and mirrored duplicates — and no loss, so every request is expected.
    pub fn realistic(seed: u64, connections: usize, concurrency: usize) -> Self {
        SynthConfig {
            seed,
            connections,
            concurrency,
            min_requests: 1,
            max_requests: 8,
            methods: [
                "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "HEAD", "PATCH",
            ]
            .iter()
            .map(|m| m.to_string())
            .collect(),
            min_body: 16,
            max_body: 6000,
            chunked: 0.1,
            split_chunk_terminator: false,
            expect_continue: 0.02,
            pipelining: 0.05,
            keep_alive: true,
            http10: 0.02,
            small_segments: 0.05,
            reorder: 0.01,
            retransmit: 0.01,
            overlap: 0.005,
            loss: 0.0,
            packet_length: None,
            ipv6: 0.2,
            outer_ipv6: false,
            proxy_v1: 0.0,
            proxy_v2: 0.0,
            health_checks: 0.0,
            vlan: 0.1,
            qinq: 0.1,
            mtu: 1500,
            duplicate_mirror: 0.01,
            mid_stream: false,
            responses: true,
            acks: true,
            rst: 0.05,
            tcp_timestamps: 0.5,
            isn_wrap: 0.05,
            vxlan: true,
            geneve: false,
            gwlb_endpoints: Vec::new(),
            vnis: vec![101, 202, 303],
            start_ts_us: 1_700_000_000_000_000,
            max_step_us: 2,
            max_response_body: 3000,
            response_chunked: 0.2,
            response_loss: 0.0,
            upgrades: 0.0,
        }
    }
}

/// The GWLB endpoint of a generated GENEVE capture when none is configured.
pub(super) const DEFAULT_GWLBE: u64 = 0x0ab1_c2d3_e4f5_a6b7;

/// The two outer sources of connection `id`: its ENI's address, and the peer ENI's (a
/// packet mirrored from both ends arrives twice, from each).
pub(super) fn outer_sources(id: u64, v6: bool) -> (IpAddr, IpAddr) {
    let n = (id % 200) as u8;
    if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 1, u16::from(n) + 1)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 2, u16::from(n) + 1)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(172, 31, 1, n + 1)),
            IpAddr::V4(Ipv4Addr::new(172, 31, 2, n + 1)),
        )
    }
}
