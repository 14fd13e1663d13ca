//! Connecting and market hours: refused connects name the flag to fix, a
//! closed market is polled rather than hammered.

use super::*;

/// A listener dialing `feed_url` ends up `misconfigured` after one connect,
/// its reason naming `flag`, and waits the long refused wait.
async fn misconfigured(feed_url: String, flag: &str) {
    let running = massive(
        MassiveConfig {
            feed_url,
            api_key: Some("test-key".into()),
            max_backoff_ms: 50,
            refused_wait_ms: 600_000,
            ..MassiveConfig::default()
        },
        Arc::new(EmbeddedQueue::new()),
    );
    let l = running.listener.clone();
    assert!(
        eventually(20, || l.stats.state() == "misconfigured").await,
        "{}",
        l.status_json()
    );
    let status = l.status_json();
    assert!(
        status["last_error"].as_str().unwrap().contains(flag),
        "the reason names {flag}: {status}"
    );
    assert_eq!(l.stats.config_errors.load(Ordering::Relaxed), 1, "{status}");
    assert_eq!(
        l.stats.dropped.load(Ordering::Relaxed),
        0,
        "not retried as a dropped connection: {status}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_404_on_connect_is_a_feed_url_error() {
    let sim = sim(quiet()).await;
    // Dials /v2/stocks, which the feed does not serve.
    misconfigured(format!("{}/v2", sim.ws_url()), "--feed-url").await;
}

#[tokio::test]
async fn a_401_on_connect_is_an_api_key_error() {
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::UNAUTHORIZED });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(tcp, app).await });
    misconfigured(format!("ws://{addr}"), "--api-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_on_connect_logs_one_error_naming_the_flag() {
    use std::io::BufRead;
    let sim = sim(quiet()).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args([
            "listen",
            "massive",
            "--queue-url",
            "memory://",
            "--api-key",
            "k",
        ])
        .args(["--feed-url", &format!("{}/v2", sim.ws_url())])
        .args(["--refused-wait-ms", "600000", "--max-backoff-ms", "50"])
        .env("MDP_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start mdp listen massive");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut before = Vec::new();
    let error = loop {
        let line = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(30)))
            .unwrap_or_else(|_| panic!("no ERROR line; log so far: {before:#?}"));
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["level"] == "ERROR" {
            break v;
        }
        before.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = error.to_string();
    assert!(
        text.contains("--feed-url") && text.contains("404"),
        "{text}"
    );
    assert!(
        !before.iter().any(|l| l.contains("\"WARN\"")),
        "no retry warnings before the error: {before:#?}"
    );
}

/// Move the simulator's clock to the next minute of `session` (its admin
/// API); its answer (`session`, `now_ms`).
async fn jump_to(sim: &SimHandle, session: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{}/admin/clock", sim.rest_url()))
        .json(&serde_json::json!({"session": session}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn closed_market_is_polled_not_hammered() {
    let sim = sim(SimConfig {
        at: Some(SATURDAY.into()),
        ..quiet()
    })
    .await;
    let running = massive(
        MassiveConfig {
            rest_url: Some(sim.rest_url()),
            closed_poll_ms: 100,
            ..massive_args(&sim, &support::unique("closed"))
        },
        Arc::new(EmbeddedQueue::new()),
    );
    let l = running.listener.clone();
    assert!(eventually(20, || l.stats.closed_polls.load(Ordering::Relaxed) >= 3).await);
    assert_eq!(l.stats.state(), "market_closed");
    assert_eq!(
        sim.stats().connections.load(Ordering::Relaxed),
        0,
        "no feed connection while closed"
    );
    // Pre-market opens: the listener connects and streams.
    assert_eq!(jump_to(&sim, "pre").await["session"], "extended-hours");
    assert!(
        eventually(20, || l.stats.events.load(Ordering::Relaxed) > 0).await,
        "{}",
        l.status_json()
    );
    assert_eq!(sim.stats().connections.load(Ordering::Relaxed), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_market_that_closes_is_not_a_stalled_feed() {
    let (sim, running) = streaming(|a| MassiveConfig {
        rest_url: Some(a.feed_url.replacen("ws://", "http://", 1)),
        stall_timeout_ms: 500,
        closed_poll_ms: 100,
        ..a
    })
    .await;
    let l = running.listener.clone();
    assert_eq!(jump_to(&sim, "closed").await["session"], "closed");
    assert!(
        eventually(20, || l.stats.closed_polls.load(Ordering::Relaxed) >= 2).await,
        "{}",
        l.status_json()
    );
    assert_eq!(l.stats.state(), "market_closed");
    assert_eq!(
        l.stats.stalls.load(Ordering::Relaxed),
        0,
        "quiet because closed, not stalled: {}",
        l.status_json()
    );
    running.stop().await;
}

#[tokio::test]
async fn a_lying_market_status_is_counted_and_asked_again_not_taken_as_open() {
    let sim = sim(SimConfig {
        at: Some(SATURDAY.into()),
        fault: vec![Fault::RestLie],
        ..quiet()
    })
    .await;
    let running = massive(
        MassiveConfig {
            rest_url: Some(sim.rest_url()),
            closed_poll_ms: 100,
            stall_timeout_ms: 500,
            ..massive_args(&sim, &support::unique("lie"))
        },
        Arc::new(EmbeddedQueue::new()),
    );
    let l = running.listener.clone();
    // The lie is counted and the status asked again after a backoff (not
    // taken as open): the honest answer says closed, so the listener polls
    // and never dials the feed.
    assert!(
        eventually(20, || l.stats.rest_errors.load(Ordering::Relaxed) == 1
            && l.stats.closed_polls.load(Ordering::Relaxed) >= 2)
        .await,
        "{}",
        l.status_json()
    );
    assert_eq!(
        l.stats.stalls.load(Ordering::Relaxed),
        0,
        "{}",
        l.status_json()
    );
    assert_eq!(sim.stats().connections.load(Ordering::Relaxed), 0);
    assert_eq!(l.stats.state(), "market_closed");
    running.stop().await;
}
