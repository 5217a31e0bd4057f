#![no_main]

use libfuzzer_sys::fuzz_target;
use rebuilder_fuzz::{GeneveInput, run_geneve};

fuzz_target!(|input: GeneveInput| run_geneve(&input));
