//! The plugin sandbox: what a hostile plugin, or whoever can
//! write the plugin directory, must not be able to do to the host. Each test
//! checks that the host survives, that other plugins keep serving, and that
//! the operator gets one clear reason.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mdp::plugin::bindings::Effect;
use mdp::plugin::{
    BatchOutput, CacheKey, Capabilities, FixedClock, HostServices, Limits, LoadOptions, Plugin,
    Registry, Runtime, RuntimeConfig, StoreReference, Worker,
};
use mdp::store::{EmbeddedStore, Store};

fn services_over(store: Arc<dyn Store>) -> HostServices {
    HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store)),
        clock: Arc::new(FixedClock::new(1_767_225_600_000_000)),
    }
}

fn services() -> HostServices {
    services_over(Arc::new(EmbeddedStore::new()))
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

async fn load_on(rt: &Runtime, name: &str, limits: Limits) -> Arc<Plugin> {
    let bytes = std::fs::read(support::plugin_wasm(name)).expect("read plugin");
    let options = LoadOptions {
        limits,
        capabilities: Capabilities::unrestricted(),
        ..LoadOptions::default()
    };
    Plugin::load(rt, bytes, options, &services())
        .await
        .expect("load")
}

/// A `hostile` worker in `mode` (extra config pairs after it).
async fn hostile(rt: &Runtime, mode: &str, config: &[(&str, &str)], limits: Limits) -> Worker {
    hostile_with(rt, services(), mode, config, limits).await
}

/// [`hostile`] with these host services.
async fn hostile_with(
    rt: &Runtime,
    services: HostServices,
    mode: &str,
    config: &[(&str, &str)],
    limits: Limits,
) -> Worker {
    let plugin = load_on(rt, "hostile", limits).await;
    let mut pairs = vec![("mode".to_string(), mode.to_string())];
    pairs.extend(config.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Worker::new(plugin, services, pairs)
}

use support::{decode_all as events, trade_json as trade};

fn sizes(texts: &[String]) -> Vec<usize> {
    texts.iter().map(String::len).collect()
}

/// Keys put by the effects (`echo:{SYM}` for the events a plugin served).
fn puts(out: &BatchOutput) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Put(p) => Some(p.key.clone()),
            _ => None,
        })
        .collect()
}

/// (index, reason) of the rejected events.
fn rejects(out: &BatchOutput) -> Vec<(u32, String)> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reject(r) => Some((r.index, r.reason.clone())),
            _ => None,
        })
        .collect()
}

/// Another plugin on the same runtime still serves.
async fn others_keep_serving(rt: &Runtime) {
    let router = load_on(rt, "massive-router", Limits::default()).await;
    let mut worker = Worker::new(router, services(), vec![]);
    let texts = [trade("OK")];
    let out = worker
        .analyze(&events(&texts))
        .await
        .expect("router serves");
    assert!(out.faults.is_empty(), "{:?}", out.faults);
    assert!(!out.effects.is_empty());
}

fn cached_runtime(dir: &std::path::Path, key: &[u8]) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_path_buf()),
        cache_key: CacheKey::Bytes(key.to_vec()),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

// ---------------------------------------------------------------------------
// 1. The compiled-artifact cache

