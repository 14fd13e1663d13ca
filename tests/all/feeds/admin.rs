//! The listeners' admin API: status, validation, the bearer token, the feed
//! host allow-list, the change rate limit and the control API.

use super::*;

#[tokio::test]
async fn admin_api_reports_status_and_validates_changes() {
    let (sim, running, base) = with_admin(|a| a).await;
    let l = running.listener.clone();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{base}{p}");
    let status: Value = http
        .get(url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["connected"], true);
    assert_eq!(status["state"], "streaming");
    assert!(status["per_queue"]["trades"].as_u64().unwrap() > 0);
    assert_eq!(status["per_queue"]["quotes"], 0);
    assert!(status["last_message_time"].is_string());
    assert_eq!(http.get(url("/ready")).send().await.unwrap().status(), 200);

    for (path, body, reason) in [
        (
            "/subscriptions",
            serde_json::json!(["X.*"]),
            "unknown topic",
        ),
        (
            "/subscriptions",
            serde_json::json!(["T.aapl"]),
            "bad ticker",
        ),
        ("/subscriptions", serde_json::json!([]), "no subscriptions"),
        (
            "/market",
            serde_json::json!({"market": "options"}),
            "not supported",
        ),
        ("/feed", serde_json::json!({"feed": "http://x"}), "not a ws"),
    ] {
        let r = http
            .post(url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(reason), "{path}: {v}");
        assert_eq!(v["current"]["subscriptions"], serde_json::json!(["T.*"]));
    }
    assert_eq!(l.settings().subscriptions, vec!["T.*".to_string()]);

    // A valid change applies on the open connection: quotes instead of trades.
    let r = http
        .post(url("/subscriptions"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!(["Q.*"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(20, || l.stats.queue_count("quotes") > 0).await,
        "{}",
        l.status_json()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let trades = l.stats.queue_count("trades");
    let quotes = l.stats.queue_count("quotes");
    assert!(eventually(20, || l.stats.queue_count("quotes") > quotes).await);
    assert_eq!(l.stats.queue_count("trades"), trades, "trades unsubscribed");
    assert_eq!(
        l.stats.sessions.load(Ordering::Relaxed),
        1,
        "no reconnect needed"
    );

    // A feed change reconnects to the new URL (here: the same simulator).
    let r = http
        .post(url("/feed"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"feed": format!("{}/", sim.ws_url())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(url("/feed"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"feed": "ws://127.0.0.1:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(20, || l.stats.dropped.load(Ordering::Relaxed) >= 1).await,
        "dialling the dead feed fails and is retried: {}",
        l.status_json()
    );
    assert!(!l.stats.connected.load(Ordering::Relaxed));
    running.stop().await;
}

/// Serve the admin API of `l`; returns its base URL.
async fn massive_admin(l: &Arc<MassiveListener>) -> String {
    let router = mdp::feed::massive::admin_router(l.clone());
    let addr = mdp::feed::admin::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    format!("http://{addr}")
}

/// A streaming listener subscribed to `T.*` (then `extra`), with its admin
/// API served; returns the simulator, the listener and the API's base URL.
async fn with_admin(
    extra: impl FnOnce(MassiveConfig) -> MassiveConfig,
) -> (SimHandle, Running<MassiveListener>, String) {
    let (sim, running) = streaming(|a| {
        extra(MassiveConfig {
            subscriptions: "T.*".into(),
            ..a
        })
    })
    .await;
    let base = massive_admin(&running.listener).await;
    (sim, running, base)
}

#[tokio::test]
async fn admin_writes_are_refused_without_a_configured_token_reads_stay_open() {
    let (_sim, running, base) = with_admin(|a| MassiveConfig {
        admin: AdminAccess::default(),
        ..a
    })
    .await;
    let l = running.listener.clone();
    let before = l.settings();
    for (path, body) in [
        ("/feed", serde_json::json!({"feed": "ws://127.0.0.1:9"})),
        ("/market", serde_json::json!({"market": "stocks"})),
        ("/subscriptions", serde_json::json!(["Q.*"])),
    ] {
        for token in [None, Some("anything")] {
            let (code, v, _) = post(&format!("{base}{path}"), token, body.clone()).await;
            assert_eq!(code, 403, "{path} {token:?}: {v}");
            assert!(
                v["error"].as_str().unwrap().contains("MDP_ADMIN_TOKEN"),
                "{path}: {v}"
            );
        }
    }
    assert_eq!(l.settings(), before, "nothing changed");
    let http = reqwest::Client::new();
    for path in [
        "/status",
        "/health",
        "/ready",
        "/metrics",
        "/feed",
        "/subscriptions",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path} stays open");
    }
    assert_eq!(l.stats.sessions.load(Ordering::Relaxed), 1, "no reconnect");
    running.stop().await;
}

#[tokio::test]
async fn admin_writes_need_the_bearer_token() {
    let (_sim, running, base) = with_admin(|a| a).await;
    let l = running.listener.clone();
    let url = format!("{base}/subscriptions");
    let body = serde_json::json!(["Q.*"]);
    for token in [
        None,
        Some(""),
        Some("test-admin-toke"),
        Some("test-admin-token2"),
        Some("TEST-ADMIN-TOKEN"),
    ] {
        let (code, v, headers) = post(&url, token, body.clone()).await;
        assert_eq!(code, 401, "{token:?}: {v}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
    }
    // Another scheme with the right token is not a bearer token.
    let r = reqwest::Client::new()
        .post(&url)
        .header("authorization", format!("Basic {TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(l.settings().subscriptions, ["T.*"], "nothing changed");
    let (code, v, _) = post(&url, Some(TOKEN), body).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(l.settings().subscriptions, ["Q.*"]);
    running.stop().await;
}

#[tokio::test]
async fn the_feed_moves_only_to_allowed_hosts() {
    let (sim, running, base) = with_admin(|a| a).await;
    let l = running.listener.clone();
    // Another server, named by a host that is not the configured feed's:
    // the listener must never connect there (it would send the API key).
    let elsewhere = mdp::sim::start(quiet()).await.unwrap();
    let port = elsewhere.ws_url().rsplit(':').next().unwrap().to_string();
    for feed in [
        format!("ws://localhost:{port}"),
        format!("ws://evil.example:{port}"),
        "wss://socket.massive.com".to_string(),
    ] {
        let (code, v, _) = post(
            &format!("{base}/feed"),
            Some(TOKEN),
            serde_json::json!({"feed": feed}),
        )
        .await;
        assert_eq!(code, 400, "{feed}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("is not allowed"),
            "{v}"
        );
        assert_eq!(v["current"]["feed_url"], sim.ws_url());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(elsewhere.stats().connections.load(Ordering::Relaxed), 0);
    assert_eq!(l.stats.sessions.load(Ordering::Relaxed), 1, "no reconnect");
    assert_eq!(l.settings().feed_url, sim.ws_url());
    // The configured host, on another port, is allowed by default.
    let (code, v, _) = post(
        &format!("{base}/feed"),
        Some(TOKEN),
        serde_json::json!({"feed": "ws://127.0.0.1:9"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    running.stop().await;

    // An explicit allow-list replaces the default (host names, any case).
    let explicit = Arc::new(MassiveListener::new(
        MassiveConfig {
            feed_hosts: vec!["Feed.Example".into(), " other.example ".into()],
            ..massive_args(&sim, &support::unique("hosts"))
        },
        Arc::new(EmbeddedQueue::new()),
    ));
    assert!(explicit.set_feed("wss://feed.example:8443").is_ok());
    assert!(explicit.set_feed("ws://OTHER.example").is_ok());
    let e = explicit.set_feed(&sim.ws_url()).unwrap_err();
    assert!(e.contains("`127.0.0.1` is not allowed"), "{e}");
}

#[tokio::test]
async fn admin_changes_are_rate_limited() {
    let (_sim, running, base) = with_admin(|a| MassiveConfig {
        admin: AdminAccess {
            admin_change_interval_ms: 60_000,
            ..admin_access()
        },
        ..a
    })
    .await;
    let l = running.listener.clone();
    let url = format!("{base}/subscriptions");
    // A refused change does not count.
    let (code, _, _) = post(&url, Some(TOKEN), serde_json::json!(["X.*"])).await;
    assert_eq!(code, 400);
    let (code, v, _) = post(&url, Some(TOKEN), serde_json::json!(["Q.*"])).await;
    assert_eq!(code, 200, "{v}");
    for (path, body) in [
        ("/subscriptions", serde_json::json!(["A.*"])),
        ("/market", serde_json::json!({"market": "stocks"})),
    ] {
        let (code, v, headers) = post(&format!("{base}{path}"), Some(TOKEN), body).await;
        assert_eq!(code, 429, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("retry in"), "{v}");
        let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&after), "Retry-After {after}");
    }
    assert_eq!(
        l.settings().subscriptions,
        ["Q.*"],
        "the limited change was not applied"
    );
    running.stop().await;
}

#[tokio::test]
async fn the_listener_is_started_stopped_and_restarted_through_the_control_api() {
    let sim = sim(quiet()).await;
    let args = MassiveConfig {
        auto_start: false,
        ..massive_args(&sim, &support::unique("lifecycle"))
    };
    let running = massive(args, Arc::new(EmbeddedQueue::new()));
    let l = running.listener.clone();
    let base = massive_admin(&l).await;
    let connections = || sim.stats().connections.load(Ordering::Relaxed);
    let connected = |l: &MassiveListener| l.stats.connected.load(Ordering::Relaxed);
    // Auto-start off: it waits for /start and never dials the feed.
    assert!(eventually(5, || l.status_json()["state"] == "stopped").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        connections(),
        0,
        "a listener that is not started does not connect"
    );
    assert_eq!(l.status_json()["running"], false);
    // A control change needs the token.
    let (code, _, _) = post(&format!("{base}/start"), None, Value::Null).await;
    assert_eq!(code, 401);
    let (code, v, _) = post(&format!("{base}/start"), Some(TOKEN), Value::Null).await;
    assert_eq!(
        (code, &v["running"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    assert!(eventually(20, || l.stats.events.load(Ordering::Relaxed) > 0).await);
    assert_eq!(connections(), 1);
    // Stop: the connection closes and stays closed.
    let (code, v, _) = post(&format!("{base}/stop"), Some(TOKEN), Value::Null).await;
    assert_eq!(
        (code, &v["running"]),
        (200, &serde_json::json!(false)),
        "{v}"
    );
    assert!(
        eventually(10, || !connected(&l)
            && l.status_json()["state"] == "stopped")
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connections(), 1, "a stopped listener does not reconnect");
    // Restart: a new connection, counted.
    let (code, v, _) = post(&format!("{base}/restart"), Some(TOKEN), Value::Null).await;
    assert_eq!((code, &v["restarts"]), (200, &serde_json::json!(1)), "{v}");
    assert!(eventually(20, || connections() == 2 && connected(&l)).await);
    assert_eq!(l.status_json()["restarts"], 1);
    running.stop().await;
}
