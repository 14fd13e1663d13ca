//! `daily-range`: the seed's DailyRangeAnalyzer, a
//! scanner on the pub/sub pattern `quote:*`.
//!
//! Per symbol it tracks the high and low of each session of the trading day
//! (pre-market, regular, after-hours). Every payload becomes
//! `daily_range:{SYM}` (the payload plus `pre_market_high`, `pre_market_low`,
//! `regular_session_high`, `regular_session_low`, `after_hours_high`,
//! `after_hours_low`; put and published, TTL 4 days). A new session high or
//! low, when the session already had one (the first print is not an alert),
//! becomes an alert pushed onto `daily_range_hod_alert` /
//! `daily_range_lod_alert` (capped at `dra_cache_list_max`, TTL 8 h) and
//! published there: `session`, `direction`, `price`, `previous`,
//! `timestamp` (epoch seconds), `note` (cross-session breach: "Broke
//! pre-market high of $X", ...), then the payload's fields.
//!
//! The session comes from the market-status host import. Differences from
//! the seed, deliberate:
//! - the trading day starts at 04:00 America/New_York, DST-correct (the seed
//!   reset at midnight ET), and every replica resets its own state when its
//!   clock crosses it (the seed reset only the replica that won a race);
//!   `daily_range:day_boundary` still records the current day's anchor;
//! - when market status is unavailable the session follows the regular
//!   schedule by the clock (weekdays 04:00–09:30–16:00–20:00 ET) instead of
//!   producing nothing (the seed without a Massive key never alerted);
//! - an alert's `timestamp` is always epoch seconds: the payload's `t`,
//!   `timestamp` or `end_timestamp` (s, ms, µs or ns, recognised by
//!   magnitude), else the host clock (the seed used processing time for
//!   quote payloads, and let a payload `timestamp` in ms overwrite it);
//! - rehydration is per symbol, on its first payload after a start: the
//!   cache imports have no SCAN, and reading `daily_range:{SYM}` when the
//!   symbol first appears restores the same state before it is needed. A
//!   record is restored only when it is from the current trading day (its
//!   quote timestamp, or for records without one the day-boundary key), and
//!   only for the sessions already elapsed (pre-market: pre; regular: pre and
//!   regular; after-hours or closed: all three);
//! - payloads without a symbol, or that are not JSON objects, are rejected
//!   with a reason; prices that are missing, zero or negative update nothing.
//!
//! Config: `dra_cache_list_max` (default 1000).

mod alert;
mod payload;
mod ranges;
mod rehydrate;
mod session;
#[cfg(test)]
mod testing;

use std::collections::HashMap;

use mdp_sdk::calendar::{Session, day_anchor};
use mdp_sdk::prelude::*;
use serde::{Deserialize, Serialize};

pub use payload::{Object, epoch_seconds};
use ranges::Ranges;

/// TTL of `daily_range:{SYM}` (4 days).
pub const RANGE_TTL: u32 = 345_600;
/// TTL of the alert lists (8 h).
pub const ALERT_TTL: u32 = 28_800;
/// The new-high alert list and channel.
pub const HOD_KEY: &str = "daily_range_hod_alert";
/// The new-low alert list and channel.
pub const LOD_KEY: &str = "daily_range_lod_alert";
/// The key recording the current trading day's 04:00 ET anchor (epoch seconds).
pub const BOUNDARY_KEY: &str = "daily_range:day_boundary";

/// What `snapshot` hands to the next generation.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    anchor: i64,
    init_anchor: i64,
    boundary_written: i64,
    trust_untimed: bool,
    symbols: HashMap<String, Ranges>,
}

/// The analyzer.
pub struct DailyRange {
    list_max: u32,
    /// The trading day the state belongs to (04:00 ET anchor, epoch seconds).
    anchor: i64,
    /// The trading day of `init`: records in the store may be rehydrated only then.
    init_anchor: i64,
    /// The anchor last written to [`BOUNDARY_KEY`] (or found there).
    boundary_written: i64,
    /// True when [`BOUNDARY_KEY`] named the current day at `init`: records
    /// without a timestamp were then written today.
    trust_untimed: bool,
    /// Per symbol; a symbol present here has been rehydrated (or had nothing to restore).
    symbols: HashMap<String, Ranges>,
    /// True while the market-status import is failing (logged once per outage).
    status_down: bool,
}

