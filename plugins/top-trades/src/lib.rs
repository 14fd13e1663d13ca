//! `top-trades`: the seed's TopTradesAnalyzer on the
//! `trades` queue.
//!
//! Every trade is normalised as the seed does and pushed onto
//! `tta:{SYM}:recent` (newest first, capped at 1,000, TTL 300 s), and kept in
//! an in-memory sliding window of the symbol's last 1,000 trades. At most once
//! per 5 s across all replicas (`cache::try_acquire("tta:last_publish")`) the
//! elected replica writes the widget keys (TTL 60 s, no publish, as the seed):
//! `tta:all_symbols:widget` (`{timestamp, symbols: {SYM: stats}, symbol_count}`)
//! and `tta:{SYM}:widget` (`{timestamp, symbol, ...stats}`) for the top 100
//! symbols by total volume.
//!
//! Stats per symbol: `total_volume`, `trade_count`, `avg_size` (2 dp),
//! `max_size`, `time_span_ms`, `latest_price`, `latest_timestamp`,
//! `latest_exchange` (from the newest trade).
//!
//! Several replicas: instead of re-reading every list from the store (the
//! seed's SCAN + LRANGE of up to 1,000 entries per symbol every 5 s), each
//! replica leases a small id (`tta:replica:{n}`, renewed every second) and
//! writes the stats of its own windows to the hash `tta:partials` (field =
//! its id) at most once per second; the elected replica merges the fresh
//! partials (≤ 15 s old) with its own. Stats are additive (sums, maxima,
//! latest by timestamp), so one replica gives exactly the seed's numbers and
//! N replicas give the stats over the union of their windows.
//!
//! Fixes of the seed: a trade timestamp of 0 falls back to the host clock
//! (the seed's 0 made `time_span_ms` span back to 1970); events that are not
//! trades are rejected with a reason instead of being silently skipped.
//!
//! Config: `window` (1000), `publish_every_ms` (5000), `top_symbols` (100).

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use mdp_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// TTL of `tta:{SYM}:recent` (5 minutes).
pub const RECENT_TTL: u32 = 300;
/// TTL of the widget keys (1 minute).
pub const WIDGET_TTL: u32 = 60;
/// The election key.
pub const PUBLISH_KEY: &str = "tta:last_publish";
/// The hash holding each replica's partial stats.
pub const PARTIALS_KEY: &str = "tta:partials";
/// How often a replica refreshes its partial stats and its id lease, µs.
const PARTIAL_EVERY_US: u64 = 1_000_000;
/// Partials older than this are ignored (their replica is gone), ms.
const PARTIAL_FRESH_MS: u64 = 15_000;
/// The lease of a replica id, ms.
const LEASE_MS: u32 = 60_000;

/// One trade as the window keeps it: 16 bytes, so 3,000 full windows of
/// 1,000 trades take 48 MB of the plugin's memory. Sizes above `u32::MAX`
/// shares (none trade) are kept as `u32::MAX`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Tick {
    timestamp: u64,
    size: u32,
}

/// A symbol's window: its last trades, newest at the back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Window {
    trades: VecDeque<Tick>,
    /// Price of the newest trade (the stats use no other price).
    latest_price: f64,
    /// Exchange of the newest trade.
    latest_exchange: u32,
    /// Host clock of the last push, µs (the store list expires 300 s later).
    last_push_us: u64,
}

/// Additive stats of a set of trades.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Sum of sizes.
    pub total_volume: u64,
    /// Number of trades.
    pub trade_count: u64,
    /// Largest size.
    pub max_size: u64,
    /// Earliest trade timestamp, ms.
    pub min_ts: u64,
    /// Latest trade timestamp, ms.
    pub max_ts: u64,
    /// Price of the newest trade.
    pub latest_price: f64,
    /// Timestamp of the newest trade, ms.
    pub latest_timestamp: u64,
    /// Exchange of the newest trade.
    pub latest_exchange: u32,
}

