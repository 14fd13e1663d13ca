//! Build script:
//! - the wasmtime version this host links, from the workspace's `Cargo.lock`,
//!   for `mdp::plugin::wasmtime_version` (artifact names, `mdp plugin
//!   inspect`), so it can never disagree with the crate actually built;
//! - the dashboard's chart library (uPlot, installed by `scripts/setup` from
//!   `host/src/widgets/vendor/package-lock.json` into
//!   `target/tools/dashboard`, or from `$MDP_UPLOT_DIR`), copied into the
//!   build to be embedded: the dashboard needs no internet access. Without
//!   it the build warns, and the dashboard says the chart is missing.

use std::path::PathBuf;

fn main() {
    wasmtime_version();
    chart_library();
}

/// Copy uPlot's script and style into `OUT_DIR` (empty files when missing).
fn chart_library() {
    println!("cargo:rerun-if-env-changed=MDP_UPLOT_DIR");
    let dir = std::env::var_os("MDP_UPLOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../target/tools/dashboard/node_modules/uplot/dist"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    for (file, name) in [
        ("uPlot.iife.min.js", "uplot.js"),
        ("uPlot.min.css", "uplot.css"),
    ] {
        let from = dir.join(file);
        println!("cargo:rerun-if-changed={}", from.display());
        let text = std::fs::read_to_string(&from).unwrap_or_else(|_| {
            println!(
                "cargo:warning=the dashboard's chart library is missing ({}): run scripts/setup, then rebuild",
                from.display()
            );
            String::new()
        });
        std::fs::write(out.join(name), text).expect("write to OUT_DIR");
    }
}

/// `MDP_WASMTIME_VERSION`, from `Cargo.lock`.
fn wasmtime_version() {
    let lock = "../Cargo.lock";
    println!("cargo:rerun-if-changed={lock}");
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let version = text
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == "name = \"wasmtime\""))
        .and_then(|p| {
            p.lines()
                .find_map(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
        })
        .unwrap_or("unknown")
        .to_string();
    println!("cargo:rustc-env=MDP_WASMTIME_VERSION={version}");
}
