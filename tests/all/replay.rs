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
use mdp::feed::massive::{MassiveArgs, MassiveListener};
use mdp::plugin::manifest::Manifest;
use mdp::plugin::{
    FixedClock, HostServices, LiveWorker, Plugin, PluginSlot, Runtime, RuntimeConfig,
};
use mdp::queue::{EmbeddedQueue, Queue};
use mdp::refdata::{MassiveReference, MassiveRestConfig};
use mdp::role::processor::{Processor, ProcessorConfig};
use mdp::role::scanner::{Scanner, ScannerConfig};
use mdp::sim::{SimHandle, SimulateArgs};
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

/// Everything one run needs.
struct Pipeline {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    prefix: String,
    session: Session,
}

/// The plugin's shipped manifest (`plugins/<name>/<name>.toml`: limits,
/// batches in flight, capabilities) with `config` overriding its settings.
fn manifest(name: &str, config: &[(&str, &str)]) -> Manifest {
    let path = support::repo_root().join(format!("plugins/{name}/{name}.toml"));
    let mut m = Manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for (k, v) in config {
        m.config.insert(k.to_string(), v.to_string());
    }
    m
}

async fn worker(runtime: &Runtime, services: &HostServices, manifest: Manifest) -> LiveWorker {
    let bytes = std::fs::read(support::plugin_wasm(&manifest.name)).unwrap();
    let mut options = manifest.load_options();
    // Parity, not speed, is under test: a loaded 2-core machine must not
    // turn a slow batch into a deadline fault.
    options.limits.deadline_base = Duration::from_secs(10);
    let plugin = Plugin::load(runtime, bytes, options, services)
        .await
        .unwrap();
    LiveWorker::new(PluginSlot::fixed(plugin, manifest), services.clone()).unwrap()
}

/// Poll `check` until it returns `Some` (or fail after [`WAIT`] with `what`).
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_json(store: &Arc<dyn Store>, key: &str) -> Option<Value> {
    let text = store.get(key).await.expect("store get")?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{key} is not JSON: {e}")))
}

/// Barrier events: a copy of the last event of each kind with a timestamp
/// no recorded event has (`round` makes each round's distinct).
fn barriers(events: &[Map<String, Value>], round: u64) -> [Map<String, Value>; 3] {
    let last = |kinds: &[&str]| {
        events
            .iter()
            .rev()
            .find(|e| kinds.contains(&e["ev"].as_str().unwrap_or("")))
            .cloned()
            .expect("the stream has this kind")
    };
    let max = |k: &str| events.iter().map(|e| u(e, k)).max().unwrap_or(0);
    let mut q = last(&["Q"]);
    q.insert("t".into(), json!(max("t") + round));
    let mut t = last(&["T"]);
    t.insert("t".into(), json!(max("t") + round));
    // The aggregate repeats its symbol's last bar (same high and low: no
    // alert) with a later end.
    let mut a = last(&["A", "AM"]);
    a.insert("e".into(), json!(max("e") + round));
    [q, t, a]
}

