//! Output caps and logging: effect floods, input bodies counted at their
//! size, counter-name floods, rejects logged once per batch, bounded stderr.

use super::*;

/// A plugin returning 200,000 effects for one event: that event is rejected
/// naming the cap, the others are served, and so are other plugins.
#[tokio::test]
async fn an_effect_flood_is_a_fault_of_the_flooding_event() {
    let rt = runtime();
    // Time enough to build them on a loaded machine: the cap is the point.
    let limits = Limits {
        deadline_base: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut worker = hostile(&rt, "effect-flood", &[], limits).await;
    let texts = [trade("A"), trade("FLOOD"), trade("B")];
    let out = worker
        .analyze_texts(&events(&texts), &shared(&texts))
        .await
        .expect("the batch survives");
    assert_eq!(puts(&out), vec!["echo:A", "echo:B"]);
    let rejects = rejects(&out);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].0, 1);
    assert!(
        rejects[0].1.contains("output cap") && rejects[0].1.contains("max_effects = 100000"),
        "{}",
        rejects[0].1
    );
    others_keep_serving(&rt).await;
}

/// Few effects, each repeating a large input: the resolved bytes are what
/// `max_output_mib` caps.
#[tokio::test]
async fn input_bodies_count_towards_the_output_cap_at_their_size() {
    let rt = runtime();
    let limits = Limits {
        max_output_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut worker = hostile(&rt, "effect-flood", &[("count", "500")], limits).await;
    let pad = "x".repeat(4096);
    let big = format!(
        r#"{{"event_type":"T","symbol":"FLOOD","price":1.5,"size":10,"timestamp":1,"pad":"{pad}"}}"#
    );
    let texts = [trade("A"), big];
    let out = worker
        .analyze_texts(&events(&texts), &shared(&texts))
        .await
        .expect("the batch survives");
    assert_eq!(puts(&out), vec!["echo:A"]);
    let rejects = rejects(&out);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0].1.contains("max_output_mib = 1"),
        "{}",
        rejects[0].1
    );
}

// ---------------------------------------------------------------------------
// 3. Wall-clock budget and the plugin's clocks

/// Log lines written while the guard lives (this thread only; the tests
/// run on a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

/// Counter names become Prometheus label values that are never freed: a
/// plugin inventing a name per event keeps 64, the rest (and badly formed
/// ones) are dropped, counted in one metric and logged once.
#[tokio::test]
async fn a_counter_flood_keeps_64_names_and_says_so_once() {
    let metrics = mdp::telemetry::metrics_handle();
    let (log, _guard) = Captured::start();
    let rt = runtime();
    let mut worker = hostile(&rt, "counter-flood", &[], Limits::default()).await;
    for batch in 0..3 {
        let texts: Vec<String> = (0..50).map(|i| trade(&format!("S{batch}_{i}"))).collect();
        let out = worker.analyze(&events(&texts)).await.expect("batch");
        assert!(out.faults.is_empty());
        assert_eq!(puts(&out).len(), 50, "the plugin keeps serving");
    }
    let names = worker.counters();
    assert_eq!(
        names.len(),
        mdp::plugin::share::MAX_COUNTER_NAMES,
        "{names:?}"
    );
    assert!(
        names
            .keys()
            .all(|n| mdp::plugin::share::valid_counter_name(n))
    );
    assert_eq!(log.lines_with("mdp_plugin_counter_overflow_total"), 1);
    let text = metrics.render();
    let exported = text
        .lines()
        .filter(|l| l.starts_with("mdp_plugin_counter_total{") && l.contains("plugin=\"hostile\""))
        .count();
    assert!(
        exported <= mdp::plugin::share::MAX_COUNTER_NAMES,
        "{exported}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("mdp_plugin_counter_overflow_total{")
                && l.contains("plugin=\"hostile\"")),
        "overflow metric missing"
    );
}

/// Rejected poison events are logged as one line per batch with a count,
/// not one line each.
#[tokio::test]
async fn rejects_are_logged_once_per_batch() {
    let (log, _guard) = Captured::start();
    let rt = runtime();
    let mut worker = hostile(&rt, "trap", &[], Limits::default()).await;
    let texts: Vec<String> = (0..8)
        .map(|i| trade(if i % 3 == 0 { "POISON" } else { "OK" }))
        .collect();
    let out = worker.analyze(&events(&texts)).await.expect("batch");
    assert_eq!(rejects(&out).len(), 3);
    assert_eq!(log.lines_with("poison events rejected"), 1);
    assert_eq!(log.lines_with("count=3"), 1);
}

/// The stderr kept for trap reports was a 64 KiB buffer never cleared, so a
/// chatty plugin trapped once it filled: now it keeps the tail of each call.
#[tokio::test]
async fn a_chatty_plugin_never_fills_its_stderr() {
    let rt = runtime();
    let mut worker = hostile(&rt, "stderr-flood", &[], Limits::default()).await;
    // 4 KiB per event: 160 KiB over the batches, 40 KiB in the last.
    for n in 0..4 {
        let texts: Vec<String> = (0..10).map(|i| trade(&format!("S{n}_{i}"))).collect();
        let out = worker.analyze(&events(&texts)).await.expect("batch");
        assert!(out.faults.is_empty(), "batch {n}: {:?}", out.faults);
        assert_eq!(puts(&out).len(), 10);
    }
    let texts: Vec<String> = (0..20).map(|i| trade(&format!("B{i}"))).collect();
    let out = worker.analyze(&events(&texts)).await.expect("batch");
    assert!(out.faults.is_empty(), "{:?}", out.faults);
}

// ---------------------------------------------------------------------------
// 8. Memory and the instance pool
//
// (A Rust guest cannot make a component with several linear memories: the
// test below builds one with wasm-encoder and instantiates it under the
// limiter instances use.)
