//! The daily-range and news-feed analyzers through the real Wasm runtime:
//! their golden files (the same ones `cargo test -p daily-range` and
//! `cargo test -p news-feed` run natively), the manifests' capabilities
//! against every effect those files expect, and daily-range as the `quote:*`
//! scanner end to end on the embedded store and on Redis, and news-feed as
//! the `news` processor on the embedded backends and on RabbitMQ + Redis.

use crate::support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdp::plugin::manifest::Manifest;
use mdp::plugin::{
    FixedClock, HostServices, LiveWorker, Plugin, PluginSlot, ReferenceData, Runtime,
    RuntimeConfig, StoreReference, golden,
};
use mdp::scan::{Scanner, ScannerConfig};
use mdp::store::{EmbeddedStore, Store, Topic, Write};
use mdp_sdk::wire::{EffectRecord, Golden};

/// Reference data of an empty store: the market open, nothing else known.
fn open_market() -> Arc<dyn ReferenceData> {
    Arc::new(StoreReference::new(Arc::new(EmbeddedStore::new())))
}

const PLUGINS: [&str; 2] = ["daily-range", "news-feed"];

fn golden_files(plugin: &str) -> Vec<PathBuf> {
    let dir = support::repo_root()
        .join("plugins")
        .join(plugin)
        .join("golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{plugin} has golden files");
    files
}

