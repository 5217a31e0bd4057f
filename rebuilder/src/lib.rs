//! mirrorfleet rebuilder: AWS Traffic Mirroring copies (VXLAN over UDP/4789, or inside GENEVE
//! on UDP/6081 behind a Gateway Load Balancer) in, the HTTP/1.x requests of every mirrored TCP
//! flow out, forwarded to an analyzer.
//!
//! # The pipeline
//!
//! Folders follow the data. The [`engine`] is pure (no sockets, no clock, no logging per
//! packet) and is driven either by the [`daemon`] (live) or by the [`offline`] tools (captures):
//!
//! ```text
//! daemon::ingest        UDP/4789 + UDP/6081 sockets (SO_REUSEPORT, recvmmsg), one worker per core
//!   │ datagram + sender                  offline::capture   pcap / pcapng frames
//!   ▼                                      │ frame
//! engine (Engine::on_datagram / on_captured_frame / on_timer / finish)
//!   (allow_from)        datagram senders in ranges::AddrRanges (--allow-from), before parsing
//!   encap::geneve       RFC 8926 header of a Gateway Load Balancer, AWS options, inner IP
//!   encap::vxlan        RFC 7348 header (I flag, VNI), VNI allow-list
//!   packet              Ethernet II, 802.1Q / QinQ, IPv4 / IPv6, TCP (zero copy, lax)
//!   flow                table of directions keyed (GWLB endpoint, VNI, src, dst), peers linked
//!   reassembly          per-direction TCP stream: order, duplicates, holes -> gaps
//!   http                per-direction HTTP/1.x request parser: state machine, resync, framing
//!     proxy, health_check   PROXY protocol v1/v2 prefix; load-balancer health checks
//!   ranges              CIDR lists of the configuration (allow-from, PROXY peers, health checks)
//!   request             the output: HttpRequest          stats: DropReason, EngineStats
//!   │ HttpRequest
//!   ▼
//! daemon::forward       bounded queue -> rewrite -> keep-alive senders -> the analyzer
//! daemon::telemetry     counters (workers' snapshots) -> /metrics; liveness -> /healthz
//! daemon::admin         /healthz and /metrics on a thread of its own
//!                                        offline::replay   requests as jsonl / http / summary
//!                                        offline::synth    deterministic captures + ground truth
//! record                the JSON record of a transaction (replay jsonl, ndjson sink)
//! sources               the source map: which ENI / workload a request came from
//! dedup                 duplicate mirroring: load balancer and target copies collapsed
//! ```
//!
//! A module never imports the one that drives it: stages import only the stages below them
//! and [`engine::stats`]; the engine imports no daemon or offline module.
//!
//! The `testkit` cargo feature adds the `testkit` module: scripted TCP connections and the
//! HTTP parser harness, for tests, benchmarks and fuzz targets (the `rebuilder-testkit` crate
//! turns it on and re-exports it). The frame builder itself ([`engine::packet::build`]) is
//! always compiled: the capture generator (`rebuilder generate`) uses it.

#[macro_use]
mod label;

pub mod engine;

pub mod daemon;

pub mod offline;

pub mod record;

pub mod dedup;

pub mod sources;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use engine::request::HttpRequest;
pub use engine::stats::{DropReason, EngineStats};
pub use engine::{Engine, EngineConfig};
