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

use std::collections::HashMap;

use mdp_sdk::calendar::{Session, day_anchor, scheduled_session, session_of};
use mdp_sdk::prelude::*;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

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

/// Output field names per session: (high, low).
const FIELDS: [(&str, &str); 3] = [
    ("pre_market_high", "pre_market_low"),
    ("regular_session_high", "regular_session_low"),
    ("after_hours_high", "after_hours_low"),
];

/// A JSON object that keeps its keys in order (the seed's dicts do), so the
/// payload's fields come out as they came in, the added fields after them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object(Vec<(String, Value)>);

impl Object {
    /// Set `key`, in place when present (like a dict), else at the end.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }
    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Object, A::Error> {
                let mut o = Object::default();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    o.set(&k, v);
                }
                Ok(o)
            }
        }
        d.deserialize_map(V)
    }
}

fn positive(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
        .filter(|x| x.is_finite() && *x > 0.0)
}

fn num(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Epoch seconds from a timestamp in s, ms, µs or ns (by magnitude).
pub fn epoch_seconds(ts: f64) -> f64 {
    if ts >= 1e17 {
        ts / 1e9
    } else if ts >= 1e14 {
        ts / 1e6
    } else if ts >= 1e11 {
        ts / 1e3
    } else {
        ts
    }
}

/// The payload's own time, epoch seconds: `t`, `timestamp`, `end_timestamp`.
fn payload_time(o: &Object) -> Option<f64> {
    ["t", "timestamp", "end_timestamp"]
        .iter()
        .find_map(|k| positive(o.get(k)))
        .map(epoch_seconds)
}

/// True when `s` can be a symbol key: 1–32 printable ASCII characters other
/// than glob metacharacters.
fn valid_symbol(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'*' | b'?' | b'[' | b']'))
}

/// One session's extremes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Range {
    high: Option<f64>,
    low: Option<f64>,
}

/// A symbol's extremes per session (indexed in the order of [`Session::ALL`]).
type Ranges = [Range; 3];

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
    fn session(&mut self, now_us: u64) -> Option<Session> {
        match reference::market_status() {
            Ok(status) => {
                if self.status_down {
                    self.status_down = false;
                    host::log(Level::Info, "market status available again");
                }
                session_of(&status)
            }
            Err(e) => {
                if !self.status_down {
                    self.status_down = true;
                    host::log(
                        Level::Warn,
                        &format!("market status unavailable ({e:?}); sessions follow the schedule"),
                    );
                }
                host::counter("dra.market_status_fallback", 1);
                scheduled_session(now_us)
            }
        }
    }

    /// Restore the symbols of `wanted` not seen yet from their stored records.
    fn rehydrate(&mut self, wanted: &[String], session: Option<Session>) {
        let fresh: Vec<&String> = wanted
            .iter()
            .filter(|s| !self.symbols.contains_key(s.as_str()))
            .collect();
        if fresh.is_empty() {
            return;
        }
        if self.anchor != self.init_anchor {
            // A day boundary passed since the start: everything stored is older.
            for s in fresh {
                self.symbols.insert(s.clone(), Ranges::default());
            }
            return;
        }
        let elapsed = match session {
            Some(Session::PreMarket) => 1,
            Some(Session::Regular) => 2,
            Some(Session::AfterHours) | None => 3,
        };
        let keys: Vec<String> = fresh.iter().map(|s| format!("daily_range:{s}")).collect();
        let mut restored = 0;
        for (symbol, record) in fresh.into_iter().zip(cache::get_many(&keys)) {
            let mut ranges = Ranges::default();
            let record = record.and_then(|t| serde_json::from_str::<Object>(&t).ok());
            if let Some(o) = record {
                let today = match payload_time(&o) {
                    Some(t) => t >= self.anchor as f64,
                    None => self.trust_untimed,
                };
                if today {
                    for (i, (h, l)) in FIELDS.iter().enumerate().take(elapsed) {
                        ranges[i] = Range {
                            high: positive(o.get(h)),
                            low: positive(o.get(l)),
                        };
                    }
                    restored += 1;
                }
            }
            self.symbols.insert(symbol.clone(), ranges);
        }
        if restored > 0 {
            host::counter("dra.rehydrated", restored);
        }
    }
}