/// A forged artifact (here: another plugin's valid compiled code under the
/// router's name, as someone who can write the cache would plant it) is not
/// loaded: the router is compiled again and its artifact rewritten.
#[tokio::test]
async fn a_tampered_artifact_is_recompiled_not_loaded() {
    let cache = tempfile::tempdir().unwrap();
    let rt = cached_runtime(cache.path(), b"0123456789abcdef0123456789abcdef");
    let router = std::fs::read(support::plugin_wasm("massive-router")).unwrap();
    let hostile = std::fs::read(support::plugin_wasm("hostile")).unwrap();
    let first = rt.compile(&router).unwrap();
    assert!(!first.from_cache);
    assert!(
        rt.compile(&router).unwrap().from_cache,
        "a good artifact is used"
    );

    let path = rt
        .artifact_cache()
        .unwrap()
        .path(&rt.artifact_name(&first.hash));
    let planted = rt.compile(&hostile).unwrap().component.serialize().unwrap();
    let good = std::fs::read(&path).unwrap();
    // Same header and a stale tag, another component's code: what an
    // attacker without the key can do; and the bare wasmtime artifact.
    for forged in [[&good[..40], &planted[..]].concat(), planted.clone()] {
        std::fs::write(&path, &forged).unwrap();
        let again = rt.compile(&router).unwrap();
        assert!(!again.from_cache, "a forged artifact must not be loaded");
        assert_ne!(std::fs::read(&path).unwrap(), forged, "artifact rewritten");
        assert!(rt.compile(&router).unwrap().from_cache, "and usable again");
    }

    // An artifact tagged under another host's key is not trusted either.
    let other = cached_runtime(cache.path(), b"another host's key, 32 bytes....");
    assert!(!other.compile(&router).unwrap().from_cache);
}

/// The default cache lived in `<plugin-dir>/.cache`: a cache configured
/// inside the plugin directory is refused with a clear reason.
#[tokio::test]
async fn an_artifact_cache_inside_the_plugin_dir_is_refused() {
    let plugins = tempfile::tempdir().unwrap();
    let rt = cached_runtime(
        &plugins.path().join(".cache"),
        b"0123456789abcdef0123456789abcdef",
    );
    let err = Registry::open(rt, services(), plugins.path())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("inside the plugin directory"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// 2. Output caps

/// A plugin returning 200,000 effects for one event: that event is rejected
/// naming the cap, the others are served, and so are other plugins.
#[tokio::test]
async fn an_effect_flood_is_a_fault_of_the_flooding_event() {
    let rt = runtime();
    // Time enough to build them on a loaded machine: the cap is the point.
    let limits = Limits {
        deadline_base: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut worker = hostile(&rt, "effect-flood", &[], limits).await;
    let texts = [trade("A"), trade("FLOOD"), trade("B")];
    let out = worker
        .analyze_sized(&events(&texts), &sizes(&texts))
        .await
        .expect("the batch survives");
    assert_eq!(puts(&out), vec!["echo:A", "echo:B"]);
    let rejects = rejects(&out);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].0, 1);
    assert!(
        rejects[0].1.contains("output cap") && rejects[0].1.contains("max_effects = 100000"),
        "{}",
        rejects[0].1
    );
    others_keep_serving(&rt).await;
}

/// Few effects, each repeating a large input: the resolved bytes are what
/// `max_output_mib` caps.
#[tokio::test]
async fn input_bodies_count_towards_the_output_cap_at_their_size() {
    let rt = runtime();
    let limits = Limits {
        max_output_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut worker = hostile(&rt, "effect-flood", &[("count", "500")], limits).await;
    let pad = "x".repeat(4096);
    let big = format!(
        r#"{{"event_type":"T","symbol":"FLOOD","price":1.5,"size":10,"timestamp":1,"pad":"{pad}"}}"#
    );
    let texts = [trade("A"), big];
    let out = worker
        .analyze_sized(&events(&texts), &sizes(&texts))
        .await
        .expect("the batch survives");
    assert_eq!(puts(&out), vec!["echo:A"]);
    let rejects = rejects(&out);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0].1.contains("max_output_mib = 1"),
        "{}",
        rejects[0].1
    );
}

// ---------------------------------------------------------------------------
// 3. Wall-clock budget and the plugin's clocks

/// Reference data that takes 200 ms per answer (a slow REST API).
struct SlowReference;

