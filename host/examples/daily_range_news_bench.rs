//! Micro-benchmark (not a test): per-event cost of the daily-range scanner
//! plugin and its Python twin (quote payloads over 500 symbols, regular
//! session) and of the
//! news-feed plugin and its Python and JavaScript twins (enhanced and raw
//! articles) through the real runtime, batch sizes 1, 10 and 100: analyze
//! call plus effect resolution into store writes.
//!
//! `scripts/build-plugins && cargo run --release -p mdp --example daily_range_news_bench`

use std::sync::Arc;
use std::time::Instant;

use mdp::plugin::bindings::Event;
use mdp::plugin::{
    Capabilities, FixedClock, HostServices, LoadOptions, Plugin, Runtime, RuntimeConfig,
    StoreReference, Worker, convert, effects,
};
use mdp::store::{EmbeddedStore, Store};

async fn bench(
    runtime: &Runtime,
    name: &str,
    make: &dyn Fn(usize) -> (String, String),
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store,
        // An empty store: the market open, nothing else known.
        reference: Arc::new(StoreReference::new(Arc::new(EmbeddedStore::new()))),
        // Monday 2026-03-09 10:00 EDT.
        clock: Arc::new(FixedClock::new(1_773_064_800_000_000)),
    };
    let path = ["target/plugins", "target/polyglot-plugins"]
        .iter()
        .map(|d| std::path::Path::new(d).join(format!("{name}.wasm")))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("{name}.wasm not built: run scripts/build-plugins"))?;
    let plugin = Plugin::load(
        runtime,
        std::fs::read(&path)?,
        LoadOptions::default(),
        &services,
    )
    .await?;
    let mut worker = Worker::new(plugin, services, vec![]);
    worker.start().await?;
    let caps = Capabilities::unrestricted();
    let mut n = 0usize;
    for batch in [1usize, 10, 100] {
        let rounds = (20_000 / batch).max(50);
        let mut next = |count: usize| {
            let pairs: Vec<(String, String)> = (0..count)
                .map(|_| {
                    n += 1;
                    make(n)
                })
                .collect();
            let events: Vec<Event> = pairs.iter().map(|(c, p)| convert::pubsub(c, p)).collect();
            let texts: Vec<String> = pairs.into_iter().map(|(_, p)| p).collect();
            (events, texts)
        };
        for _ in 0..10 {
            let (events, _) = next(batch);
            worker.analyze(&events).await?;
        }
        let inputs: Vec<_> = (0..rounds).map(|_| next(batch)).collect();
        let started = Instant::now();
        let mut writes = 0;
        for (events, texts) in &inputs {
            let out = worker.analyze(events).await?;
            writes += effects::resolve(&out.effects, texts, &caps).writes.len();
        }
        let per_event = started.elapsed().as_nanos() as f64 / (rounds * batch) as f64;
        println!(
            "{name:>13} batch {batch:>3}: {per_event:>8.0} ns/event ({:>7.0} events/s), {:.3} writes/event",
            1e9 / per_event,
            writes as f64 / (rounds * batch) as f64
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    // Prices drift up and down so a share of ticks are new highs or lows.
    let quote = |n: usize| {
        let sym = format!("S{}", n % 500);
        let wobble = ((n * 7919) % 200) as f64 / 100.0;
        let payload = format!(
            r#"{{"symbol":"{sym}","volume":100,"accumulated_volume":{n},"open":10.0,"close":{c},"high":{h},"low":{l},"vwap":10.0,"start_timestamp":1773064799000,"end_timestamp":1773064800000}}"#,
            c = 10.0 + wobble,
            h = 10.5 + wobble,
            l = 9.5 + wobble,
        );
        (format!("quote:{sym}"), payload)
    };
    for name in ["daily-range", "daily-range-py"] {
        bench(&runtime, name, &quote).await?;
    }
    let article = |n: usize| {
        let payload = if n.is_multiple_of(2) {
            format!(
                r#"{{"link":"https://x/{n}","title":"Deal {n}","summary":"s","companies":[{{"companyId":1,"name":"A","ticker":"AAPL","primaryListing":{{"ticker":"AAPL","exchangeCode":"XNAS"}}}},{{"companyId":2,"name":"S","ticker":"SAP","primaryListing":{{"ticker":"SAP","exchangeCode":"XETR"}}}}]}}"#
            )
        } else {
            format!(
                r#"{{"link":"https://x/{n}","title":"Atos (Nasdaq: ATOS) and GM (NYSE:GM)","summary":"raw article {n} with no entities"}}"#
            )
        };
        ("news".to_string(), payload)
    };
    for name in ["news-feed", "news-feed-py", "news-feed-js"] {
        bench(&runtime, name, &article).await?;
    }
    Ok(())
}
