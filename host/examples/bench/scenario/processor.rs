//! Scenario `processor` (1): events/s of `mdp process` with each shipped
//! analyzer on real RabbitMQ and Redis, per-event messages (as the seed's MDQ
//! publishes them) and frame-batched ones (one JSON array per feed frame),
//! against the floor: a raw lapin consume+ack loop over the same messages.
//!
//! The leaderboard runs twice: *warm* (every symbol's snapshot, average
//! volume and free float in the reference cache) and *cold* (nothing
//! cached: each first reference call per symbol costs 20 ms, a REST round
//! trip).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use mdp::plugin::bindings::MarketStatus;
use mdp::plugin::manifest::Manifest;
use mdp::plugin::{
    HostServices, LiveWorker, Plugin, PluginSlot, ReferenceData, ReferenceFault, Runtime,
    RuntimeConfig, StoreReference, SystemClock,
};
use mdp::process::{Processor, ProcessorConfig};
use mdp::queue::{Queue, QueueSpec};
use mdp::store::{Store, Write};

use super::events::{Kind, SYMBOLS};
use super::floors::RawQueue;
use crate::report::{EVENTS_S, Recorder, Sample, Target};
use crate::scenario::Ctx;

/// Events per frame in the frame-batched runs (a busy Massive frame).
const FRAME: usize = 100;

/// The floor's metric name.
const FLOOR: &str = "raw lapin consume+ack (floor)";

/// One analyzer under test.
struct Case {
    label: &'static str,
    plugin: &'static str,
    kind: Kind,
    reference: Reference,
    /// Fewer events for slow analyzers (a fraction of the scenario's size).
    share: usize,
}

/// Where the reference data comes from.
#[derive(Clone, Copy)]
enum Reference {
    /// Cached in the store.
    Warm,
    /// Not cached: the first call per (kind, symbol) waits 20 ms.
    Cold,
}

const CASES: &[Case] = &[
    Case {
        label: "router",
        plugin: "massive-router",
        kind: Kind::Quote,
        reference: Reference::Warm,
        share: 1,
    },
    Case {
        label: "leaderboard warm",
        plugin: "leaderboard",
        kind: Kind::Aggregate,
        reference: Reference::Warm,
        share: 1,
    },
    Case {
        label: "leaderboard cold",
        plugin: "leaderboard",
        kind: Kind::Aggregate,
        reference: Reference::Cold,
        share: 1,
    },
    Case {
        label: "top-trades",
        plugin: "top-trades",
        kind: Kind::Trade,
        reference: Reference::Warm,
        share: 1,
    },
    Case {
        label: "news-feed",
        plugin: "news-feed",
        kind: Kind::Article,
        reference: Reference::Warm,
        share: 4,
    },
];

/// Run once.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let n = ctx.size(50_000, 300);
    let url = ctx.amqp()?;
    let raw = RawQueue::new(url, "bench-floor-consume").await?;
    raw.publish_confirmed(&Kind::Quote.messages(n, 1)).await?;
    let floor = raw.consume_acked(n, 1024).await?;
    rec.add(
        Sample::new(FLOOR, floor, EVENTS_S)
            .note("prefetch 1024, ack every 100th (multiple), one event per message"),
    );
    let queue = mdp::queue::open(url).await?;
    let store = mdp::store::open(ctx.redis()?).await?;
    for case in CASES {
        let events = (n / case.share).max(100);
        for frame in [1, FRAME] {
            reset(&store, matches!(case.reference, Reference::Warm)).await?;
            let rate = events_per_second(ctx, &queue, &store, case, events, frame)
                .await
                .with_context(|| format!("{} (frame {frame})", case.label))?;
            let per_event = format!("{}, per-event", case.label);
            let sample = if frame == 1 {
                let s = Sample::new(&per_event, rate, EVENTS_S).floor(FLOOR);
                if case.share == 1 {
                    s.target(Target::FloorAtLeast(0.9))
                } else {
                    s
                }
            } else {
                Sample::new(
                    format!("{}, frame-batched ({FRAME}/msg)", case.label),
                    rate,
                    EVENTS_S,
                )
                .floor(per_event)
                .target(Target::FloorAtLeast(5.0))
            };
            rec.add(sample);
        }
    }
    Ok(())
}