#[async_trait::async_trait]
impl mdp::plugin::ReferenceData for SlowReference {
    async fn ticker_snapshot(
        &self,
        _symbol: &str,
    ) -> Result<Option<String>, mdp::plugin::ReferenceFault> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(None)
    }
    async fn avg_volume(&self, _symbol: &str) -> Result<f64, mdp::plugin::ReferenceFault> {
        Ok(0.0)
    }
    async fn free_float(&self, _symbol: &str) -> Result<f64, mdp::plugin::ReferenceFault> {
        Ok(0.0)
    }
    async fn market_now(
        &self,
    ) -> Result<mdp::plugin::bindings::MarketStatus, mdp::plugin::ReferenceFault> {
        Err(mdp::plugin::ReferenceFault::Unavailable("not here".into()))
    }
}

/// Time in host imports is not Wasm execution, so the epoch deadline never
/// fires on a plugin that keeps calling a slow import: the wall-clock budget
/// does, and the event is rejected naming it.
#[tokio::test]
async fn a_plugin_looping_in_a_slow_import_is_stopped_by_the_wall_clock_budget() {
    let rt = runtime();
    let mut services = services();
    services.reference = Arc::new(SlowReference);
    let limits = Limits {
        wall_budget: Duration::from_millis(600),
        ..Limits::default()
    };
    let mut worker = hostile_with(&rt, services, "slow-import", &[], limits).await;
    let texts = [trade("A"), trade("SLEEP"), trade("B")];
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), worker.analyze(&events(&texts)))
        .await
        .expect("the call is bounded")
        .expect("the batch survives");
    // Four calls meet the sleeper (first try, retry, two bisection steps).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(puts(&out), vec!["echo:A", "echo:B"]);
    let rejects = rejects(&out);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0].1.contains("wall-clock budget of 600ms"),
        "{}",
        rejects[0].1
    );
    others_keep_serving(&rt).await;
}

/// WASI's clocks are the host's (fixed in tests) and a WASI sleep does not
/// wait: an hour's sleep returns at once, and the monotonic clock does not
/// move over it.
#[tokio::test]
async fn wasi_clocks_are_the_hosts_and_sleeps_do_not_wait() {
    let rt = runtime();
    let mut worker = hostile(&rt, "wasi-sleep", &[], Limits::default()).await;
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        worker.analyze(&events(&[trade("SLEEP")])),
    )
    .await
    .expect("a WASI sleep does not wait in real time")
    .expect("batch");
    assert_eq!(puts(&out), vec!["echo:SLEEP"]);
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut worker = hostile(&rt, "clock", &[], Limits::default()).await;
    let out = worker.analyze(&events(&[trade("T")])).await.expect("batch");
    let value = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Put(p) if p.key == "hostile:clock" => Some(format!("{:?}", p.value)),
            _ => None,
        })
        .expect("clock reported");
    assert!(
        value.contains(r#"\"wall_us\":1767225600000000,\"slept_us\":0"#),
        "{value}"
    );
}

// ---------------------------------------------------------------------------
// 7. Default capabilities

/// Put `hostile` into a fresh plugin directory with this manifest text.
fn plugin_dir_with_hostile(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::plugin_wasm("hostile"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("hostile.toml"), manifest).unwrap();
    dir
}

const HOSTILE: &str = "name = \"hostile\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n";

/// A manifest without `[capabilities]` no longer means "write anything": the
/// plugin may write only under its own name.
#[tokio::test]
async fn without_capabilities_a_plugin_writes_only_its_own_keys() {
    let dir = plugin_dir_with_hostile(&format!("{HOSTILE}[config]\nmode = \"trap\"\n"));
    let registry = Registry::open(runtime(), services(), dir.path())
        .await
        .unwrap();
    let generation = registry.slot("hostile").unwrap().current().unwrap();
    let caps = &generation.plugin.capabilities;
    assert!(caps.check_key("hostile:x").is_ok());
    assert!(caps.check_key("echo:A").is_err());
    assert!(caps.check_key("stocks:trades:A").is_err());
    assert!(caps.check_channel("quote:A").is_err());
    // Its echo effects are refused when resolved.
    let mut worker = Worker::new(generation.plugin.clone(), services(), vec![]);
    let texts = [trade("A")];
    let out = worker.analyze(&events(&texts)).await.unwrap();
    let resolved = mdp::plugin::effects::resolve(&out.effects, &texts, caps);
    assert!(resolved.writes.is_empty());
    assert_eq!(resolved.denied.len(), 1);
}