/// The cross-session breach note of a new extreme (seed wording).
fn note(ranges: &Ranges, session: Session, high: bool, price: f64) -> String {
    let checks: &[(usize, &str)] = match session {
        Session::PreMarket => &[],
        Session::Regular => &[(0, "pre-market")],
        Session::AfterHours => &[(1, "regular session"), (0, "pre-market")],
    };
    for (i, label) in checks {
        let r = ranges[*i];
        let (bound, broke) = if high {
            (r.high, r.high.is_some_and(|b| price > b))
        } else {
            (r.low, r.low.is_some_and(|b| price < b))
        };
        if broke {
            let word = if high { "high" } else { "low" };
            return format!("Broke {label} {word} of ${:.2}", bound.unwrap_or_default());
        }
    }
    String::new()
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
        let mut effects = Vec::new();
        let anchor = day_anchor(now_us);
        if anchor != self.anchor {
            // Every replica forgets the previous trading day on its own.
            self.anchor = anchor;
            self.symbols.clear();
            host::counter("dra.day_resets", 1);
        }
        if self.boundary_written != anchor {
            self.boundary_written = anchor;
            effects.push(put(BOUNDARY_KEY, Body::Json(anchor.to_string()), None));
        }
        // Decode first, so the symbols not seen yet are rehydrated in one read.
        let mut payloads: Vec<Option<(String, Object)>> = Vec::with_capacity(batch.len());
        for (i, event) in batch.iter().enumerate() {
            let Event::Other(raw) = event else {
                effects.push(reject(i, "not a pub/sub quote payload"));
                payloads.push(None);
                continue;
            };
            let Ok(o) = serde_json::from_str::<Object>(&raw.json) else {
                effects.push(reject(i, "payload is not a JSON object"));
                payloads.push(None);
                continue;
            };
            let symbol = ["sym", "symbol"]
                .iter()
                .find_map(|k| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()));
            match symbol {
                Some(s) if valid_symbol(s) => payloads.push(Some((s.to_string(), o))),
                Some(_) => {
                    effects.push(reject(i, "payload symbol is not a valid ticker"));
                    payloads.push(None);
                }
                None => {
                    effects.push(reject(i, "payload has no symbol"));
                    payloads.push(None);
                }
            }
        }
        if payloads.iter().all(Option::is_none) {
            return Ok(effects);
        }
        let session = self.session(now_us);
        let mut wanted: Vec<String> = payloads.iter().flatten().map(|(s, _)| s.clone()).collect();
        wanted.sort();
        wanted.dedup();
        self.rehydrate(&wanted, session);
        let mut alerts = 0;
        for (symbol, o) in payloads.into_iter().flatten() {
            let ranges = self.symbols.entry(symbol.clone()).or_default();
            let mut new_alerts: Vec<(bool, f64, f64, String)> = Vec::new();
            let high = positive(o.get("high")).or_else(|| positive(o.get("h")));
            let low = positive(o.get("low")).or_else(|| positive(o.get("l")));
            if let (Some(s), Some(high), Some(low)) = (session, high, low) {
                let before = *ranges;
                let r = &mut ranges[s as usize];
                match r.high {
                    None => r.high = Some(high),
                    Some(prev) if high > prev => {
                        r.high = Some(high);
                        new_alerts.push((true, high, prev, note(&before, s, true, high)));
                    }
                    _ => {}
                }
                match r.low {
                    None => r.low = Some(low),
                    Some(prev) if low < prev => {
                        r.low = Some(low);
                        new_alerts.push((false, low, prev, note(&before, s, false, low)));
                    }
                    _ => {}
                }
            }
            let ranges = *ranges;
            let mut state = o.clone();
            for (i, (h, l)) in FIELDS.iter().enumerate() {
                state.set(h, num(ranges[i].high));
                state.set(l, num(ranges[i].low));
            }
            effects.extend(put_and_publish(
                &format!("daily_range:{symbol}"),
                Body::Json(state.text()),
                Some(RANGE_TTL),
            ));
            if new_alerts.is_empty() {
                continue;
            }
            let timestamp = payload_time(&o).unwrap_or(now_us as f64 / 1e6);
            let session = session.map(Session::name).unwrap_or_default();
            for (is_high, price, previous, note) in new_alerts {
                alerts += 1;
                let mut alert = Object::default();
                alert.set("session", Value::from(session));
                alert.set(
                    "direction",
                    Value::from(if is_high { "high" } else { "low" }),
                );
                alert.set("price", num(Some(price)));
                alert.set("previous", num(Some(previous)));
                alert.set("timestamp", num(Some(timestamp)));
                alert.set("note", Value::from(note));
                for (k, v) in &o.0 {
                    alert.set(k, v.clone());
                }
                // Payload fields win, except the alert's time in epoch seconds.
                alert.set("timestamp", num(Some(timestamp)));
                let key = if is_high { HOD_KEY } else { LOD_KEY };
                let body = Body::Json(alert.text());
                effects.push(push(key, body.clone(), self.list_max, Some(ALERT_TTL)));
                effects.push(publish(key, body));
            }
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
    use super::*;
    use mdp_sdk::testing::{Harness, market_status_named};
    use serde_json::json;

    /// 2026-03-09 (Monday, EDT) at `hh:mm` New York time, Unix µs.
    fn mon(hh: u64, mm: u64) -> u64 {
        // 00:00 EDT on 2026-03-09 = 04:00 UTC.
        (1_773_028_800 + hh * 3600 + mm * 60) * 1_000_000
    }

    fn quote(sym: &str, high: f64, low: f64) -> Event {
        Event::Other(Raw {
            kind: format!("quote:{sym}"),
            json: json!({"symbol": sym, "close": high, "high": high, "low": low}).to_string(),
        })
    }

    fn market(h: &Harness<DailyRange>, name: &str) {
        h.host(|h| h.reference.market = Some(market_status_named(name)));
    }

    fn at(h: &Harness<DailyRange>, us: u64, market_name: &str) {
        h.set_clock_us(us);
        market(h, market_name);
    }

    /// The JSON values of the effects on `key` (puts and pushes).
    fn written(effects: &[Effect], key: &str) -> Vec<Value> {
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

    fn state(effects: &[Effect], sym: &str) -> Value {
        written(effects, &format!("daily_range:{sym}"))
            .pop()
            .expect("state written")
    }

    #[test]
    fn session_highs_and_lows_alert_after_the_first_print_with_breach_notes() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(4, 30));
        market(&h, "pre-market");
        h.init(&[]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.0, 9.8)]).unwrap();
        assert!(written(&e, HOD_KEY).is_empty() && written(&e, LOD_KEY).is_empty());
        let s = state(&e, "AAPL");
        assert_eq!(
            (s["pre_market_high"].as_f64(), s["pre_market_low"].as_f64()),
            (Some(10.0), Some(9.8))
        );
        assert!(s["regular_session_high"].is_null());
        // Equal is not a new extreme; higher is.
        let e = h
            .analyze(vec![quote("AAPL", 10.0, 9.8), quote("AAPL", 10.5, 9.5)])
            .unwrap();
        let hod = written(&e, HOD_KEY);
        assert_eq!(hod.len(), 1);
        assert_eq!(hod[0]["session"], "pre_market");
        assert_eq!(hod[0]["direction"], "high");
        assert_eq!(
            (hod[0]["price"].as_f64(), hod[0]["previous"].as_f64()),
            (Some(10.5), Some(10.0))
        );
        assert_eq!(hod[0]["note"], "");
        assert_eq!(hod[0]["symbol"], "AAPL");
        assert_eq!(written(&e, LOD_KEY)[0]["previous"].as_f64(), Some(9.8));

        at(&h, mon(9, 45), "open");
        let e = h.analyze(vec![quote("AAPL", 10.2, 10.1)]).unwrap();
        assert!(
            written(&e, HOD_KEY).is_empty(),
            "first regular print is not an alert"
        );
        let e = h.analyze(vec![quote("AAPL", 10.8, 9.9)]).unwrap();
        assert_eq!(
            written(&e, HOD_KEY)[0]["note"],
            "Broke pre-market high of $10.50"
        );
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "",
            "9.9 is above the pre-market low"
        );
        let e = h.analyze(vec![quote("AAPL", 10.7, 9.4)]).unwrap();
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "Broke pre-market low of $9.50"
        );

        at(&h, mon(16, 30), "after-hours");
        h.analyze(vec![quote("AAPL", 10.6, 10.0)]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.9, 9.45)]).unwrap();
        assert_eq!(
            written(&e, HOD_KEY)[0]["note"],
            "Broke regular session high of $10.80"
        );
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "Broke pre-market low of $9.50"
        );
        let e = h.analyze(vec![quote("AAPL", 10.95, 9.3)]).unwrap();
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "Broke regular session low of $9.40"
        );
        let s = state(&e, "AAPL");
        for (k, v) in [
            ("pre_market_high", 10.5),
            ("pre_market_low", 9.5),
            ("regular_session_high", 10.8),
            ("regular_session_low", 9.4),
            ("after_hours_high", 10.95),
            ("after_hours_low", 9.3),
        ] {
            assert_eq!(s[k].as_f64(), Some(v), "{k}");
        }
        // Lists: newest first, capped, 8 h TTL.
        let hod = h.host(|h| h.store.lrange(HOD_KEY, 0, -1));
        assert_eq!(hod.len(), 4);
        assert!(hod[0].contains("10.95"));
        assert_eq!(
            h.host(|h| h.store.expiry_ms(HOD_KEY)),
            Some(mon(16, 30) / 1000 + 28_800_000)
        );
        assert_eq!(
            h.host(|h| h.store.expiry_ms("daily_range:AAPL")),
            Some(mon(16, 30) / 1000 + 345_600_000)
        );
    }

    #[test]
    fn closed_market_publishes_state_without_updating_it() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(20, 30));
        market(&h, "closed");
        h.init(&[]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        let s = state(&e, "AAPL");
        assert!(s["after_hours_high"].is_null() && s["pre_market_low"].is_null());
        assert_eq!(s["high"].as_f64(), Some(10.0));
    }

    #[test]
    fn payload_fields_keep_their_order_and_session_fields_follow() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.init(&[]).unwrap();
        let payload =
            r#"{"symbol":"AAPL","zeta":1,"alpha":2,"high":5,"low":4,"pre_market_high":99}"#;
        let e = h
            .analyze(vec![Event::Other(Raw {
                kind: "quote:AAPL".into(),
                json: payload.into(),
            })])
            .unwrap();
        let text = e
            .iter()
            .find_map(|e| match e {
                Effect::Put(p) if p.key == "daily_range:AAPL" => Some(p.value.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            text,
            Body::Json(
                r#"{"symbol":"AAPL","zeta":1,"alpha":2,"high":5,"low":4,"pre_market_high":null,"pre_market_low":null,"regular_session_high":5.0,"regular_session_low":4.0,"after_hours_high":null,"after_hours_low":null}"#
                    .into()
            )
        );
    }

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
    fn without_market_status_sessions_follow_the_schedule() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.host(|h| h.reference.unavailable = Some("no Massive key".into()));
        h.init(&[]).unwrap();
        h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.5, 9.0)]).unwrap();
        let hod = written(&e, HOD_KEY);
        assert_eq!(
            hod.len(),
            1,
            "the seed produced nothing without market status"
        );
        assert_eq!(hod[0]["session"], "regular");
        assert_eq!(h.host(|h| h.counters["dra.market_status_fallback"]), 2);
        assert_eq!(h.host(|h| h.logs.len()), 1, "the outage is logged once");
    }

    #[test]
    fn alert_timestamps_come_from_the_payload_else_the_clock() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0) + 250_000);
        h.init(&[]).unwrap();
        let tick = |high: f64, extra: Value| {
            let mut v = json!({"symbol": "X", "high": high, "low": 1.0});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            Event::Other(Raw {
                kind: "quote:X".into(),
                json: v.to_string(),
            })
        };
        h.analyze(vec![tick(2.0, json!({}))]).unwrap();
        let e = h
            .analyze(vec![
                tick(3.0, json!({"end_timestamp": 1_773_064_801_500u64})),
                tick(4.0, json!({"timestamp": 1_773_064_802_000_000_000u64})),
                tick(5.0, json!({"end_timestamp": 0})),
            ])
            .unwrap();
        let ts: Vec<f64> = written(&e, HOD_KEY)
            .iter()
            .map(|a| a["timestamp"].as_f64().unwrap())
            .collect();
        assert_eq!(ts, vec![1_773_064_801.5, 1_773_064_802.0, 1_773_064_800.25]);
    }

    #[test]
    fn bad_payloads_are_rejected_or_ignored_never_trapped() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.init(&[]).unwrap();
        let raw = |j: &str| {
            Event::Other(Raw {
                kind: "quote:X".into(),
                json: j.into(),
            })
        };
        let e = h
            .analyze(vec![
                raw("not json"),
                raw("[1]"),
                raw(r#"{"close":1}"#),
                raw(r#"{"symbol":"BAD SYM","high":1,"low":1}"#),
                raw(r#"{"sym":"ZERO","high":0,"low":0}"#),
                raw(r#"{"symbol":"MISSING","close":3}"#),
                raw(r#"{"symbol":"NEG","h":-1,"l":"x"}"#),
                Event::Trade(Trade {
                    symbol: "T".into(),
                    price: 1.0,
                    size: 1,
                    exchange: 0,
                    id: String::new(),
                    tape: 0,
                    conditions: vec![],
                    timestamp_ms: 0,
                    sequence: 0,
                }),
            ])
            .unwrap();
        let rejected: Vec<u32> = e
            .iter()
            .filter_map(|e| match e {
                Effect::Reject(r) => Some(r.index),
                _ => None,
            })
            .collect();
        assert_eq!(rejected, vec![0, 1, 2, 3, 7]);
        for sym in ["ZERO", "MISSING", "NEG"] {
            let s = state(&e, sym);
            assert!(s["regular_session_high"].is_null(), "{sym}: {s}");
        }
        // `sym` works as the symbol field; later valid prices still count.
        let e = h
            .analyze(vec![raw(r#"{"sym":"ZERO","h":2,"l":1}"#)])
            .unwrap();
        assert_eq!(
            state(&e, "ZERO")["regular_session_high"].as_f64(),
            Some(2.0)
        );
    }

    #[test]
    fn rehydrates_todays_records_for_elapsed_sessions_only() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        market(&h, "open");
        let record = |end_ms: Option<u64>| {
            let mut v = json!({
                "symbol": "S", "high": 1.0, "low": 1.0,
                "pre_market_high": 10.5, "pre_market_low": 9.5,
                "regular_session_high": 10.8, "regular_session_low": 9.9,
                "after_hours_high": 11.0, "after_hours_low": 9.4,
            });
            if let Some(t) = end_ms {
                v["end_timestamp"] = json!(t);
            }
            v.to_string()
        };
        h.host(|h| {
            h.store
                .set("daily_range:TODAY", &record(Some(mon(9, 50) / 1000)), None);
            // Friday's record: not restored.
            h.store.set(
                "daily_range:OLD",
                &record(Some(mon(9, 50) / 1000 - 3 * 86_400_000)),
                None,
            );
            // No timestamp: trusted only because the boundary key says today.
            h.store.set("daily_range:NOTS", &record(None), None);
            h.store
                .set(BOUNDARY_KEY, &day_anchor(mon(10, 0)).to_string(), None);
        });
        h.init(&[]).unwrap();
        let e = h
            .analyze(vec![
                quote("TODAY", 10.9, 10.0),
                quote("OLD", 10.9, 10.0),
                quote("NOTS", 10.7, 9.8),
            ])
            .unwrap();
        assert!(
            !e.iter()
                .any(|e| matches!(e, Effect::Put(p) if p.key == BOUNDARY_KEY))
        );
        let s = state(&e, "TODAY");
        assert_eq!(s["pre_market_high"].as_f64(), Some(10.5));
        assert_eq!(s["regular_session_high"].as_f64(), Some(10.9));
        assert!(
            s["after_hours_high"].is_null(),
            "after-hours has not happened yet"
        );
        let hod = written(&e, HOD_KEY);
        assert_eq!(hod.len(), 1, "only TODAY alerts: {hod:?}");
        assert_eq!(hod[0]["previous"].as_f64(), Some(10.8));
        assert_eq!(hod[0]["note"], "Broke pre-market high of $10.50");
        assert!(state(&e, "OLD")["pre_market_high"].is_null());
        let lod = written(&e, LOD_KEY);
        assert_eq!(lod.len(), 1);
        assert_eq!(lod[0]["symbol"], "NOTS");
        assert_eq!(h.host(|h| h.counters["dra.rehydrated"]), 2);
    }

    #[test]
    fn timestampless_records_are_not_trusted_without_todays_boundary() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.host(|h| {
            h.store.set(
                "daily_range:NOTS",
                r#"{"symbol":"NOTS","regular_session_high":10.8,"regular_session_low":9.9}"#,
                None,
            );
            h.store.set(BOUNDARY_KEY, "1772870400", None);
        });
        h.init(&[]).unwrap();
        let e = h.analyze(vec![quote("NOTS", 10.9, 10.0)]).unwrap();
        assert!(written(&e, HOD_KEY).is_empty());
        assert_eq!(
            written(&e, BOUNDARY_KEY),
            vec![json!(day_anchor(mon(10, 0)))]
        );
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

    #[test]
    fn alert_lists_are_capped_by_config() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.init(&[("dra_cache_list_max", "2")]).unwrap();
        for n in 0..5 {
            h.analyze(vec![quote("AAPL", 10.0 + n as f64, 9.0)])
                .unwrap();
        }
        assert_eq!(h.host(|h| h.store.lrange(HOD_KEY, 0, -1)).len(), 2);
        assert!(matches!(
            Harness::<DailyRange>::new().init(&[("dra_cache_list_max", "x")]),
            Err(AnalyzerError::BadConfig(_))
        ));
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
