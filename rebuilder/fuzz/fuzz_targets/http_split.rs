#![no_main]

use libfuzzer_sys::fuzz_target;
use rebuilder_fuzz::{HttpInput, run_http};

fuzz_target!(|input: HttpInput| run_http(&input));
