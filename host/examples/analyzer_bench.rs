//! Benchmark (not a test): events/s of `mdp process` with the seed analyzers
//! (`leaderboard` on aggregates, `top-trades` on trades) on real RabbitMQ and
//! Redis, one event per message as the seed's MDQ publishes them.
//!
//! Reference data for the leaderboard comes from the MDC keys in Redis:
//! *warm* (every symbol's snapshot, average volume and free float cached), and
//! *cold* (nothing cached; every reference call costs 20 ms, as a REST round
//! trip would; the plugin asks once per symbol per day).
//!
//! ```text
//! source scripts/test-servers.sh && start_test_servers
//! scripts/build-plugins
//! cargo run --release -p mdp --example analyzer_bench -- "$MDP_TEST_AMQP_URL" "$MDP_TEST_REDIS_URL" [N] [SYMBOLS]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use mdp::plugin::bindings::MarketStatus;
use mdp::plugin::manifest::Manifest;
use mdp::plugin::{
    HostServices, LiveWorker, Plugin, PluginSlot, ReferenceData, ReferenceFault, Runtime,
    RuntimeConfig, StoreReference, SystemClock,
};
use mdp::process::{Processor, ProcessorConfig};
use mdp::queue::{Queue, QueueSpec};
use mdp::store::{Store, Write};

/// Reference data behind a cache-aside layer whose misses cost `delay` each
/// (a REST round trip), as the host's Massive reference layer: the first
/// call per (kind, symbol) waits, later ones are served from the cache.
struct Slow {
    inner: StoreReference,
    delay: Duration,
    fetched: std::sync::Mutex<std::collections::HashSet<(u8, String)>>,
}

impl Slow {
    async fn miss(&self, kind: u8, symbol: &str) {
        let first = self
            .fetched
            .lock()
            .unwrap()
            .insert((kind, symbol.to_string()));
        if first {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait]
impl ReferenceData for Slow {
    async fn ticker_snapshot(&self, symbol: &str) -> Result<Option<String>, ReferenceFault> {
        self.miss(0, symbol).await;
        self.inner.ticker_snapshot(symbol).await
    }
    async fn avg_volume(&self, symbol: &str) -> Result<f64, ReferenceFault> {
        self.miss(1, symbol).await;
        self.inner.avg_volume(symbol).await
    }
    async fn free_float(&self, symbol: &str) -> Result<f64, ReferenceFault> {
        self.miss(2, symbol).await;
        self.inner.free_float(symbol).await
    }
    async fn market_now(&self) -> Result<MarketStatus, ReferenceFault> {
        self.miss(3, "").await;
        self.inner.market_now().await
    }
}

fn aggregate(i: usize, symbols: usize) -> Bytes {
    let close = 10.0 + (i % 97) as f64 / 10.0;
    Bytes::from(format!(
        r#"{{"event_type":"A","symbol":"S{s}","volume":100,"accumulated_volume":{i},"official_open_price":10.0,"vwap":{close},"open":{close},"close":{close},"high":{close},"low":{close},"aggregate_vwap":{close},"average_size":10,"start_timestamp":{i},"end_timestamp":{e},"otc":false}}"#,
        s = i % symbols,
        e = i + 1000
    ))
}

fn trade(i: usize, symbols: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"event_type":"T","symbol":"S{s}","exchange":4,"id":"{i}","tape":3,"price":{p},"size":{z},"conditions":[12],"timestamp":{i},"sequence_number":{i},"trf_id":null,"trf_timestamp":null}}"#,
        s = i % symbols,
        p = 10.0 + (i % 89) as f64 / 100.0,
        z = 1 + i % 500
    ))
}

struct Run<'a> {
    plugin: &'a str,
    queue_name: &'a str,
    body: fn(usize, usize) -> Bytes,
    /// Key and marker that show the last event was applied.
    done: (String, String),
}

