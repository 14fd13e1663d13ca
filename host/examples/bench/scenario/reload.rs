//! Scenario `reload` (6): the leaderboard replaced 10 times while 20,000
//! aggregates/s flow through a processor (embedded queue and store, as in
//! `mdp up`).
//!
//! - *swap time*: from the new files being in place to the new generation
//!   published (validated, compiled, its golden file replayed), by calling
//!   the registry's load directly: the file watcher's debounce is left out.
//! - *latency*: every 10 ms tick publishes a chunk of events whose last one
//!   is a tracer (symbol `TRACE`, `accumulated_volume` = the tick); a poller
//!   notes when `quote:TRACE` shows it. p99 of publish → applied, during the
//!   swaps and in a window without them.
//! - *lost / duplicated*: events processed vs events published, once the
//!   queue has drained.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use mdp::plugin::{
    HostServices, LiveWorker, LoadOutcome, PluginSlot, Registry, Runtime, RuntimeConfig,
    StoreReference, SystemClock,
};
use mdp::process::{Processor, ProcessorConfig, ProcessorStats};
use mdp::queue::{EmbeddedQueue, Queue, QueueSpec};
use mdp::store::{EmbeddedStore, Store};

use super::events::Kind;
use super::probe::quantile;
use crate::report::{COUNT, MS, Recorder, Sample, Target};
use crate::scenario::Ctx;

/// The queue the processor consumes.
const QUEUE: &str = "aggregate";
/// Publishing ticks.
const TICK: Duration = Duration::from_millis(10);

/// Run once.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let rate = ctx.size(20_000, 1_000);
    let swaps = ctx.size(10, 2);
    let phase = Duration::from_millis(ctx.size(10_000, 1_000));
    let dir = tempfile::tempdir()?;
    install(ctx, dir.path(), "0")?;
    let rig = Rig::start(dir.path()).await?;
    let flow = Flow::start(rig.queue.clone(), rig.store.clone(), rate);
    tokio::time::sleep(phase / 4).await; // warm-up
    let mut calm = flow.latencies_over(phase).await;
    let mut swap_ms = Vec::new();
    let swapping = flow.mark();
    for n in 1..=swaps {
        tokio::time::sleep(phase / swaps as u32).await;
        install(ctx, dir.path(), &n.to_string())?;
        let started = Instant::now();
        let outcome = rig.registry.load("leaderboard").await;
        ensure!(
            matches!(outcome, LoadOutcome::Published(_)),
            "swap {n}: {outcome:?}"
        );
        swap_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut during = flow.latencies_since(swapping);
    let sent = flow.stop().await?;
    let (processed, served) = rig.stop().await?;
    ensure!(
        served as usize == swaps + 1,
        "generation {served} serves after {swaps} swaps"
    );
    rec.add(
        Sample::new("swap time, median", quantile(&mut swap_ms, 0.5), MS)
            .target(Target::AtMost(100.0))
            .note("new files in place → new generation published: validation, compilation, golden replay"),
    );
    rec.add(Sample::new(
        "swap time, max",
        quantile(&mut swap_ms, 1.0),
        MS,
    ));
    let calm_name = "p99 publish → applied, no swaps";
    rec.add(Sample::new(calm_name, quantile(&mut calm, 0.99), MS));
    let samples = format!(
        "{rate} events/s, {swaps} swaps, {} + {} tracer samples",
        calm.len(),
        during.len()
    );
    rec.add(
        Sample::new(
            "p99 publish → applied, during swaps",
            quantile(&mut during, 0.99),
            MS,
        )
        .floor(calm_name)
        .note(samples),
    );
    let lost = sent.saturating_sub(processed) as f64;
    let duplicated = processed.saturating_sub(sent) as f64;
    rec.add(Sample::new("events lost", lost, COUNT).target(Target::AtMost(0.0)));
    rec.add(Sample::new("events duplicated", duplicated, COUNT).target(Target::AtMost(0.0)));
    Ok(())
}

/// A processor with the leaderboard of a plugin directory, on an embedded
/// queue and store (reference data warm).
struct Rig {
    registry: Arc<Registry>,
    slot: Arc<PluginSlot>,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    stop: tokio::sync::watch::Sender<bool>,
    consumer: tokio::task::JoinHandle<anyhow::Result<ProcessorStats>>,
}

impl Rig {
    /// Load `dir` and start consuming.
    async fn start(dir: &std::path::Path) -> anyhow::Result<Rig> {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        super::processor::reset(&store, true).await?;
        let queue: Arc<dyn Queue> = Arc::new(EmbeddedQueue::new());
        let spec = QueueSpec {
            name: QUEUE.into(),
            ..QueueSpec::default()
        };
        queue.declare(&spec).await?;
        let services = HostServices {
            store: store.clone(),
            reference: Arc::new(StoreReference::new(store.clone())),
            clock: Arc::new(SystemClock),
        };
        let runtime = Runtime::new(RuntimeConfig::default())?;
        let registry = Registry::open(runtime, services.clone(), dir)
            .await
            .context("opening the plugin directory")?;
        let slot = registry
            .slot("leaderboard")
            .context("the leaderboard did not load")?;
        let live = LiveWorker::new(slot.clone(), services)?;
        let config = ProcessorConfig {
            queue: QUEUE.into(),
            ..ProcessorConfig::default()
        };
        let mut processor = Processor::new(config, queue.clone(), store.clone(), live);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let consumer = tokio::spawn(async move { processor.run(stopped).await });
        Ok(Rig {
            registry,
            slot,
            queue,
            store,
            stop,
            consumer,
        })
    }

