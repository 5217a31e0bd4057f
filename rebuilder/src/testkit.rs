//! Test support that needs the engine's own types: scripted TCP connections ([`TcpConn`])
//! and the HTTP parser harness ([`ParserHarness`]).
//!
//! Compiled for this crate's unit tests (`cfg(test)`) and with the `testkit` feature, which
//! the `rebuilder-testkit` crate turns on and re-exports (with the frame builder,
//! [`crate::engine::packet::build`]). Why here and not only in `rebuilder-testkit`: the unit
//! tests of this crate are compiled as a second copy of the crate, so types coming from a
//! dev-dependency on `rebuilder-testkit` (which depends on the first copy) would not be the
//! types under test; code that must name `Parser`, `Budget` or `EngineStats` lives here.

use std::cell::Cell;
use std::net::SocketAddr;

use crate::engine::health_check::HealthCheckRule;
use crate::engine::http::{Ctx, HttpLimits, Meta, Parser};
pub use crate::engine::packet::build::{
    TEST_GWLBE, TcpFlags, TcpFrame, UdpFrame, aws_options, geneve_datagram, geneve_frame,
    vxlan_datagram, vxlan_frame,
};
use crate::engine::ranges::AddrRanges;
use crate::engine::reassembly::Budget;
use crate::engine::request::HttpRequest;
use crate::engine::stats::EngineStats;

/// Where a [`TcpConn`] stands, named as in RFC 9293 from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Nothing sent yet.
    Closed,
    /// The client's SYN was built.
    SynSent,
    /// The server's SYN+ACK was built.
    SynReceived,
    /// Data or an ACK was built after the handshake (or without one: joined mid-way).
    Established,
    /// The client's FIN was built.
    FinWait,
    /// A RST was built.
    Reset,
}

/// One TCP connection seen through a mirror: builds the packets of both directions with
/// consistent sequence and acknowledgment numbers, as VXLAN datagrams (what
/// `Engine::on_vxlan_payload` takes) or, after [`TcpConn::plain`], as plain Ethernet frames.
///
/// Sequence numbers: the client's stream starts at `client_isn + 1`, the server's at
/// `server_isn + 1`; [`TcpConn::send`] and [`TcpConn::respond`] advance them, the `*_at`
/// builders address a stream offset without advancing anything (for reordering, overlaps
/// and loss).
#[derive(Debug, Clone)]
pub struct TcpConn {
    pub vni: u32,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub client_isn: u32,
    pub server_isn: u32,
    client_next: u32,
    server_next: u32,
    state: Cell<ConnState>,
    vxlan: bool,
}

impl TcpConn {
    /// A connection from `client` to `server` (address literals) whose client ISN is
    /// `client_isn`; the server's ISN is 76,999.
    pub fn new(vni: u32, client: &str, server: &str, client_isn: u32) -> TcpConn {
        TcpConn::between(
            vni,
            client.parse().expect("client address literal"),
            server.parse().expect("server address literal"),
            client_isn,
        )
    }

    /// [`TcpConn::new`] with parsed addresses.
    pub fn between(vni: u32, client: SocketAddr, server: SocketAddr, client_isn: u32) -> TcpConn {
        let server_isn = 76_999;
        TcpConn {
            vni,
            client,
            server,
            client_isn,
            server_isn,
            client_next: client_isn.wrapping_add(1),
            server_next: server_isn.wrapping_add(1),
            state: Cell::new(ConnState::Closed),
            vxlan: true,
        }
    }

    /// The same connection, built as plain Ethernet frames (a capture of the inner traffic)
    /// instead of VXLAN datagrams.
    pub fn plain(mut self) -> TcpConn {
        self.vxlan = false;
        self
    }

    pub fn state(&self) -> ConnState {
        self.state.get()
    }

    /// The client's next sequence number.
    pub fn client_next(&self) -> u32 {
        self.client_next
    }

    /// The server's next sequence number.
    pub fn server_next(&self) -> u32 {
        self.server_next
    }

    fn wrap(&self, frame: &TcpFrame<'_>, payload: &[u8]) -> Vec<u8> {
        let inner = frame.build(payload);
        if self.vxlan {
            vxlan_datagram(self.vni, &inner)
        } else {
            inner
        }
    }

