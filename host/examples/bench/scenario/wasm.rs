//! Scenario `wasm` (3): what the sandbox costs. The massive-router analyzer
//! compiled natively (its crate, driven as the SDK's native harness drives it)
//! is the floor; the same Rust code as a Wasm component through the runtime,
//! and its Python and JavaScript twins, are compared with it in ns/event at
//! batch sizes 1, 10, 100 and 1000.
//!
//! Both sides get the batch decoded beforehand (decoding the queue JSON is
//! the same host code either way, and is measured on its own): native is the
//! `analyze` call; through the runtime it is the component call (lowering
//! the batch, lifting the effects) and resolving the effects into store
//! writes, what a processor does per batch before it talks to the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use massive_router::MassiveRouter;
use mdp::plugin::{
    Capabilities, FixedClock, HostServices, LoadOptions, Plugin, Runtime, RuntimeConfig,
    StoreReference, Worker, convert, effects,
};
use mdp::store::{EmbeddedStore, Store};
use mdp_sdk::{Analyzer, Config};

use super::events::Kind;
use crate::report::{NS_EVENT, Recorder, Sample, Target};
use crate::scenario::Ctx;

/// Batch sizes measured.
const BATCHES: [usize; 4] = [1, 10, 100, 1000];

/// The guests: label and plugin name (Rust in `target/plugins`, the twins in
/// `target/polyglot-plugins`).
const GUESTS: [(&str, &str); 3] = [
    ("Rust", "massive-router"),
    ("Python", "massive-router-py"),
    ("JavaScript", "massive-router-js"),
];

/// Run once.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let budget = Duration::from_millis(ctx.size(1000, 20));
    rec.add(Sample::new(
        "decode queue JSON (host)",
        decode_ns(&texts(100), budget)?,
        NS_EVENT,
    ));
    for batch in BATCHES {
        let texts = texts(batch);
        let native = native_ns(&texts, budget)?;
        rec.add(Sample::new(native_name(batch), native, NS_EVENT));
    }
    let runtime = Runtime::new(RuntimeConfig::default())?;
    for (label, plugin) in GUESTS {
        let path = ctx.any_plugin(plugin)?;
        let mut worker = worker(&runtime, &path).await?;
        for batch in BATCHES {
            let ns = wasm_ns(&mut worker, &texts(batch), budget).await?;
            let sample = Sample::new(format!("{label} guest, batch {batch}"), ns, NS_EVENT)
                .floor(native_name(batch));
            rec.add(if label == "Rust" && batch == 100 {
                sample.target(Target::AtMost(250.0))
            } else {
                sample
            });
        }
    }
    Ok(())
}

/// The floor's metric name at `batch`.
fn native_name(batch: usize) -> String {
    format!("native Rust (floor), batch {batch}")
}

/// `batch` trade and quote messages over the synthetic symbols.
fn texts(batch: usize) -> Vec<String> {
    (0..batch)
        .map(|i| {
            if i % 2 == 0 {
                Kind::Trade.json(i)
            } else {
                Kind::Quote.json(i)
            }
        })
        .collect()
}

/// ns/event of the host's decoding of queue messages into events.
fn decode_ns(texts: &[String], budget: Duration) -> anyhow::Result<f64> {
    let (mut rounds, started) = (0usize, Instant::now());
    while started.elapsed() < budget || rounds < 3 {
        let events = texts
            .iter()
            .map(|t| convert::decode(t))
            .collect::<Result<Vec<_>, _>>()?;
        std::hint::black_box(events);
        rounds += 1;
    }
    Ok(started.elapsed().as_nanos() as f64 / (rounds * texts.len()) as f64)
}

/// ns/event of the native analyzer's `analyze`, repeated for `budget`.
fn native_ns(texts: &[String], budget: Duration) -> anyhow::Result<f64> {
    let mut analyzer = MassiveRouter::init(Config::from(Vec::new()), None)
        .map_err(|e| anyhow::anyhow!("native init: {e:?}"))?;
    let batch = texts
        .iter()
        .map(|t| mdp_sdk::wire::decode_event(t))
        .collect::<Result<Vec<_>, _>>()?;
    mdp_sdk::testing::with_host(|h| h.inputs = texts.to_vec());
    let mut round = || -> anyhow::Result<usize> {
        let effects = analyzer
            .analyze(&batch)
            .map_err(|e| anyhow::anyhow!("native analyze: {e:?}"))?;
        Ok(effects.len())
    };
    for _ in 0..10 {
        round()?;
    }
    let (mut rounds, started) = (0usize, Instant::now());
    let mut effects = 0;
    while started.elapsed() < budget || rounds < 3 {
        effects += round()?;
        rounds += 1;
    }
    let ns = started.elapsed().as_nanos() as f64 / (rounds * texts.len()) as f64;
    mdp_sdk::testing::with_host(|h| h.inputs.clear());
    anyhow::ensure!(effects > 0, "the native router produced no effects");
    Ok(ns)
}

/// A started worker of the component at `path`.
async fn worker(runtime: &Runtime, path: &std::path::Path) -> anyhow::Result<Worker> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store)),
        clock: Arc::new(FixedClock::new(1_767_225_600_000_000)),
    };
    let plugin = Plugin::load(
        runtime,
        std::fs::read(path)?,
        LoadOptions::default(),
        &services,
    )
    .await?;
    let mut worker = Worker::new(plugin, services, vec![]);
    worker.start().await?;
    Ok(worker)
}

/// ns/event through the runtime: analyze and resolve, repeated for `budget`.
async fn wasm_ns(worker: &mut Worker, texts: &[String], budget: Duration) -> anyhow::Result<f64> {
    let caps = Capabilities::unrestricted();
    let events = texts
        .iter()
        .map(|t| convert::decode(t))
        .collect::<Result<Vec<_>, _>>()?;
    for _ in 0..10 {
        worker.analyze(&events).await?;
    }
    let (mut rounds, started, mut writes) = (0usize, Instant::now(), 0);
    while started.elapsed() < budget || rounds < 3 {
        let out = worker.analyze(&events).await?;
        writes += effects::resolve(&out.effects, texts, &caps).writes.len();
        rounds += 1;
    }
    anyhow::ensure!(writes > 0, "the guest produced no writes");
    Ok(started.elapsed().as_nanos() as f64 / (rounds * texts.len()) as f64)
}
