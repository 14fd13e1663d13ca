//! `mdp plugin new` in each language yields a project that builds to a
//! component and passes its own golden test through the real runtime.

use crate::support;

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
    // The vendored SDK and its Cargo.lock: builds offline from cached crates.
    let target = support::repo_root().join("target/scaffold");
    run(
        Command::new(env!("CARGO_BIN_EXE_mdp"))
            .args(["plugin", "build", "--debug"])
            .current_dir(&project)
            .env("CARGO_NET_OFFLINE", "true")
            .env("CARGO_TARGET_DIR", &target),
        "mdp plugin build of the scaffold",
    );
    run(
        Command::new("cargo")
            .args(["test", "--quiet"])
            .current_dir(&project)
            .env("CARGO_NET_OFFLINE", "true")
            .env("CARGO_TARGET_DIR", &target),
        "native tests of the scaffold",
    );
    check(&project, &project.join("trade-counter.wasm")).await;
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
            .args(["-d", "wit", "-w", "analyzer", "componentize", "app", "-o"])
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
    // The project's own build script and WIT; componentize-js from the tools folder.
    std::os::unix::fs::symlink(tools.join("node_modules"), project.join("node_modules")).unwrap();
    let wasm = project.join("out.wasm");
    run(
        Command::new("node")
            .args(["componentize.mjs", "trade-counter-js.js", "wit"])
            .arg(&wasm)
            .current_dir(&project),
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