/// Publish `n` events of the case's kind (frames of `frame`), then time one
/// processor draining them until the last event shows in the store.
async fn events_per_second(
    ctx: &Ctx,
    queue: &Arc<dyn Queue>,
    store: &Arc<dyn Store>,
    case: &Case,
    n: usize,
    frame: usize,
) -> anyhow::Result<f64> {
    let name = format!("bench-{}-{frame}", case.label.replace(' ', "-"));
    queue
        .declare(&QueueSpec {
            name: name.clone(),
            ..QueueSpec::default()
        })
        .await?;
    for chunk in case.kind.messages(n, frame).chunks(1000) {
        queue.publish(&name, chunk).await?;
    }
    let reference: Arc<dyn ReferenceData> = match case.reference {
        Reference::Warm => Arc::new(StoreReference::new(store.clone())),
        Reference::Cold => Arc::new(SlowReference {
            inner: StoreReference::new(store.clone()),
            delay: Duration::from_millis(20),
            fetched: Mutex::default(),
        }),
    };
    let services = HostServices {
        store: store.clone(),
        reference,
        clock: Arc::new(SystemClock),
    };
    let wasm = ctx.plugin(case.plugin)?;
    // The plugin's own manifest: limits (batches in flight) and capabilities
    // apply as in production.
    let manifest = Manifest::load(&wasm.with_extension("toml"))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(&wasm)?,
        manifest.load_options(),
        &services,
    )
    .await?;
    let live = LiveWorker::new(PluginSlot::fixed(plugin, manifest), services)?;
    let config = ProcessorConfig {
        queue: name.clone(),
        ..ProcessorConfig::default()
    };
    let mut processor = Processor::new(config, queue.clone(), store.clone(), live);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(async move { processor.run(stopped).await });
    // One consumer keeps queue order: the last event is applied last.
    let (last, key) = (n - 1, case.kind.applied_key(n - 1));
    let deadline = started + Duration::from_secs(ctx.size(300, 30));
    while !applied(store, &key, |text| case.kind.shows(text, last)).await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{key} never showed event {}",
            n - 1
        );
        anyhow::ensure!(!task.is_finished(), "the processor stopped early");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    stop.send(true)?;
    let stats = task.await??;
    Ok(stats.processed as f64 / elapsed.as_secs_f64())
}

/// Whether `key` (a string, or a list's head) holds a value that `shows`.
pub async fn applied(
    store: &Arc<dyn Store>,
    key: &str,
    shows: impl Fn(&str) -> bool,
) -> anyhow::Result<bool> {
    let value = match store.get(key).await {
        Ok(v) => v,
        Err(_) => store.lrange(key, 0, 0).await?.into_iter().next(),
    };
    Ok(value.is_some_and(|v| shows(&v)))
}

/// Delete what the analyzers wrote; with `reference`, cache every symbol's
/// reference data as the MDC keys hold it.
pub async fn reset(store: &Arc<dyn Store>, reference: bool) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for prefix in [
        "leaderboard:",
        "symbol:",
        "quote:",
        "scanners:",
        "tta:",
        "mdc:",
        "stocks:",
        "news:",
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
    if reference {
        let set = |key: String, value: &str| Write::Set {
            key,
            value: value.to_string().into(),
            ttl: None,
        };
        let mut writes = Vec::new();
        for s in 0..SYMBOLS {
            writes.push(set(
                format!("mdc:snapshots:S{s}"),
                r#"{"ticker":"S","prevDay":{"o":10.0,"h":11.0,"l":9.5,"c":10.2,"v":100000.0,"vw":10.1}}"#,
            ));
            writes.push(set(format!("mdc:avg_volume:S{s}"), "250000.0"));
            writes.push(set(format!("mdc:free_float:S{s}"), "5000000.0"));
        }
        store.apply(&writes, false).await?;
    }
    Ok(())
}

/// Reference data behind a cache-aside layer whose misses cost `delay` each
/// (a REST round trip), as the host's Massive reference layer: the first
/// call per (kind, symbol) waits, later ones are served from the cache.
struct SlowReference {
    inner: StoreReference,
    delay: Duration,
    fetched: Mutex<HashSet<(u8, String)>>,
}

impl SlowReference {
    async fn miss(&self, kind: u8, symbol: &str) {
        let first = self
            .fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind, symbol.to_string()));
        if first {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait]
impl ReferenceData for SlowReference {
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
