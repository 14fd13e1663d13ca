//! A native test harness: run an [`Analyzer`] with plain `cargo test`, no
//! Wasm, against an in-memory cache, fixed reference data and a fixed clock.
//!
//! ```ignore
//! let mut h = Harness::<MyAnalyzer>::new().at_us(1_700_000_000_000_000);
//! h.init(&[("k", "v")]).unwrap();
//! let effects = h.analyze(vec![event]).unwrap();
//! assert_eq!(h.host(|h| h.store.get("key")), Some("...".into()));
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::wire::{EffectRecord, Golden, GoldenRestart, decode_event};
use crate::{
    AggWindow, Analyzer, AnalyzerError, Body, Config, Effect, Event, Level, Market, MarketStatus,
    ReferenceError,
};

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

/// Run `f` with this thread's test host.
pub fn with_host<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// What the host imports see in a native test.
#[derive(Debug, Default)]
pub struct TestHost {
    /// The in-memory cache.
    pub store: MemStore,
    /// Reference data served to the analyzer.
    pub reference: Reference,
    /// Lines the analyzer logged.
    pub logs: Vec<(Level, String)>,
    /// Counters the analyzer incremented.
    pub counters: HashMap<String, u64>,
    /// The clock, Unix microseconds.
    pub now_us: u64,
    /// The input texts of the batch being analyzed (`host::input_json`).
    pub inputs: Vec<String>,
}

/// Reference data for tests: absent symbols are unknown (`None` / 0).
#[derive(Debug, Default)]
pub struct Reference {
    /// Ticker snapshots (camelCase JSON) by symbol.
    pub snapshots: HashMap<String, String>,
    /// 30-day average volumes by symbol.
    pub avg_volumes: HashMap<String, f64>,
    /// Free floats by symbol.
    pub free_floats: HashMap<String, f64>,
    /// Market status; `None` makes the import fail as unavailable.
    pub market: Option<MarketStatus>,
    /// When set, every reference call fails as unavailable with this reason.
    pub unavailable: Option<String>,
}

impl Reference {
    fn check(&self) -> Result<(), ReferenceError> {
        match &self.unavailable {
            Some(why) => Err(ReferenceError::Unavailable(why.clone())),
            None => Ok(()),
        }
    }
    /// See [`crate::reference::ticker_snapshot`].
    pub fn ticker_snapshot(&self, symbol: &str) -> Result<Option<String>, ReferenceError> {
        self.check()?;
        Ok(self.snapshots.get(symbol).cloned())
    }
    /// See [`crate::reference::avg_volume`].
    pub fn avg_volume(&self, symbol: &str) -> Result<f64, ReferenceError> {
        self.check()?;
        Ok(self.avg_volumes.get(symbol).copied().unwrap_or(0.0))
    }
    /// See [`crate::reference::free_float`].
    pub fn free_float(&self, symbol: &str) -> Result<f64, ReferenceError> {
        self.check()?;
        Ok(self.free_floats.get(symbol).copied().unwrap_or(0.0))
    }
    /// See [`crate::reference::market_status`].
    pub fn market_status(&self) -> Result<MarketStatus, ReferenceError> {
        self.check()?;
        Ok(self.market.unwrap_or(MarketStatus {
            market: Market::Open,
            early_hours: false,
            after_hours: false,
        }))
    }
}

/// A value in the in-memory cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A list, head first.
    List(Vec<String>),
    /// A sorted set.
    ZSet(BTreeMap<String, f64>),
    /// A hash.
    Hash(BTreeMap<String, String>),
}

/// A minimal Redis-like in-memory store with expiry by the test clock.
#[derive(Debug, Default)]
pub struct MemStore {
    entries: HashMap<String, (Value, Option<u64>)>,
    now_ms: u64,
}

