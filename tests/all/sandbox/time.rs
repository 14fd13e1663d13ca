//! Time: the wall-clock budget stops a plugin looping in a slow import; WASI
//! clocks are the host's and sleeps do not wait.

use super::*;

/// Reference data that takes 200 ms per answer (a slow REST API).
struct SlowReference;

#[async_trait::async_trait]
impl mdp::plugin::ReferenceData for SlowReference {
    async fn ticker_snapshot(
        &self,
        _symbol: &str,
    ) -> Result<Option<String>, mdp::plugin::ReferenceFault> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(None)
    }
    async fn avg_volume(&self, _symbol: &str) -> Result<f64, mdp::plugin::ReferenceFault> {
        Ok(0.0)
    }
    async fn free_float(&self, _symbol: &str) -> Result<f64, mdp::plugin::ReferenceFault> {
        Ok(0.0)
    }
    async fn market_now(
        &self,
    ) -> Result<mdp::plugin::bindings::MarketStatus, mdp::plugin::ReferenceFault> {
        Err(mdp::plugin::ReferenceFault::Unavailable("not here".into()))
    }
}

/// Time in host imports is not Wasm execution, so the epoch deadline never
/// fires on a plugin that keeps calling a slow import: the wall-clock budget
/// does, and the event is rejected naming it.
#[tokio::test]
async fn a_plugin_looping_in_a_slow_import_is_stopped_by_the_wall_clock_budget() {
    let rt = runtime();
    let mut services = services();
    services.reference = Arc::new(SlowReference);
    let limits = Limits {
        wall_budget: Duration::from_millis(600),
        ..Limits::default()
    };
    let mut worker = hostile_with(&rt, services, "slow-import", &[], limits).await;
    let texts = [trade("A"), trade("SLEEP"), trade("B")];
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), worker.analyze(&events(&texts)))
        .await
        .expect("the call is bounded")
        .expect("the batch survives");
    // Four calls meet the sleeper (first try, retry, two bisection steps).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(puts(&out), vec!["echo:A", "echo:B"]);
    let rejects = rejects(&out);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0].1.contains("wall-clock budget of 600ms"),
        "{}",
        rejects[0].1
    );
    others_keep_serving(&rt).await;
}

/// WASI's clocks are the host's (fixed in tests) and a WASI sleep does not
/// wait: an hour's sleep returns at once, and the monotonic clock does not
/// move over it.
#[tokio::test]
async fn wasi_clocks_are_the_hosts_and_sleeps_do_not_wait() {
    let rt = runtime();
    let mut worker = hostile(&rt, "wasi-sleep", &[], Limits::default()).await;
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        worker.analyze(&events(&[trade("SLEEP")])),
    )
    .await
    .expect("a WASI sleep does not wait in real time")
    .expect("batch");
    assert_eq!(puts(&out), vec!["echo:SLEEP"]);
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut worker = hostile(&rt, "clock", &[], Limits::default()).await;
    let out = worker.analyze(&events(&[trade("T")])).await.expect("batch");
    let value = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Put(p) if p.key == "hostile:clock" => Some(format!("{:?}", p.value)),
            _ => None,
        })
        .expect("clock reported");
    assert!(
        value.contains(r#"\"wall_us\":1767225600000000,\"slept_us\":0"#),
        "{value}"
    );
}

// ---------------------------------------------------------------------------
// 7. Default capabilities
