//! Probation: a store error is not the plugin's fault, and a plugin failing
//! every event costs a bounded number of calls.

use super::*;

/// The embedded store, whose reads fail while `down` is set (a Redis blip).
struct FlakyStore {
    inner: EmbeddedStore,
    down: std::sync::atomic::AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> mdp::store::StoreResult<()> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(mdp::store::StoreError::Unavailable(
                "connection reset".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn apply(
        &self,
        writes: &[mdp::store::Write],
        atomic: bool,
    ) -> mdp::store::StoreResult<()> {
        self.check()?;
        self.inner.apply(writes, atomic).await
    }
    async fn get(&self, key: &str) -> mdp::store::StoreResult<Option<String>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> mdp::store::StoreResult<Vec<Option<String>>> {
        self.check()?;
        self.inner.get_many(keys).await
    }
    async fn ztop(&self, key: &str, n: u32) -> mdp::store::StoreResult<Vec<(String, f64)>> {
        self.inner.ztop(key, n).await
    }
    async fn hgetall(&self, key: &str) -> mdp::store::StoreResult<Vec<(String, String)>> {
        self.inner.hgetall(key).await
    }
    async fn lrange(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> mdp::store::StoreResult<Vec<String>> {
        self.inner.lrange(key, start, stop).await
    }
    async fn set_nx_px(
        &self,
        key: &str,
        value: &str,
        ttl_ms: u64,
    ) -> mdp::store::StoreResult<bool> {
        self.inner.set_nx_px(key, value, ttl_ms).await
    }
    async fn del_if_eq(&self, key: &str, value: &str) -> mdp::store::StoreResult<bool> {
        self.inner.del_if_eq(key, value).await
    }
    async fn scan_prefix(&self, prefix: &str) -> mdp::store::StoreResult<Vec<String>> {
        self.inner.scan_prefix(prefix).await
    }
    async fn ttl(&self, key: &str) -> mdp::store::StoreResult<Option<u64>> {
        self.inner.ttl(key).await
    }
    async fn subscribe(
        &self,
        topics: &[mdp::store::Topic],
    ) -> mdp::store::StoreResult<mdp::store::Subscription> {
        self.inner.subscribe(topics).await
    }
}

/// A new generation whose batch meets a store error during probation is
/// neither rolled back nor marked bad; it keeps serving when the store is back.
#[tokio::test]
async fn a_store_error_during_probation_does_not_roll_back() {
    let flaky = Arc::new(FlakyStore {
        inner: EmbeddedStore::new(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let services = services_over(flaky.clone());
    let manifest = |mode: &str| {
        format!(
            "{HOSTILE}[capabilities]\nkey_prefixes = [\"echo:\"]\n[config]\nmode = \"{mode}\"\n"
        )
    };
    let dir = plugin_dir_with_hostile(&manifest("trap"));
    let registry = Registry::open(runtime(), services.clone(), dir.path())
        .await
        .unwrap();
    let slot = registry.slot("hostile").unwrap();
    let mut live = mdp::plugin::LiveWorker::new(slot.clone(), services).unwrap();
    let batch = events(&[trade("A")]);
    live.analyze(&batch).await.expect("generation 1 serves");

    // Generation 2 reads the cache; the store goes down during its probation.
    std::fs::write(dir.path().join("hostile.toml"), manifest("read")).unwrap();
    assert_eq!(
        registry.load("hostile").await,
        mdp::plugin::LoadOutcome::Published(2)
    );
    live.refresh().await.unwrap();
    flaky.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = live.analyze(&batch).await.expect_err("the store is down");
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(
        slot.rollbacks(),
        0,
        "a store blip is not the plugin's fault"
    );
    assert_eq!(slot.current().unwrap().number, 2);
    assert_eq!(live.generation(), 2);

    flaky
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    live.analyze(&batch).await.expect("generation 2 serves");
    assert_eq!(live.generation(), 2);
    assert_eq!(slot.rollbacks(), 0);
}

// ---------------------------------------------------------------------------
// 6. The poison isolation budget

/// A plugin that fails on every event: bisecting a 256-event batch would
/// cost 511 calls (26 s at a 50 ms deadline). The isolation stops at its
/// budget and the breaker opens, so the batch is requeued for later.
#[tokio::test]
async fn a_plugin_failing_every_event_costs_a_bounded_number_of_calls() {
    let rt = runtime();
    let texts: Vec<String> = (0..256).map(|_| trade("POISON")).collect();
    let mut worker = hostile(&rt, "trap", &[], Limits::default()).await;
    let err = worker
        .analyze(&events(&texts))
        .await
        .expect_err("isolation gives up");
    assert!(
        matches!(err, mdp::plugin::BatchError::Isolation(_)),
        "{err}"
    );
    assert!(err.to_string().contains("isolation_calls"), "{err}");
    let calls = worker.calls();
    assert!(
        calls <= 2 + mdp::plugin::DEFAULT_ISOLATION_CALLS as u64,
        "{calls} calls"
    );

    // Through a live worker, the breaker opens: the processor requeues the
    // batch and waits, as for any open breaker.
    let dir = plugin_dir_with_hostile(&format!("{HOSTILE}[limits]\nisolation_calls = 8\n"));
    let registry = Registry::open(runtime(), services(), dir.path())
        .await
        .unwrap();
    let slot = registry.slot("hostile").unwrap();
    let mut live = mdp::plugin::LiveWorker::new(slot, services()).unwrap();
    match live.analyze(&events(&texts)).await {
        Err(mdp::plugin::LiveError::CircuitOpen { wait, .. }) => {
            assert!(wait >= Duration::from_secs(1))
        }
        other => panic!("expected an open breaker, got {other:?}"),
    }
    // A batch with one poison event is still isolated within the budget.
    let mut worker = hostile(&rt, "trap", &[], Limits::default()).await;
    let mut texts: Vec<String> = (0..255).map(|i| trade(&format!("S{i}"))).collect();
    texts.insert(100, trade("POISON"));
    let out = worker.analyze(&events(&texts)).await.expect("isolated");
    assert_eq!(rejects(&out).len(), 1);
    assert_eq!(puts(&out).len(), 255);
}

// ---------------------------------------------------------------------------
// 4. Floods: counters, log lines, stderr