impl MemStore {
    fn live(&self, key: &str) -> Option<&Value> {
        match self.entries.get(key) {
            Some((v, exp)) if exp.is_none_or(|e| e > self.now_ms) => Some(v),
            _ => None,
        }
    }
    /// The value at `key` if it has not expired.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.live(key)
    }
    /// `GET`.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.live(key) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }
    /// Expiry of `key` in Unix ms.
    pub fn expiry_ms(&self, key: &str) -> Option<u64> {
        self.live(key)
            .and(self.entries.get(key).and_then(|(_, e)| *e))
    }
    /// Set the clock expiry is measured against (Unix ms; the harness sets
    /// it from its test clock).
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }
    /// Set a string (test setup).
    pub fn set(&mut self, key: &str, value: &str, ttl_secs: Option<u32>) {
        let exp = ttl_secs.map(|t| self.now_ms + u64::from(t) * 1000);
        self.entries
            .insert(key.to_string(), (Value::Str(value.to_string()), exp));
    }
    /// Top `n` of a sorted set, highest first (ties: member descending).
    pub fn ztop(&self, key: &str, n: u32) -> Vec<(String, f64)> {
        let Some(Value::ZSet(z)) = self.live(key) else {
            return Vec::new();
        };
        let mut all: Vec<(String, f64)> = z.iter().map(|(m, s)| (m.clone(), *s)).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        all.truncate(n as usize);
        all
    }
    /// `HGETALL`.
    pub fn hgetall(&self, key: &str) -> Vec<(String, String)> {
        match self.live(key) {
            Some(Value::Hash(h)) => h.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Vec::new(),
        }
    }
    /// `LRANGE`.
    pub fn lrange(&self, key: &str, start: i32, stop: i32) -> Vec<String> {
        let Some(Value::List(l)) = self.live(key) else {
            return Vec::new();
        };
        let len = l.len() as i64;
        let norm = |i: i32| if i < 0 { len + i as i64 } else { i as i64 };
        let (s, e) = (norm(start).max(0), norm(stop).min(len - 1));
        if s > e {
            return Vec::new();
        }
        l[s as usize..=e as usize].to_vec()
    }
    /// `SET NX PX`.
    pub fn try_acquire(&mut self, key: &str, ttl_ms: u32, now_ms: u64) -> bool {
        self.now_ms = now_ms;
        if self.live(key).is_some() {
            return false;
        }
        self.entries.insert(
            key.to_string(),
            (Value::Str("1".into()), Some(now_ms + u64::from(ttl_ms))),
        );
        true
    }

    fn expire(&mut self, key: &str, ttl_secs: Option<u32>) {
        if let (Some(t), Some(entry)) = (ttl_secs, self.entries.get_mut(key)) {
            entry.1 = Some(self.now_ms + u64::from(t) * 1000);
        }
    }

    fn slot(&mut self, key: &str, empty: Value) -> &mut Value {
        if self.live(key).is_none() {
            self.entries.insert(key.to_string(), (empty.clone(), None));
        }
        &mut self.entries.get_mut(key).expect("inserted").0
    }

    /// Apply one effect, resolving bodies with `resolve` (e.g. a second
    /// replica's effects in a multi-replica test).
    pub fn apply(&mut self, effect: &Effect, resolve: &dyn Fn(&Body) -> String) {
        match effect {
            Effect::Put(p) => self.set(&p.key, &resolve(&p.value), p.ttl_secs),
            Effect::Push(p) => {
                if let Value::List(l) = self.slot(&p.key, Value::List(Vec::new())) {
                    l.insert(0, resolve(&p.value));
                    l.truncate(p.max_len as usize);
                }
                self.expire(&p.key, p.ttl_secs);
            }
            Effect::Zadd(z) => {
                if let Value::ZSet(set) = self.slot(&z.key, Value::ZSet(BTreeMap::new())) {
                    for (m, s) in &z.members {
                        set.insert(m.clone(), *s);
                    }
                }
                if let Some(keep) = z.keep_top {
                    let top: BTreeMap<String, f64> = self.ztop(&z.key, keep).into_iter().collect();
                    self.entries.get_mut(&z.key).expect("present").0 = Value::ZSet(top);
                }
                self.expire(&z.key, z.ttl_secs);
            }
            Effect::Hset(hs) => {
                if let Value::Hash(h) = self.slot(&hs.key, Value::Hash(BTreeMap::new())) {
                    for (k, v) in &hs.fields {
                        h.insert(k.clone(), v.clone());
                    }
                }
                self.expire(&hs.key, hs.ttl_secs);
            }
            Effect::Del(keys) => {
                for k in keys {
                    self.entries.remove(k);
                }
            }
            Effect::Publish(_) | Effect::Reject(_) => {}
        }
    }
}