async fn run(
    queue: &Arc<dyn Queue>,
    store: &Arc<dyn Store>,
    reference: Arc<dyn ReferenceData>,
    r: &Run<'_>,
    n: usize,
    symbols: usize,
) -> anyhow::Result<f64> {
    queue
        .declare(&QueueSpec {
            name: r.queue_name.into(),
            ..QueueSpec::default()
        })
        .await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let bodies: Vec<Bytes> = chunk.iter().map(|i| (r.body)(*i, symbols)).collect();
        queue.publish(r.queue_name, &bodies).await?;
    }
    let services = HostServices {
        store: store.clone(),
        reference,
        clock: Arc::new(SystemClock),
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join(format!("target/plugins/{}.wasm", r.plugin));
    let runtime = Runtime::new(RuntimeConfig::default())?;
    // The plugin's own manifest: limits (batches in flight) and capabilities
    // apply as in production.
    let manifest = Manifest::load(&root.join(format!("plugins/{0}/{0}.toml", r.plugin)))?;
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(&wasm)?,
        manifest.load_options(),
        &services,
    )
    .await?;
    let live = LiveWorker::new(PluginSlot::fixed(plugin, manifest), services)?;
    let config = ProcessorConfig {
        queue: r.queue_name.into(),
        prefetch: 2000,
        batch_size: 256,
        ..ProcessorConfig::default()
    };
    let mut p = Processor::new(config, queue.clone(), store.clone(), live);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(async move { p.run(rx).await });
    // One consumer keeps queue order: the last event is applied last.
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let value = match store.get(&r.done.0).await {
            Ok(v) => v,
            Err(_) => store.lrange(&r.done.0, 0, 0).await?.into_iter().next(),
        };
        if value.is_some_and(|v| v.contains(&r.done.1)) {
            break;
        }
    }
    let elapsed = started.elapsed();
    tx.send(true)?;
    let stats = task.await??;
    Ok(stats.processed as f64 / elapsed.as_secs_f64())
}

async fn reset(store: &Arc<dyn Store>, symbols: usize, with_reference: bool) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for prefix in [
        "leaderboard:",
        "symbol:",
        "quote:",
        "scanners:",
        "tta:",
        "mdc:",
    ] {
        keys.extend(store.scan_prefix(prefix).await?);
    }
    for chunk in keys.chunks(1000) {
        store
            .apply(
                &[Write::Del {
                    keys: chunk.to_vec(),
                }],
                false,
            )
            .await?;
    }
    if with_reference {
        let mut writes = Vec::new();
        for s in 0..symbols {
            let set = |key: String, value: String| Write::Set {
                key,
                value: value.into(),
                ttl: None,
            };
            writes.push(set(
                format!("mdc:snapshots:S{s}"),
                r#"{"ticker":"S","prevDay":{"o":10.0,"h":11.0,"l":9.5,"c":10.2,"v":100000.0,"vw":10.1}}"#
                    .into(),
            ));
            writes.push(set(format!("mdc:avg_volume:S{s}"), "250000.0".into()));
            writes.push(set(format!("mdc:free_float:S{s}"), "5000000.0".into()));
        }
        store.apply(&writes, false).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let amqp = args.next().expect("amqp url");
    let redis = args.next().expect("redis url");
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let symbols: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(500);
    let queue = mdp::queue::open(&amqp).await?;
    let store = mdp::store::open(&redis).await?;
    let last = n - 1;

    let leaderboard = Run {
        plugin: "leaderboard",
        queue_name: "bench-aggregate",
        body: aggregate,
        done: (
            format!("quote:S{}", last % symbols),
            format!("\"accumulated_volume\":{last},"),
        ),
    };
    reset(&store, symbols, true).await?;
    let warm_ref: Arc<dyn ReferenceData> = Arc::new(StoreReference::new(store.clone()));
    let warm = run(&queue, &store, warm_ref, &leaderboard, n, symbols).await?;
    println!(
        "leaderboard, warm reference cache: {warm:>9.0} events/s ({n} events, {symbols} symbols)"
    );

    reset(&store, symbols, true).await?;
    let cold_ref: Arc<dyn ReferenceData> = Arc::new(Slow {
        inner: StoreReference::new(store.clone()),
        delay: Duration::from_millis(20),
        fetched: Default::default(),
    });
    let cold = run(&queue, &store, cold_ref, &leaderboard, n, symbols).await?;
    println!(
        "leaderboard, cold (20 ms per reference cache miss): {cold:>9.0} events/s ({n} events, {symbols} symbols, 3 calls per symbol)"
    );

    let top_trades = Run {
        plugin: "top-trades",
        queue_name: "bench-trades",
        body: trade,
        done: (
            format!("tta:S{}:recent", last % symbols),
            format!("\"timestamp\":{last},"),
        ),
    };
    reset(&store, symbols, false).await?;
    let reference: Arc<dyn ReferenceData> = Arc::new(StoreReference::new(store.clone()));
    let tt = run(&queue, &store, reference, &top_trades, n, symbols).await?;
    println!("top-trades: {tt:>9.0} events/s ({n} events, {symbols} symbols)");
    Ok(())
}
