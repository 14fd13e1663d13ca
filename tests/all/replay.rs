//! Analyzer parity end to end: a recorded simulator stream
//! (`tests/fixtures/replay/stream.jsonl`) is replayed by the simulator to the
//! Massive listener, through the queues into the processors (`massive-router`
//! on quotes, `leaderboard` on aggregates, `top-trades` on trades) and the
//! `daily-range` scanner on `quote:*`, into the store. The expected boards,
//! quotes, ranges, alerts and trade stats are computed here from the recorded
//! events with plain Rust (not through the plugins), with the reference data
//! the simulator's REST API serves, and compared with the store once the
//! pipeline has drained. Once on the embedded backends, once on RabbitMQ +
//! Redis, and (embedded) with the clocks in the pre-market and after-hours
//! sessions.
//!
//! Draining is detected with barrier events (no sleeps): after the listener
//! has queued every replayed event, one more quote, trade and aggregate is
//! published straight onto each queue, each with a timestamp no recorded
//! event has; when all three have reached the store (and the aggregate's
//! quote has reached `daily_range:*` through pub/sub), everything queued
//! before them has been processed. A second round, sent once the publish
//! throttles (`leaderboard:last_publish`, `tta:last_publish`) have expired,
//! makes the boards and widgets reflect the final state. The barrier events
//! are part of the stream the expected results are computed from.
//!
//! The fixture was recorded once (a Monday, the regular session, crossing a
//! minute boundary; 4,046 events, stopped after about five seconds) with
//! `mdp simulate --record stream.jsonl --seed 7 --symbols 40 --at 2026-01-05T14:59:45Z
//! --rate 250 --quote-rate 400 --speed 10 --news-per-min 0`.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use mdp::feed::RecordedFrame;
use mdp::feed::massive::{MassiveConfig, MassiveListener};
use mdp::plugin::manifest::Manifest;
use mdp::plugin::{
    FixedClock, HostServices, LiveWorker, Plugin, PluginSlot, Runtime, RuntimeConfig,
};
use mdp::process::{Processor, ProcessorConfig};
use mdp::queue::{EmbeddedQueue, Queue};
use mdp::refdata::{MassiveReference, MassiveRestConfig};
use mdp::scan::{Scanner, ScannerConfig};
use mdp::sim::{SimConfig, SimHandle};
use mdp::store::{EmbeddedStore, Store, Topic};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

/// Seed and size of the recorded market (the replaying simulator serves the
/// same market's reference data over REST).
const SEED: u64 = 7;
const SYMBOLS: usize = 40;
/// The market session a run is in: the replaying simulator's clock (market
/// status over REST) and the host clock the plugins see agree on it.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// Start of the simulator's clock.
    sim_at: &'static str,
    /// The host clock.
    host_now_us: u64,
    /// daily-range's name of the session.
    name: &'static str,
    /// Its `daily_range:{SYM}` fields: (high, low).
    fields: (&'static str, &'static str),
}

/// Monday 2026-01-05 10:02 EST, after the 09:30 open (the recorded time).
const REGULAR: Session = Session {
    sim_at: "2026-01-05T15:00:00Z",
    host_now_us: 1_767_625_320_000_000,
    name: "regular",
    fields: ("regular_session_high", "regular_session_low"),
};

/// The same Monday at 16:02 EST: the stream replayed as after-hours trading.
const AFTER_HOURS: Session = Session {
    sim_at: "2026-01-05T21:00:00Z",
    host_now_us: 1_767_646_920_000_000,
    name: "after_hours",
    fields: ("after_hours_high", "after_hours_low"),
};

/// The same Monday at 08:02 EST: the stream replayed as pre-market trading.
const PRE_MARKET: Session = Session {
    sim_at: "2026-01-05T13:00:00Z",
    host_now_us: 1_767_618_120_000_000,
    name: "pre_market",
    fields: ("pre_market_high", "pre_market_low"),
};

/// How long any one wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

fn fixture() -> std::path::PathBuf {
    support::repo_root().join("tests/fixtures/replay/stream.jsonl")
}

/// The recorded T, Q, A and AM events in stream order (the kinds the
/// listener subscribes to here).
fn recorded_events() -> Vec<Map<String, Value>> {
    let text = std::fs::read_to_string(fixture()).expect("fixture");
    let mut events = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: RecordedFrame = serde_json::from_str(line).expect("a recorded frame");
        let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(&rec.frame) else {
            continue;
        };
        for e in frame {
            if let Value::Object(o) = e
                && matches!(o["ev"].as_str(), Some("T" | "Q" | "A" | "AM"))
            {
                events.push(o);
            }
        }
    }
    events
}

