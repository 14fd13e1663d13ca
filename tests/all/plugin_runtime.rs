//! The plugin runtime against real components: the router's seed behaviour,
//! golden files through Wasm, and hostile plugins (loops, memory bombs, traps,
//! wrong worlds, broken files) that must not hurt the host.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mdp::plugin::bindings::{Body, Effect};
use mdp::plugin::{
    BatchError, Capabilities, HostServices, Limits, LoadOptions, Plugin, PluginError, Runtime,
    RuntimeConfig, Worker, effects, golden,
};
use mdp_sdk::wire::EffectRecord;

fn services() -> HostServices {
    support::embedded_services(1_767_225_600_000_000)
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

async fn load(name: &str, limits: Limits) -> Result<Arc<Plugin>, PluginError> {
    let bytes = std::fs::read(support::plugin_wasm(name)).expect("read plugin");
    let options = LoadOptions {
        name: None,
        limits,
        capabilities: Capabilities::unrestricted(),
        ..LoadOptions::default()
    };
    Plugin::load(&runtime(), bytes, options, &services()).await
}

use support::{decode_all as batch, trade_json as trade};

/// Run `texts` through a `hostile` worker in `mode`; return the effect records.
async fn hostile(mode: &str, texts: &[String], limits: Limits) -> (Worker, Vec<EffectRecord>) {
    let mut worker = hostile_worker(mode, limits).await;
    let records = analyze_records(&mut worker, texts).await;
    (worker, records)
}

/// A worker of the `hostile` fixture in `mode`.
async fn hostile_worker(mode: &str, limits: Limits) -> Worker {
    let plugin = load("hostile", limits).await.expect("load hostile");
    Worker::new(plugin, services(), vec![("mode".into(), mode.into())])
}

/// One batch of `texts` through `worker`, its effects as records.
async fn analyze_records(worker: &mut Worker, texts: &[String]) -> Vec<EffectRecord> {
    let out = worker.analyze(&batch(texts)).await.expect("batch survives");
    out.effects
        .iter()
        .map(|e| effects::record(e, texts))
        .collect()
}

fn echoed(records: &[EffectRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r {
            EffectRecord::Put { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

fn rejects(records: &[EffectRecord]) -> Vec<(u32, String)> {
    records
        .iter()
        .filter_map(|r| match r {
            EffectRecord::Reject { index, reason } => Some((*index, reason.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn router_golden_file_passes_through_wasm() {
    let golden_path = support::repo_root().join("plugins/massive-router/golden/seed-routes.json");
    golden::check(
        &runtime(),
        &support::plugin_wasm("massive-router"),
        &golden_path,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn router_describes_itself() {
    let plugin = load("massive-router", Limits::default())
        .await
        .expect("loads");
    assert_eq!(plugin.info.name, "massive-router");
    assert_eq!(
        plugin.info.consumes,
        vec!["trade", "quote", "aggregate", "luld", "other"]
    );
    assert_eq!(plugin.hash.len(), 64);
}

#[tokio::test]
async fn infinite_loop_is_interrupted_and_good_events_survive() {
    let texts = vec![trade("A"), trade("LOOP"), trade("B")];
    let limits = Limits {
        deadline_base: Duration::from_millis(30),
        ..Limits::default()
    };
    let mut worker = hostile_worker("loop", limits).await;
    let started = Instant::now();
    let records = analyze_records(&mut worker, &texts).await;
    // Three tries of the looping event at ~30 ms each plus instantiations
    // (timed from the first call: compiling the fixture is not the point).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(echoed(&records), vec!["echo:A", "echo:B"]);
    let rejects = rejects(&records);
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].0, 1);
    assert!(
        rejects[0].1.contains("deadline"),
        "reason: {}",
        rejects[0].1
    );
    // The worker is healthy afterwards.
    let more = vec![trade("C")];
    let out = worker.analyze(&batch(&more)).await.expect("next batch");
    assert!(out.faults.is_empty());
    assert_eq!(out.effects.len(), 1);
}

#[tokio::test]
async fn memory_bomb_hits_the_limit_with_a_named_cause() {
    let texts = vec![trade("A"), trade("BOMB"), trade("B")];
    let limits = Limits {
        memory_bytes: 16 << 20,
        // The memory limit must be what stops it: on a loaded machine the
        // default 50 ms deadline came first (seen in CI).
        deadline_base: Duration::from_secs(10),
        ..Limits::default()
    };
    let (_, records) = hostile("memory-bomb", &texts, limits).await;
    assert_eq!(echoed(&records), vec!["echo:A", "echo:B"]);
    let rejects = rejects(&records);
    assert_eq!(rejects.len(), 1, "{records:?}");
    assert_eq!(rejects[0].0, 1);
    assert!(
        rejects[0].1.contains("memory limit of 16 MiB"),
        "reason: {}",
        rejects[0].1
    );
}

#[tokio::test]
async fn trap_on_marked_events_rejects_only_them_with_the_panic_message() {
    let texts = vec![
        trade("A"),
        trade("POISON"),
        trade("B"),
        trade("POISON"),
        trade("C"),
    ];
    let (_, records) = hostile("trap", &texts, Limits::default()).await;
    assert_eq!(echoed(&records), vec!["echo:A", "echo:B", "echo:C"]);
    let rejects = rejects(&records);
    assert_eq!(rejects.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3]);
    assert!(
        rejects[0].1.contains("poison event at index 0"),
        "reason: {}",
        rejects[0].1
    );
    // Bodies of the survivors are their own inputs, re-indexed correctly.
    let value_of = |key: &str| {
        records.iter().find_map(|r| match r {
            EffectRecord::Put { key: k, value, .. } if k == key => Some(value.clone()),
            _ => None,
        })
    };
    assert_eq!(value_of("echo:C"), Some(texts[4].clone()));
}

#[tokio::test]
async fn init_trap_is_reported_not_panicked() {
    let plugin = load("hostile", Limits::default()).await.expect("load");
    let mut worker = Worker::new(
        plugin,
        services(),
        vec![("mode".into(), "init-trap".into())],
    );
    match worker.start().await {
        Err(BatchError::Start(reason)) => assert!(reason.contains("init"), "{reason}"),
        other => panic!("expected a start error, got {other:?}"),
    }
}

#[tokio::test]
async fn batches_larger_than_max_batch_are_cut_into_calls() {
    let plugin = load(
        "massive-router",
        Limits {
            max_batch: 2,
            ..Limits::default()
        },
    )
    .await
    .expect("load");
    let mut worker = Worker::new(plugin, services(), vec![]);
    let texts = vec![trade("A"), trade("B"), trade("C")];
    let out = worker
        .analyze(&batch(&texts))
        .await
        .expect("a batch over max_batch is cut, not refused");
    // Every event was analyzed, and the second call's input indexes point
    // at its events in the whole batch (2), not in its own call (0).
    let mut inputs: Vec<u32> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Put(p) => match p.value {
                Body::Input(i) => Some(i),
                _ => None,
            },
            _ => None,
        })
        .collect();
    inputs.sort();
    inputs.dedup();
    assert_eq!(inputs, vec![0, 1, 2], "{:?}", out.effects);
}

#[tokio::test]
async fn wrong_world_is_refused_naming_the_contract() {
    let err = load("wrong-world", Limits::default())
        .await
        .expect_err("must refuse");
    assert!(matches!(err, PluginError::WrongWorld(_)), "{err}");
    assert!(err.to_string().contains(mdp::plugin::WIT_VERSION), "{err}");
}

/// A plugin built against the frozen 1.0.0 WIT (before `host.input-json`)
/// loads and runs on this host: its `mdp:analyzer/host@1.0.0` imports are
/// served by the newer minor's definitions.
#[tokio::test]
async fn a_plugin_of_an_older_minor_still_runs() {
    assert_ne!(mdp::plugin::WIT_VERSION, "mdp:analyzer@1.0.0");
    let plugin = load("analyzer-v1-0", Limits::default())
        .await
        .expect("an older minor loads");
    let mut worker = Worker::new(plugin, services(), vec![]);
    let texts = vec![trade("AAPL"), trade("MSFT")];
    let out = worker.analyze(&batch(&texts)).await.expect("batch runs");
    assert!(out.faults.is_empty(), "{:?}", out.faults);
    let records: Vec<EffectRecord> = out
        .effects
        .iter()
        .map(|e| effects::record(e, &texts))
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        matches!(&records[1], EffectRecord::Publish { channel, value } if channel == "v1" && *value == texts[1])
    );
    assert!(
        matches!(&records[2], EffectRecord::Put { key, value, .. } if key == "v1:last" && value == "1767225600000000")
    );
    assert_eq!(worker.counters().get("v1.batches"), Some(&1));
}

#[tokio::test]
async fn broken_files_get_clear_errors() {
    let rt = runtime();
    let load_bytes = |bytes: Vec<u8>| {
        let rt = rt.clone();
        async move {
            Plugin::load(&rt, bytes, LoadOptions::default(), &services())
                .await
                .expect_err("must refuse")
        }
    };
    assert!(matches!(
        load_bytes(b"hello world".to_vec()).await,
        PluginError::NotWasm
    ));
    // A core module header (version 1, layer 0).
    let core = b"\0asm\x01\0\0\0".to_vec();
    assert!(matches!(load_bytes(core).await, PluginError::NotAComponent));
    let router = std::fs::read(support::plugin_wasm("massive-router")).expect("read");
    let truncated = router[..router.len() / 2].to_vec();
    assert!(matches!(
        load_bytes(truncated).await,
        PluginError::Compile(_)
    ));
}

#[tokio::test]
async fn artifact_cache_serves_the_second_compile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let bytes = std::fs::read(support::plugin_wasm("massive-router")).expect("read");
    let first = rt.compile(&bytes).expect("compile");
    let second = rt.compile(&bytes).expect("compile again");
    assert!(!first.from_cache);
    assert!(second.from_cache);
    assert_eq!(first.hash, second.hash);
}