async fn send_barriers(p: &Pipeline, events: &mut Vec<Map<String, Value>>, round: u64) {
    let [q, t, a] = barriers(events, round);
    for (queue, e) in [("quotes", &q), ("trades", &t), ("aggregate", &a)] {
        let body = Value::Object(mdp::event::massive::to_queue_json(e)).to_string();
        p.queue
            .publish(&format!("{}.{queue}", p.prefix), &[Bytes::from(body)])
            .await
            .expect("publish a barrier");
    }
    let store = p.store.clone();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let last = seen.clone();
    let outcome = tokio::time::timeout(
        WAIT - Duration::from_secs(1),
        wait_for(&format!("barrier round {round} processed"), || {
            let store = store.clone();
            let seen = seen.clone();
            let (q, t, a) = (q.clone(), t.clone(), a.clone());
            async move {
                let quote = get_json(&store, &format!("stocks:quotes:{}", sym(&q))).await;
                let trades = store
                    .lrange(&format!("tta:{}:recent", sym(&t)), 0, 0)
                    .await
                    .unwrap_or_default();
                let newest: Option<Value> =
                    trades.first().and_then(|t| serde_json::from_str(t).ok());
                let range = get_json(&store, &format!("daily_range:{}", sym(&a))).await;
                let done = quote.as_ref().is_some_and(|v| v["timestamp"] == q["t"])
                    && newest.as_ref().is_some_and(|v| v["timestamp"] == t["t"])
                    && range.as_ref().is_some_and(|v| v["end_timestamp"] == a["e"]);
                *seen.lock().unwrap() = format!(
                    "quote t {:?} (want {}), newest trade t {:?} (want {}), range end {:?} (want {})",
                    quote.map(|v| v["timestamp"].clone()),
                    q["t"],
                    newest.map(|v| v["timestamp"].clone()),
                    t["t"],
                    range.map(|v| v["end_timestamp"].clone()),
                    a["e"]
                );
                done.then_some(())
            }
        }),
    )
    .await;
    if outcome.is_err() {
        let mut depths = Vec::new();
        for queue in ["quotes", "trades", "aggregate"] {
            let name = format!("{}.{queue}", p.prefix);
            depths.push(format!("{queue}: {:?}", p.queue.depth(&name).await));
        }
        panic!(
            "barrier round {round} not processed: {}; queue depths {}",
            last.lock().unwrap(),
            depths.join(", ")
        );
    }
    events.extend([q, t, a]);
}