    /// Any client → server segment.
    pub fn client_segment(&self, seq: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        self.wrap(
            &TcpFrame::new(self.client, self.server, seq).flags(flags),
            payload,
        )
    }

    /// Any server → client segment.
    pub fn server_segment(&self, seq: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        self.wrap(
            &TcpFrame::new(self.server, self.client, seq).flags(flags),
            payload,
        )
    }

    /// The client's SYN.
    pub fn syn(&mut self) -> Vec<u8> {
        self.state.set(ConnState::SynSent);
        self.client_segment(self.client_isn, TcpFlags::SYN, b"")
    }

    /// The server's SYN+ACK.
    pub fn syn_ack(&mut self) -> Vec<u8> {
        self.state.set(ConnState::SynReceived);
        self.server_segment(
            self.server_isn,
            TcpFlags::ack(self.client_isn.wrapping_add(1)).syn(),
            b"",
        )
    }

    /// The three packets of the handshake (SYN, SYN+ACK, ACK): the connection is then
    /// [`ConnState::Established`].
    pub fn open(&mut self) -> Vec<Vec<u8>> {
        let syn = self.syn();
        let syn_ack = self.syn_ack();
        self.state.set(ConnState::Established);
        let ack = self.client_segment(self.client_next, TcpFlags::ack(self.server_next), b"");
        vec![syn, syn_ack, ack]
    }

    /// Client data at its next sequence number (then advanced); the ACK number is the
    /// server's next sequence number, so it moves with every response (it must not matter).
    pub fn send(&mut self, payload: &[u8]) -> Vec<u8> {
        let seq = self.client_next;
        self.client_next = seq.wrapping_add(payload.len() as u32);
        self.state.set(ConnState::Established);
        self.client_segment(seq, TcpFlags::ack(self.server_next), payload)
    }

    /// Server data at its next sequence number (then advanced).
    pub fn respond(&mut self, payload: &[u8]) -> Vec<u8> {
        let seq = self.server_next;
        self.server_next = seq.wrapping_add(payload.len() as u32);
        self.server_segment(seq, TcpFlags::ack(self.client_next), payload)
    }

    /// The client's FIN at its next sequence number (which it occupies).
    pub fn fin(&mut self) -> Vec<u8> {
        let seq = self.client_next;
        self.client_next = seq.wrapping_add(1);
        self.state.set(ConnState::FinWait);
        self.client_segment(seq, TcpFlags::ack(self.server_next).fin(), b"")
    }

    /// The server's FIN at its next sequence number, acknowledging every client byte
    /// (nothing advances).
    pub fn server_fin(&self) -> Vec<u8> {
        self.server_segment(self.server_next, TcpFlags::ack(self.client_next).fin(), b"")
    }

    /// The server's RST at its next sequence number.
    pub fn rst(&self) -> Vec<u8> {
        self.state.set(ConnState::Reset);
        self.server_segment(self.server_next, TcpFlags::default().rst(), b"")
    }

    /// The client's RST at its next sequence number.
    pub fn client_rst(&self) -> Vec<u8> {
        self.state.set(ConnState::Reset);
        self.client_segment(self.client_next, TcpFlags::default().rst(), b"")
    }

    /// Client data at stream offset `offset` (sequence number `client_isn + 1 + offset`),
    /// with `flags` (the ACK number is the server's first byte); nothing advances.
    pub fn client_at(&self, offset: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        let seq = self.client_isn.wrapping_add(1).wrapping_add(offset);
        self.client_segment(seq, flags, payload)
    }

    /// [`TcpConn::client_at`] with a plain ACK.
    pub fn send_at(&self, offset: u32, payload: &[u8]) -> Vec<u8> {
        self.client_at(
            offset,
            TcpFlags::ack(self.server_isn.wrapping_add(1)),
            payload,
        )
    }
}

