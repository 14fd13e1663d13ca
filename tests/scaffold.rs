//! `mdp plugin new` in each language yields a project that builds to a
//! component and passes its own golden test through the real runtime.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use mdp::plugin::{Runtime, RuntimeConfig, golden};

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn new_project(dir: &Path, name: &str, lang: &str) -> std::path::PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args(["plugin", "new", name, "--lang", lang, "--dir"])
        .arg(dir)
        .arg("--sdk")
        .arg(support::repo_root().join("sdk"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(name)
}

async fn check(project: &Path, wasm: &Path) {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    golden::check(&runtime, wasm, &project.join("golden.json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn rust_project_builds_and_passes_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), "trade-counter", "rust");
    let target = support::repo_root().join("target/scaffold");
    run(
        Command::new("cargo")
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target),
        "cargo build of the scaffold",
    );
    run(
        Command::new("cargo")
            .args(["test", "--quiet"])
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target),
        "native tests of the scaffold",
    );
    check(
        &project,
        &target.join("wasm32-wasip2/release/trade_counter.wasm"),
    )
    .await;
}

#[tokio::test]
async fn python_project_builds_and_passes_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), "trade-counter-py", "python");
    let tool = support::repo_root().join("target/tools/py/bin/componentize-py");
    assert!(
        tool.exists(),
        "componentize-py is installed by scripts/setup"
    );
    let wasm = project.join("out.wasm");
    run(
        Command::new(tool)
            .arg("-d")
            .arg(support::repo_root().join("wit"))
            .args(["-w", "analyzer", "componentize", "app", "-o"])
            .arg(&wasm)
            .current_dir(&project),
        "componentize-py",
    );
    check(&project, &wasm).await;
}

#[tokio::test]
async fn javascript_project_builds_and_passes_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), "trade-counter-js", "js");
    let tools = support::repo_root().join("target/tools/js");
    assert!(
        tools.join("node_modules").exists(),
        "componentize-js is installed by scripts/setup"
    );
    std::fs::copy(
        support::repo_root().join("plugins/js/componentize.mjs"),
        tools.join("componentize.mjs"),
    )
    .unwrap();
    let wasm = project.join("out.wasm");
    run(
        Command::new("node")
            .arg(tools.join("componentize.mjs"))
            .arg(project.join("trade-counter-js.js"))
            .arg(support::repo_root().join("wit"))
            .arg(&wasm),
        "componentize-js",
    );
    check(&project, &wasm).await;
}

#[test]
fn bad_names_and_existing_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args(["plugin", "new", "Bad_Name", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be lowercase"));
    new_project(dir.path(), "twice", "js");
    let out = Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args(["plugin", "new", "twice", "--lang", "js", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}