/// The seed's queue JSON for a typed event (what the host would have received).
pub fn event_json(event: &Event) -> String {
    let value = match event {
        Event::Trade(t) => json!({
            "event_type": "T", "symbol": t.symbol, "exchange": t.exchange, "id": t.id,
            "tape": t.tape, "price": t.price, "size": t.size, "conditions": t.conditions,
            "timestamp": t.timestamp_ms, "sequence_number": t.sequence,
        }),
        Event::Quote(q) => json!({
            "event_type": "Q", "symbol": q.symbol, "bid_exchange_id": q.bid_exchange,
            "bid_price": q.bid_price, "bid_size": q.bid_size, "ask_exchange_id": q.ask_exchange,
            "ask_price": q.ask_price, "ask_size": q.ask_size, "condition": q.condition,
            "indicators": q.indicators, "timestamp": q.timestamp_ms,
            "sequence_number": q.sequence, "tape": q.tape,
        }),
        Event::Aggregate(a) => json!({
            "event_type": if a.window == AggWindow::Second { "A" } else { "AM" },
            "symbol": a.symbol, "volume": a.volume, "accumulated_volume": a.accumulated_volume,
            "official_open_price": a.official_open_price, "vwap": a.vwap, "open": a.open,
            "close": a.close, "high": a.high, "low": a.low, "aggregate_vwap": a.aggregate_vwap,
            "average_size": a.average_size, "start_timestamp": a.start_ms,
            "end_timestamp": a.end_ms, "otc": a.otc,
        }),
        Event::Luld(l) => json!({
            "event_type": "LULD", "symbol": l.symbol, "high_price": l.high_price,
            "low_price": l.low_price, "indicators": l.indicators, "tape": l.tape,
            "timestamp": l.timestamp_ns, "sequence_number": l.sequence,
        }),
        Event::Other(raw) => return raw.json.clone(),
    };
    value.to_string()
}

/// Drives one analyzer natively: `init`, batches, `snapshot`; applies its
/// effects to the test host's store so later reads see them.
pub struct Harness<A: Analyzer> {
    analyzer: Option<A>,
}

impl<A: Analyzer> Default for Harness<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Analyzer> Harness<A> {
    /// A harness with a fresh test host (clock at 0).
    pub fn new() -> Self {
        with_host(|h| *h = TestHost::default());
        Harness { analyzer: None }
    }

    /// Set the clock, Unix microseconds.
    pub fn at_us(self, now_us: u64) -> Self {
        self.set_clock_us(now_us);
        self
    }

    /// Move the clock, Unix microseconds.
    pub fn set_clock_us(&self, now_us: u64) {
        with_host(|h| {
            h.now_us = now_us;
            h.store.now_ms = now_us / 1000;
        });
    }

    /// Access the test host (store, reference data, logs, counters).
    pub fn host<R>(&self, f: impl FnOnce(&mut TestHost) -> R) -> R {
        with_host(f)
    }

    /// Call `init` with config pairs and an optional snapshot.
    pub fn init_with(
        &mut self,
        config: &[(&str, &str)],
        state: Option<Vec<u8>>,
    ) -> Result<(), AnalyzerError> {
        let pairs = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>();
        self.analyzer = Some(A::init(Config::from(pairs), state)?);
        Ok(())
    }

