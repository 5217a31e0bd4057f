#![no_main]

use libfuzzer_sys::fuzz_target;
use rebuilder_fuzz::{StreamInput, run_stream};

fuzz_target!(|input: StreamInput| run_stream(&input));
