//! Fuzz the plugin manifest parser: the properties are
//! `mdp::fuzz::manifest`'s (also run, seeded, by tests/all/fuzz.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mdp::fuzz::manifest(data);
});
