//! The minute-bars analyzer (JavaScript, `plugins/js/minute-bars/`): its
//! golden files (second bars and other events ignored, two symbols, a
//! duplicate skipped, New York midnight and both DST changes, a cold restart
//! rehydrating from the lists' heads, config) pass through the real runtime
//! under the manifest's own limits and natively in Node
//! (`plugins/js/golden.mjs`), which fails on a wrong expectation; the
//! component describes itself, refuses bad config naming the key, and
//! `scripts/build-plugins` deploys it into `target/plugins/`, where a
//! registry loads it (golden file included).

use crate::support;

use mdp::plugin::manifest::Manifest;
use mdp::plugin::{HostServices, Plugin, Registry, Runtime, RuntimeConfig, Worker, golden};
use mdp_sdk::wire::{EffectRecord, Golden};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NAME: &str = "minute-bars";

fn plugin_dir() -> PathBuf {
    support::repo_root().join("plugins/js/minute-bars")
}

fn manifest() -> Manifest {
    Manifest::load(&plugin_dir().join("minute-bars.toml")).expect("manifest")
}

/// Every golden file of the plugin, sorted.
fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(plugin_dir().join("golden"))
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "golden files: {files:?}");
    files
}

fn parse(path: &Path) -> Golden {
    Golden::parse(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `node plugins/js/golden.mjs <plugin.js> <golden>`.
fn node_harness(golden: &Path) -> Output {
    let root = support::repo_root();
    Command::new("node")
        .arg(root.join("plugins/js/golden.mjs"))
        .arg(plugin_dir().join("minute-bars.js"))
        .arg(golden)
        .output()
        .expect("run node (scripts/setup installs it)")
}

/// Services over a fresh embedded store.
fn services() -> HostServices {
    support::embedded_services(1_773_064_800_000_000)
}

#[test]
fn manifest_states_the_chart_contract() {
    let m = manifest();
    assert_eq!(m.name, NAME);
    assert_eq!(m.wit, "mdp:analyzer@1.1.0");
    assert_eq!(m.consumes, ["aggregate"]);
    let caps = m.capabilities();
    assert_eq!(caps.key_prefixes, Some(vec!["chart:".to_string()]));
    assert_eq!(caps.channels, Some(vec!["chart:".to_string()]));
    let golden = m.golden_path().expect("a golden file runs at load");
    assert!(golden.exists(), "{}", golden.display());
    // The defaults (no test sets MINUTE_BARS_LIST_MAX or MINUTE_BARS_TTL_SECS).
    assert_eq!(
        m.config_pairs(),
        [
            ("list_max".to_string(), "960".to_string()),
            ("ttl_secs".to_string(), "86400".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_pass_through_the_runtime_under_the_manifest_limits() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let bytes = std::fs::read(support::polyglot_wasm(NAME)).unwrap();
    let limits = manifest().load_options().limits;
    for file in golden_files() {
        golden::run(&runtime, bytes.clone(), &parse(&file), limits.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[test]
fn golden_files_pass_natively_in_node() {
    for file in golden_files() {
        let out = node_harness(&file);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The day-boundary golden file with the `del` of step `step` dropped from
/// its expected effects.
fn without_a_del(step: usize) -> Golden {
    let mut g = parse(&plugin_dir().join("golden/day-boundaries.json"));
    let effects = &mut g.steps[step].effects;
    let del = effects
        .iter()
        .position(|e| matches!(e, EffectRecord::Del { .. }))
        .expect("step has a del");
    effects.remove(del);
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expectation_fails_both_in_node_and_through_the_runtime() {
    // Step 2 crosses New York midnight: its `del` is what the file checks.
    let wrong = without_a_del(2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.json");
    std::fs::write(&path, serde_json::to_string_pretty(&wrong).unwrap()).unwrap();

    let out = node_harness(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "node accepted a wrong file: {stderr}"
    );
    assert!(
        stderr.contains("step 2: effects differ")
            && stderr.contains(r#"+ {"op":"del","keys":["chart:AAPL:minutes"]}"#),
        "the failure names the step and diffs the effects: {stderr}"
    );

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let bytes = std::fs::read(support::polyglot_wasm(NAME)).unwrap();
    let err = golden::run(&runtime, bytes, &wrong, manifest().load_options().limits)
        .await
        .expect_err("the runtime accepted a wrong file");
    assert!(
        matches!(err, golden::GoldenError::Mismatch { step: 2, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describes_itself_and_refuses_bad_config_naming_the_key() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let bytes = std::fs::read(support::polyglot_wasm(NAME)).unwrap();
    let services = services();
    let plugin = Plugin::load(&runtime, bytes, manifest().load_options(), &services)
        .await
        .unwrap();
    assert_eq!(plugin.info.name, NAME);
    assert_eq!(plugin.info.consumes, vec!["aggregate"]);

    let start = |key: &str, value: &str| {
        let mut worker = Worker::new(
            plugin.clone(),
            services.clone(),
            vec![(key.to_string(), value.to_string())],
        );
        async move { worker.start().await }
    };
    for (key, value) in [("list_max", "960"), ("ttl_secs", "1")] {
        start(key, value)
            .await
            .unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
    }
    for (key, value) in [
        ("list_max", "0"),
        ("list_max", "ten"),
        ("ttl_secs", "-1"),
        ("ttl_secs", "4294967296"),
    ] {
        let err = start(key, value)
            .await
            .expect_err("bad config accepted")
            .to_string();
        assert!(
            err.contains(&format!("`{key}` = `{value}`")),
            "{key} = {value}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_plugins_deploys_it_where_mdp_up_loads_it() {
    support::polyglot_wasm(NAME); // runs scripts/build-plugins polyglot
    let deployed = support::repo_root().join("target/plugins");
    let manifest = Manifest::load(&deployed.join("minute-bars.toml")).unwrap();
    let golden = manifest.golden_path().expect("golden file");
    assert!(golden.exists(), "{}", golden.display());

    // A plugin directory of just what was deployed: the registry loads it,
    // running its golden file under its manifest's limits.
    let dir = tempfile::tempdir().unwrap();
    for file in ["minute-bars.wasm", "minute-bars.toml"] {
        std::fs::copy(deployed.join(file), dir.path().join(file)).unwrap();
    }
    let relative = golden.strip_prefix(&deployed).unwrap();
    std::fs::create_dir_all(dir.path().join(relative).parent().unwrap()).unwrap();
    std::fs::copy(&golden, dir.path().join(relative)).unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let registry = Registry::open(runtime, services(), dir.path())
        .await
        .unwrap();
    assert_eq!(
        registry.names(),
        [NAME],
        "refused: {:?}",
        registry.load(NAME).await
    );
}
