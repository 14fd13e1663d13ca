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
use mdp::queue::{EmbeddedQueue, Queue, QueueSpec};
use mdp::role::processor::{Processor, ProcessorConfig, ProcessorStats};
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

async fn router_writes_and_publishes_the_seed_keys(b: Backends) {
    let q = format!("{}-quotes", b.prefix);
    declare(&b, &q).await;
    let mut sub = b
        .store
        .subscribe(&[Topic::Pattern(format!("stocks:quotes:{}*", b.prefix))])
        .await
        .unwrap();
    let sym = |i: usize| format!("{}{}", b.prefix, i % 5);
    let bodies: Vec<Bytes> = (0..200).map(|i| Bytes::from(quote(&sym(i), i))).collect();
    // Half as single-event messages, half as one frame-batch array message.
    b.queue.publish(&q, &bodies[..100]).await.unwrap();
    let array = format!(
        "[{}]",
        bodies[100..]
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    );
    b.queue.publish(&q, &[Bytes::from(array)]).await.unwrap();

    let (stop, task) = spawn(&b, &q, None, live("massive-router", &[], &b.store).await);
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received < 200 && Instant::now() < deadline {
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), sub.messages.recv()).await
        {
            received += 1;
        }
    }
    assert_eq!(received, 200, "every event is published once");
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processed, 200);
    // The seed's `published`: one result per routed event (its SET and
    // PUBLISH are one result); the store writes are counted apart.
    assert_eq!((stats.published, stats.store_writes), (200, 400));
    for s in 0..5 {
        let key = format!("stocks:quotes:{}", sym(s));
        let last = 195 + s;
        let value = b.store.get(&key).await.unwrap().expect("cached");
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(v["timestamp"], last as u64, "{key} holds the newest quote");
        let ttl = b.store.ttl(&key).await.unwrap().expect("has a ttl");
        assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    }
    assert_eq!(b.queue.depth(&q).await.unwrap(), 0);
}

/// The seed's listener in raw mode publishes frames as JSON strings on
/// `unknown`; its processors cache them under `unknown:<ts>` (not a decoding
/// error), and so does mdp.
async fn raw_string_bodies_on_unknown_are_cached_not_rejected(b: Backends) {
    let q = format!("{}-unknown", b.prefix);
    declare(&b, &q).await;
    let mut sub = b
        .store
        .subscribe(&[Topic::Channel("unknown".into())])
        .await
        .unwrap();
    let raw = format!(r#""[{{\"ev\":\"XQ\",\"sym\":\"{}\"}}]""#, b.prefix);
    b.queue
        .publish(&q, &[Bytes::from(raw.clone())])
        .await
        .unwrap();
    let (stop, task) = spawn(&b, &q, None, live("massive-router", &[], &b.store).await);
    let message = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.messages.recv())
            .await
            .expect("published on unknown")
            .expect("subscription open");
        if m.payload.contains(&b.prefix) {
            break m;
        }
    };
    assert_eq!(
        &*message.payload,
        raw.as_str(),
        "the JSON string, byte for byte"
    );
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!((stats.processed, stats.decoding_error), (1, 0));
    let cached = b.store.scan_prefix("unknown:").await.unwrap();
    let mut found = false;
    for key in cached {
        found |= b.store.get(&key).await.unwrap().as_deref() == Some(raw.as_str());
    }
    assert!(found, "cached under unknown:<ts>");
}

