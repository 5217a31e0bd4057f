#![no_main]

use libfuzzer_sys::fuzz_target;
use rebuilder_fuzz::{ResponseInput, run_response};

fuzz_target!(|input: ResponseInput| run_response(&input));
