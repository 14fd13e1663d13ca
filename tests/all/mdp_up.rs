//! `mdp up` as a user runs it: a subprocess on a free port, a WebSocket
//! client sees leaderboard and quote updates from the simulated market, and
//! SIGTERM ends it cleanly.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// `mdp up` on a free port over the built plugins with `args` and `env`,
/// once `/health` answers: the child, its port, and how long it took.
async fn start_up(args: &[&str], env: &[(&str, &str)]) -> (Child, u16, Duration) {
    // Make sure the plugins exist (builds them once if missing).
    let plugins = support::plugin_wasm("leaderboard")
        .parent()
        .unwrap()
        .to_path_buf();
    let port = support::free_port();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .arg("--plugin-dir")
        .arg(&plugins)
        .env_remove("MASSIVE_API_KEY")
        .env_remove("POLYGON_API_KEY")
        .env_remove("MDP_SIM_AT")
        .envs(env.iter().copied())
        .env("MDP_PLUGIN_CACHE", tempfile::tempdir().unwrap().keep())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mdp up");

    // Readiness: /health answers.
    let health = format!("http://127.0.0.1:{port}/health");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(&health).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "mdp up did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, port, started.elapsed())
}

/// Subscribe (after authenticating with `key`, when given) to the
/// top-volume board, `quote:AAA` and `daily_range:AAA`, and assert each sends
/// an update of the seed's shape (within 20 s).
async fn assert_live_boards(port: u16, key: Option<&str>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("ws");
    if let Some(key) = key {
        let auth = serde_json::json!({"action": "auth", "api_key": key}).to_string();
        ws.send(Message::Text(auth.into())).await.unwrap();
    }
    for feed in ["scanners:top_volume", "quote:AAA", "daily_range:AAA"] {
        let sub = serde_json::json!({"action": "subscribe", "feed": feed}).to_string();
        ws.send(Message::Text(sub.into())).await.unwrap();
    }
    let (mut board, mut quote, mut range) = (false, false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(board && quote && range) && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(rows) = v.as_array() {
            board |= rows
                .first()
                .is_some_and(|r| r["rank"] == 1 && r["accumulated_volume"].as_u64().is_some());
        } else if v["symbol"] == "AAA" && v.get("pre_market_high").is_some() {
            // daily-range, the quote:* scanner: the quote plus six session fields.
            assert_eq!(v.as_object().unwrap().len(), 32, "{v}");
            range = true;
        } else if v["symbol"] == "AAA" {
            assert_eq!(
                v.as_object().unwrap().len(),
                26,
                "the seed's 26-field quote"
            );
            quote = true;
        }
    }
    assert!(board, "a top-volume board arrived");
    assert!(quote, "a quote:AAA update arrived");
    assert!(range, "a daily_range:AAA update arrived");
}

/// A client without the key is closed with 1008 at its first frame.
async fn assert_unauthenticated_refused(port: u16) {
    let (mut intruder, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("ws");
    let sub = serde_json::json!({"action": "subscribe", "feed": "quote:AAA"}).to_string();
    intruder.send(Message::Text(sub.into())).await.unwrap();
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(5), intruder.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("an unauthenticated client is closed, got {other:?}"),
        }
    };
    assert_eq!(refused, Some(1008), "unauthenticated client refused");
}

/// SIGTERM `child`, assert it drains and exits 0, and return its stdout.
async fn stop_cleanly(mut child: Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "mdp up did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(code.success(), "clean exit, got {code:?}");
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("stopped cleanly"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_live_boards_and_quotes_and_stops_cleanly() {
    let (child, port, ready) = start_up(
        &[
            "--symbols",
            "300",
            // A Monday morning: the simulated market is open whenever the test runs.
            "--sim-at",
            "2026-03-09T10:00:00-04:00",
            // A small memory budget: the store evicts within seconds, and the
            // dashboard's data must keep flowing regardless.
            "--store-url",
            "memory://?max_memory_mib=1",
            // Widget auth on, with the same flags as `mdp serve`.
            "--auth-enabled",
            "true",
            "--auth-api-key",
            "up-key",
        ],
        &[],
    )
    .await;
    let started = Instant::now();
    assert_unauthenticated_refused(port).await;
    assert_live_boards(port, Some("up-key")).await;
    eprintln!(
        "ready after {ready:?}, first board and quote after {:?}",
        ready + started.elapsed()
    );

    // The embedded store stayed within its budget by evicting.
    let metrics = support::http_text(&format!("http://127.0.0.1:{port}/metrics")).await;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(value("mdp_store_evicted_total") > 0.0, "evictions happened");
    assert!(
        value("mdp_store_embedded_bytes") <= f64::from(1u32 << 20),
        "within the 1 MiB budget"
    );
    let out = stop_cleanly(child).await;
    assert!(
        !out.contains("market closed now"),
        "a given time is simulated as given: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_a_saturday_simulates_the_last_session() {
    // No time given, and the (injected) wall clock says Saturday noon in New York.
    let (child, port, _) = start_up(
        &["--symbols", "300"],
        &[("MDP_UP_NOW", "2026-01-03T12:00:00-05:00")],
    )
    .await;
    assert_live_boards(port, None).await;
    let out = stop_cleanly(child).await;
    assert!(
        out.lines().any(|l| l
            == "market closed now; simulating Friday 2026-01-02 12:00 New York — `--sim-at now` for the real clock"),
        "the banner says which session is simulated: {out}"
    );
}

#[tokio::test]
async fn process_role_exposes_health_readiness_and_metrics() {
    let plugins = support::plugin_wasm("massive-router")
        .parent()
        .unwrap()
        .to_path_buf();
    let port = support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args([
            "process",
            "--queue",
            "quotes",
            "--plugin",
            "massive-router",
            "--queue-url",
            "memory://",
            "--store-url",
            "memory://",
            "--health-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--plugin-dir")
        .arg(&plugins)
        .env("MDP_PLUGIN_CACHE", tempfile::tempdir().unwrap().keep())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    // Generous: it compiles every plugin of the directory first, and shares
    // two cores with the other tests' `mdp up` processes.
    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            && r.status().is_success()
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let metrics = support::http_text(&format!("http://127.0.0.1:{port}/metrics")).await;
    let health = client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap()
        .status();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(ready, "the processor became ready");
    assert!(health.is_success());
    assert!(
        metrics.contains("mdp_plugin_instantiate_seconds"),
        "{metrics}"
    );
    assert!(
        status.success(),
        "SIGTERM ends the processor cleanly: {status:?}"
    );
}
