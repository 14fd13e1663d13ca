//! Fuzz the Massive frame parser: the properties are
//! `mdp::fuzz::massive_frame`'s (also run, seeded, by tests/all/fuzz.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mdp::fuzz::massive_frame(data);
});
