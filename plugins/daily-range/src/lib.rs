//! `daily-range`: the seed's DailyRangeAnalyzer (seed-inventory §2.6), a
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
//! the seed, deliberate (seed-inventory §8.2):
//! - the trading day starts at 04:00 America/New_York, DST-correct (the seed
//!   reset at midnight ET), and every replica resets its own state when its
//!   clock crosses it (the seed reset only the replica that won a race);
//!   `daily_range:day_boundary` still records the current day's anchor;
//! - when market status is unavailable the session follows the regular
//!   schedule by the clock (weekdays 04:00–09:30–16:00–20:00 ET) instead of
//!   producing nothing (the seed without a Massive key never alerted);
//! - an alert's `timestamp` is the payload's `t`, `timestamp` or
//!   `end_timestamp` (ms, µs or ns are recognised), else the host clock;
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

use chrono::{Datelike, TimeZone, Timelike, Weekday};
use chrono_tz::America::New_York;
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

/// A trading session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// 04:00–09:30 ET.
    PreMarket,
    /// 09:30–16:00 ET.
    Regular,
    /// 16:00–20:00 ET.
    AfterHours,
}

impl Session {
    fn index(self) -> usize {
        self as usize
    }
    /// The seed's name of the session.
    pub fn name(self) -> &'static str {
        match self {
            Session::PreMarket => "pre_market",
            Session::Regular => "regular",
            Session::AfterHours => "after_hours",
        }
    }
}

/// Output field names per session: (high, low).
const FIELDS: [(&str, &str); 3] = [
    ("pre_market_high", "pre_market_low"),
    ("regular_session_high", "regular_session_low"),
    ("after_hours_high", "after_hours_low"),
];

/// 04:00 America/New_York of the trading day containing `now_us`, Unix seconds
/// (before 04:00 ET the trading day is still the previous one).
pub fn day_anchor(now_us: u64) -> i64 {
    let secs = (now_us / 1_000_000) as i64;
    let Some(ny) = New_York.timestamp_opt(secs, 0).single() else {
        return secs - secs.rem_euclid(86_400);
    };
    let date = if ny.hour() < 4 {
        ny.date_naive().pred_opt().unwrap_or(ny.date_naive())
    } else {
        ny.date_naive()
    };
    date.and_hms_opt(4, 0, 0)
        .and_then(|t| New_York.from_local_datetime(&t).earliest())
        .map(|t| t.timestamp())
        .unwrap_or(secs)
}

/// The session by the regular US schedule at `now_us` (no holidays): the
/// fallback when the market status is unavailable.
pub fn scheduled_session(now_us: u64) -> Option<Session> {
    let ny = New_York
        .timestamp_opt((now_us / 1_000_000) as i64, 0)
        .single()?;
    if matches!(ny.weekday(), Weekday::Sat | Weekday::Sun) {
        return None;
    }
    let minute = ny.hour() * 60 + ny.minute();
    match minute {
        240..570 => Some(Session::PreMarket),
        570..960 => Some(Session::Regular),
        960..1200 => Some(Session::AfterHours),
        _ => None,
    }
}

/// The session a market status stands for (seed `_get_session`).
pub fn session_of(status: &MarketStatus) -> Option<Session> {
    if status.market == Market::Open {
        Some(Session::Regular)
    } else if status.early_hours {
        Some(Session::PreMarket)
    } else if status.after_hours {
        Some(Session::AfterHours)
    } else {
        None
    }
}

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
    v.and_then(Value::as_f64).filter(|x| x.is_finite() && *x > 0.0)
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

/// A symbol's extremes per session (indexed by [`Session::index`]).
type Ranges = [Range; 3];

/// What `snapshot` hands to the next generation.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    anchor: i64,
    init_anchor: i64,
    boundary_written: i64,
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
        let boundary_is_today = self.boundary_written == self.anchor;
        let mut restored = 0;
        for (symbol, record) in fresh.into_iter().zip(cache::get_many(&keys)) {
            let mut ranges = Ranges::default();
            let record = record.and_then(|t| serde_json::from_str::<Object>(&t).ok());
            if let Some(o) = record {
                let today = match payload_time(&o) {
                    Some(t) => t >= self.anchor as f64,
                    None => boundary_is_today,
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
            symbols: HashMap::new(),
            status_down: false,
        })
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let now_us = host::now_us();
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
                let r = &mut ranges[s.index()];
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
                alert.set("direction", Value::from(if is_high { "high" } else { "low" }));
                alert.set("price", num(Some(price)));
                alert.set("previous", num(Some(previous)));
                alert.set("timestamp", num(Some(timestamp)));
                alert.set("note", Value::from(note));
                for (k, v) in &o.0 {
                    alert.set(k, v.clone());
                }
                let key = if is_high { HOD_KEY } else { LOD_KEY };
                let body = Body::Json(alert.text());
                effects.push(push(key, body.clone(), self.list_max, Some(ALERT_TTL)));
                effects.push(publish(key, body));
            }
        }
        host::counter("dra.processed", batch.len() as u64);
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
            symbols: self.symbols.clone(),
        })
        .unwrap_or_default()
    }
}

export_analyzer!(DailyRange);
