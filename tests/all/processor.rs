//! `mdp process` semantics end to end, on the embedded backends and on real
//! RabbitMQ + Redis: the router over a known stream, dead-lettering of
//! poison events, graceful shutdown, and two processors sharing a queue.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mdp::plugin::manifest::Manifest;
use mdp::plugin::{
    FixedClock, HostServices, LiveWorker, LoadOptions, Plugin, PluginSlot, Runtime, RuntimeConfig,
    StoreReference,
};
use mdp::process::{Processor, ProcessorConfig, ProcessorStats};
use mdp::queue::{EmbeddedQueue, Queue, QueueSpec};
use mdp::store::{EmbeddedStore, Store, Topic};
use tokio::sync::watch;

struct Backends {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    prefix: String,
}

fn embedded() -> Backends {
    Backends {
        queue: Arc::new(EmbeddedQueue::new()),
        store: Arc::new(EmbeddedStore::new()),
        prefix: support::unique("q"),
    }
}

async fn distributed() -> Backends {
    Backends {
        queue: mdp::queue::open(&support::amqp_url())
            .await
            .expect("rabbitmq"),
        store: mdp::store::open(&support::redis_url())
            .await
            .expect("redis"),
        prefix: support::unique("q"),
    }
}

async fn declare(b: &Backends, name: &str) {
    b.queue
        .declare(&QueueSpec {
            name: name.to_string(),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
}

/// These tests exercise delivery, not capabilities: the fixtures may write
/// any key and channel (without `[capabilities]` only `<name>:` ones).
const ANY_KEY: &str = "[capabilities]\nkey_prefixes = [\"\"]\nchannels = [\"\"]\n";

fn manifest(name: &str, config: &[(&str, &str)]) -> Manifest {
    let mut text = format!(
        "name = \"{name}\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n{ANY_KEY}[config]\n"
    );
    for (k, v) in config {
        text.push_str(&format!("{k} = \"{v}\"\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    Manifest::load(&path).unwrap()
}

async fn live(name: &str, config: &[(&str, &str)], store: &Arc<dyn Store>) -> LiveWorker {
    live_with(name, config, store, 1).await
}

/// A live worker whose plugin allows `in_flight` batches between analysis
/// and acknowledgement.
async fn live_with(
    name: &str,
    config: &[(&str, &str)],
    store: &Arc<dyn Store>,
    in_flight: usize,
) -> LiveWorker {
    let mut options = LoadOptions::default();
    options.limits.batches_in_flight = in_flight;
    live_loaded(name, config, store, options).await
}

/// A live worker loaded with `options` (limits, prefetch).
async fn live_loaded(
    name: &str,
    config: &[(&str, &str)],
    store: &Arc<dyn Store>,
    options: LoadOptions,
) -> LiveWorker {
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store.clone())),
        clock: Arc::new(FixedClock::new(1_767_225_600_000_000)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let bytes = std::fs::read(support::plugin_wasm(name)).unwrap();
    let plugin = Plugin::load(&runtime, bytes, options, &services)
        .await
        .unwrap();
    LiveWorker::new(PluginSlot::fixed(plugin, manifest(name, config)), services).unwrap()
}

fn spawn(
    b: &Backends,
    queue: &str,
    dead_letter: Option<String>,
    worker: LiveWorker,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<ProcessorStats>) {
    let config = ProcessorConfig {
        queue: queue.to_string(),
        batch_size: 64,
        linger: Duration::from_millis(3),
        dead_letter,
        prefetch: 256,
        ..ProcessorConfig::default()
    };
    let mut p = Processor::new(config, b.queue.clone(), b.store.clone(), worker);
    let (tx, rx) = watch::channel(false);
    (
        tx,
        tokio::spawn(async move { p.run(rx).await.expect("processor runs") }),
    )
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn quote(sym: &str, i: usize) -> String {
    format!(
        r#"{{"event_type":"Q","symbol":"{sym}","bid_price":{i}.5,"ask_price":{i}.75,"bid_size":1,"ask_size":1,"timestamp":{i}}}"#
    )
}

/// A second bar (`A`) of `sym` closing at `price`, with `accumulated`
/// volume, covering the second from `start_ms`.
fn bar(sym: &str, price: f64, accumulated: u64, start_ms: u64) -> String {
    format!(
        r#"{{"event_type":"A","symbol":"{sym}","volume":100,"accumulated_volume":{accumulated},"official_open_price":{price},"vwap":{price},"open":{price},"close":{price},"high":{price},"low":{price},"aggregate_vwap":{price},"average_size":50,"start_timestamp":{start_ms},"end_timestamp":{end},"otc":false}}"#,
        end = start_ms + 1000
    )
}

mod companion;
mod faults;
mod idle_tick;
mod pipeline;
mod reference;
