//! Reference data prefetched once per new symbol, and the seed's key layout
//! with the market-data and widget caches apart.

use super::*;

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
        aggs.push(Bytes::from(bar(sym, price, 5000, now_ms)));
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