impl Stats {
    fn of(window: &Window) -> Option<Stats> {
        let newest = window.trades.back()?;
        let mut s = Stats {
            min_ts: u64::MAX,
            latest_price: window.latest_price,
            latest_timestamp: newest.timestamp,
            latest_exchange: window.latest_exchange,
            ..Stats::default()
        };
        for t in &window.trades {
            s.total_volume += u64::from(t.size);
            s.trade_count += 1;
            s.max_size = s.max_size.max(u64::from(t.size));
            s.min_ts = s.min_ts.min(t.timestamp);
            s.max_ts = s.max_ts.max(t.timestamp);
        }
        Some(s)
    }

    /// Fold another replica's stats of the same symbol into these.
    pub fn merge(&mut self, o: &Stats) {
        self.total_volume += o.total_volume;
        self.trade_count += o.trade_count;
        self.max_size = self.max_size.max(o.max_size);
        self.min_ts = self.min_ts.min(o.min_ts);
        self.max_ts = self.max_ts.max(o.max_ts);
        if o.latest_timestamp > self.latest_timestamp {
            self.latest_price = o.latest_price;
            self.latest_timestamp = o.latest_timestamp;
            self.latest_exchange = o.latest_exchange;
        }
    }

    /// The seed's stats object.
    pub fn to_json(&self) -> Map<String, Value> {
        let avg = if self.trade_count > 0 {
            round2(self.total_volume as f64 / self.trade_count as f64)
        } else {
            0.0
        };
        let mut m = Map::new();
        m.insert("total_volume".into(), json!(self.total_volume));
        m.insert("trade_count".into(), json!(self.trade_count));
        m.insert("avg_size".into(), json!(avg));
        m.insert("max_size".into(), json!(self.max_size));
        m.insert(
            "time_span_ms".into(),
            json!(self.max_ts.saturating_sub(self.min_ts)),
        );
        m.insert(
            "latest_price".into(),
            serde_json::Number::from_f64(self.latest_price)
                .map(Value::Number)
                .unwrap_or(json!(0)),
        );
        m.insert("latest_timestamp".into(), json!(self.latest_timestamp));
        m.insert("latest_exchange".into(), json!(self.latest_exchange));
        m
    }
}

/// `x` rounded to 2 decimals as Python's `round(x, 2)` does: from the exact
/// binary value, an exact tie to the even digit (801 / 8 = 100.125 → 100.12).
/// Rust's fixed-precision formatting rounds the same way; scaling by 100
/// first does not (it gave 100.13).
pub fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

/// A replica's partial stats as stored in `tta:partials`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Partial {
    /// Host clock when written, ms.
    at_ms: u64,
    symbols: BTreeMap<String, Stats>,
}

/// State handed to the next generation on hot reload.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    replica: Option<u32>,
    windows: HashMap<String, Window>,
    last_partial_us: u64,
}

/// The analyzer.
pub struct TopTrades {
    window: usize,
    publish_every_ms: u32,
    top_symbols: usize,
    state: State,
}

/// The host clock as the seed's `datetime.now(timezone.utc).isoformat()`.
pub fn iso_utc(now_us: u64) -> String {
    let t = DateTime::<Utc>::from_timestamp_micros(now_us as i64).unwrap_or_default();
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// Fields of a trade's message the typed trade does not keep as sent: the
/// JSON text of `conditions`, `trf_id` and `trf_timestamp` (`null`
/// included), `None` where the message has no such key.
#[derive(Debug, Default, Deserialize)]
struct Verbatim<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    conditions: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    trf_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    trf_timestamp: Option<&'a RawValue>,
}