fn manifest(plugin: &str) -> Manifest {
    Manifest::load(
        &support::repo_root()
            .join("plugins")
            .join(plugin)
            .join(format!("{plugin}.toml")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_pass_through_the_wasm_runtime() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    for plugin in PLUGINS {
        let wasm = support::plugin_wasm(plugin);
        for file in golden_files(plugin) {
            golden::check(&runtime, &wasm, &file)
                .await
                .unwrap_or_else(|e| panic!("{plugin} {}: {e}", file.display()));
        }
    }
}

#[test]
fn manifests_allow_every_effect_their_golden_files_expect() {
    for plugin in PLUGINS {
        let m = manifest(plugin);
        assert_eq!(m.name, plugin);
        let caps = m.load_options().capabilities;
        let golden_path = m.golden_path().expect("manifest names a golden file");
        assert!(golden_path.exists(), "{}", golden_path.display());
        let mut checked = 0;
        for file in golden_files(plugin) {
            let g = Golden::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
            for effect in g.steps.iter().flat_map(|s| &s.effects) {
                let denied = match effect {
                    EffectRecord::Put { key, .. } | EffectRecord::Push { key, .. } => {
                        caps.check_key(key).err()
                    }
                    EffectRecord::Publish { channel, .. } => caps.check_channel(channel).err(),
                    EffectRecord::Del { keys } => keys.iter().find_map(|k| caps.check_key(k).err()),
                    _ => None,
                };
                assert!(denied.is_none(), "{plugin}: {effect:?} refused: {denied:?}");
                checked += 1;
            }
        }
        assert!(checked > 10, "{plugin}: {checked} effects checked");
    }
}

/// Poll `f` until it returns `Some` (a generous bound against hangs, not a timing assertion).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn daily_range_scans_quote_channels(store: Arc<dyn Store>) {
    // Monday 2026-03-09 10:00 EDT.
    let services = HostServices {
        store: store.clone(),
        reference: open_market(),
        clock: Arc::new(FixedClock::new(1_773_064_800_000_000)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let m = manifest("daily-range");
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(support::plugin_wasm("daily-range")).unwrap(),
        m.load_options(),
        &services,
    )
    .await
    .unwrap();
    let worker = LiveWorker::new(PluginSlot::fixed(plugin, m), services).unwrap();
    let config = ScannerConfig {
        topics: vec![Topic::Pattern("quote:*".into())],
        ..ScannerConfig::default()
    };
    let mut scanner = Scanner::new(config, store.clone(), worker);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { scanner.run(rx).await.unwrap() });

    let sym = support::unique("S");
    let key = format!("daily_range:{sym}");
    let tick = |high: f64, low: f64| {
        Write::Publish {
        channel: format!("quote:{sym}"),
        message: format!(
            r#"{{"symbol":"{sym}","close":{high},"high":{high},"low":{low},"end_timestamp":1773064800500}}"#
        )
        .into(),
    }
    };
    // The same first print until the subscription is up: equal prints never alert.
    let first = eventually("the first print is scanned", || {
        let (store, key, w) = (store.clone(), key.clone(), tick(10.0, 9.0));
        async move {
            store.apply(&[w], false).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.get(&key).await.unwrap()
        }
    })
    .await;
    let state: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(state["regular_session_high"], 10.0);
    assert!(state["pre_market_high"].is_null());

    store.apply(&[tick(10.5, 8.5)], false).await.unwrap();
    let mine = |entries: Vec<String>| {
        entries
            .into_iter()
            .filter(|e| e.contains(&format!("\"symbol\":\"{sym}\"")))
            .collect::<Vec<_>>()
    };
    let hod = eventually("a new high alert", || {
        let store = store.clone();
        async move {
            let l = mine(store.lrange("daily_range_hod_alert", 0, -1).await.unwrap());
            (!l.is_empty()).then_some(l)
        }
    })
    .await;
    let alert: serde_json::Value = serde_json::from_str(&hod[0]).unwrap();
    assert_eq!(alert["session"], "regular");
    assert_eq!(alert["price"], 10.5);
    assert_eq!(alert["previous"], 10.0);
    assert_eq!(alert["timestamp"], 1_773_064_800.5);
    let lod = mine(store.lrange("daily_range_lod_alert", 0, -1).await.unwrap());
    assert_eq!(lod.len(), 1, "one new low: {lod:?}");
    let state: serde_json::Value =
        serde_json::from_str(&store.get(&key).await.unwrap().unwrap()).unwrap();
    assert_eq!(state["regular_session_low"], 8.5);

    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert!(stats.processed >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_daily_range_scanner() {
    daily_range_scans_quote_channels(Arc::new(EmbeddedStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_daily_range_scanner() {
    let store = mdp::store::open(&support::redis_url()).await.unwrap();
    daily_range_scans_quote_channels(store).await;
}

/// news-feed as `mdp process` on the `news` queue: articles land on the
/// global list and on their tickers' lists with the seed's TTLs, newest first.
async fn news_feed_processes_the_news_queue(
    queue: Arc<dyn mdp::queue::Queue>,
    store: Arc<dyn Store>,
) {
    use bytes::Bytes;
    use mdp::process::{Processor, ProcessorConfig};
    use mdp::queue::QueueSpec;

    let run = support::unique("n");
    let q = format!("{run}-news");
    queue
        .declare(&QueueSpec {
            name: q.clone(),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    // A ticker unique to this run: six letters, as exchange tags allow.
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let ticker: String = (0..6)
        .map(|_| {
            let c = char::from(b'A' + (n % 26) as u8);
            n /= 26;
            c
        })
        .collect();
    let articles = [
        format!(
            r#"{{"link":"{run}/1","title":"Deal","summary":"","companies":[{{"ticker":"{t}","primaryListing":{{"ticker":"{t}","exchangeCode":"XNAS"}}}},{{"ticker":"SAP","primaryListing":{{"ticker":"SAP","exchangeCode":"XETR"}}}}]}}"#,
            t = ticker.to_lowercase()
        ),
        format!(r#"{{"link":"{run}/2","title":"Markets","summary":"nothing tagged"}}"#),
        format!(r#"{{"link":"{run}/3","title":"More (NYSE: {ticker})","summary":""}}"#),
    ];
    let bodies: Vec<Bytes> = articles.iter().map(|a| Bytes::from(a.clone())).collect();
    queue.publish(&q, &bodies).await.unwrap();

    let services = HostServices {
        store: store.clone(),
        reference: open_market(),
        clock: Arc::new(FixedClock::new(1_773_064_800_000_000)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let m = manifest("news-feed");
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(support::plugin_wasm("news-feed")).unwrap(),
        m.load_options(),
        &services,
    )
    .await
    .unwrap();
    let worker = LiveWorker::new(PluginSlot::fixed(plugin, m), services).unwrap();
    let config = ProcessorConfig {
        queue: q.clone(),
        ..ProcessorConfig::default()
    };
    let mut processor = Processor::new(config, queue.clone(), store.clone(), worker);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { processor.run(rx).await.unwrap() });

    let links = |entries: Vec<String>| -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .filter_map(|v| v["link"].as_str().map(str::to_string))
            .filter(|l| l.starts_with(&run))
            .collect()
    };
    let feed = eventually("all three articles on the feed", || {
        let store = store.clone();
        let links = &links;
        async move {
            let l = links(store.lrange("news:feed:latest", 0, -1).await.unwrap());
            (l.len() == 3).then_some(l)
        }
    })
    .await;
    assert_eq!(
        feed,
        [3, 2, 1].map(|n| format!("{run}/{n}")),
        "newest first"
    );
    let ticker_key = format!("news:ticker:{ticker}");
    let on_ticker = links(store.lrange(&ticker_key, 0, -1).await.unwrap());
    assert_eq!(on_ticker, [3, 1].map(|n| format!("{run}/{n}")));
    let ttl = store
        .ttl(&ticker_key)
        .await
        .unwrap()
        .expect("ticker list expires");
    assert!((604_000..=604_800).contains(&ttl), "ttl {ttl}");
    let ttl = store
        .ttl("news:feed:latest")
        .await
        .unwrap()
        .expect("feed expires");
    assert!((172_000..=172_800).contains(&ttl), "ttl {ttl}");
    // The article is stored byte for byte as it was queued.
    let stored = store.lrange(&ticker_key, -1, -1).await.unwrap();
    assert_eq!(stored, vec![articles[0].clone()]);

    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_news_feed_processor() {
    news_feed_processes_the_news_queue(
        Arc::new(mdp::queue::EmbeddedQueue::new()),
        Arc::new(EmbeddedStore::new()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_news_feed_processor() {
    news_feed_processes_the_news_queue(
        mdp::queue::open(&support::amqp_url()).await.unwrap(),
        mdp::store::open(&support::redis_url()).await.unwrap(),
    )
    .await;
}

/// A hot reload hands daily-range's state to the next instance through the
/// Wasm `snapshot` export: the new instance alerts against the old highs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_range_state_survives_a_snapshot_handover() {
    use mdp::plugin::{Worker, convert};
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store: store.clone(),
        reference: open_market(),
        clock: Arc::new(FixedClock::new(1_773_064_800_000_000)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(support::plugin_wasm("daily-range")).unwrap(),
        manifest("daily-range").load_options(),
        &services,
    )
    .await
    .unwrap();
    let tick = |high: f64| {
        convert::pubsub(
            "quote:AAPL",
            &format!(r#"{{"symbol":"AAPL","high":{high},"low":9.0}}"#),
        )
    };
    let alerts = |out: &mdp::plugin::BatchOutput| {
        out.effects
            .iter()
            .filter(|e| mdp::plugin::effects::kind(e) == "push")
            .count()
    };
    let mut old = Worker::new(plugin.clone(), services.clone(), vec![]);
    old.start().await.unwrap();
    let out = old.analyze(&[tick(10.0)]).await.unwrap();
    assert_eq!(alerts(&out), 0, "first print");
    let state = old.snapshot().await;
    assert!(!state.is_empty());

    let mut new = Worker::new(plugin.clone(), services.clone(), vec![]);
    new.hand_over(state);
    new.start().await.unwrap();
    let out = new.analyze(&[tick(10.0), tick(10.5)]).await.unwrap();
    assert_eq!(alerts(&out), 1, "10.5 beats the handed-over 10.0");

    // Without the state (and nothing stored yet: effects were not applied),
    // a fresh instance sees a first print again.
    let mut cold = Worker::new(plugin, services, vec![]);
    cold.start().await.unwrap();
    let out = cold.analyze(&[tick(10.5)]).await.unwrap();
    assert_eq!(alerts(&out), 0);
}