async fn replay_matches_independent_reference(p: Pipeline) {
    let mut events = recorded_events();
    assert!(
        events.len() > 2000,
        "a stream of a few thousand events: {}",
        events.len()
    );
    for kind in ["T", "Q", "A", "AM"] {
        assert!(
            events.iter().any(|e| e["ev"] == kind),
            "the fixture has {kind} events"
        );
    }

    // The replaying simulator: the same market (reference data over REST)
    // as the recording, its clock in the regular session.
    let sim = mdp::sim::start(SimulateArgs {
        symbols: SYMBOLS,
        seed: SEED,
        at: Some(p.session.sim_at.into()),
        replay: Some(fixture()),
        replay_speed: 0.0,
        news_per_min: 0.0,
        ..SimulateArgs::default()
    })
    .await
    .expect("simulator starts");

    let services = HostServices {
        store: p.store.clone(),
        reference: Arc::new(
            MassiveReference::new(
                MassiveRestConfig {
                    base_url: sim.rest_url(),
                    api_key: "sim".into(),
                    timeout: Duration::from_secs(10),
                    attempts: 3,
                },
                p.store.clone(),
            )
            .unwrap(),
        ),
        clock: Arc::new(FixedClock::new(p.session.host_now_us)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let (stop, stop_rx) = watch::channel(false);

    // Scanner first, and wait until its subscription is live: a probe
    // payload on `quote:*` must come back as `daily_range:{probe}`.
    let daily_range = worker(
        &runtime,
        &services,
        manifest("daily-range", &[("dra_cache_list_max", "100000")]),
    )
    .await;
    let mut scanner = Scanner::new(
        ScannerConfig {
            topics: vec![Topic::Pattern("quote:*".into())],
            ..ScannerConfig::default()
        },
        p.store.clone(),
        daily_range,
    );
    let rx = stop_rx.clone();
    let scanner_task = tokio::spawn(async move { scanner.run(rx).await.expect("scanner runs") });
    let probe = format!("PRB{}", std::process::id() % 1000);
    {
        let store = p.store.clone();
        let probe = probe.clone();
        wait_for("the scanner subscribed", || {
            let store = store.clone();
            let probe = probe.clone();
            async move {
                store
                    .apply(
                        &[mdp::store::Write::Publish {
                            channel: format!("quote:{probe}"),
                            message: json!({"symbol": probe}).to_string().into(),
                        }],
                        false,
                    )
                    .await
                    .ok()?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                store
                    .get(&format!("daily_range:{probe}"))
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ())
            }
        })
        .await;
    }

    // The listener declares its queues (with their TTL); then the processors.
    let listener = Arc::new(MassiveListener::new(
        MassiveArgs {
            feed_url: sim.ws_url(),
            api_key: Some("sim".into()),
            subscriptions: "T.*,Q.*,A.*,AM.*".into(),
            message_ttl_ms: 600_000,
            queue_prefix: format!("{}.", p.prefix),
            stall_timeout_ms: 30_000,
            max_backoff_ms: 1_000,
            ..MassiveArgs::default()
        },
        p.queue.clone(),
    ));
    listener.declare_queues().await.expect("declare queues");
    let mut processors = Vec::new();
    for (queue, plugin, config) in [
        ("quotes", "massive-router", &[][..]),
        ("aggregate", "leaderboard", &[][..]),
        // The shipped 5 s widget throttle, shortened: the test waits for it.
        ("trades", "top-trades", &[("publish_every_ms", "1000")][..]),
    ] {
        let w = worker(&runtime, &services, manifest(plugin, config)).await;
        let mut processor = Processor::new(
            ProcessorConfig {
                queue: format!("{}.{queue}", p.prefix),
                ..ProcessorConfig::default()
            },
            p.queue.clone(),
            p.store.clone(),
            w,
        );
        let rx = stop_rx.clone();
        processors.push(tokio::spawn(async move {
            processor.run(rx).await.expect("processor runs")
        }));
    }
    let l = listener.clone();
    let rx = stop_rx.clone();
    let listener_task = tokio::spawn(async move { l.run(rx).await.expect("listener runs") });

    // Every recorded event reaches the queues.
    let total = events.len() as u64;
    let stats = sim.stats();
    wait_for("the replay reached the queues", || {
        // Confirmed by the broker: the barriers below must queue behind them.
        let done = stats.replay_done.load(Ordering::Relaxed)
            && listener.stats.events.load(Ordering::Relaxed) >= total
            && listener.stats.confirmed.load(Ordering::Relaxed) >= total;
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(listener.stats.events.load(Ordering::Relaxed), total);
    assert_eq!(listener.stats.confirmed.load(Ordering::Relaxed), total);
    assert_eq!(listener.stats.bad_frames.load(Ordering::Relaxed), 0);
    assert_eq!(listener.stats.publish_errors.load(Ordering::Relaxed), 0);
    assert_eq!(
        listener.stats.sessions.load(Ordering::Relaxed),
        1,
        "no reconnects"
    );

    // Drain (round 1), then let the throttles expire and publish the final
    // boards and widgets (round 2).
    send_barriers(&p, &mut events, 1).await;
    {
        let store = p.store.clone();
        wait_for("the publish throttles expired", || {
            let store = store.clone();
            async move {
                let lb = store.get("leaderboard:last_publish").await.ok()?;
                let tt = store.get("tta:last_publish").await.ok()?;
                (lb.is_none() && tt.is_none()).then_some(())
            }
        })
        .await;
    }
    send_barriers(&p, &mut events, 2).await;
    for queue in ["quotes", "trades", "aggregate"] {
        assert_eq!(
            p.queue
                .depth(&format!("{}.{queue}", p.prefix))
                .await
                .unwrap(),
            0,
            "{queue} drained"
        );
    }

    // The expected results, from the events and the simulator's REST data.
    let symbols: BTreeSet<String> = events.iter().map(sym).collect();
    let refs = reference_data(&sim, &symbols).await;
    let x = expected(&events, &refs);
    for e in events
        .iter()
        .filter(|e| matches!(e["ev"].as_str(), Some("A" | "AM")))
    {
        assert_eq!(
            f(e, "op"),
            refs[&sym(e)].day_open,
            "the fixture was recorded from the market of seed {SEED} with {SYMBOLS} symbols"
        );
    }
    let store = &p.store;

    // massive-router: the last quote per symbol, unchanged.
    for (s, q) in &x.last_quote {
        let got = get_json(store, &format!("stocks:quotes:{s}"))
            .await
            .unwrap_or_else(|| panic!("stocks:quotes:{s} missing"));
        let want = mdp::event::massive::to_queue_json(q);
        assert!(
            same(&got, &Value::Object(want.clone())),
            "stocks:quotes:{s}: {got} vs {want:?}"
        );
        assert_eq!(got["bid_price"], q["bp"]);
        assert_eq!(got["ask_price"], q["ap"]);
    }

    // leaderboard: every symbol's quote.
    for (s, q) in &x.quote {
        let got = get_json(store, &format!("quote:{s}"))
            .await
            .unwrap_or_else(|| panic!("quote:{s} missing"));
        assert_eq!(got.as_object().unwrap().len(), 26, "quote:{s}: {got}");
        assert_fields(&format!("quote:{s}"), &got, q, false);
    }
    let quoted: BTreeSet<&String> = x.quote.keys().collect();
    for s in &symbols {
        if !quoted.contains(s) {
            assert!(store.get(&format!("quote:{s}")).await.unwrap().is_none());
        }
    }

    // leaderboard: the three boards, rank by rank.
    for (key, field, rows) in &x.boards {
        let got = get_json(store, key)
            .await
            .unwrap_or_else(|| panic!("{key} missing"));
        let got = got.as_array().unwrap();
        let got_order: Vec<&str> = got.iter().map(|r| r["symbol"].as_str().unwrap()).collect();
        let want_order: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(got_order, want_order, "{key} order");
        for (rank, (row, (s, score))) in got.iter().zip(rows).enumerate() {
            assert_eq!(row["rank"], json!(rank + 1), "{key} rank");
            assert_eq!(row[*field].as_f64(), Some(*score), "{key} {s} {field}");
            assert_fields(&format!("{key} row {}", rank + 1), row, &x.quote[s], true);
        }
    }

    // leaderboard: the sorted sets behind the boards hold the same scores.
    for (key, _, rows) in &x.boards {
        let zset = key.replace("scanners:", "leaderboard:");
        let mut got = store.ztop(&zset, 500).await.unwrap();
        got.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        assert_eq!(&got, rows, "{zset}");
    }

    // daily-range: the session's ranges per symbol, no other session.
    let (high_field, low_field) = p.session.fields;
    for (s, (high, low)) in &x.range {
        let got = get_json(store, &format!("daily_range:{s}"))
            .await
            .unwrap_or_else(|| panic!("daily_range:{s} missing"));
        assert_eq!(got[high_field].as_f64(), Some(*high), "{s}: {got}");
        assert_eq!(got[low_field].as_f64(), Some(*low), "{s}: {got}");
        for k in [
            "pre_market_high",
            "pre_market_low",
            "regular_session_high",
            "regular_session_low",
            "after_hours_high",
            "after_hours_low",
        ] {
            if k != high_field && k != low_field {
                assert!(got[k].is_null(), "{s}: {k} outside the session: {got}");
            }
        }
        assert_fields(&format!("daily_range:{s}"), &got, &x.quote[s], false);
    }

    // daily-range: the alerts, in order (the lists are newest first).
    for (key, direction, want) in [
        ("daily_range_hod_alert", "high", &x.hod),
        ("daily_range_lod_alert", "low", &x.lod),
    ] {
        let mut got = store.lrange(key, 0, -1).await.unwrap();
        got.reverse();
        let got: Vec<Value> = got
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let got_keys: Vec<(String, f64, f64)> = got
            .iter()
            .map(|a| {
                (
                    a["symbol"].as_str().unwrap().to_string(),
                    a["price"].as_f64().unwrap(),
                    a["previous"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(&got_keys, want, "{key}");
        for a in &got {
            assert_eq!(a["session"], p.session.name, "{a}");
            assert_eq!(a["direction"], direction, "{a}");
            assert_eq!(a["note"], "", "no earlier session's range to break: {a}");
        }
    }
    assert!(
        !x.hod.is_empty() && !x.lod.is_empty(),
        "the stream makes new highs and lows"
    );

    // top-trades: the stats of every symbol, and the per-symbol widgets.
    let widget = get_json(store, "tta:all_symbols:widget")
        .await
        .expect("tta:all_symbols:widget");
    assert_eq!(widget["symbol_count"], json!(x.trade_stats.len()));
    let got_stats = widget["symbols"].as_object().unwrap();
    assert_eq!(
        got_stats.keys().collect::<Vec<_>>(),
        x.trade_stats.keys().collect::<Vec<_>>()
    );
    for (s, want) in &x.trade_stats {
        assert!(
            same(&got_stats[s], want),
            "tta stats {s}: got {}, want {want}",
            got_stats[s]
        );
        let w = get_json(store, &format!("tta:{s}:widget"))
            .await
            .unwrap_or_else(|| panic!("tta:{s}:widget missing"));
        assert_eq!(w["symbol"], json!(s));
        assert_fields(
            &format!("tta:{s}:widget"),
            &w,
            want.as_object().unwrap(),
            false,
        );
    }
    // top-trades: each symbol's recent list holds its trades, newest first.
    for s in x.trade_stats.keys() {
        let mut want: Vec<(f64, u64, u64, u64)> = events
            .iter()
            .filter(|e| e["ev"] == "T" && sym(e) == *s)
            .map(|e| (f(e, "p"), u(e, "s"), u(e, "t"), u(e, "x")))
            .collect();
        want.reverse();
        want.truncate(TRADE_WINDOW);
        let got: Vec<(f64, u64, u64, u64)> = store
            .lrange(&format!("tta:{s}:recent"), 0, -1)
            .await
            .unwrap()
            .iter()
            .map(|t| {
                let v: Map<String, Value> = serde_json::from_str(t).unwrap();
                assert_eq!(v["symbol"], json!(s));
                (
                    f(&v, "price"),
                    u(&v, "size"),
                    u(&v, "timestamp"),
                    u(&v, "exchange"),
                )
            })
            .collect();
        assert_eq!(got, want, "tta:{s}:recent");
    }

    // leaderboard: each symbol's open baseline is its first bar's open.
    for s in x.quote.keys() {
        let first = events
            .iter()
            .find(|e| matches!(e["ev"].as_str(), Some("A" | "AM")) && sym(e) == *s)
            .unwrap();
        let got = store
            .get(&format!("symbol:{s}:open_price"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("symbol:{s}:open_price missing"));
        assert_eq!(
            got.trim_matches('"').parse::<f64>().ok(),
            Some(f(first, "o")),
            "{s}"
        );
    }

    eprintln!(
        "replayed {total} events: {} quotes, {} boards of {} symbols, {} ranges, {} + {} alerts, {} trade stats",
        x.last_quote.len(),
        x.boards.len(),
        x.quote.len(),
        x.range.len(),
        x.hod.len(),
        x.lod.len(),
        x.trade_stats.len()
    );

    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), listener_task).await;
    for t in processors {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("processor stops")
            .unwrap();
    }
    let scanner_stats = tokio::time::timeout(Duration::from_secs(20), scanner_task)
        .await
        .expect("scanner stops")
        .unwrap();
    assert_eq!(scanner_stats.errors, 0);
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_embedded_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: Arc::new(EmbeddedQueue::new()),
        store: Arc::new(EmbeddedStore::new()),
        prefix: support::unique("replay"),
        session: REGULAR,
    })
    .await;
}

/// The same stream as pre-market trading: the ranges and alerts are the
/// pre-market session's; the leaderboard has not had its 09:30 reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_pre_market_embedded_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: Arc::new(EmbeddedQueue::new()),
        store: Arc::new(EmbeddedStore::new()),
        prefix: support::unique("replay"),
        session: PRE_MARKET,
    })
    .await;
}

/// The same stream as after-hours trading (no earlier session of the day
/// was seen, so no breach notes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_hours_embedded_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: Arc::new(EmbeddedQueue::new()),
        store: Arc::new(EmbeddedStore::new()),
        prefix: support::unique("replay"),
        session: AFTER_HOURS,
    })
    .await;
}

/// A Redis database of its own (the plugins' keys have no prefix), emptied first.
async fn private_redis_db() -> Arc<dyn Store> {
    let base = support::redis_url();
    let base = base.trim_end_matches('/');
    let base = match base.rsplit_once('/') {
        Some((head, db)) if db.parse::<u32>().is_ok() => head.to_string(),
        _ => base.to_string(),
    };
    let url = format!("{base}/11");
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut conn)
        .await
        .expect("FLUSHDB");
    mdp::store::open(&url).await.expect("redis store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rabbitmq_redis_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: mdp::queue::open(&support::amqp_url())
            .await
            .expect("rabbitmq"),
        store: private_redis_db().await,
        prefix: support::unique("replay"),
        session: REGULAR,
    })
    .await;
}