    /// Stop the processor: events it processed, generation serving.
    async fn stop(self) -> anyhow::Result<(u64, u64)> {
        self.stop.send(true)?;
        let stats = self.consumer.await??;
        Ok((stats.processed, self.slot.current().map_or(0, |g| g.number)))
    }
}

/// Put the leaderboard (bytes made distinct by a custom section tagged
/// `tag`), its manifest and golden files into `dir`, renamed into place.
fn install(ctx: &Ctx, dir: &std::path::Path, tag: &str) -> anyhow::Result<()> {
    let wasm = ctx.plugin("leaderboard")?;
    let golden = ctx.plugin_dir().join("golden/leaderboard");
    if !dir.join("golden/leaderboard").exists() {
        std::fs::create_dir_all(dir.join("golden"))?;
        copy_dir(&golden, &dir.join("golden/leaderboard"))?;
    }
    let tmp = dir.join(".leaderboard.toml.tmp");
    std::fs::copy(wasm.with_extension("toml"), &tmp)?;
    std::fs::rename(&tmp, dir.join("leaderboard.toml"))?;
    let tmp = dir.join(".leaderboard.wasm.tmp");
    std::fs::write(
        &tmp,
        mdp_test_artifacts::variant(&std::fs::read(&wasm)?, tag),
    )?;
    std::fs::rename(&tmp, dir.join("leaderboard.wasm"))?;
    Ok(())
}

/// Copy a directory tree.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Events published at a steady rate, each tick's last one a tracer, and
/// the latencies (publish → applied) the tracers showed.
struct Flow {
    running: Arc<AtomicBool>,
    producer: tokio::task::JoinHandle<anyhow::Result<u64>>,
    poller: tokio::task::JoinHandle<()>,
    seen: Arc<std::sync::Mutex<Vec<(Instant, f64)>>>,
    last_tick: Arc<AtomicU64>,
    store: Arc<dyn Store>,
}

impl Flow {
    /// Start publishing `rate` events/s onto `queue` and watching `store`.
    fn start(queue: Arc<dyn Queue>, store: Arc<dyn Store>, rate: usize) -> Flow {
        let running = Arc::new(AtomicBool::new(true));
        let published = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
        let last_tick = Arc::new(AtomicU64::new(0));
        let per_tick = (rate / 100).max(2);
        let producer = {
            let (running, published, last_tick) =
                (running.clone(), published.clone(), last_tick.clone());
            tokio::spawn(async move {
                let (mut sent, mut ticks) = (0u64, tokio::time::interval(TICK));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while running.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    let tick = published.lock().unwrap_or_else(|p| p.into_inner()).len() as u64 + 1;
                    let mut bodies: Vec<Bytes> = (sent..sent + per_tick as u64 - 1)
                        .map(|i| Bytes::from(Kind::Aggregate.json(i as usize)))
                        .collect();
                    bodies.push(Bytes::from(tracer(tick)));
                    published
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Instant::now());
                    queue.publish(QUEUE, &bodies).await?;
                    sent += bodies.len() as u64;
                    last_tick.store(tick, Ordering::Relaxed);
                }
                Ok(sent)
            })
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let poller = {
            let (store, seen, published) = (store.clone(), seen.clone(), published.clone());
            tokio::spawn(async move {
                let mut applied = 0u64;
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let Some(tick) = applied_tick(&store).await else {
                        continue;
                    };
                    let now = Instant::now();
                    let times = published.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    for t in applied + 1..=tick {
                        if let Some(at) = times.get(t as usize - 1) {
                            seen.push((now, now.duration_since(*at).as_secs_f64() * 1000.0));
                        }
                    }
                    applied = applied.max(tick);
                }
            })
        };
        Flow {
            running,
            producer,
            poller,
            seen,
            last_tick,
            store,
        }
    }

    /// Now, to pass to `latencies_since` later.
    fn mark(&self) -> Instant {
        Instant::now()
    }

    /// The latencies observed over the next `window`.
    async fn latencies_over(&self, window: Duration) -> Vec<f64> {
        let from = self.mark();
        tokio::time::sleep(window).await;
        self.latencies_since(from)
    }

    /// The latencies observed since `from`.
    fn latencies_since(&self, from: Instant) -> Vec<f64> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, ms)| *ms)
            .collect()
    }

    /// Stop publishing and wait (≤ 60 s) until the last tracer is applied:
    /// with one consumer, everything before it was processed too. Events sent.
    async fn stop(self) -> anyhow::Result<u64> {
        self.running.store(false, Ordering::Relaxed);
        let sent = self.producer.await??;
        let last = self.last_tick.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while applied_tick(&self.store).await.unwrap_or(0) < last {
            ensure!(Instant::now() < deadline, "tick {last} was never applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.poller.abort();
        Ok(sent)
    }
}

/// The tracer aggregate of `tick`.
fn tracer(tick: u64) -> String {
    let json = Kind::Aggregate.json(tick as usize);
    let symbol = format!("\"symbol\":\"S{}\"", tick as usize % super::events::SYMBOLS);
    json.replacen(&symbol, "\"symbol\":\"TRACE\"", 1)
}

/// The last tracer tick the leaderboard applied.
async fn applied_tick(store: &Arc<dyn Store>) -> Option<u64> {
    let quote = store.get("quote:TRACE").await.ok()??;
    let rest = &quote[quote.find("\"accumulated_volume\":")? + 21..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}
