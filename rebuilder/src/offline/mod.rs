//! The offline tools: the engine over capture files instead of sockets.
//!
//! - [`capture`]: pcap / pcapng reading (both byte orders, µs and ns timestamps, snap
//!   lengths) and pcap writing;
//! - [`replay`]: `rebuilder replay` (requests of a capture as jsonl, http or a summary) and
//!   `rebuilder generate` (a synthetic capture and its ground truth);
//! - [`synth`]: the deterministic traffic generator behind `generate`, the benchmarks and the
//!   ground-truth tests.

pub mod capture;
pub mod replay;
pub mod synth;