/// `read_prefixes` scopes the cache imports: a read outside sees nothing.
#[tokio::test]
async fn read_prefixes_scope_cache_reads() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    for key in ["SECRET", "hostile:mine"] {
        store
            .apply(
                &[mdp::store::Write::Set {
                    key: key.into(),
                    value: "\"value\"".into(),
                    ttl: None,
                }],
                false,
            )
            .await
            .unwrap();
    }
    let dir = plugin_dir_with_hostile(&format!(
        "{HOSTILE}[capabilities]\nkey_prefixes = [\"echo:\"]\nread_prefixes = [\"hostile:\"]\n[config]\nmode = \"read\"\n"
    ));
    let services = services_over(store);
    let registry = Registry::open(runtime(), services.clone(), dir.path())
        .await
        .unwrap();
    let plugin = registry.slot("hostile").unwrap().current().unwrap();
    let mut worker = Worker::new(
        plugin.plugin.clone(),
        services,
        plugin.manifest.config_pairs(),
    );
    let out = worker
        .analyze(&events(&[trade("SECRET"), trade("hostile:mine")]))
        .await
        .unwrap();
    let seen: Vec<String> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Put(p) => Some(format!("{}={:?}", p.key, p.value)),
            _ => None,
        })
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("echo:SECRET=") && seen[0].contains("null"),
        "{seen:?}"
    );
    assert!(seen[1].contains("value"), "{seen:?}");
}

// ---------------------------------------------------------------------------
// 5. Probation blames only the plugin's own faults

