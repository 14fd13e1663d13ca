//! The scanner role (pub/sub → analyzer → store) on both store backends, and
//! the reference-data cache-aside layer against the simulator's REST API and
//! a misbehaving one.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mdp::plugin::manifest::Manifest;
use mdp::plugin::{
    FixedClock, HostServices, LiveWorker, LoadOptions, Plugin, PluginSlot, ReferenceData,
    ReferenceFault, Runtime, RuntimeConfig, StoreReference,
};
use mdp::refdata::{MassiveReference, MassiveRestConfig};
use mdp::scan::{Scanner, ScannerConfig};
use mdp::store::{EmbeddedStore, Store, Topic, Write};

async fn tagger(store: &Arc<dyn Store>) -> LiveWorker {
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store.clone())),
        clock: Arc::new(FixedClock::new(0)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(support::plugin_wasm("tagger")).unwrap(),
        LoadOptions::default(),
        &services,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tagger.toml");
    std::fs::write(&path, "name = \"tagger\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"quote:*\"]\n[capabilities]\nkey_prefixes = [\"tagged\", \"tagger:\"]\n[config]\ngeneration = \"s\"\n").unwrap();
    LiveWorker::new(
        PluginSlot::fixed(plugin, Manifest::load(&path).unwrap()),
        services,
    )
    .unwrap()
}

async fn scanner_handles_pattern_messages_without_idle_delay(store: Arc<dyn Store>) {
    let prefix = support::unique("s");
    let config = ScannerConfig {
        topics: vec![Topic::Pattern(format!("{prefix}quote:*"))],
        ..ScannerConfig::default()
    };
    let mut scanner = Scanner::new(config, store.clone(), tagger(&store).await);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { scanner.run(rx).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publish = |i: usize| Write::Publish {
        channel: format!("{prefix}quote:S{}", i % 3),
        message: format!("{{\"id\":{i}}}").into(),
    };
    store
        .apply(&(0..50).map(publish).collect::<Vec<_>>(), false)
        .await
        .unwrap();
    let wait = |n: usize| {
        let store = store.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.lrange("tagged", 0, -1).await.unwrap().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "scanner did not process {n} messages"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait(50).await;
    // After a quiet period the next message is handled at once (the seed
    // could wait up to 60 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = Instant::now();
    store.apply(&[publish(50)], false).await.unwrap();
    wait(51).await;
    let latency = sent.elapsed();
    assert!(
        latency < Duration::from_millis(500),
        "took {latency:?} after a quiet period"
    );
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processed, 51);
    store
        .apply(
            &[Write::Del {
                keys: vec!["tagged".into(), "tagger:seen".into()],
            }],
            false,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn embedded_scanner() {
    scanner_handles_pattern_messages_without_idle_delay(Arc::new(EmbeddedStore::new())).await;
}

#[tokio::test]
async fn redis_scanner() {
    let store = mdp::store::open(&support::redis_url()).await.unwrap();
    scanner_handles_pattern_messages_without_idle_delay(store).await;
}

fn rest(base_url: String) -> MassiveRestConfig {
    MassiveRestConfig {
        base_url,
        api_key: "sim".into(),
        timeout: Duration::from_millis(500),
        attempts: 3,
    }
}

#[tokio::test]
async fn reference_data_is_cached_with_negative_entries_honoured() {
    let sim = mdp::sim::start(mdp::sim::SimConfig {
        symbols: 50,
        ..Default::default()
    })
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let r = MassiveReference::new(rest(sim.rest_url()), store.clone()).unwrap();
    let snap = r
        .ticker_snapshot("AAA")
        .await
        .unwrap()
        .expect("known ticker");
    let v: serde_json::Value = serde_json::from_str(&snap).unwrap();
    assert_eq!(v["ticker"], "AAA");
    assert!(v["prevDay"]["c"].as_f64().unwrap() > 0.0);
    assert!(r.avg_volume("AAA").await.unwrap() > 0.0);
    assert!(r.free_float("AAA").await.unwrap() > 0.0);
    let ttl = store.ttl("mdc:snapshots:AAA").await.unwrap().unwrap();
    assert!(
        (28_790..=28_800).contains(&ttl),
        "snapshot TTL 8 h, got {ttl}"
    );
    let calls = r.calls();
    // Cached: no more REST calls.
    r.ticker_snapshot("AAA").await.unwrap();
    r.avg_volume("AAA").await.unwrap();
    assert_eq!(r.calls(), calls);
    // An unknown ticker is cached negatively, and the negative entry is honoured
    // (the seed read a cached 0 as a miss and called the API every time).
    assert_eq!(r.ticker_snapshot("NOPE").await.unwrap(), None);
    assert_eq!(r.free_float("NOPE").await.unwrap(), 0.0);
    let after_misses = r.calls();
    for _ in 0..5 {
        assert_eq!(r.ticker_snapshot("NOPE").await.unwrap(), None);
        assert_eq!(r.free_float("NOPE").await.unwrap(), 0.0);
    }
    assert_eq!(
        r.calls(),
        after_misses,
        "negative entries suppress repeat calls"
    );
    let ttl = store.ttl("mdc:free_float:NOPE").await.unwrap().unwrap();
    assert!(
        (21_590..=21_600).contains(&ttl),
        "negative TTL 6 h, got {ttl}"
    );
    let status = r.market_now().await.unwrap();
    let _ = status.market;
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch() {
    let sim = mdp::sim::start(mdp::sim::SimConfig {
        symbols: 50,
        ..Default::default()
    })
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let r = Arc::new(MassiveReference::new(rest(sim.rest_url()), store).unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.free_float("AAB").await.unwrap() })
        })
        .collect();
    let values: Vec<f64> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|v| v.unwrap())
        .collect();
    assert!(values.iter().all(|v| *v == values[0] && *v > 0.0));
    assert_eq!(r.calls(), 1, "20 concurrent callers, one REST call");
}

/// A REST API that answers 429 (with Retry-After) and 500 before it answers,
/// and one that times out or returns garbage.
#[tokio::test]
async fn retries_rate_limits_and_reports_garbage_and_timeouts() {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let app = axum::Router::new()
        .route(
            "/stocks/vX/float",
            axum::routing::get(move || {
                let h = h.clone();
                async move {
                    match h.fetch_add(1, Ordering::SeqCst) {
                        0 => (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "0")],
                            "slow down",
                        )
                            .into_response(),
                        1 => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
                        _ => axum::Json(serde_json::json!({"results": [{"free_float": 1234.0}]}))
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/v2/snapshot/locale/us/markets/stocks/tickers/{t}",
            axum::routing::get(|| async { "this is not json" }),
        )
        .route(
            "/v1/marketstatus/now",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let r = MassiveReference::new(rest(format!("http://{addr}")), store).unwrap();
    assert_eq!(r.free_float("X").await.unwrap(), 1234.0);
    assert_eq!(hits.load(Ordering::SeqCst), 3, "429 and 500 were retried");
    assert!(matches!(
        r.ticker_snapshot("X").await,
        Err(ReferenceFault::Invalid(_))
    ));
    let started = Instant::now();
    assert!(matches!(
        r.market_now().await,
        Err(ReferenceFault::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeouts bound the wait"
    );
}