async fn poison_events_are_dead_lettered_and_the_rest_applied(b: Backends) {
    let q = format!("{}-trades", b.prefix);
    let dlq = format!("{q}.dlq");
    b.queue
        .declare(&QueueSpec {
            name: dlq.clone(),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    b.queue
        .declare(&QueueSpec {
            name: q.clone(),
            dead_letter: Some(dlq.clone()),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    let trade = |s: &str| {
        Bytes::from(format!(
            r#"{{"event_type":"T","symbol":"{s}","price":1,"size":1,"timestamp":1}}"#
        ))
    };
    let good = format!("{}G", b.prefix);
    b.queue
        .publish(
            &q,
            &[
                trade(&good),
                trade("POISON"),
                Bytes::from_static(b"not json"),
                trade(&format!("{good}2")),
            ],
        )
        .await
        .unwrap();
    let (stop, task) = spawn(
        &b,
        &q,
        Some(dlq.clone()),
        live("hostile", &[("mode", "trap")], &b.store).await,
    );
    let store = b.store.clone();
    let key = format!("echo:{good}2");
    eventually("good events applied", || {
        let store = store.clone();
        let key = key.clone();
        async move { store.get(&key).await.unwrap().is_some() }
    })
    .await;
    let queue = b.queue.clone();
    let dlq2 = dlq.clone();
    eventually("poison and undecodable messages dead-lettered", || {
        let queue = queue.clone();
        let dlq = dlq2.clone();
        async move { queue.depth(&dlq).await.unwrap() == 2 }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processing_error, 1);
    assert_eq!(stats.decoding_error, 1);
    assert!(
        b.store
            .get(&format!("echo:{good}"))
            .await
            .unwrap()
            .is_some()
    );
}

async fn two_processors_share_a_queue_each_event_once(b: Backends) {
    let q = format!("{}-shared", b.prefix);
    declare(&b, &q).await;
    let (s1, t1) = spawn(
        &b,
        &q,
        None,
        live("tagger", &[("generation", "a")], &b.store).await,
    );
    let (s2, t2) = spawn(
        &b,
        &q,
        None,
        live("tagger", &[("generation", "b")], &b.store).await,
    );
    const N: usize = 2000;
    for chunk in 0..N / 100 {
        let bodies: Vec<Bytes> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| Bytes::from(format!(r#"{{"event_type":"T","symbol":"S","id":"{i}","price":1,"size":1,"timestamp":1}}"#)))
            .collect();
        b.queue.publish(&q, &bodies).await.unwrap();
    }
    let store = b.store.clone();
    eventually("all events tagged", || {
        let store = store.clone();
        async move { store.lrange("tagged", 0, -1).await.unwrap().len() >= N }
    })
    .await;
    s1.send(true).unwrap();
    s2.send(true).unwrap();
    let (a, bb) = (t1.await.unwrap(), t2.await.unwrap());
    let ids = support::tagged_ids(&b.store.lrange("tagged", 0, -1).await.unwrap());
    assert_eq!(ids, (0..N).collect::<Vec<_>>(), "each event exactly once");
    assert_eq!(a.processed + bb.processed, N as u64);
    assert!(
        a.processed > 0 && bb.processed > 0,
        "both instances took work: {} / {}",
        a.processed,
        bb.processed
    );
    b.store
        .apply(
            &[mdp::store::Write::Del {
                keys: vec!["tagged".into(), "tagger:seen".into()],
            }],
            false,
        )
        .await
        .unwrap();
}

async fn shutdown_finishes_the_batch_in_flight(b: Backends) {
    let q = format!("{}-drain", b.prefix);
    declare(&b, &q).await;
    let bodies: Vec<Bytes> = (0..500)
        .map(|i| Bytes::from(quote(&format!("{}D", b.prefix), i)))
        .collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    let (stop, task) = spawn(&b, &q, None, live("massive-router", &[], &b.store).await);
    tokio::time::sleep(Duration::from_millis(30)).await;
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops promptly")
        .unwrap();
    // Whatever was processed was acked; the rest is queued again, nothing lost.
    let queue = b.queue.clone();
    eventually("unprocessed messages back in the queue", || {
        let queue = queue.clone();
        let q = q.clone();
        async move { stats.processed + queue.depth(&q).await.unwrap() == 500 }
    })
    .await;
}

#[tokio::test]
async fn embedded_router_writes_and_publishes_the_seed_keys() {
    router_writes_and_publishes_the_seed_keys(embedded()).await;
}
#[tokio::test]
async fn distributed_router_writes_and_publishes_the_seed_keys() {
    router_writes_and_publishes_the_seed_keys(distributed().await).await;
}
#[tokio::test]
async fn embedded_raw_string_bodies_on_unknown_are_cached() {
    raw_string_bodies_on_unknown_are_cached_not_rejected(embedded()).await;
}
#[tokio::test]
async fn distributed_raw_string_bodies_on_unknown_are_cached() {
    raw_string_bodies_on_unknown_are_cached_not_rejected(distributed().await).await;
}

#[tokio::test]
async fn embedded_poison_events_are_dead_lettered() {
    poison_events_are_dead_lettered_and_the_rest_applied(embedded()).await;
}
#[tokio::test]
async fn distributed_poison_events_are_dead_lettered() {
    poison_events_are_dead_lettered_and_the_rest_applied(distributed().await).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_two_processors_share_a_queue_each_event_once() {
    two_processors_share_a_queue_each_event_once(embedded()).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_two_processors_share_a_queue_each_event_once() {
    two_processors_share_a_queue_each_event_once(distributed().await).await;
}
#[tokio::test]
async fn embedded_shutdown_finishes_the_batch_in_flight() {
    shutdown_finishes_the_batch_in_flight(embedded()).await;
}
#[tokio::test]
async fn distributed_shutdown_finishes_the_batch_in_flight() {
    shutdown_finishes_the_batch_in_flight(distributed().await).await;
}

/// The store goes away under a running processor: nothing is acked while it
/// is down, messages are requeued and processed once it is back, and each
/// event's effects land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_requeues_and_nothing_is_applied_twice() {
    store_outage(1).await;
}

/// The same with four batches in flight: the batches analyzed after the one
/// that failed are requeued unapplied too, so order and exactly-once hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_store_outage_requeues_and_nothing_is_applied_twice() {
    store_outage(4).await;
}

async fn store_outage(in_flight: usize) {
    let mut redis = support::PrivateRedis::start().await;
    let store = mdp::store::open(&redis.url()).await.unwrap();
    let b = Backends {
        queue: Arc::new(EmbeddedQueue::new()),
        store: store.clone(),
        prefix: support::unique("o"),
    };
    let q = format!("{}-outage", b.prefix);
    declare(&b, &q).await;
    let (stop, task) = spawn(
        &b,
        &q,
        None,
        live_with("tagger", &[("generation", "x")], &b.store, in_flight).await,
    );
    redis.kill();
    let bodies: Vec<Bytes> = (0..100)
        .map(|i| {
            Bytes::from(format!(
                r#"{{"event_type":"T","symbol":"S","id":"{i}","price":1,"size":1,"timestamp":1}}"#
            ))
        })
        .collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.restart().await;
    let store2 = store.clone();
    eventually("all events applied after the store came back", || {
        let store = store2.clone();
        async move {
            store
                .lrange("tagged", 0, -1)
                .await
                .map(|l| l.len() >= 100)
                .unwrap_or(false)
        }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    let ids = support::tagged_ids(&store.lrange("tagged", 0, -1).await.unwrap());
    assert_eq!(
        ids,
        (0..100).collect::<Vec<_>>(),
        "each event's effects exactly once"
    );
    assert!(stats.error > 0, "the outage was seen and counted");
    assert_eq!(stats.acked, 100);
}

/// With several batches in flight (small batches, four in flight), every
/// event is processed once and the store ends with each symbol's newest
/// quote: writes were applied in analysis order.
async fn pipelined_batches_keep_the_order_of_writes(b: Backends) {
    let q = format!("{}-pipelined", b.prefix);
    declare(&b, &q).await;
    const N: usize = 3000;
    let sym = |i: usize| format!("{}P{}", b.prefix, i % 7);
    for chunk in 0..N / 500 {
        let bodies: Vec<Bytes> = (chunk * 500..(chunk + 1) * 500)
            .map(|i| Bytes::from(quote(&sym(i), i)))
            .collect();
        b.queue.publish(&q, &bodies).await.unwrap();
    }
    let config = ProcessorConfig {
        queue: q.clone(),
        batch_size: 16,
        linger: Duration::from_millis(1),
        prefetch: 512,
        ..ProcessorConfig::default()
    };
    let worker = live_with("massive-router", &[], &b.store, 4).await;
    let mut p = Processor::new(config, b.queue.clone(), b.store.clone(), worker);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { p.run(rx).await.expect("processor runs") });
    let queue = b.queue.clone();
    let q2 = q.clone();
    let newest = sym(N - 1);
    let store = b.store.clone();
    eventually("the queue drained and the newest quote written", || {
        let (queue, q, store, key) = (
            queue.clone(),
            q2.clone(),
            store.clone(),
            format!("stocks:quotes:{newest}"),
        );
        async move {
            queue.depth(&q).await.unwrap() == 0
                && store
                    .get(&key)
                    .await
                    .unwrap()
                    .is_some_and(|v| v.contains(&format!("\"timestamp\":{}", N - 1)))
        }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processed, N as u64, "each event analyzed once");
    assert_eq!(stats.acked, N as u64);
    for s in 0..7 {
        let last = (0..N).rev().find(|i| i % 7 == s).unwrap();
        let value = b
            .store
            .get(&format!("stocks:quotes:{}", sym(s)))
            .await
            .unwrap()
            .expect("cached");
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(
            v["timestamp"],
            last as u64,
            "{} holds its newest quote",
            sym(s)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_pipelined_batches_keep_the_order_of_writes() {
    pipelined_batches_keep_the_order_of_writes(embedded()).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_pipelined_batches_keep_the_order_of_writes() {
    pipelined_batches_keep_the_order_of_writes(distributed().await).await;
}

/// Reference data that counts misses and how many were in flight at once.
#[derive(Default)]
struct CountingReference {
    calls: std::sync::Mutex<Vec<(String, String)>>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

impl CountingReference {
    async fn call(&self, kind: &str, symbol: &str) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        self.calls
            .lock()
            .unwrap()
            .push((kind.to_string(), symbol.to_string()));
    }
}

#[async_trait::async_trait]
impl mdp::plugin::ReferenceData for CountingReference {
    async fn ticker_snapshot(
        &self,
        symbol: &str,
    ) -> Result<Option<String>, mdp::plugin::ReferenceFault> {
        self.call("snapshot", symbol).await;
        Ok(None)
    }
    async fn avg_volume(&self, symbol: &str) -> Result<f64, mdp::plugin::ReferenceFault> {
        self.call("avg_volume", symbol).await;
        Ok(0.0)
    }
    async fn free_float(&self, symbol: &str) -> Result<f64, mdp::plugin::ReferenceFault> {
        self.call("free_float", symbol).await;
        Ok(0.0)
    }
    async fn market_now(
        &self,
    ) -> Result<mdp::plugin::bindings::MarketStatus, mdp::plugin::ReferenceFault> {
        Err(mdp::plugin::ReferenceFault::Unavailable(
            "not in this test".into(),
        ))
    }
}

/// A manifest's `reference_prefetch` makes the processor fetch the named
/// reference data for each batch's new symbols, concurrently, once per symbol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_data_of_new_symbols_is_prefetched_concurrently_once() {
    let b = embedded();
    let q = format!("{}-prefetch", b.prefix);
    declare(&b, &q).await;
    let reference = Arc::new(CountingReference::default());
    let services = HostServices {
        store: b.store.clone(),
        reference: reference.clone(),
        clock: Arc::new(FixedClock::new(1_767_225_600_000_000)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let options = LoadOptions {
        reference_prefetch: vec![
            mdp::plugin::ReferenceKind::TickerSnapshot,
            mdp::plugin::ReferenceKind::FreeFloat,
        ],
        ..LoadOptions::default()
    };
    let bytes = std::fs::read(support::plugin_wasm("tagger")).unwrap();
    let plugin = Plugin::load(&runtime, bytes, options, &services)
        .await
        .unwrap();
    let worker =
        LiveWorker::new(PluginSlot::fixed(plugin, manifest("tagger", &[])), services).unwrap();
    // 40 symbols, each traded 5 times, across several batches.
    let bodies: Vec<Bytes> = (0..200)
        .map(|i| Bytes::from(format!(r#"{{"event_type":"T","symbol":"P{}","id":"{i}","price":1,"size":1,"timestamp":1}}"#, i % 40)))
        .collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    let (stop, task) = spawn(&b, &q, None, worker);
    let store = b.store.clone();
    eventually("all events tagged", || {
        let store = store.clone();
        async move { store.lrange("tagged", 0, -1).await.unwrap().len() >= 200 }
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let mut calls = reference.calls.lock().unwrap().clone();
    calls.sort();
    let mut expected: Vec<(String, String)> = (0..40)
        .flat_map(|s| {
            [
                ("free_float".to_string(), format!("P{s}")),
                ("snapshot".to_string(), format!("P{s}")),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(calls, expected, "each named kind fetched once per symbol");
    let max = reference
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(max > 1, "fetches overlap (at most {max} at once)");
}

fn tagged_trade(i: usize) -> String {
    format!(r#"{{"event_type":"T","symbol":"S","id":"{i}","price":1,"size":1,"timestamp":1}}"#)
}

/// A store error that retrying cannot fix (the plugin pushes onto a key that
/// holds a string) dead-letters the batch: no requeue loop, nothing acked.
async fn permanent_store_errors_are_dead_lettered(b: Backends) {
    let q = format!("{}-wrongtype", b.prefix);
    let dlq = format!("{q}.dlq");
    declare(&b, &dlq).await;
    b.queue
        .declare(&QueueSpec {
            name: q.clone(),
            dead_letter: Some(dlq.clone()),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    b.store
        .apply(
            &[mdp::store::Write::Set {
                key: "tagged".into(),
                value: "not a list".into(),
                ttl: None,
            }],
            true,
        )
        .await
        .unwrap();
    let bodies: Vec<Bytes> = (0..5).map(|i| Bytes::from(tagged_trade(i))).collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    let (stop, task) = spawn(
        &b,
        &q,
        Some(dlq.clone()),
        live("tagger", &[], &b.store).await,
    );
    let queue = b.queue.clone();
    eventually("the batch dead-lettered", || {
        let queue = queue.clone();
        let dlq = dlq.clone();
        async move { queue.depth(&dlq).await.unwrap() == 5 }
    })
    .await;
    // Give a requeue loop, if there were one, time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.dead_lettered, 5, "{stats:?}");
    assert_eq!(stats.error, 0, "never requeued: {stats:?}");
    assert_eq!(stats.acked, 0, "{stats:?}");
    assert_eq!(b.queue.depth(&q).await.unwrap(), 0);
}

#[tokio::test]
async fn embedded_permanent_store_errors_are_dead_lettered() {
    permanent_store_errors_are_dead_lettered(embedded()).await;
}

#[tokio::test]
async fn distributed_permanent_store_errors_are_dead_lettered() {
    let redis = support::PrivateRedis::start().await;
    let b = Backends {
        store: mdp::store::open(&redis.url()).await.unwrap(),
        ..distributed().await
    };
    permanent_store_errors_are_dead_lettered(b).await;
}

/// One message carrying more events than the plugin's `max_batch` (what
/// `mdp up`'s frame-batched listener publishes) is analyzed in calls of at
/// most `max_batch` events and acknowledged once.
#[tokio::test]
async fn a_message_over_max_batch_is_split_across_calls_and_acked_once() {
    let b = embedded();
    let q = format!("{}-frames", b.prefix);
    declare(&b, &q).await;
    let mut options = LoadOptions::default();
    options.limits.max_batch = 100;
    let worker = live_loaded("tagger", &[], &b.store, options).await;
    let body = format!(
        "[{}]",
        (0..250).map(tagged_trade).collect::<Vec<_>>().join(",")
    );
    b.queue.publish(&q, &[Bytes::from(body)]).await.unwrap();
    let (stop, task) = spawn(&b, &q, None, worker);
    let store = b.store.clone();
    eventually("all 250 events tagged", || {
        let store = store.clone();
        async move { store.lrange("tagged", 0, -1).await.unwrap().len() >= 250 }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    let ids = support::tagged_ids(&b.store.lrange("tagged", 0, -1).await.unwrap());
    assert_eq!(ids, (0..250).collect::<Vec<_>>());
    assert_eq!((stats.acked, stats.processed, stats.error), (1, 250, 0));
}

/// Redis database `db` of the test server.
fn redis_db(db: u32) -> String {
    let mut url = reqwest::Url::parse(&support::redis_url()).unwrap();
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// The seed's layout: `mdp process` with MDC and WDC as two databases of one
/// Redis puts each key where the seed's services do — the leaderboard's
/// boards, hashes, baselines and elections and top-trades' windows in the MDC
/// (db 14 here), the client-facing keys in the WDC (db 15) — so a mixed
/// deployment shares them with the seed.
#[tokio::test]
async fn with_mdc_and_wdc_apart_every_key_is_in_the_seeds_database() {
    let (mdc_url, wdc_url) = (redis_db(14), redis_db(15));
    let mdc = mdp::store::open(&mdc_url).await.unwrap();
    let wdc = mdp::store::open(&wdc_url).await.unwrap();
    let symbols = [0, 1].map(|i| format!("PL{}{}", std::process::id(), ["A", "B"][i]));
    // A known market status, in the MDC where reference data lives.
    mdc.apply(
        &[mdp::store::Write::Set {
            key: "mdc:market_status".into(),
            value: "\"open\"".into(),
            ttl: Some(Duration::from_secs(600)),
        }],
        false,
    )
    .await
    .unwrap();
    let prefix = support::unique("layout");
    let queues = [format!("{prefix}-aggregate"), format!("{prefix}-trades")];
    let plugins = support::plugin_wasm("leaderboard")
        .parent()
        .unwrap()
        .to_path_buf();
    let log = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args(["process", "--queue", &queues[0], "--plugin", "leaderboard"])
        .args(["--queue", &queues[1], "--plugin", "top-trades"])
        .arg("--plugin-dir")
        .arg(&plugins)
        .env("RABBITMQ_URL", support::amqp_url())
        .env("WDC_REDIS_URL", &wdc_url)
        .env("MDC_REDIS_URL", &mdc_url)
        .env("MDP_PLUGIN_CACHE", tempfile::tempdir().unwrap().keep())
        .env_remove("MASSIVE_API_KEY")
        .env_remove("POLYGON_API_KEY")
        .env("MASSIVE_API_KEY_FILE", "/nonexistent/mdp-test-key")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let queue = mdp::queue::open(&support::amqp_url()).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (mut aggs, mut trades) = (Vec::new(), Vec::new());
    for (i, sym) in symbols.iter().enumerate() {
        let price = 10.0 + i as f64;
        aggs.push(Bytes::from(format!(
            r#"{{"event_type":"A","symbol":"{sym}","volume":100,"accumulated_volume":5000,"official_open_price":{price},"vwap":{price},"open":{price},"close":{price},"high":{price},"low":{price},"aggregate_vwap":{price},"average_size":50,"start_timestamp":{now_ms},"end_timestamp":{end},"otc":false}}"#,
            end = now_ms + 1000
        )));
        trades.push(Bytes::from(format!(
            r#"{{"event_type":"T","symbol":"{sym}","exchange":4,"id":"1","tape":3,"price":{price},"size":100,"conditions":[0],"timestamp":{now_ms},"sequence_number":1,"trf_id":null,"trf_timestamp":null}}"#
        )));
    }
    // The role declares its queues; publish once they exist.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut published = false;
    let mut settled = false;
    while Instant::now() < deadline {
        // Publishing to a queue not declared yet would drop the messages.
        if !published
            && queue.depth(&queues[0]).await.is_ok()
            && queue.depth(&queues[1]).await.is_ok()
        {
            queue.publish(&queues[0], &aggs).await.unwrap();
            queue.publish(&queues[1], &trades).await.unwrap();
            published = true;
        }
        let mut all = true;
        for sym in &symbols {
            all &= wdc.get(&format!("quote:{sym}")).await.unwrap().is_some();
            all &= !mdc
                .lrange(&format!("tta:{sym}:recent"), 0, -1)
                .await
                .unwrap()
                .is_empty();
            all &= !mdc
                .hgetall(&format!("symbol:{sym}:data"))
                .await
                .unwrap()
                .is_empty();
        }
        if published && all {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    assert!(
        settled,
        "the role wrote quote:, symbol:…:data and tta:…:recent; its log ends:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    // Every key naming a test symbol, in the database the seed uses for it.
    for (store, db, other) in [(&mdc, 14, &wdc), (&wdc, 15, &mdc)] {
        for prefix in ["quote:", "symbol:", "tta:", "scanners:", "leaderboard:"] {
            for key in store.scan_prefix(prefix).await.unwrap() {
                if !symbols.iter().any(|s| key.contains(s.as_str())) {
                    continue;
                }
                let seed_db = if key.starts_with("quote:") || key.ends_with(":widget") {
                    15
                } else {
                    14
                };
                assert_eq!(db, seed_db, "{key} is in db {db}");
                let elsewhere = other.get(&key).await.ok().flatten().is_some()
                    || !other.hgetall(&key).await.unwrap_or_default().is_empty()
                    || !other
                        .lrange(&key, 0, 0)
                        .await
                        .unwrap_or_default()
                        .is_empty();
                assert!(!elsewhere, "{key} is in both databases");
            }
        }
    }
    // The boards: sorted sets in the MDC, the published boards in the WDC.
    let top = mdc.ztop("leaderboard:top_volume", 500).await.unwrap();
    assert!(
        symbols.iter().all(|s| top.iter().any(|(m, _)| m == s)),
        "{top:?}"
    );
    assert!(
        wdc.ztop("leaderboard:top_volume", 500)
            .await
            .unwrap()
            .iter()
            .all(|(m, _)| !symbols.contains(m))
    );
}