/// A key that is present, whatever its value (`null` stays `Some("null")`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The seed's normalised trade (field order and defaults of its
/// `tta:{SYM}:recent` entries), as JSON text. The seed reads each field
/// with `.get(key, default)` from the trade's message, so `conditions`,
/// `trf_id` and `trf_timestamp` are the message's own values (`null` for a
/// trade without conditions or an exchange print; the TRF's id and time for
/// an off-exchange one) and the defaults (`[]`, 0, 0) apply only to a
/// missing key. `message` is the trade's message text (`host::input_json`);
/// without it, empty conditions are `null` and the TRF fields 0.
fn stored_trade(t: &Trade, price: f64, timestamp: u64, message: Option<&str>) -> String {
    use std::fmt::Write;
    let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let price = serde_json::to_string(&price).unwrap_or_else(|_| "0".into());
    let verbatim: Option<Verbatim> = message.and_then(|m| serde_json::from_str(m).ok());
    let conditions = match &verbatim {
        Some(v) => v.conditions.map_or("[]", RawValue::get).to_string(),
        None if t.conditions.is_empty() => "null".to_string(),
        None => serde_json::to_string(&t.conditions).unwrap_or_else(|_| "null".into()),
    };
    let verbatim = verbatim.unwrap_or_default();
    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        r#"{{"event_type":"T","symbol":{},"exchange":{},"id":{},"tape":{},"price":{},"size":{},"conditions":{},"timestamp":{},"sequence_number":{},"trf_id":{},"trf_timestamp":{}}}"#,
        text(&t.symbol),
        t.exchange,
        text(&t.id),
        t.tape,
        price,
        t.size,
        conditions,
        timestamp,
        t.sequence,
        verbatim.trf_id.map_or("0", RawValue::get),
        verbatim.trf_timestamp.map_or("0", RawValue::get),
    );
    out
}

impl TopTrades {
    /// Lease the lowest free replica id (renewed with every partial write).
    fn replica_id(&mut self) -> u32 {
        if let Some(id) = self.state.replica {
            return id;
        }
        let id = (0..1024)
            .find(|n| cache::try_acquire(&format!("tta:replica:{n}"), LEASE_MS))
            .unwrap_or(1024);
        self.state.replica = Some(id);
        id
    }

    /// Forget windows whose store list has expired (no push for 300 s).
    fn expire(&mut self, now_us: u64) {
        let ttl_us = u64::from(RECENT_TTL) * 1_000_000;
        self.state
            .windows
            .retain(|_, w| now_us.saturating_sub(w.last_push_us) < ttl_us);
    }

    fn own_stats(&self) -> BTreeMap<String, Stats> {
        self.state
            .windows
            .iter()
            .filter_map(|(s, w)| Some((s.clone(), Stats::of(w)?)))
            .collect()
    }

    /// Write this replica's partial stats and renew its id lease (≤ 1/s).
    fn partial(&mut self, now_us: u64) -> Vec<Effect> {
        if self.state.last_partial_us != 0
            && now_us.saturating_sub(self.state.last_partial_us) < PARTIAL_EVERY_US
        {
            return Vec::new();
        }
        self.state.last_partial_us = now_us;
        let id = self.replica_id();
        let partial = Partial {
            at_ms: now_us / 1000,
            symbols: self.own_stats(),
        };
        vec![
            hset(
                PARTIALS_KEY,
                vec![(
                    id.to_string(),
                    serde_json::to_string(&partial).unwrap_or_default(),
                )],
                Some(RECENT_TTL),
            ),
            put(
                format!("tta:replica:{id}"),
                Body::Json("1".into()),
                Some(LEASE_MS / 1000),
            ),
        ]
    }