/// The embedded store, whose reads fail while `down` is set (a Redis blip).
struct FlakyStore {
    inner: EmbeddedStore,
    down: std::sync::atomic::AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> mdp::store::StoreResult<()> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(mdp::store::StoreError::Unavailable(
                "connection reset".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn apply(
        &self,
        writes: &[mdp::store::Write],
        atomic: bool,
    ) -> mdp::store::StoreResult<()> {
        self.check()?;
        self.inner.apply(writes, atomic).await
    }
    async fn get(&self, key: &str) -> mdp::store::StoreResult<Option<String>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> mdp::store::StoreResult<Vec<Option<String>>> {
        self.check()?;
        self.inner.get_many(keys).await
    }
    async fn ztop(&self, key: &str, n: u32) -> mdp::store::StoreResult<Vec<(String, f64)>> {
        self.inner.ztop(key, n).await
    }
    async fn hgetall(&self, key: &str) -> mdp::store::StoreResult<Vec<(String, String)>> {
        self.inner.hgetall(key).await
    }
    async fn lrange(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> mdp::store::StoreResult<Vec<String>> {
        self.inner.lrange(key, start, stop).await
    }
    async fn set_nx_px(
        &self,
        key: &str,
        value: &str,
        ttl_ms: u64,
    ) -> mdp::store::StoreResult<bool> {
        self.inner.set_nx_px(key, value, ttl_ms).await
    }
    async fn del_if_eq(&self, key: &str, value: &str) -> mdp::store::StoreResult<bool> {
        self.inner.del_if_eq(key, value).await
    }
    async fn scan_prefix(&self, prefix: &str) -> mdp::store::StoreResult<Vec<String>> {
        self.inner.scan_prefix(prefix).await
    }
    async fn ttl(&self, key: &str) -> mdp::store::StoreResult<Option<u64>> {
        self.inner.ttl(key).await
    }
    async fn subscribe(
        &self,
        topics: &[mdp::store::Topic],
    ) -> mdp::store::StoreResult<mdp::store::Subscription> {
        self.inner.subscribe(topics).await
    }
}

/// A new generation whose batch meets a store error during probation is
/// neither rolled back nor marked bad; it keeps serving when the store is back.
#[tokio::test]
async fn a_store_error_during_probation_does_not_roll_back() {
    let flaky = Arc::new(FlakyStore {
        inner: EmbeddedStore::new(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let services = services_over(flaky.clone());
    let manifest = |mode: &str| {
        format!(
            "{HOSTILE}[capabilities]\nkey_prefixes = [\"echo:\"]\n[config]\nmode = \"{mode}\"\n"
        )
    };
    let dir = plugin_dir_with_hostile(&manifest("trap"));
    let registry = Registry::open(runtime(), services.clone(), dir.path())
        .await
        .unwrap();
    let slot = registry.slot("hostile").unwrap();
    let mut live = mdp::plugin::LiveWorker::new(slot.clone(), services).unwrap();
    let batch = events(&[trade("A")]);
    live.analyze(&batch).await.expect("generation 1 serves");

    // Generation 2 reads the cache; the store goes down during its probation.
    std::fs::write(dir.path().join("hostile.toml"), manifest("read")).unwrap();
    assert_eq!(
        registry.load("hostile").await,
        mdp::plugin::LoadOutcome::Published(2)
    );
    live.refresh().await.unwrap();
    flaky.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = live.analyze(&batch).await.expect_err("the store is down");
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(
        slot.rollbacks(),
        0,
        "a store blip is not the plugin's fault"
    );
    assert_eq!(slot.current().unwrap().number, 2);
    assert_eq!(live.generation(), 2);

    flaky
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    live.analyze(&batch).await.expect("generation 2 serves");
    assert_eq!(live.generation(), 2);
    assert_eq!(slot.rollbacks(), 0);
}

// ---------------------------------------------------------------------------
// 6. The poison isolation budget

/// A plugin that fails on every event: bisecting a 256-event batch would
/// cost 511 calls (26 s at a 50 ms deadline). The isolation stops at its
/// budget and the breaker opens, so the batch is requeued for later.
#[tokio::test]
async fn a_plugin_failing_every_event_costs_a_bounded_number_of_calls() {
    let rt = runtime();
    let texts: Vec<String> = (0..256).map(|_| trade("POISON")).collect();
    let mut worker = hostile(&rt, "trap", &[], Limits::default()).await;
    let err = worker
        .analyze(&events(&texts))
        .await
        .expect_err("isolation gives up");
    assert!(
        matches!(err, mdp::plugin::BatchError::Isolation(_)),
        "{err}"
    );
    assert!(err.to_string().contains("isolation_calls"), "{err}");
    let calls = worker.calls();
    assert!(
        calls <= 2 + mdp::plugin::DEFAULT_ISOLATION_CALLS as u64,
        "{calls} calls"
    );

    // Through a live worker, the breaker opens: the processor requeues the
    // batch and waits, as for any open breaker.
    let dir = plugin_dir_with_hostile(&format!("{HOSTILE}[limits]\nisolation_calls = 8\n"));
    let registry = Registry::open(runtime(), services(), dir.path())
        .await
        .unwrap();
    let slot = registry.slot("hostile").unwrap();
    let mut live = mdp::plugin::LiveWorker::new(slot, services()).unwrap();
    match live.analyze(&events(&texts)).await {
        Err(mdp::plugin::LiveError::CircuitOpen { wait, .. }) => {
            assert!(wait >= Duration::from_secs(1))
        }
        other => panic!("expected an open breaker, got {other:?}"),
    }
    // A batch with one poison event is still isolated within the budget.
    let mut worker = hostile(&rt, "trap", &[], Limits::default()).await;
    let mut texts: Vec<String> = (0..255).map(|i| trade(&format!("S{i}"))).collect();
    texts.insert(100, trade("POISON"));
    let out = worker.analyze(&events(&texts)).await.expect("isolated");
    assert_eq!(rejects(&out).len(), 1);
    assert_eq!(puts(&out).len(), 255);
}

// ---------------------------------------------------------------------------
// 4. Floods: counters, log lines, stderr

/// Log lines written while the guard lives (this thread only; the tests
/// run on a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

/// Counter names become Prometheus label values that are never freed: a
/// plugin inventing a name per event keeps 64, the rest (and badly formed
/// ones) are dropped, counted in one metric and logged once.
#[tokio::test]
async fn a_counter_flood_keeps_64_names_and_says_so_once() {
    let metrics = mdp::telemetry::metrics_handle();
    let (log, _guard) = Captured::start();
    let rt = runtime();
    let mut worker = hostile(&rt, "counter-flood", &[], Limits::default()).await;
    for batch in 0..3 {
        let texts: Vec<String> = (0..50).map(|i| trade(&format!("S{batch}_{i}"))).collect();
        let out = worker.analyze(&events(&texts)).await.expect("batch");
        assert!(out.faults.is_empty());
        assert_eq!(puts(&out).len(), 50, "the plugin keeps serving");
    }
    let names = worker.counters();
    assert_eq!(
        names.len(),
        mdp::plugin::share::MAX_COUNTER_NAMES,
        "{names:?}"
    );
    assert!(
        names
            .keys()
            .all(|n| mdp::plugin::share::valid_counter_name(n))
    );
    assert_eq!(log.lines_with("mdp_plugin_counter_overflow_total"), 1);
    let text = metrics.render();
    let exported = text
        .lines()
        .filter(|l| l.starts_with("mdp_plugin_counter_total{") && l.contains("plugin=\"hostile\""))
        .count();
    assert!(
        exported <= mdp::plugin::share::MAX_COUNTER_NAMES,
        "{exported}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("mdp_plugin_counter_overflow_total{")
                && l.contains("plugin=\"hostile\"")),
        "overflow metric missing"
    );
}

/// Rejected poison events are logged as one line per batch with a count,
/// not one line each.
#[tokio::test]
async fn rejects_are_logged_once_per_batch() {
    let (log, _guard) = Captured::start();
    let rt = runtime();
    let mut worker = hostile(&rt, "trap", &[], Limits::default()).await;
    let texts: Vec<String> = (0..8)
        .map(|i| trade(if i % 3 == 0 { "POISON" } else { "OK" }))
        .collect();
    let out = worker.analyze(&events(&texts)).await.expect("batch");
    assert_eq!(rejects(&out).len(), 3);
    assert_eq!(log.lines_with("poison events rejected"), 1);
    assert_eq!(log.lines_with("count=3"), 1);
}

/// The stderr kept for trap reports was a 64 KiB buffer never cleared, so a
/// chatty plugin trapped once it filled: now it keeps the tail of each call.
#[tokio::test]
async fn a_chatty_plugin_never_fills_its_stderr() {
    let rt = runtime();
    let mut worker = hostile(&rt, "stderr-flood", &[], Limits::default()).await;
    // 4 KiB per event: 160 KiB over the batches, 40 KiB in the last.
    for n in 0..4 {
        let texts: Vec<String> = (0..10).map(|i| trade(&format!("S{n}_{i}"))).collect();
        let out = worker.analyze(&events(&texts)).await.expect("batch");
        assert!(out.faults.is_empty(), "batch {n}: {:?}", out.faults);
        assert_eq!(puts(&out).len(), 10);
    }
    let texts: Vec<String> = (0..20).map(|i| trade(&format!("B{i}"))).collect();
    let out = worker.analyze(&events(&texts)).await.expect("batch");
    assert!(out.faults.is_empty(), "{:?}", out.faults);
}

// ---------------------------------------------------------------------------
// 8. Memory and the instance pool
//
// (A Rust guest cannot make a component with several linear memories: the
// test below builds one with wasm-encoder and instantiates it under the
// limiter instances use.)

/// A component of `modules` core modules (each instantiated) with
/// `memories` linear memories of `mib` MiB each.
fn component_with_memories(modules: u32, memories: u32, mib: u64) -> Vec<u8> {
    let mut component = wasm_encoder::Component::new();
    for _ in 0..modules {
        let mut section = wasm_encoder::MemorySection::new();
        for _ in 0..memories {
            section.memory(wasm_encoder::MemoryType {
                minimum: mib * 16,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        let mut module = wasm_encoder::Module::new();
        module.section(&section);
        component.section(&wasm_encoder::ModuleSection(&module));
    }
    let mut instances = wasm_encoder::InstanceSection::new();
    for m in 0..modules {
        instances.instantiate(m, [] as [(&str, wasm_encoder::ModuleArg); 0]);
    }
    component.section(&instances);
    component.finish()
}

/// Two memories of 10 MiB (one per core module: a module with several
/// memories is refused by the engine's pool) are each within a 16 MiB limit
/// but not together: the instance's memory limit is their sum.
#[tokio::test]
async fn the_memory_limit_is_the_sum_of_an_instances_memories() {
    use mdp::plugin::limiter::MemoryBudget;
    let rt = runtime();
    if rt.pooling() {
        let refused =
            wasmtime::component::Component::new(rt.engine(), component_with_memories(1, 2, 1));
        assert!(refused.is_err(), "a module with two memories is refused");
    }
    let component =
        wasmtime::component::Component::new(rt.engine(), component_with_memories(2, 1, 10))
            .unwrap();
    let linker = wasmtime::component::Linker::<MemoryBudget>::new(rt.engine());
    let instantiate = |limit_mib: usize| {
        let per_memory = wasmtime::StoreLimitsBuilder::new()
            .memory_size(limit_mib << 20)
            .trap_on_grow_failure(true)
            .build();
        let mut store =
            wasmtime::Store::new(rt.engine(), MemoryBudget::new(per_memory, limit_mib << 20));
        store.limiter(|b| b);
        store.set_epoch_deadline(u64::MAX / 2);
        let (linker, component) = (linker.clone(), component.clone());
        async move {
            linker
                .instantiate_async(&mut store, &component)
                .await
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        }
    };
    let err = instantiate(16).await.expect_err("20 MiB in all, over 16");
    assert!(err.contains(mdp::plugin::limiter::GROWTH_REFUSED), "{err}");
    instantiate(32).await.expect("within 32 MiB");
}

/// One plugin cannot take every instance of the shared pool: past its
/// `instances_per_plugin` share it is refused, naming the setting, and other
/// plugins still get theirs.
#[tokio::test]
async fn a_plugin_cannot_exhaust_the_instance_pool_for_the_others() {
    let rt = Runtime::new(RuntimeConfig {
        instances_per_plugin: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hostile = load_on(&rt, "hostile", Limits::default()).await;
    let a = mdp::plugin::Instance::new(&hostile, &services())
        .await
        .unwrap();
    let _b = mdp::plugin::Instance::new(&hostile, &services())
        .await
        .unwrap();
    let err = mdp::plugin::Instance::new(&hostile, &services())
        .await
        .err()
        .expect("over its share");
    assert!(err.to_string().contains("instances_per_plugin"), "{err}");
    others_keep_serving(&rt).await;
    drop(a);
    assert!(
        mdp::plugin::Instance::new(&hostile, &services())
            .await
            .is_ok()
    );
}

/// The memory limit is the instance's total: a memory bomb is stopped at it
/// with a clear reason, and the plugin's other events are served.
#[tokio::test]
async fn a_memory_bomb_is_stopped_at_the_instance_total() {
    let rt = runtime();
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut worker = hostile(&rt, "memory-bomb", &[], limits).await;
    let texts = [trade("A"), trade("BOMB")];
    let out = worker.analyze(&events(&texts)).await.expect("batch");
    assert_eq!(puts(&out), vec!["echo:A"]);
    let rejects = rejects(&out);
    assert!(
        rejects[0].1.contains("memory limit of 16 MiB"),
        "{rejects:?}"
    );
    others_keep_serving(&rt).await;
}