impl DailyRange {
    /// Cross into a new trading day when the clock has: forget the previous
    /// day's ranges, and write the day's anchor to [`BOUNDARY_KEY`] once.
    fn roll_day(&mut self, now_us: u64) -> Vec<Effect> {
        let anchor = day_anchor(now_us);
        if anchor != self.anchor {
            // Every replica forgets the previous trading day on its own.
            self.anchor = anchor;
            self.symbols.clear();
            host::counter("dra.day_resets", 1);
        }
        if self.boundary_written == anchor {
            return Vec::new();
        }
        self.boundary_written = anchor;
        vec![put(BOUNDARY_KEY, Body::Json(anchor.to_string()), None)]
    }

    /// Fold one payload into its symbol's ranges: its record is put and
    /// published, its new extremes alerted. Returns the number of alerts.
    fn track(
        &mut self,
        symbol: &str,
        o: &Object,
        session: Option<Session>,
        now_us: u64,
        effects: &mut Vec<Effect>,
    ) -> u64 {
        let ranges = self.symbols.entry(symbol.to_string()).or_default();
        let extremes = match session {
            Some(s) => ranges::update(ranges, s, o),
            None => Vec::new(),
        };
        effects.extend(put_and_publish(
            &format!("daily_range:{symbol}"),
            Body::Json(ranges::record(o, ranges).text()),
            Some(RANGE_TTL),
        ));
        let n = extremes.len() as u64;
        effects.extend(alert::alerts(o, session, extremes, now_us, self.list_max));
        n
    }
}

impl Analyzer for DailyRange {
    fn describe() -> Info {
        mdp_sdk::info("daily-range", env!("CARGO_PKG_VERSION"), Kinds::OTHER, 1)
    }

    fn init(config: Config, state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        let list_max = config.parse_or("dra_cache_list_max", 1000)?;
        let anchor = day_anchor(host::now_us());
        if let Some(s) = state
            .as_deref()
            .and_then(|b| serde_json::from_slice::<State>(b).ok())
            .filter(|s| s.anchor == anchor)
        {
            return Ok(DailyRange {
                list_max,
                anchor: s.anchor,
                init_anchor: s.init_anchor,
                boundary_written: s.boundary_written,
                trust_untimed: s.trust_untimed,
                symbols: s.symbols,
                status_down: false,
            });
        }
        let stored = cache::get(BOUNDARY_KEY).and_then(|v| v.trim_matches('"').parse::<i64>().ok());
        Ok(DailyRange {
            list_max,
            anchor,
            init_anchor: anchor,
            boundary_written: stored.unwrap_or(0),
            trust_untimed: stored == Some(anchor),
            symbols: HashMap::new(),
            status_down: false,
        })
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let now_us = host::now_us();
        host::counter("dra.processed", batch.len() as u64);
        let mut effects = self.roll_day(now_us);
        // Decode first, so the symbols not seen yet are rehydrated in one read.
        let mut payloads = Vec::with_capacity(batch.len());
        for (i, event) in batch.iter().enumerate() {
            match payload::decode(event) {
                Ok(p) => payloads.push(p),
                Err(reason) => effects.push(reject(i, reason)),
            }
        }
        if payloads.is_empty() {
            return Ok(effects);
        }
        let session = self.session(now_us);
        let mut wanted: Vec<String> = payloads.iter().map(|(s, _)| s.clone()).collect();
        wanted.sort();
        wanted.dedup();
        self.rehydrate(&wanted, session);
        let mut alerts = 0;
        for (symbol, o) in &payloads {
            alerts += self.track(symbol, o, session, now_us, &mut effects);
        }
        if alerts > 0 {
            host::counter("dra.alerts", alerts);
        }
        Ok(effects)
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&State {
            anchor: self.anchor,
            init_anchor: self.init_anchor,
            boundary_written: self.boundary_written,
            trust_untimed: self.trust_untimed,
            symbols: self.symbols.clone(),
        })
        .unwrap_or_default()
    }
}

export_analyzer!(DailyRange);

#[cfg(test)]
mod tests {
    use mdp_sdk::testing::Harness;
    use serde_json::json;

    use super::*;
    use crate::testing::{at, market, mon, quote, state, written};