    /// The widget keys from this replica's windows and the others' partials.
    fn widgets(&mut self, now_us: u64) -> Vec<Effect> {
        let me = self.replica_id().to_string();
        let mut all = self.own_stats();
        let now_ms = now_us / 1000;
        for (id, text) in cache::hgetall(PARTIALS_KEY) {
            if id == me {
                continue;
            }
            let Ok(p) = serde_json::from_str::<Partial>(&text) else {
                host::counter("tta.bad_partials", 1);
                continue;
            };
            if now_ms.saturating_sub(p.at_ms) > PARTIAL_FRESH_MS {
                continue;
            }
            for (symbol, s) in p.symbols {
                all.entry(symbol)
                    .and_modify(|mine| mine.merge(&s))
                    .or_insert(s);
            }
        }
        let timestamp = iso_utc(now_us);
        let symbols: Map<String, Value> = all
            .iter()
            .map(|(s, st)| (s.clone(), Value::Object(st.to_json())))
            .collect();
        let mut effects = vec![put(
            "tta:all_symbols:widget",
            json(&json!({
                "timestamp": timestamp,
                "symbols": symbols,
                "symbol_count": all.len(),
            })),
            Some(WIDGET_TTL),
        )];
        let mut ranked: Vec<(&String, &Stats)> = all.iter().collect();
        ranked.sort_by(|a, b| b.1.total_volume.cmp(&a.1.total_volume).then(a.0.cmp(b.0)));
        for (symbol, st) in ranked.into_iter().take(self.top_symbols) {
            let mut m = Map::new();
            m.insert("timestamp".into(), json!(timestamp));
            m.insert("symbol".into(), json!(symbol));
            m.extend(st.to_json());
            effects.push(put(
                format!("tta:{symbol}:widget"),
                json(&m),
                Some(WIDGET_TTL),
            ));
        }
        host::counter("tta.published", effects.len() as u64);
        effects
    }
}

impl Analyzer for TopTrades {
    fn describe() -> Info {
        mdp_sdk::info(
            "top-trades",
            env!("CARGO_PKG_VERSION"),
            Kinds::TRADE | Kinds::OTHER,
            // 2: compact ticks, state encoded with postcard (1 was JSON).
            2,
        )
    }

    fn init(config: Config, state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        let window: usize = config.parse_or("window", 1000)?;
        if window == 0 {
            return Err(AnalyzerError::BadConfig("window must be at least 1".into()));
        }
        let state = state
            .filter(|s| !s.is_empty())
            .and_then(|s| postcard::from_bytes(&s).ok())
            .unwrap_or_default();
        Ok(TopTrades {
            window,
            publish_every_ms: config.parse_or("publish_every_ms", 5000)?,
            top_symbols: config.parse_or("top_symbols", 100)?,
            state,
        })
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let now_us = host::now_us();
        let now_ms = now_us / 1000;
        self.expire(now_us);
        let mut effects = Vec::with_capacity(batch.len() + 8);
        for (i, event) in batch.iter().enumerate() {
            let Event::Trade(t) = event else {
                let kind = match event {
                    Event::Other(raw) => raw.kind.as_str(),
                    _ => "a non-trade type",
                };
                effects.push(reject(
                    i,
                    format!("not a trade (event_type `{kind}`) or missing symbol, price, size or timestamp"),
                ));
                continue;
            };
            let timestamp = if t.timestamp_ms > 0 {
                t.timestamp_ms
            } else {
                now_ms
            };
            let price = if t.price.is_finite() { t.price } else { 0.0 };
            effects.push(push(
                format!("tta:{}:recent", t.symbol),
                Body::Json(stored_trade(
                    t,
                    price,
                    timestamp,
                    host::input_json(i as u32).as_deref(),
                )),
                self.window as u32,
                Some(RECENT_TTL),
            ));
            let w = self.state.windows.entry(t.symbol.clone()).or_default();
            w.trades.push_back(Tick {
                timestamp,
                size: u32::try_from(t.size).unwrap_or(u32::MAX),
            });
            w.latest_price = price;
            w.latest_exchange = t.exchange;
            while w.trades.len() > self.window {
                w.trades.pop_front();
            }
            w.last_push_us = now_us;
        }
        effects.extend(self.partial(now_us));
        if cache::try_acquire(PUBLISH_KEY, self.publish_every_ms) {
            effects.extend(self.widgets(now_us));
        }
        host::counter("tta.processed", batch.len() as u64);
        Ok(effects)
    }

    /// Compact binary state: full windows of 3,000 symbols encode to ~30 MB
    /// (JSON needed ~200 MB, more than the plugin's memory limit).
    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.state).unwrap_or_default()
    }
}

export_analyzer!(TopTrades);

#[cfg(test)]
mod tests;