/// The HTTP parser of one stream with everything it writes to, for tests and fuzz targets:
/// [`ParserHarness::feed`], [`ParserHarness::gap`] and [`ParserHarness::end`] drive it as
/// the reassembly would, and each checks that the bytes the parser holds are exactly what is
/// charged to the budget.
#[derive(Debug)]
pub struct ParserHarness {
    pub parser: Parser,
    pub budget: Budget,
    pub stats: EngineStats,
    pub out: Vec<HttpRequest>,
    pub limits: HttpLimits,
    pub meta: Meta,
}

impl ParserHarness {
    /// Caps of most parser tests: 8 KiB heads, 64 fields, 1 MiB bodies, no health-check rule,
    /// no trusted PROXY peer.
    pub const LIMITS: HttpLimits = HttpLimits {
        max_header_bytes: 8192,
        max_headers: 64,
        keep_bodies: true,
        keep_heads: true,
        max_body_bytes: 1 << 20,
        health_checks: HealthCheckRule::OFF,
        proxy_protocol_from: AddrRanges::NONE,
    };

    /// A parser at a stream start (SYN seen) or joined mid-way, with [`Self::LIMITS`] and a
    /// 64 MiB budget; the stream is 10.0.0.1:40000 → 10.0.0.2:80, VNI 7.
    pub fn new(at_stream_start: bool) -> ParserHarness {
        ParserHarness::with(at_stream_start, Self::LIMITS, 1 << 26)
    }

    /// A parser with these caps and this budget.
    pub fn with(at_stream_start: bool, limits: HttpLimits, budget: usize) -> ParserHarness {
        ParserHarness {
            parser: if at_stream_start {
                Parser::at_stream_start()
            } else {
                Parser::new()
            },
            budget: Budget::new(budget),
            stats: EngineStats::default(),
            out: Vec::new(),
            limits,
            meta: Meta {
                key: crate::engine::flow::FlowKey::new(
                    7,
                    SocketAddr::from(([10, 0, 0, 1], 40_000)),
                    SocketAddr::from(([10, 0, 0, 2], 80)),
                ),
                mirror_source: None,
            },
        }
    }

    fn drive(&mut self, f: impl FnOnce(&mut Parser, &mut Ctx<'_>)) {
        let mut out = Vec::new();
        let mut ctx = Ctx {
            limits: &self.limits,
            budget: &mut self.budget,
            stats: &mut self.stats,
            out: &mut out,
            from_held: 0,
            restarted: false,
            meta: self.meta,
        };
        f(&mut self.parser, &mut ctx);
        self.out.extend(out.into_iter().map(|r| *r));
        assert_eq!(
            self.budget.used,
            self.parser.held(),
            "the bytes the parser holds are what is charged to the budget"
        );
    }

    /// In-order bytes of the stream (captured at time 1).
    pub fn feed(&mut self, bytes: &[u8]) -> &mut Self {
        self.feed_at(1, bytes)
    }

    /// In-order bytes of the stream, carried by a packet captured at `ts_us`.
    pub fn feed_at(&mut self, ts_us: u64, bytes: &[u8]) -> &mut Self {
        self.drive(|p, ctx| p.data(ts_us, bytes, ctx));
        self
    }

    /// `len` bytes of the stream were lost.
    pub fn gap(&mut self, len: u64) -> &mut Self {
        self.drive(|p, ctx| p.gap(len, ctx));
        self
    }

    /// The server switched protocols (101 / 2xx to CONNECT) after the held request.
    pub fn switched(&mut self) -> &mut Self {
        self.drive(|p, ctx| p.switched(ctx));
        self
    }

    /// The server answered the held request without switching (`unanswered`: no answer
    /// will be seen).
    pub fn resume(&mut self, unanswered: bool) -> &mut Self {
        self.drive(|p, ctx| p.resume(unanswered, ctx));
        self
    }

    /// The stream ended; every buffer is returned.
    pub fn end(&mut self) -> &mut Self {
        self.drive(|p, ctx| p.end(ctx));
        assert_eq!(
            self.budget.used, 0,
            "the end of a stream returns every buffer"
        );
        self
    }

    /// Targets of the requests emitted so far.
    pub fn targets(&self) -> Vec<&str> {
        self.out.iter().map(|r| r.target.as_str()).collect()
    }
}
