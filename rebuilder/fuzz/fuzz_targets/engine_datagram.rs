#![no_main]

use libfuzzer_sys::fuzz_target;
use rebuilder_fuzz::{EngineInput, run_engine};

fuzz_target!(|input: EngineInput| run_engine(&input));
