//! Every analyzer's golden files through the real runtime: each
//! `plugins/<name>/golden/*.json` is run by `target/plugins/<name>.wasm`
//! (built by `scripts/build-plugins`) with `mdp::plugin::golden::check`, the
//! same files the SDK's native harness runs in `cargo test -p <name>`.

use crate::support;

use std::path::PathBuf;

use mdp::plugin::{Limits, Runtime, RuntimeConfig, golden};
use mdp_sdk::wire::{EffectRecord, Golden};

/// (plugin name, golden file) for every golden file of every plugin crate.
fn golden_files() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let plugins = support::repo_root().join("plugins");
    for dir in std::fs::read_dir(&plugins).expect("plugins/") {
        let dir = dir.expect("dir entry").path();
        let manifest = dir.join("Cargo.toml");
        let Ok(cargo) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = cargo
            .lines()
            .find_map(|l| {
                let v = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
                Some(v.trim().trim_matches('"').to_string())
            })
            .expect("crate name");
        let Ok(files) = std::fs::read_dir(dir.join("golden")) else {
            continue;
        };
        for f in files {
            let f = f.expect("golden entry").path();
            if f.extension().is_some_and(|e| e == "json") {
                found.push((name.clone(), f));
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn every_plugin_golden_file_passes_through_wasm() {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let files = golden_files();
    for plugin in ["leaderboard", "top-trades", "massive-router"] {
        assert!(
            files.iter().any(|(n, _)| n == plugin),
            "no golden files for {plugin}"
        );
    }
    let mut failures = Vec::new();
    for (name, file) in &files {
        let wasm = support::plugin_wasm(name);
        match golden::check(&runtime, &wasm, file).await {
            Ok(()) => eprintln!("ok   {name}: {}", file.display()),
            Err(e) => failures.push(format!("{name}: {}: {e}", file.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn a_golden_file_with_a_wrong_effect_fails() {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let path = support::repo_root().join("plugins/leaderboard/golden/market-open-0930.json");
    let mut file = Golden::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    // The 09:30 reset step: pretend the seed's behaviour (no gainers reset).
    let step = &mut file.steps[3];
    let before = step.effects.len();
    step.effects
        .retain(|e| !matches!(e, EffectRecord::Del { .. }));
    assert_eq!(
        step.effects.len(),
        before - 1,
        "the step deletes the gainers"
    );
    let bytes = std::fs::read(support::plugin_wasm("leaderboard")).unwrap();
    let err = golden::run(&runtime, bytes, &file, Limits::default())
        .await
        .expect_err("a missing reset is caught");
    assert!(err.to_string().contains("step 3"), "{err}");
}
