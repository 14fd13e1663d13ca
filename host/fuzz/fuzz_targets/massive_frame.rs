//! Fuzz the Massive frame parser: any input must parse or be refused with an
//! error, never panic; a parsed frame routes only to known queues, and never
//! yields more events and statuses than the array holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(frame) = mdp::feed::massive::parse_frame(&text) {
        let items = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Array(a)) => a.len(),
            _ => 1,
        };
        let routed: usize = frame.routed.values().map(Vec::len).sum();
        assert!(routed + frame.statuses.len() <= items);
        for queue in frame.routed.keys() {
            assert!(mdp::event::MARKET_QUEUES.contains(queue));
        }
    }
});
