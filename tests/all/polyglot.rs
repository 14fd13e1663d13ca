//! Analyzers in Python (componentize-py) and JavaScript (componentize-js)
//! against the same WIT: the router's twins pass the Rust router's golden
//! file through the real runtime, and hot-reload into a live slot; the
//! stateful daily-range's Python twin passes the Rust crate's golden files,
//! restarts included. Also
//! prints how long a load takes cold and with the compiled-artifact cache.

use crate::support;

use std::time::Instant;

use mdp::plugin::{
    FixedClock, HostServices, Limits, Plugin, Registry, Runtime, RuntimeConfig, StoreReference,
    golden,
};
use mdp::store::{EmbeddedStore, Store};

/// Limits for the Python and JavaScript components (larger and slower than Rust ones).
pub(crate) fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        deadline_base: std::time::Duration::from_millis(500),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_twins_pass_the_rust_routers_golden_file() {
    let golden_text = std::fs::read_to_string(
        support::repo_root().join("plugins/massive-router/golden/seed-routes.json"),
    )
    .unwrap();
    let golden_file = mdp_sdk::wire::Golden::parse(&golden_text).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    for name in ["massive-router", "massive-router-py", "massive-router-js"] {
        let bytes = std::fs::read(support::plugin_wasm(name)).unwrap();
        let started = Instant::now();
        golden::run(&runtime, bytes.clone(), &golden_file, limits())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let cold = started.elapsed();
        // The golden run compiled it (cold); the next compile hits the cache.
        let rt = runtime.clone();
        let cached = tokio::task::spawn_blocking(move || rt.compile(&bytes))
            .await
            .unwrap()
            .unwrap();
        assert!(
            cached.from_cache,
            "{name} comes from the artifact cache the second time"
        );
        eprintln!(
            "{name}: {:.1} MiB, cold compile + golden run {cold:?}, load from cache {:?}",
            std::fs::metadata(support::plugin_wasm(name)).unwrap().len() as f64 / 1048576.0,
            cached.took
        );
    }
}

/// A stateful analyzer beyond Rust: daily-range's Python twin passes every
/// golden file of the Rust crate through the real runtime — sessions, DST,
/// rehydration, and restarts from a snapshot and cold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_daily_range_passes_the_rust_golden_files_with_restarts() {
    let dir = support::repo_root().join("plugins/daily-range/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let restarts = std::fs::read_to_string(dir.join("restarts.json")).unwrap();
    assert!(
        restarts.contains("\"snapshot\"") && restarts.contains("\"cold\""),
        "the golden files cover both restarts"
    );
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    for name in ["daily-range", "daily-range-py"] {
        let bytes = std::fs::read(support::plugin_wasm(name)).unwrap();
        for file in &files {
            let golden_file =
                mdp_sdk::wire::Golden::parse(&std::fs::read_to_string(file).unwrap()).unwrap();
            golden::run(&runtime, bytes.clone(), &golden_file, limits())
                .await
                .unwrap_or_else(|e| panic!("{name} on {}: {e}", file.display()));
        }
    }
}

/// A Python (then a JavaScript) release dropped into a live plugin directory replaces the Rust
/// one (same manifest name) and serves; the time from rename to serving is
/// printed, cold and with the artifact cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_build_hot_reloads_over_the_rust_one() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "name = \"router\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"quotes\"]\n[limits]\nmemory_mib = 256\ndeadline_ms = 500\n[capabilities]\nkey_prefixes = [\"stocks:\", \"unknown:\"]\nchannels = [\"stocks:\", \"unknown\"]\n";
    std::fs::write(dir.path().join("router.toml"), manifest).unwrap();
    std::fs::copy(
        support::plugin_wasm("massive-router"),
        dir.path().join("router.wasm"),
    )
    .unwrap();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store: store.clone(),
        reference: std::sync::Arc::new(StoreReference::new(store)),
        clock: std::sync::Arc::new(FixedClock::new(0)),
    };
    // The artifact cache is never inside the plugin directory.
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let registry = Registry::open(runtime, services.clone(), dir.path())
        .await
        .unwrap();
    let _watch = registry.watch().unwrap();
    let slot = registry.slot("router").unwrap();
    let swap = |file: &str| {
        let tmp = dir.path().join(".router.wasm.tmp");
        std::fs::copy(support::plugin_wasm(file), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join("router.wasm")).unwrap();
        Instant::now()
    };
    let wait_for = |generation: u64, since: Instant| {
        let slot = slot.clone();
        async move {
            while slot.current().map(|g| g.number) != Some(generation) {
                assert!(
                    since.elapsed().as_secs() < 120,
                    "generation {generation} never served"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            since.elapsed()
        }
    };
    let cold = wait_for(2, swap("massive-router-py")).await;
    assert_eq!(
        slot.current().unwrap().plugin.info.name,
        "massive-router-py"
    );
    let back = wait_for(3, swap("massive-router")).await;
    let cached = wait_for(4, swap("massive-router-py")).await;
    let js_cold = wait_for(5, swap("massive-router-js")).await;
    assert_eq!(
        slot.current().unwrap().plugin.info.name,
        "massive-router-js"
    );
    let _ = wait_for(6, swap("massive-router")).await;
    let js_cached = wait_for(7, swap("massive-router-js")).await;
    let _ = wait_for(8, swap("massive-router-py")).await;
    eprintln!(
        "rename → serving (incl. debounce): python cold {cold:?}, from the artifact cache {cached:?}; \
         javascript cold {js_cold:?}, cached {js_cached:?}; rust {back:?}"
    );
    // The Python generation works.
    let plugin: std::sync::Arc<Plugin> = slot.current().unwrap().plugin.clone();
    let mut worker = mdp::plugin::Worker::new(plugin, services, vec![]);
    let text = r#"{"event_type":"Q","symbol":"PY","bid_price":1,"ask_price":2,"timestamp":1}"#;
    let out = worker
        .analyze(&[mdp::plugin::convert::decode(text).unwrap()])
        .await
        .unwrap();
    assert_eq!(out.effects.len(), 2);
}
