//! The data plane's test kit: one of each thing the rebuilder's tests, benchmarks, fuzz
//! targets, the system tests and `make demo` need.
//!
//! | module | what |
//! | --- | --- |
//! | [`frames`] | the frame builder (VXLAN / Ethernet / 802.1Q / IPv4 / IPv6 / TCP / UDP) and [`frames::TcpConn`], scripted connections with named states (both directions) |
//! | [`parser`] | [`parser::ParserHarness`]: the HTTP parser with its budget, counters and output |
//! | [`system`] | the skip-or-fail policy for missing prerequisites, tool lookup, free ports, temporary directories, child-process guards, bounded commands and waits |
//! | [`analyzer`] | the recording analyzer (an HTTP/1.1 server that records exactly what arrives) |
//! | [`compare`] | sent vs. received: the check of the demo and the system tests |
//! | [`metrics`] | the metrics scraper |
//! | [`daemon`] | a `rebuilder run` process under test |
//! | [`netns`] | the network-namespace mirror lab (veth + tc mirred + kernel VXLAN) |
//! | [`nginx`] | a real nginx as the origin oracle (what it serves, the analyzer must see) |
//! | [`udp_sink`] | a VXLAN datagram counter |
//! | [`traffic`] | datagrams from generated captures, senders and pacing |
//! | [`flood`] | flood scenarios mixed with legitimate traffic |
//!
//! The frames, the scripted connections and the parser harness are compiled inside the
//! rebuilder (`rebuilder::testkit`, feature `testkit`; the frame builder is
//! `rebuilder::engine::packet::build`, which the capture generator uses too) and re-exported
//! here: the rebuilder's own unit tests need them with the crate's own types.
//!
//! The `mirror-lab` binary exposes the lab, the analyzer, the sink and the comparison to the
//! demo scripts.

pub mod analyzer;
pub mod compare;
pub mod daemon;
pub mod flood;
pub mod metrics;
pub mod netns;
pub mod nginx;
pub mod system;
pub mod traffic;
pub mod udp_sink;

/// Frames and scripted connections.
pub mod frames {
    pub use rebuilder::engine::packet::build::*;
    pub use rebuilder::testkit::{ConnState, TcpConn};
}

/// The HTTP parser harness.
pub mod parser {
    pub use rebuilder::testkit::ParserHarness;
}
