//! `mdp plugin test` and `mdp plugin inspect` as an author uses them.

use crate::support;

use std::process::Command;

fn mdp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mdp"))
}

#[test]
fn plugin_test_prints_the_seed_keys_ttls_and_channels() {
    let out = mdp()
        .args(["plugin", "test"])
        .arg(support::plugin_wasm("massive-router"))
        .arg("--events")
        .arg(support::repo_root().join("tests/fixtures/events/massive-mixed.jsonl"))
        .args(["--at", "2026-01-01T00:00:00Z"])
        .output()
        .expect("run mdp");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let puts: Vec<(String, u64)> = lines
        .iter()
        .filter(|l| l["op"] == "put")
        .map(|l| {
            (
                l["key"].as_str().unwrap().to_string(),
                l["ttl_secs"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        puts,
        vec![
            ("stocks:trades:MSFT".to_string(), 3600),
            ("stocks:quotes:MSFT".to_string(), 3600),
            ("stocks:agg:FCX".to_string(), 300),
            ("stocks:agg:FCX".to_string(), 300),
            ("stocks:luld:ATHR".to_string(), 86400),
            ("unknown:1767225600000005".to_string(), 86400),
        ]
    );
    let channels: Vec<&str> = lines
        .iter()
        .filter(|l| l["op"] == "publish")
        .map(|l| l["channel"].as_str().unwrap())
        .collect();
    assert_eq!(
        channels,
        [
            "stocks:trades:MSFT",
            "stocks:quotes:MSFT",
            "stocks:agg:FCX",
            "stocks:agg:FCX",
            "stocks:luld:ATHR",
            "unknown"
        ]
    );
    // The cached value is the seed's queue JSON converted from the short keys.
    let trade: serde_json::Value =
        serde_json::from_str(lines[0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(trade["event_type"], "T");
    assert_eq!(trade["symbol"], "MSFT");
    assert_eq!(trade["price"], 114.125);
    assert_eq!(trade["sequence_number"], 3681328);
}

#[test]
fn plugin_test_fails_clearly_on_a_bad_plugin_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"not wasm at all").unwrap();
    let events = dir.path().join("e.jsonl");
    std::fs::write(&events, "{\"event_type\":\"T\"}\n").unwrap();
    let out = mdp()
        .args(["plugin", "test"])
        .arg(&bad)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.wasm") && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn plugin_test_exits_non_zero_on_a_trap_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    std::fs::write(
        &events,
        "{\"event_type\":\"T\",\"symbol\":\"A\",\"price\":1,\"size\":1,\"timestamp\":1}\n\
         {\"event_type\":\"T\",\"symbol\":\"POISON\",\"price\":1,\"size\":1,\"timestamp\":1}\n",
    )
    .unwrap();
    let out = mdp()
        .args(["plugin", "test"])
        .arg(support::plugin_wasm("hostile"))
        .arg("--events")
        .arg(&events)
        .args(["--config", "mode=trap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("poison event"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("echo:A") && stdout.contains("\"op\":\"reject\""),
        "{stdout}"
    );
}

#[test]
fn plugin_test_rejects_a_malformed_events_file_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    std::fs::write(&events, "{\"ev\":\"T\"}\nthis is not json\n").unwrap();
    let out = mdp()
        .args(["plugin", "test"])
        .arg(support::plugin_wasm("massive-router"))
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("e.jsonl:2: not JSON"));
}

#[test]
fn plugin_inspect_prints_describe_and_wit_version() {
    let out = mdp()
        .args(["plugin", "inspect"])
        .arg(support::plugin_wasm("massive-router"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wit"], mdp::plugin::WIT_VERSION);
    assert_eq!(v["describe"]["name"], "massive-router");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
}
