//! Hot reload under load: while a processor consumes a continuous stream,
//! the plugin file is replaced several times (including a file that is not a
//! component and a release that traps). Every event must be processed
//! exactly once by some generation, the bad versions must be rolled back,
//! state must be handed over, and the consumer must never restart.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mdp::plugin::{
    FixedClock, HostServices, LiveWorker, LoadOutcome, Registry, Runtime, RuntimeConfig,
    StoreReference,
};
use mdp::process::{Processor, ProcessorConfig};
use mdp::queue::{EmbeddedQueue, Queue, QueueSpec};
use mdp::store::{EmbeddedStore, Store};
use mdp_test_artifacts::variant;

fn manifest(generation: u32, trap: bool) -> String {
    format!(
        "name = \"tagger\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n[capabilities]\nkey_prefixes = [\"tagged\", \"tagger:\"]\n[config]\ngeneration = \"{generation}\"\ntrap = \"{trap}\"\n"
    )
}

/// Write both files via temp names renamed into place, as a deployment would.
fn deploy(dir: &Path, wasm: &[u8], manifest: &str) {
    std::fs::write(dir.join(".tagger.toml.tmp"), manifest).unwrap();
    std::fs::rename(dir.join(".tagger.toml.tmp"), dir.join("tagger.toml")).unwrap();
    std::fs::write(dir.join(".tagger.wasm.tmp"), wasm).unwrap();
    std::fs::rename(dir.join(".tagger.wasm.tmp"), dir.join("tagger.wasm")).unwrap();
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_plugin_under_load_loses_and_duplicates_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("mdp=info")
        .try_init();
    let base = std::fs::read(support::plugin_wasm("tagger")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    deploy(dir.path(), &variant(&base, "1"), &manifest(1, false));

    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let queue: Arc<dyn Queue> = Arc::new(EmbeddedQueue::new());
    queue
        .declare(&QueueSpec {
            name: "q".into(),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store.clone())),
        clock: Arc::new(FixedClock::new(0)),
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let registry = Registry::open(runtime, services.clone(), dir.path())
        .await
        .unwrap();
    let _watch = registry.watch().unwrap();
    let slot = registry.slot("tagger").expect("tagger loaded");
    assert_eq!(slot.current().unwrap().number, 1);

    let live = LiveWorker::new(slot.clone(), services).unwrap();
    let config = ProcessorConfig {
        queue: "q".into(),
        batch_size: 32,
        linger: Duration::from_millis(2),
        ..ProcessorConfig::default()
    };
    let mut processor = Processor::new(config, queue.clone(), store.clone(), live);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(async move {
        let stats = processor.run(stop_rx).await;
        (stats, processor)
    });

    // A continuous stream until the test says stop; returns how many were sent.
    let (producing_tx, producing) = tokio::sync::watch::channel(true);
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            while *producing.borrow() {
                let bodies: Vec<Bytes> = (sent..sent + 20)
                    .map(|i| Bytes::from(format!(r#"{{"event_type":"T","symbol":"S","id":"{i}","price":1,"size":1,"timestamp":1}}"#)))
                    .collect();
                queue.publish("q", &bodies).await.unwrap();
                sent += 20;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };

    // Generation 2: new bytes and config.
    tokio::time::sleep(Duration::from_millis(200)).await;
    deploy(dir.path(), &variant(&base, "2"), &manifest(2, false));
    wait_for("generation 2", || {
        slot.current().is_some_and(|g| g.number == 2)
    })
    .await;

    // A file that is not a component: rejected, generation 2 keeps serving.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(dir.path().join(".tagger.wasm.tmp"), b"\0asm garbage").unwrap();
    std::fs::rename(
        dir.path().join(".tagger.wasm.tmp"),
        dir.path().join("tagger.wasm"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        slot.current().unwrap().number,
        2,
        "a bad file must not replace the running generation"
    );

    // A release that traps on every batch: published, then rolled back by the consumer.
    deploy(dir.path(), &variant(&base, "3"), &manifest(3, true));
    wait_for("rollback of generation 3", || slot.rollbacks() == 1).await;
    assert_eq!(
        slot.current().unwrap().number,
        2,
        "rolled back to the last good generation"
    );

    // A good release again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    deploy(dir.path(), &variant(&base, "4"), &manifest(4, false));
    wait_for("generation 4", || {
        slot.current().is_some_and(|g| g.number == 4)
    })
    .await;
    // Reloading the same files again changes nothing.
    assert_eq!(registry.load("tagger").await, LoadOutcome::Unchanged);

    tokio::time::sleep(Duration::from_millis(300)).await;
    producing_tx.send(false).unwrap();
    let total = producer.await.unwrap();
    assert!(
        total > 1000,
        "the stream ran through every replacement ({total} events)"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tagged = store.lrange("tagged", 0, -1).await.unwrap();
        if tagged.len() >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    let (stats, processor) = consumer.await.unwrap();
    let stats = stats.unwrap();

    let tagged = store.lrange("tagged", 0, -1).await.unwrap();
    let mut seen = vec![0u32; total];
    let mut generations = std::collections::BTreeSet::new();
    for entry in &tagged {
        let v: serde_json::Value = serde_json::from_str(entry).unwrap();
        let id: usize = v["id"].as_str().unwrap().trim_matches('"').parse().unwrap();
        seen[id] += 1;
        generations.insert(v["generation"].as_str().unwrap().to_string());
    }
    let missing: Vec<usize> = (0..total).filter(|i| seen[*i] == 0).collect();
    let doubled: Vec<usize> = (0..total).filter(|i| seen[*i] > 1).collect();
    assert!(
        missing.is_empty(),
        "events never processed: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert!(
        doubled.is_empty(),
        "events processed twice: {:?}",
        &doubled[..doubled.len().min(10)]
    );
    assert!(
        generations.contains("1") && generations.contains("2") && generations.contains("4"),
        "{generations:?}"
    );
    assert!(
        !generations.contains("3"),
        "the trapping release must not have produced effects"
    );
    // State was handed over from generation to generation: the count never restarted.
    assert_eq!(
        store.get("tagger:seen").await.unwrap().as_deref(),
        Some(total.to_string().as_str())
    );
    assert_eq!(stats.processed as usize, total);
    assert_eq!(processor.stats().processed as usize, total);
}

/// A file that is not WebAssembly, dropped over a plugin that has a golden
/// file, is refused with a reason naming the `.wasm` (not the golden file).
#[tokio::test]
async fn a_corrupt_component_is_refused_naming_the_wasm_file() {
    let shipped = support::plugin_wasm("daily-range");
    let shipped = shipped.parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        shipped.join("daily-range.toml"),
        dir.path().join("daily-range.toml"),
    )
    .unwrap();
    let golden = dir.path().join("golden/daily-range/golden");
    std::fs::create_dir_all(&golden).unwrap();
    for f in std::fs::read_dir(shipped.join("golden/daily-range/golden")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, golden.join(f.file_name().unwrap())).unwrap();
    }
    let wasm = dir.path().join("daily-range.wasm");
    std::fs::write(&wasm, b"this is not a component").unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store.clone())),
        clock: Arc::new(FixedClock::new(0)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let registry = Registry::open(runtime, services, dir.path()).await.unwrap();
    let LoadOutcome::Rejected(reason) = registry.load("daily-range").await else {
        panic!("a corrupt component is refused");
    };
    assert!(
        reason.starts_with(&wasm.display().to_string())
            && reason.contains("not a WebAssembly file"),
        "the reason names the plugin file and why: {reason}"
    );
    assert!(!reason.contains("golden"), "{reason}");
}
