//! Serving under load and exposure: conflation for slow clients, clients that
//! never read, connection caps, the metrics token and the warning when
//! serving beyond loopback without auth.

use super::*;

#[tokio::test]
async fn a_conflating_server_keeps_slow_clients_bounded_and_current() {
    let args = ServeConfig {
        widgets: WidgetConfig {
            client_queue: 64,
            slow_client: mdp::widgets::SlowClientPolicy::Conflate,
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let (url, _stop) = server(store.clone(), args).await;
    let mut slow = connect(&url).await;
    send(&mut slow, json!({"action": "subscribe", "feed": "c:*"})).await;
    recv(&mut slow).await;
    let mut fast = connect(&url).await;
    send(&mut fast, json!({"action": "subscribe", "feed": "c:*"})).await;
    recv(&mut fast).await;
    const CHANNELS: usize = 4;
    const ROUNDS: usize = 500;
    let pad = "p".repeat(64 * 1024);
    // The reading client reports progress so the publisher never gets more
    // than 8 rounds (32 frames) ahead of it: it stays below its queue bound
    // however loaded the machine is, while `slow` falls arbitrarily behind.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        let mut last = [0u64; CHANNELS];
        while n < CHANNELS * ROUNDS {
            let v = recv(&mut fast).await;
            if v.get("closed").is_some() {
                break;
            }
            let c = v["c"].as_u64().unwrap() as usize;
            let seq = v["seq"].as_u64().unwrap();
            assert!(seq == last[c] + 1, "in order, nothing skipped");
            last[c] = seq;
            n += 1;
            progress_tx.send_replace(n);
        }
        n
    });
    let rss_before = rss_kib();
    // 4 channels × 500 rounds × 64 KiB = 128 MiB published while `slow` reads nothing.
    for round in 1..=ROUNDS {
        let writes: Vec<Write> = (0..CHANNELS)
            .map(|c| {
                publish(
                    &format!("c:{c}"),
                    &json!({"c": c, "seq": round, "pad": pad}).to_string(),
                )
            })
            .collect();
        store.apply(&writes, false).await.unwrap();
        let behind = round.saturating_sub(8) * CHANNELS;
        progress.wait_for(|n| *n >= behind).await.unwrap();
    }
    assert_eq!(
        reader.await.unwrap(),
        CHANNELS * ROUNDS,
        "the reading client got every message"
    );
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    eprintln!("RSS grew by {grown_mib} MiB while 128 MiB went to a client that does not read");
    assert!(grown_mib < 64, "memory stays bounded: grew {grown_mib} MiB");
    // The slow client is still connected; what it gets is bounded (its queue
    // plus what the kernel buffered) and ends with the newest of each channel.
    let mut got = 0;
    let mut newest = [0u64; CHANNELS];
    while newest.iter().any(|s| *s < ROUNDS as u64) {
        let v = recv(&mut slow).await;
        assert!(
            v.get("closed").is_none(),
            "conflation does not disconnect: {v}"
        );
        newest[v["c"].as_u64().unwrap() as usize] = v["seq"].as_u64().unwrap();
        got += 1;
    }
    eprintln!(
        "the slow client read {got} of {} messages",
        CHANNELS * ROUNDS
    );
    assert!(got < CHANNELS * ROUNDS / 2, "conflated: {got} frames");
}

/// Resident memory of this process, KiB.
fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_never_reads_anything_is_dropped() {
    let args = ServeConfig {
        widgets: WidgetConfig {
            client_queue: 64,
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let (url, _stop) = server(store.clone(), args).await;
    let health = url.replace("ws://", "http://").replace("/ws", "/health");
    let clients = || async {
        reqwest::get(&health)
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["active_ws_clients"]
            .as_u64()
            .unwrap()
    };
    let mut stuck = connect(&url).await;
    send(&mut stuck, json!({"action": "subscribe", "feed": "big"})).await;
    recv(&mut stuck).await;
    assert_eq!(clients().await, 1);
    // 100 MiB, far more than the socket buffers and the queue hold, in bursts
    // the writer keeps up with until the socket is full; `stuck` is never
    // read from again.
    let pad = "z".repeat(256 * 1024);
    for _ in 0..40 {
        let writes: Vec<Write> = (0..10)
            .map(|_| publish("big", &format!("\"{pad}\"")))
            .collect();
        store.apply(&writes, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The writer is blocked on the full socket; the server still lets go.
    let mut n = clients().await;
    for _ in 0..300 {
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        n = clients().await;
    }
    assert_eq!(
        n, 0,
        "the connection of a client that never reads is dropped"
    );
    drop(stuck);
}

/// The HTTP status a refused WebSocket upgrade answered with.
async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected a refused upgrade, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_all() {
    let per_ip = ServeConfig {
        widgets: WidgetConfig {
            max_clients_per_ip: 2,
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let (url, _stop) = server(store.clone(), per_ip).await;
    let a = connect(&url).await;
    let _b = connect(&url).await;
    assert_eq!(
        refused_status(&url).await,
        429,
        "a third client from one address"
    );
    // A client that leaves gives its place back.
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tokio_tungstenite::connect_async(&url).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let total = ServeConfig {
        widgets: WidgetConfig {
            max_clients: 1,
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let (url, _stop) = server(store, total).await;
    let _only = connect(&url).await;
    assert_eq!(refused_status(&url).await, 503, "a client over the total");
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let args = ServeConfig {
        widgets: WidgetConfig {
            metrics_token: Some("m-tok".into()),
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let (url, _stop) = server(Arc::new(EmbeddedStore::new()), args).await;
    let metrics = url.replace("ws://", "http://").replace("/ws", "/metrics");
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.get(&metrics).send().await.unwrap()), 401);
    let wrong = http.get(&metrics).bearer_auth("nope").send().await.unwrap();
    assert_eq!(status(wrong), 401);
    let right = http
        .get(&metrics)
        .bearer_auth("m-tok")
        .send()
        .await
        .unwrap();
    assert_eq!(status(right), 200);
    // Open without a token configured.
    let (open, _stop) = server(Arc::new(EmbeddedStore::new()), ServeConfig::default()).await;
    let open = open.replace("ws://", "http://").replace("/ws", "/metrics");
    assert_eq!(status(http.get(&open).send().await.unwrap()), 200);
}

#[test]
fn serving_beyond_loopback_without_auth_warns() {
    use std::io::{BufRead, BufReader};
    let run = |extra: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mdp"))
            .args(["serve", "--listen", "0.0.0.0:0", "--store-url", "memory://"])
            .args(extra)
            .args(["--log-format", "human"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            let listening = line.contains("widget server listening");
            lines.push(line);
            if listening {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines.join("\n")
    };
    let open = run(&[]);
    assert!(open.contains("without auth"), "no warning:\n{open}");
    let closed = run(&["--auth-enabled", "true", "--auth-api-key", "k"]);
    assert!(
        !closed.contains("without auth"),
        "warned with auth on:\n{closed}"
    );
}
