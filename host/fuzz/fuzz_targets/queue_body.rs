//! Fuzz the queue-message decoder: the properties are
//! `mdp::fuzz::queue_body`'s (also run, seeded, by tests/all/fuzz.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mdp::fuzz::queue_body(data);
});
