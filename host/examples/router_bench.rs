//! Micro-benchmark (not a test): per-event cost of the massive-router plugin
//! through the real runtime, batch sizes 1, 10, 100, 1000 — analyze call plus
//! effect resolution into store writes.
//!
//! `cargo run --release -p mdp --example router_bench -- target/plugins/massive-router.wasm`

use std::sync::Arc;
use std::time::Instant;

use mdp::plugin::{
    Capabilities, FixedClock, HostServices, LoadOptions, Plugin, Runtime, RuntimeConfig,
    StoreReference, Worker, convert, effects,
};
use mdp::store::{EmbeddedStore, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/plugins/massive-router.wasm".into());
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store)),
        clock: Arc::new(FixedClock::new(1_767_225_600_000_000)),
    };
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(&path)?,
        LoadOptions::default(),
        &services,
    )
    .await?;
    println!("pooling allocator: {}", runtime.pooling());
    let mut worker = Worker::new(plugin, services, vec![]);
    worker.start().await?;
    for batch in [1usize, 10, 100, 1000] {
        let texts: Vec<String> = (0..batch)
            .map(|i| format!(r#"{{"event_type":"T","symbol":"S{}","exchange":4,"id":"{i}","tape":3,"price":114.125,"size":100,"conditions":[0,12],"timestamp":1536036818784,"sequence_number":{i}}}"#, i % 50))
            .collect();
        let events: Vec<_> = texts.iter().map(|t| convert::decode(t).unwrap()).collect();
        let rounds = (200_000 / batch).max(50);
        let caps = Capabilities::unrestricted();
        // Warm up.
        for _ in 0..10 {
            worker.analyze(&events).await?;
        }
        let started = Instant::now();
        let mut writes = 0;
        for _ in 0..rounds {
            let out = worker.analyze(&events).await?;
            writes += effects::resolve(&out.effects, &texts, &caps).writes.len();
        }
        let per_event = started.elapsed().as_nanos() as f64 / (rounds * batch) as f64;
        let decode_start = Instant::now();
        for _ in 0..rounds.min(2000) {
            let _: Vec<_> = texts.iter().map(|t| convert::decode(t).unwrap()).collect();
        }
        let decode = decode_start.elapsed().as_nanos() as f64 / (rounds.min(2000) * batch) as f64;
        println!(
            "batch {batch:>4}: {per_event:>7.0} ns/event analyze+resolve ({:.0} events/s), decode {decode:.0} ns/event, {} writes/event",
            1e9 / per_event,
            writes / (rounds * batch)
        );
    }
    Ok(())
}
