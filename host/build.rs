//! Build script: the wasmtime version this host links, from the workspace's
//! `Cargo.lock`, for `mdp::plugin::wasmtime_version` (artifact names, `mdp
//! plugin inspect`), so it can never disagree with the crate actually built.

fn main() {
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
