//! Helpers for the end-to-end system tests (the same story as `make demo`, as assertions).
//!
//! - [`harness`]: prerequisites (fail under `MIRRORFLEET_REQUIRE_SYSTEM=1`, skip otherwise),
//!   paths, free ports, child processes killed on drop, bounded waits (the data plane's test
//!   kit, `rebuilder_testkit::system`, plus the demo scripts' paths).
//! - [`control`]: a moto server per test, the demo VPC seeded by `scripts/demo/seed.py`, and the
//!   Lambda binaries driven through the Lambda Runtime API (`cargo lambda watch` + `invoke`).
//! - [`dataplane`]: the namespace mirror lab (kernel VXLAN mirror) and the recording analyzer of
//!   the data plane's test kit (`rebuilder_testkit`, `mirror-lab` for the demo script), and the
//!   client traffic of `scripts/demo/traffic.sh`.
//!
//! The scripts are shared with `make demo` on purpose: the demo and the tests tell one story.

pub mod control;
pub mod dataplane;
pub mod harness;