    #[test]
    fn the_day_starts_at_4am_new_york_not_at_midnight() {
        // Monday after-hours highs, then a closed-market tick at 00:30 and one
        // at 03:59: yesterday's ranges still show (the seed reset at midnight).
        let mut h = Harness::<DailyRange>::new().at_us(mon(16, 30));
        market(&h, "after-hours");
        h.init(&[]).unwrap();
        h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        at(&h, mon(24, 30), "closed");
        let e = h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        assert_eq!(state(&e, "AAPL")["after_hours_high"].as_f64(), Some(10.0));
        assert!(
            !e.iter()
                .any(|e| matches!(e, Effect::Put(p) if p.key == BOUNDARY_KEY))
        );
        at(&h, mon(27, 59), "closed");
        let e = h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        assert_eq!(state(&e, "AAPL")["after_hours_high"].as_f64(), Some(10.0));
        // 04:00 Tuesday: a new day; the first pre-market print is not an alert.
        at(&h, mon(28, 0), "pre-market");
        let e = h.analyze(vec![quote("AAPL", 11.0, 10.5)]).unwrap();
        let s = state(&e, "AAPL");
        assert!(s["after_hours_high"].is_null());
        assert_eq!(s["pre_market_high"].as_f64(), Some(11.0));
        assert!(written(&e, HOD_KEY).is_empty());
        assert_eq!(
            written(&e, BOUNDARY_KEY),
            vec![json!(day_anchor(mon(28, 0)))]
        );
    }

    #[test]
    fn every_replica_resets_at_the_day_boundary_not_only_the_first() {
        // Two scanner replicas see the same pub/sub traffic and share the store.
        let mut a = Harness::<DailyRange>::new().at_us(mon(16, 30));
        market(&a, "after-hours");
        let mut b = Harness::<DailyRange>::new();
        a.init(&[]).unwrap();
        b.init(&[]).unwrap();
        for r in [&mut a, &mut b] {
            r.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        }
        at(&a, mon(28, 30), "pre-market");
        // Replica A crosses the boundary first and writes it; B follows.
        let ea = a.analyze(vec![quote("AAPL", 12.0, 11.0)]).unwrap();
        let eb = b.analyze(vec![quote("AAPL", 12.0, 11.0)]).unwrap();
        for e in [&ea, &eb] {
            let s = state(e, "AAPL");
            assert!(s["after_hours_high"].is_null(), "yesterday forgotten: {s}");
            assert_eq!(s["pre_market_high"].as_f64(), Some(12.0));
            assert!(written(e, HOD_KEY).is_empty());
        }
    }

    #[test]
    fn snapshot_hands_state_to_the_next_generation_on_the_same_day() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.init(&[]).unwrap();
        h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        let snap = h.snapshot();
        let mut next = Harness::<DailyRange>::new().at_us(mon(11, 0));
        next.init_with(&[], Some(snap.clone())).unwrap();
        let e = next.analyze(vec![quote("AAPL", 10.5, 9.0)]).unwrap();
        assert_eq!(written(&e, HOD_KEY)[0]["previous"].as_f64(), Some(10.0));
        // A snapshot from another trading day is ignored.
        let mut later = Harness::<DailyRange>::new().at_us(mon(34, 0));
        later.init_with(&[], Some(snap)).unwrap();
        let e = later.analyze(vec![quote("AAPL", 10.5, 9.0)]).unwrap();
        assert!(written(&e, HOD_KEY).is_empty());
    }
}

#[cfg(test)]
mod golden {
    /// Runs a golden file; with `MDP_GOLDEN_BLESS=1` records its effects first.
    fn check(name: &str) {
        mdp_sdk::testing::check_golden_file::<super::DailyRange>(format!(
            "{}/golden/{name}",
            env!("CARGO_MANIFEST_DIR")
        ));
    }

    #[test]
    fn sessions_golden_file() {
        check("sessions.json");
    }

    #[test]
    fn dst_golden_file() {
        check("dst.json");
    }

    #[test]
    fn rehydration_golden_file() {
        check("rehydration.json");
    }

    /// A snapshot restart keeps ranges the store cannot restore (a record
    /// stamped before today's 04:00 anchor); a cold restart loses them.
    #[test]
    fn restarts_golden_file() {
        check("restarts.json");
    }
}