    /// Call `init` with config pairs.
    pub fn init(&mut self, config: &[(&str, &str)]) -> Result<(), AnalyzerError> {
        self.init_with(config, None)
    }

    /// Analyze a batch, apply the effects to the store, return them.
    pub fn analyze(&mut self, batch: Vec<Event>) -> Result<Vec<Effect>, AnalyzerError> {
        let analyzer = self
            .analyzer
            .as_mut()
            .ok_or_else(|| AnalyzerError::NotReady("harness: init not called".into()))?;
        let texts = batch.iter().map(event_json).collect();
        let effects = analyze_with_inputs(analyzer, &batch, texts)?;
        let resolve = |b: &Body| resolve_body(b, &batch);
        with_host(|h| {
            for e in &effects {
                h.store.apply(e, &resolve);
            }
        });
        Ok(effects)
    }

    /// Analyze a batch given as queue JSON messages (decoded exactly as the
    /// host decodes them); `Body::Input` resolves to the message text.
    pub fn analyze_json(
        &mut self,
        messages: &[String],
    ) -> Result<Vec<EffectRecord>, AnalyzerError> {
        let analyzer = self
            .analyzer
            .as_mut()
            .ok_or_else(|| AnalyzerError::NotReady("harness: init not called".into()))?;
        analyze_json_with(analyzer, messages)
    }

    /// The analyzer's snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        self.analyzer.as_ref().map(A::snapshot).unwrap_or_default()
    }
}

