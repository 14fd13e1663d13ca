//! Helpers of the unit tests: a fixed Monday, quotes, the market status,
//! and what the effects wrote.

use mdp_sdk::prelude::*;
use mdp_sdk::testing::{Harness, market_status_named};
use serde_json::{Value, json};

use crate::DailyRange;

/// 2026-03-09 (Monday, EDT) at `hh:mm` New York time, Unix µs.
pub(crate) fn mon(hh: u64, mm: u64) -> u64 {
    // 00:00 EDT on 2026-03-09 = 04:00 UTC.
    (1_773_028_800 + hh * 3600 + mm * 60) * 1_000_000
}

/// A `quote:{sym}` pub/sub payload with that high and low.
pub(crate) fn quote(sym: &str, high: f64, low: f64) -> Event {
    Event::Other(Raw {
        kind: format!("quote:{sym}"),
        json: json!({"symbol": sym, "close": high, "high": high, "low": low}).to_string(),
    })
}

/// Make the market-status import answer `name`.
pub(crate) fn market(h: &Harness<DailyRange>, name: &str) {
    h.host(|h| h.reference.market = Some(market_status_named(name)));
}

/// Move the clock to `us` with the market `market_name`.
pub(crate) fn at(h: &Harness<DailyRange>, us: u64, market_name: &str) {
    h.set_clock_us(us);
    market(h, market_name);
}

/// The JSON values of the effects on `key` (puts and pushes).
pub(crate) fn written(effects: &[Effect], key: &str) -> Vec<Value> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Put(p) if p.key == key => Some(&p.value),
            Effect::Push(p) if p.key == key => Some(&p.value),
            _ => None,
        })
        .map(|b| match b {
            Body::Json(t) => serde_json::from_str(t).unwrap(),
            Body::Input(_) => panic!("unexpected input body"),
        })
        .collect()
}

/// The last `daily_range:{sym}` record written.
pub(crate) fn state(effects: &[Effect], sym: &str) -> Value {
    written(effects, &format!("daily_range:{sym}"))
        .pop()
        .expect("state written")
}