fn f(e: &Map<String, Value>, k: &str) -> f64 {
    e.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn u(e: &Map<String, Value>, k: &str) -> u64 {
    e.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn sym(e: &Map<String, Value>) -> String {
    e["sym"].as_str().unwrap_or_default().to_string()
}

/// A symbol's reference data as the simulator's REST API serves it.
#[derive(Debug, Clone, Copy, Default)]
struct RefData {
    prev_close: f64,
    prev_open: f64,
    prev_high: f64,
    prev_low: f64,
    prev_volume: f64,
    prev_vwap: f64,
    avg_volume: f64,
    free_float: f64,
    /// Today's official open (`day.o`): the recording's `op` if the fixture
    /// comes from this seed's market.
    day_open: f64,
}

async fn reference_data(sim: &SimHandle, symbols: &BTreeSet<String>) -> HashMap<String, RefData> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", sim.rest_url());
        async move {
            http.get(url)
                .query(&[("apiKey", "sim")])
                .send()
                .await
                .expect("simulator REST")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    let mut out = HashMap::new();
    for s in symbols {
        let snap = get(format!("/v2/snapshot/locale/us/markets/stocks/tickers/{s}")).await;
        let prev = &snap["ticker"]["prevDay"];
        let ratios = get(format!("/stocks/financials/v1/ratios?ticker={s}")).await;
        let float = get(format!("/stocks/vX/float?ticker={s}")).await;
        out.insert(
            s.clone(),
            RefData {
                prev_close: prev["c"].as_f64().unwrap(),
                prev_open: prev["o"].as_f64().unwrap(),
                prev_high: prev["h"].as_f64().unwrap(),
                prev_low: prev["l"].as_f64().unwrap(),
                prev_volume: prev["v"].as_f64().unwrap(),
                prev_vwap: prev["vw"].as_f64().unwrap(),
                avg_volume: ratios["results"][0]["average_volume"].as_f64().unwrap(),
                free_float: float["results"][0]["free_float"].as_f64().unwrap(),
                day_open: snap["ticker"]["day"]["o"].as_f64().unwrap(),
            },
        );
    }
    out
}

/// A board: its key, its score field and its (symbol, score) rows in rank order.
type Board = (&'static str, &'static str, Vec<(String, f64)>);

/// What the store must hold after the stream, computed from the events.
#[derive(Debug, Default)]
struct Expected {
    /// `stocks:quotes:{SYM}`: the last Q event per symbol.
    last_quote: BTreeMap<String, Map<String, Value>>,
    /// `quote:{SYM}`: the seed's 26-field quote of the last aggregate.
    quote: BTreeMap<String, Map<String, Value>>,
    /// `scanners:top_volume|top_gappers|top_gainers`: (symbol, score) in rank order.
    boards: Vec<Board>,
    /// Regular-session (high, low) per symbol (`daily_range:{SYM}`).
    range: BTreeMap<String, (f64, f64)>,
    /// New-high / new-low alerts in order: (symbol, price, previous).
    hod: Vec<(String, f64, f64)>,
    lod: Vec<(String, f64, f64)>,
    /// `tta:all_symbols:widget` `symbols`: per-symbol trade stats.
    trade_stats: BTreeMap<String, Value>,
}

/// The seed's quote of an aggregate, from the event,
/// the open baseline and the reference data.
fn seed_quote(a: &Map<String, Value>, open: f64, r: &RefData) -> Map<String, Value> {
    let close = f(a, "c");
    let prev_close = if r.prev_close > 0.0 {
        r.prev_close
    } else {
        close
    };
    let change = close - prev_close;
    let change_since_open = close - open;
    let mut q = Map::new();
    let mut set = |k: &str, v: Value| {
        q.insert(k.to_string(), v);
    };
    set("symbol", json!(sym(a)));
    set("volume", json!(u(a, "v")));
    set("free_float", json!(r.free_float));
    set("accumulated_volume", json!(u(a, "av")));
    set("relative_volume", json!(u(a, "av") as f64 / r.avg_volume));
    set("official_open_price", json!(f(a, "op")));
    set("vwap", json!(f(a, "vw")));
    // The day's open baseline, not the bar's own open.
    set("open", json!(open));
    set("close", json!(close));
    set("high", json!(f(a, "h")));
    set("low", json!(f(a, "l")));
    set("aggregate_vwap", json!(f(a, "a")));
    set("average_size", json!(f(a, "z")));
    set("avg_volume", json!(r.avg_volume));
    set("prev_day_close", json!(prev_close));
    set("prev_day_open", json!(r.prev_open));
    set("prev_day_high", json!(r.prev_high));
    set("prev_day_low", json!(r.prev_low));
    set("prev_day_volume", json!(r.prev_volume));
    set("prev_day_vwap", json!(r.prev_vwap));
    set("change", json!(change));
    set("pct_change", json!(change / prev_close * 100.0));
    set("change_since_open", json!(change_since_open));
    set(
        "pct_change_since_open",
        json!(change_since_open / open * 100.0),
    );
    set("start_timestamp", json!(u(a, "s")));
    set("end_timestamp", json!(u(a, "e")));
    q
}

/// Stats of one symbol's trade window (the last `window` trades, oldest first).
fn trade_stats(trades: &[(f64, u64, u64, u64)]) -> Value {
    let volume: u64 = trades.iter().map(|t| t.1).sum();
    let count = trades.len() as u64;
    let newest = trades.last().expect("a trade");
    let min_ts = trades.iter().map(|t| t.2).min().unwrap_or(0);
    let max_ts = trades.iter().map(|t| t.2).max().unwrap_or(0);
    json!({
        "total_volume": volume,
        "trade_count": count,
        // Python's round(x, 2): exact ties go to the even digit.
        "avg_size": format!("{:.2}", volume as f64 / count as f64).parse::<f64>().unwrap(),
        "max_size": trades.iter().map(|t| t.1).max().unwrap_or(0),
        "time_span_ms": max_ts - min_ts,
        "latest_price": newest.0,
        "latest_timestamp": newest.2,
        "latest_exchange": newest.3,
    })
}

/// Top-trades keeps each symbol's last 1,000 trades.
const TRADE_WINDOW: usize = 1000;

fn expected(events: &[Map<String, Value>], refs: &HashMap<String, RefData>) -> Expected {
    let mut x = Expected::default();
    let mut open: HashMap<String, f64> = HashMap::new();
    let mut trades: BTreeMap<String, Vec<(f64, u64, u64, u64)>> = BTreeMap::new();
    for e in events {
        let s = sym(e);
        match e["ev"].as_str() {
            Some("Q") => {
                x.last_quote.insert(s, e.clone());
            }
            Some("T") => {
                let w = trades.entry(s).or_default();
                w.push((f(e, "p"), u(e, "s"), u(e, "t"), u(e, "x")));
                if w.len() > TRADE_WINDOW {
                    w.remove(0);
                }
            }
            Some("A" | "AM") => {
                // The open baseline: the first bar's open after 09:30.
                let base = *open.entry(s.clone()).or_insert_with(|| {
                    if f(e, "o") > 0.0 {
                        f(e, "o")
                    } else {
                        f(e, "c")
                    }
                });
                let q = seed_quote(e, base, &refs[&s]);
                // daily-range sees every published quote, in order.
                let (high, low) = (f(e, "h"), f(e, "l"));
                match x.range.get_mut(&s) {
                    None => {
                        x.range.insert(s.clone(), (high, low));
                    }
                    Some(r) => {
                        if high > r.0 {
                            x.hod.push((s.clone(), high, r.0));
                            r.0 = high;
                        }
                        if low < r.1 {
                            x.lod.push((s.clone(), low, r.1));
                            r.1 = low;
                        }
                    }
                }
                x.quote.insert(s, q);
            }
            _ => {}
        }
    }
    for (board, field) in [
        ("scanners:top_volume", "accumulated_volume"),
        ("scanners:top_gappers", "pct_change"),
        ("scanners:top_gainers", "pct_change_since_open"),
    ] {
        let mut rows: Vec<(String, f64)> = x
            .quote
            .iter()
            .map(|(s, q)| (s.clone(), q[field].as_f64().unwrap()))
            .collect();
        // Highest score first; ties: the later symbol name first.
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        x.boards.push((board, field, rows));
    }
    x.trade_stats = trades
        .iter()
        .map(|(s, w)| (s.clone(), trade_stats(w)))
        .collect();
    x
}

/// Numbers compare by value (an integer stored as `5` equals `5.0`), the rest exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

/// Board rows carry the hash values as the seed reads them back: a float
/// written in exponent form without a `.` (`5e-05`) stays a string.
fn same_as_hash_text(got: &Value, want: &Value) -> bool {
    match (
        got.as_str().and_then(|t| t.parse::<f64>().ok()),
        want.as_f64(),
    ) {
        (Some(g), Some(w)) => g == w,
        _ => false,
    }
}

/// Every field of `want` is in `got` with the same value.
fn assert_fields(what: &str, got: &Value, want: &Map<String, Value>, hash_text: bool) {
    for (k, v) in want {
        assert!(
            got.get(k)
                .is_some_and(|g| same(g, v) || (hash_text && same_as_hash_text(g, v))),
            "{what}: field `{k}`: got {}, want {v}\n  got: {got}",
            got.get(k).cloned().unwrap_or(Value::Null)
        );
    }
}

mod pipeline;