/// Run `analyzer` on a batch of queue JSON messages (decoded exactly as the
/// host decodes them), apply its effects to the test host's store and return
/// them as records.
pub fn analyze_json_with<A: Analyzer>(
    analyzer: &mut A,
    messages: &[String],
) -> Result<Vec<EffectRecord>, AnalyzerError> {
    let batch = messages
        .iter()
        .map(|m| decode_event(m).map_err(|e| AnalyzerError::Internal(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let effects = analyze_with_inputs(analyzer, &batch, messages.to_vec())?;
    let resolve = |b: &Body| match b {
        Body::Json(s) => s.clone(),
        Body::Input(i) => messages
            .get(*i as usize)
            .cloned()
            .unwrap_or_else(|| "null".into()),
    };
    with_host(|h| {
        for e in &effects {
            h.store.apply(e, &resolve);
        }
    });
    Ok(effects
        .iter()
        .map(|e| EffectRecord::new(e, messages))
        .collect())
}

/// Run `analyzer` on `batch` while `host::input_json` serves `texts`.
fn analyze_with_inputs<A: Analyzer>(
    analyzer: &mut A,
    batch: &[Event],
    texts: Vec<String>,
) -> Result<Vec<Effect>, AnalyzerError> {
    with_host(|h| h.inputs = texts);
    let effects = analyzer.analyze(batch);
    with_host(|h| h.inputs.clear());
    effects
}

/// The JSON text a body stands for within `batch`.
pub fn resolve_body(body: &Body, batch: &[Event]) -> String {
    match body {
        Body::Json(s) => s.clone(),
        Body::Input(i) => batch
            .get(*i as usize)
            .map(event_json)
            .unwrap_or_else(|| "null".into()),
    }
}

/// Load the test host from a golden file's starting state.
pub fn load_golden_state(golden: &Golden) {
    with_host(|h| {
        h.now_us = golden.now_us;
        h.store.now_ms = golden.now_us / 1000;
        for (k, v) in &golden.store {
            h.store.set(k, v, None);
        }
        let r = &golden.reference;
        h.reference.snapshots = r
            .snapshots
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        h.reference.avg_volumes = r.avg_volumes.clone().into_iter().collect();
        h.reference.free_floats = r.free_floats.clone().into_iter().collect();
        h.reference.market = r.market.as_deref().map(market_status_named);
    });
}

/// The market status a golden file names: `open`, `closed`, `pre-market`, `after-hours`.
pub use crate::calendar::market_status_named;

/// Replay a golden file natively, handing each step's actual effects to `check`.
/// Each replica named by a step is its own instance of `A`; all share the
/// test host's store and clock.
fn replay<A: Analyzer>(golden: &Golden, mut check: impl FnMut(usize, Vec<EffectRecord>)) {
    let harness = Harness::<A>::new();
    load_golden_state(golden);
    let config: Vec<(String, String)> = golden
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut replicas: BTreeMap<u32, A> = BTreeMap::new();
    // Replica 0 starts at the file's clock; others when first used.
    let first = A::init(Config::from(config.clone()), None).expect("init succeeds");
    replicas.insert(0, first);
    for (n, step) in golden.steps.iter().enumerate() {
        harness.set_clock_us(step.now_us.unwrap_or(golden.now_us));
        if let Some(m) = &step.market {
            with_host(|h| h.reference.market = Some(market_status_named(m)));
        }
        let state = match (step.restart, replicas.remove(&step.replica)) {
            (Some(GoldenRestart::Snapshot), Some(old)) => Some(old.snapshot()),
            (None, Some(old)) => {
                replicas.insert(step.replica, old);
                None
            }
            _ => None,
        };
        let analyzer = replicas.entry(step.replica).or_insert_with(|| {
            A::init(Config::from(config.clone()), state)
                .unwrap_or_else(|e| panic!("golden step {n}: init failed: {e:?}"))
        });
        let messages: Vec<String> = step.events.iter().map(|e| e.to_string()).collect();
        let got = analyze_json_with(analyzer, &messages)
            .unwrap_or_else(|e| panic!("golden step {n}: analyze failed: {e:?}"));
        check(n, got);
    }
}

/// Run a golden file natively and panic with a readable diff on the first
/// batch whose effects differ.
pub fn run_golden<A: Analyzer>(text: &str) {
    let golden = Golden::parse(text).expect("golden file parses");
    replay::<A>(&golden, |n, got| {
        let expected = &golden.steps[n].effects;
        if &got != expected {
            panic!(
                "golden step {n}: effects differ\n--- expected\n{}\n--- got\n{}",
                serde_json::to_string_pretty(expected).unwrap_or_default(),
                serde_json::to_string_pretty(&got).unwrap_or_default()
            );
        }
    });
}

/// Fill a golden file's expected effects with what the analyzer produces now
/// (for writing new golden files: review the result before committing it).
pub fn bless_golden<A: Analyzer>(text: &str) -> String {
    let mut golden = Golden::parse(text).expect("golden file parses");
    let mut actual = Vec::new();
    replay::<A>(&golden, |_, got| actual.push(got));
    for (step, got) in golden.steps.iter_mut().zip(actual) {
        step.effects = got;
    }
    serde_json::to_string_pretty(&golden).expect("golden serializes") + "\n"
}

/// Check one golden file natively; with `MDP_GOLDEN_BLESS=1` in the
/// environment, first rewrite its expected effects with what the analyzer
/// produces now (review the diff before committing).
pub fn check_golden_file<A: Analyzer>(path: impl AsRef<std::path::Path>) {
    let path = path.as_ref();
    let read =
        || std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if std::env::var_os("MDP_GOLDEN_BLESS").is_some() {
        std::fs::write(path, bless_golden::<A>(&read()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    eprintln!("golden {}", path.display());
    run_golden::<A>(&read());
}

/// Check every `*.json` golden file in `dir` (see [`check_golden_file`]);
/// panics if there is none.
pub fn check_golden_dir<A: Analyzer>(dir: impl AsRef<std::path::Path>) {
    let dir = dir.as_ref();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    for path in files {
        check_golden_file::<A>(&path);
    }
}
