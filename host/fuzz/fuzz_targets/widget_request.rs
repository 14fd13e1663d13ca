//! Fuzz the widget protocol's client-frame parser: the properties are
//! `mdp::fuzz::widget_request`'s (also run, seeded, by tests/all/fuzz.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mdp::fuzz::widget_request(data);
});
