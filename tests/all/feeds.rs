//! Feeds end to end: simulator → listener → queues (embedded and real
//! RabbitMQ), every event counted by type; each scripted fault and the
//! documented client reaction; market-closed polling; the admin API and
//! its guard (token, feed host allow-list, change rate limit);
//! Finlight end to end; record and replay. (The seeded fuzz run of the
//! Massive frame parser is in tests/fuzz.rs.)

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mdp::feed::admin::AdminAccess;
use mdp::feed::finlight::{FinlightArgs, FinlightListener, Outcome};
use mdp::feed::massive::{MassiveArgs, MassiveListener, parse_frame};
use mdp::queue::{EmbeddedQueue, Queue};
use mdp::sim::{Fault, Profile, SimHandle, SimulateArgs};
use serde_json::Value;
use tokio::sync::watch;

/// Monday 2026-01-05 09:59:57 EST: the regular session, three seconds before a minute ends.
const OPEN_AT: &str = "2026-01-05T14:59:57Z";
/// Saturday 2026-01-03 noon EST.
const SATURDAY: &str = "2026-01-03T17:00:00Z";

async fn sim(args: SimulateArgs) -> SimHandle {
    mdp::sim::start(SimulateArgs {
        at: args.at.clone().or(Some(OPEN_AT.into())),
        ..args
    })
    .await
    .expect("simulator starts")
}

fn quiet() -> SimulateArgs {
    SimulateArgs {
        symbols: 200,
        profile: Profile::Quiet,
        news_per_min: 0.0,
        ..SimulateArgs::default()
    }
}

/// The admin token of the listeners under test.
const TOKEN: &str = "test-admin-token";

/// Admin writes allowed with [`TOKEN`], not rate limited.
fn admin_access() -> AdminAccess {
    AdminAccess {
        admin_token: Some(TOKEN.into()),
        admin_change_interval_ms: 0,
    }
}

/// Wait (up to `secs`) until `cond` holds; false on timeout.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

struct Running<L> {
    listener: Arc<L>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl<L> Running<L> {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

fn massive(args: MassiveArgs, queue: Arc<dyn Queue>) -> Running<MassiveListener> {
    let listener = Arc::new(MassiveListener::new(args, queue));
    let (stop, rx) = watch::channel(false);
    let l = listener.clone();
    let task = tokio::spawn(async move {
        l.run(rx).await.expect("listener runs");
    });
    Running {
        listener,
        stop,
        task,
    }
}

fn massive_args(sim: &SimHandle, prefix: &str) -> MassiveArgs {
    MassiveArgs {
        feed_url: sim.ws_url(),
        api_key: Some("test-key".into()),
        subscriptions: "T.*,Q.*,A.*,AM.*,LULD.*,NOI.*".into(),
        message_ttl_ms: 600_000,
        queue_prefix: format!("{prefix}."),
        stall_timeout_ms: 5_000,
        max_backoff_ms: 1_000,
        refused_wait_ms: 1_000,
        admin: admin_access(),
        ..MassiveArgs::default()
    }
}

/// Consume `queue` until `expected` events arrived (or nothing more comes
/// for 5 s); events counted by type (`event_type`, or `ev` for pass-through).
async fn drain(q: &Arc<dyn Queue>, queue: &str, expected: u64) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut total = 0u64;
    if expected == 0 {
        return counts;
    }
    let mut consumer = q.consume(queue, 1000).await.expect("consume");
    let acker = consumer.acker();
    while total < expected {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        else {
            break;
        };
        for e in mdp::event::split_body(&d.body, 1 << 24).expect("queue bodies are events") {
            let kind = e.value["event_type"]
                .as_str()
                .or(e.value["ev"].as_str())
                .unwrap_or("?")
                .to_string();
            *counts.entry(kind).or_default() += 1;
            total += 1;
        }
        acker.ack(d.tag, false).await.expect("ack");
    }
    counts
}

/// Average profile for a few simulated seconds (crossing a minute), then the
/// market closes; every event the simulator sent must be on the queues.
async fn nothing_lost(queue: Arc<dyn Queue>, batch: bool) {
    let sim = sim(SimulateArgs {
        symbols: 2000,
        profile: Profile::Average,
        news_per_min: 0.0,
        ..SimulateArgs::default()
    })
    .await;
    let prefix = support::unique("e2e");
    let running = massive(
        MassiveArgs {
            batch_frames: batch,
            ..massive_args(&sim, &prefix)
        },
        queue.clone(),
    );
    let stats = sim.stats();
    assert!(
        eventually(60, || stats.sent("AM") > 0
            && stats.sent("LULD") > 0
            && stats.sent_total() > 20_000)
        .await,
        "the simulator streams, minute bars and LULD included: {}",
        stats.to_json()
    );
    sim.clock
        .jump_to_session("closed")
        .expect("a closed session");
    // Wait until the simulator has sent its last frame.
    let mut sent_total = stats.sent_total();
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = stats.sent_total();
        if now == sent_total {
            break;
        }
        sent_total = now;
    }
    let l = running.listener.clone();
    assert!(
        eventually(180, || l.stats.events.load(Ordering::Relaxed) >= sent_total).await,
        "listener received {} of {sent_total}",
        l.stats.events.load(Ordering::Relaxed)
    );
    assert_eq!(l.stats.events.load(Ordering::Relaxed), sent_total);
    assert_eq!(l.stats.bad_frames.load(Ordering::Relaxed), 0);
    assert_eq!(l.stats.publish_errors.load(Ordering::Relaxed), 0);
    assert_eq!(l.stats.sessions.load(Ordering::Relaxed), 1, "no reconnects");
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for (queue_name, kinds) in [
        ("trades", &["T"][..]),
        ("quotes", &["Q"]),
        ("aggregate", &["A", "AM"]),
        ("halts", &["LULD"]),
        ("unknown", &["NOI"]),
    ] {
        let expected: u64 = kinds.iter().map(|k| stats.sent(k)).sum();
        assert_eq!(l.stats.queue_count(queue_name), expected, "{queue_name}");
        let counts = drain(&queue, &format!("{prefix}.{queue_name}"), expected).await;
        for (k, v) in counts {
            *got.entry(k).or_default() += v;
        }
    }
    for kind in ["T", "Q", "A", "AM", "LULD", "NOI"] {
        assert_eq!(
            got.get(kind).copied().unwrap_or(0),
            stats.sent(kind),
            "{kind} events on the queues vs sent: got {got:?}, sim {}",
            stats.to_json()
        );
    }
    eprintln!("events by type on the queues: {got:?}");
    for kind in ["T", "Q", "A", "AM", "LULD", "NOI"] {
        assert!(stats.sent(kind) > 0, "{kind} was exercised");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn average_profile_nothing_lost_embedded() {
    nothing_lost(Arc::new(EmbeddedQueue::new()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn average_profile_nothing_lost_rabbitmq_per_event() {
    let q = mdp::queue::open(&support::amqp_url())
        .await
        .expect("rabbitmq");
    nothing_lost(q, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn average_profile_nothing_lost_rabbitmq_frame_batched() {
    let q = mdp::queue::open(&support::amqp_url())
        .await
        .expect("rabbitmq");
    nothing_lost(q, true).await;
}

/// Start a quiet simulator and a streaming listener.
async fn streaming(
    extra: impl FnOnce(MassiveArgs) -> MassiveArgs,
) -> (SimHandle, Running<MassiveListener>) {
    let sim = sim(quiet()).await;
    let args = extra(massive_args(&sim, &support::unique("fault")));
    let running = massive(args, Arc::new(EmbeddedQueue::new()));
    let l = running.listener.clone();
    assert!(
        eventually(20, || l.stats.events.load(Ordering::Relaxed) > 0).await,
        "listener streams: {}",
        l.status_json()
    );
    (sim, running)
}

/// Arm `fault`, wait for the reaction counter, then for a new session that streams.
async fn fault_reconnects(fault: Fault, counter: impl Fn(&MassiveListener) -> u64) {
    let (sim, running) = streaming(|a| MassiveArgs {
        stall_timeout_ms: 2_000,
        ..a
    })
    .await;
    let l = running.listener.clone();
    sim.arm(fault);
    assert!(
        eventually(20, || counter(&l) == 1).await,
        "{fault:?} seen: {}",
        l.status_json()
    );
    let events = l.stats.events.load(Ordering::Relaxed);
    assert!(
        eventually(20, || l.stats.sessions.load(Ordering::Relaxed) >= 2
            && l.stats.events.load(Ordering::Relaxed) > events)
        .await,
        "reconnected and streaming after {fault:?}: {}",
        l.status_json()
    );
    assert!(l.stats.reconnects.load(Ordering::Relaxed) >= 1);
    running.stop().await;
}

#[tokio::test]
async fn fault_slow_consumer_reconnects() {
    fault_reconnects(Fault::SlowConsumer, |l| {
        l.stats.slow_consumers.load(Ordering::Relaxed)
    })
    .await;
}

#[tokio::test]
async fn fault_force_disconnect_reconnects() {
    fault_reconnects(Fault::ForceDisconnect, |l| {
        l.stats.force_disconnects.load(Ordering::Relaxed)
    })
    .await;
}

#[tokio::test]
async fn fault_abrupt_reset_reconnects() {
    fault_reconnects(Fault::Reset, |l| l.stats.dropped.load(Ordering::Relaxed)).await;
}

#[tokio::test]
async fn fault_stall_is_detected_and_reconnects() {
    fault_reconnects(Fault::Stall, |l| l.stats.stalls.load(Ordering::Relaxed)).await;
}

#[tokio::test]
async fn fault_max_connections_backs_off_long_then_reconnects() {
    fault_reconnects(Fault::MaxConnections, |l| {
        l.stats.max_connections.load(Ordering::Relaxed)
    })
    .await;
}

#[tokio::test]
async fn fault_auth_failure_backs_off_long_then_reconnects() {
    // The fault hits the next `auth`: force a reconnect first.
    let (sim, running) = streaming(|a| a).await;
    let l = running.listener.clone();
    sim.arm(Fault::AuthFailure);
    sim.arm(Fault::ForceDisconnect);
    assert!(
        eventually(20, || l.stats.auth_failures.load(Ordering::Relaxed) == 1).await,
        "auth_failed seen: {}",
        l.status_json()
    );
    assert!(
        l.status_json()["last_error"]
            .as_str()
            .unwrap()
            .contains("auth_failed")
    );
    let events = l.stats.events.load(Ordering::Relaxed);
    assert!(
        eventually(20, || l.stats.sessions.load(Ordering::Relaxed) == 2
            && l.stats.events.load(Ordering::Relaxed) > events)
        .await,
        "streams again after the wait: {}",
        l.status_json()
    );
    assert_eq!(sim.stats().authenticated.load(Ordering::Relaxed), 2);
    running.stop().await;
}

#[tokio::test]
async fn fault_garbage_and_oversize_frames_are_counted_and_skipped() {
    let (sim, running) = streaming(|a| a).await;
    let l = running.listener.clone();
    sim.arm(Fault::Garbage);
    sim.arm(Fault::Oversize);
    assert!(
        eventually(20, || l.stats.bad_frames.load(Ordering::Relaxed) == 4
            && l.stats.too_large.load(Ordering::Relaxed) == 1)
        .await,
        "three garbage frames and one oversize frame counted: {}",
        l.status_json()
    );
    let events = l.stats.events.load(Ordering::Relaxed);
    assert!(eventually(20, || l.stats.events.load(Ordering::Relaxed) > events).await);
    assert_eq!(
        l.stats.sessions.load(Ordering::Relaxed),
        1,
        "bad frames do not cost the connection"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_key_evicts_the_first() {
    let (sim, first) = streaming(|a| MassiveArgs {
        refused_wait_ms: 600_000,
        ..a
    })
    .await;
    let second = massive(
        massive_args(&sim, &support::unique("second")),
        Arc::new(EmbeddedQueue::new()),
    );
    let (a, b) = (first.listener.clone(), second.listener.clone());
    assert!(
        eventually(20, || a.stats.max_connections.load(Ordering::Relaxed) == 1
            && b.stats.events.load(Ordering::Relaxed) > 0)
        .await,
        "oldest evicted, newcomer streams: {} / {}",
        a.status_json(),
        b.status_json()
    );
    assert_eq!(a.stats.state(), "refused");
    assert!(!a.stats.connected.load(Ordering::Relaxed));
    assert_eq!(sim.stats().evictions.load(Ordering::Relaxed), 1);
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_as_a_slow_consumer() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let sim = sim(SimulateArgs {
        symbols: 500,
        rate: Some(20_000),
        send_buffer_frames: 64,
        ..quiet()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}/stocks", sim.ws_url()))
        .await
        .unwrap();
    for m in [
        r#"{"action":"auth","params":"k"}"#,
        r#"{"action":"subscribe","params":"T.*,Q.*"}"#,
    ] {
        ws.send(Message::Text(m.into())).await.unwrap();
    }
    // Never read: the server's buffers fill, latency grows, then it gives up on us.
    let stats = sim.stats();
    assert!(
        eventually(90, || stats.slow_consumers.load(Ordering::Relaxed) == 1).await,
        "{}",
        stats.to_json()
    );
    drop(ws);
}

#[tokio::test]
async fn a_feed_url_that_already_ends_in_the_market_path_is_accepted() {
    // As `mdp simulate` prints it: ws://127.0.0.1:8090/stocks.
    let (_sim, running) = streaming(|a| MassiveArgs {
        feed_url: format!("{}/stocks", a.feed_url),
        ..a
    })
    .await;
    let l = running.listener.clone();
    assert_eq!(l.stats.config_errors.load(Ordering::Relaxed), 0);
    assert_eq!(l.stats.sessions.load(Ordering::Relaxed), 1);
    running.stop().await;
}

/// A listener dialing `feed_url` ends up `misconfigured` after one connect,
/// its reason naming `flag`, and waits the long refused wait.
async fn misconfigured(feed_url: String, flag: &str) {
    let running = massive(
        MassiveArgs {
            feed_url,
            api_key: Some("test-key".into()),
            max_backoff_ms: 50,
            refused_wait_ms: 600_000,
            ..MassiveArgs::default()
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
    let sim = sim(SimulateArgs {
        at: Some(SATURDAY.into()),
        ..quiet()
    })
    .await;
    let running = massive(
        MassiveArgs {
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
    let (sim, running) = streaming(|a| MassiveArgs {
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
    let sim = sim(SimulateArgs {
        at: Some(SATURDAY.into()),
        fault: vec![Fault::RestLie],
        ..quiet()
    })
    .await;
    let running = massive(
        MassiveArgs {
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
    extra: impl FnOnce(MassiveArgs) -> MassiveArgs,
) -> (SimHandle, Running<MassiveListener>, String) {
    let (sim, running) = streaming(|a| {
        extra(MassiveArgs {
            subscriptions: "T.*".into(),
            ..a
        })
    })
    .await;
    let base = massive_admin(&running.listener).await;
    (sim, running, base)
}

/// POST `body` to `url` with `token` (none: no `Authorization`); status and JSON body.
async fn post(
    url: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = reqwest::Client::new().post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let (code, headers) = (r.status().as_u16(), r.headers().clone());
    (code, r.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn admin_writes_are_refused_without_a_configured_token_reads_stay_open() {
    let (_sim, running, base) = with_admin(|a| MassiveArgs {
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
        MassiveArgs {
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
    let (_sim, running, base) = with_admin(|a| MassiveArgs {
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
async fn finlight_filter_changes_are_guarded() {
    let sim = sim(quiet()).await;
    let args = |admin| FinlightArgs {
        admin,
        ..finlight_args(&sim, &support::unique("guard"))
    };
    let (open, _stop_open, _t1) =
        finlight(args(AdminAccess::default()), Arc::new(EmbeddedQueue::new()));
    let (l, _stop, _t2) = finlight(
        args(AdminAccess {
            admin_change_interval_ms: 60_000,
            ..admin_access()
        }),
        Arc::new(EmbeddedQueue::new()),
    );
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 1).await);
    let serve = |l: &Arc<FinlightListener>| {
        let router = mdp::feed::finlight::admin_router(l.clone());
        async move {
            let addr = mdp::feed::admin::serve("127.0.0.1:0", router)
                .await
                .unwrap();
            format!("http://{addr}/filter")
        }
    };
    let change = serde_json::json!({"sources": ["www.reuters.com"]});
    let (code, v, _) = post(&serve(&open).await, Some(TOKEN), change.clone()).await;
    assert_eq!(code, 403, "no token configured: {v}");
    let url = serve(&l).await;
    let (code, _, _) = post(&url, Some("wrong"), change.clone()).await;
    assert_eq!(code, 401);
    let (code, v, _) = post(&url, Some(TOKEN), change).await;
    assert_eq!(code, 200, "{v}");
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 2).await);
    let (code, v, _) = post(
        &url,
        Some(TOKEN),
        serde_json::json!({"sources": ["www.ft.com"]}),
    )
    .await;
    assert_eq!(code, 429, "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        l.stats.admits.load(Ordering::Relaxed),
        2,
        "no takeover reconnect"
    );
    assert_eq!(l.filter().sources, ["www.reuters.com"]);
    assert_eq!(open.filter().sources, Vec::<String>::new());
}

#[tokio::test]
async fn record_and_replay_reproduce_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl");
    let original = sim(SimulateArgs {
        record: Some(file.clone()),
        ..quiet()
    })
    .await;
    let stats = original.stats();
    assert!(eventually(20, || stats.generated[0].load(Ordering::Relaxed) > 300).await);
    drop(original);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&file).unwrap();
    let mut recorded = 0u64;
    for line in text.lines() {
        let rec: mdp::feed::RecordedFrame = serde_json::from_str(line).unwrap();
        recorded += parse_frame(&rec.frame)
            .unwrap()
            .routed
            .values()
            .map(|v| v.len() as u64)
            .sum::<u64>();
    }
    assert!(recorded > 300);

    let replay = sim(SimulateArgs {
        replay: Some(file),
        replay_speed: 20.0,
        ..quiet()
    })
    .await;
    let running = massive(
        massive_args(&replay, &support::unique("replay")),
        Arc::new(EmbeddedQueue::new()),
    );
    let (l, rstats) = (running.listener.clone(), replay.stats());
    assert!(
        eventually(60, || rstats.replay_done.load(Ordering::Relaxed)
            && l.stats.events.load(Ordering::Relaxed) == recorded)
        .await,
        "replayed {} of {recorded}: {}",
        l.stats.events.load(Ordering::Relaxed),
        rstats.to_json()
    );
    running.stop().await;
}

fn finlight(
    args: FinlightArgs,
    queue: Arc<dyn Queue>,
) -> (
    Arc<FinlightListener>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Outcome>,
) {
    let listener = Arc::new(FinlightListener::new(args, queue));
    let (stop, rx) = watch::channel(false);
    let l = listener.clone();
    let task = tokio::spawn(async move { l.run(rx).await.expect("finlight listener runs") });
    (listener, stop, task)
}

fn finlight_args(sim: &SimHandle, prefix: &str) -> FinlightArgs {
    FinlightArgs {
        url: sim.finlight_url(),
        api_key: Some("news-key".into()),
        ping_interval_ms: 100,
        pong_timeout_ms: 1_000,
        rate_limit_wait_ms: 200,
        blocked_wait_ms: 200,
        max_backoff_ms: 500,
        queue_prefix: format!("{prefix}."),
        admin: admin_access(),
        ..FinlightArgs::default()
    }
}

async fn finlight_end_to_end(queue: Arc<dyn Queue>) {
    let sim = sim(quiet()).await;
    let fl = sim.finlight();
    let prefix = support::unique("news");
    let (l, stop, task) = finlight(finlight_args(&sim, &prefix), queue.clone());
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 1).await);
    let mut links = Vec::new();
    for _ in 0..5 {
        links.push(fl.publish_article()["link"].as_str().unwrap().to_string());
    }
    assert!(eventually(20, || l.stats.published.load(Ordering::Relaxed) == 5).await);
    // Duplicates (and the latest article re-sent on reconnect) are skipped.
    fl.admin(&serde_json::json!({"action": "duplicate"}))
        .unwrap();
    assert!(eventually(20, || l.stats.duplicates.load(Ordering::Relaxed) == 1).await);
    // admin_kick: close, wait retryAfter, reconnect.
    fl.admin(&serde_json::json!({"action": "kick", "retryAfter": 200}))
        .unwrap();
    assert!(
        eventually(20, || l.stats.kicks.load(Ordering::Relaxed) == 1
            && l.stats.admits.load(Ordering::Relaxed) == 2)
        .await
    );
    assert!(
        eventually(20, || l.stats.duplicates.load(Ordering::Relaxed) == 2).await,
        "latest article re-sent on connect and skipped"
    );
    // error "rate limit": close 4001, wait, reconnect.
    fl.admin(&serde_json::json!({"action": "error", "text": "rate limit exceeded"}))
        .unwrap();
    assert!(
        eventually(20, || l.stats.rate_limited.load(Ordering::Relaxed) == 1
            && l.stats.admits.load(Ordering::Relaxed) == 3)
        .await
    );
    links.push(fl.publish_article()["link"].as_str().unwrap().to_string());
    assert!(eventually(20, || l.stats.published.load(Ordering::Relaxed) == 6).await);
    assert!(
        eventually(20, || l.stats.pongs.load(Ordering::Relaxed) > 0).await,
        "pings answered"
    );
    assert_eq!(l.stats.bad_frames.load(Ordering::Relaxed), 0);
    // The server stops answering pings: the pong watchdog reconnects.
    fl.admin(&serde_json::json!({"action": "mute"})).unwrap();
    assert!(
        eventually(20, || l.stats.pong_timeouts.load(Ordering::Relaxed) == 1
            && l.stats.admits.load(Ordering::Relaxed) == 4)
        .await,
        "{}",
        l.status_json()
    );

    // The queue holds the articles unchanged.
    let mut consumer = queue.consume(&format!("{prefix}.news"), 100).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("article on the queue")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            v["companies"][0]["primaryListing"]["exchangeCode"]
                .as_str()
                .map(|s| s.starts_with('X')),
            Some(true)
        );
        assert!(v["sentiment"].is_string());
        got.push(v["link"].as_str().unwrap().to_string());
    }
    assert_eq!(got, links);

    // Another session of the key takes over: this one is preempted for good.
    let (other, stop2, task2) = finlight(finlight_args(&sim, &prefix), queue.clone());
    let outcome = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Preempted(_)), "{outcome:?}");
    assert_eq!(l.stats.state(), "preempted");
    assert!(eventually(20, || other.stats.admits.load(Ordering::Relaxed) == 1).await);
    // Close 1008 (blocked user): stop for good.
    fl.admin(&serde_json::json!({"action": "close", "code": 1008}))
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), task2)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Blocked(_)), "{outcome:?}");
    let _ = (stop, stop2);
}

#[tokio::test]
async fn finlight_end_to_end_embedded() {
    finlight_end_to_end(Arc::new(EmbeddedQueue::new())).await;
}

#[tokio::test]
async fn finlight_end_to_end_rabbitmq() {
    finlight_end_to_end(mdp::queue::open(&support::amqp_url()).await.unwrap()).await;
}

#[tokio::test]
async fn finlight_raw_stream_filters_and_auth() {
    let sim = sim(SimulateArgs {
        api_key: Some("news-key".into()),
        ..quiet()
    })
    .await;
    let fl = sim.finlight();
    // A wrong key is refused at the upgrade and retried with backoff.
    let (bad, bad_stop, _t) = finlight(
        FinlightArgs {
            api_key: Some("wrong".into()),
            ..finlight_args(&sim, &support::unique("bad"))
        },
        Arc::new(EmbeddedQueue::new()),
    );
    assert!(eventually(20, || bad.stats.reconnects.load(Ordering::Relaxed) >= 2).await);
    assert_eq!(bad.stats.admits.load(Ordering::Relaxed), 0);
    let _ = bad_stop.send(true);
    // Seed some articles; the raw stream sends no initial article and no enrichment.
    // Follow the ticker most written about (activity is Zipf-like).
    let mut seen = BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        let a = fl.publish_article();
        *seen
            .entry(a["companies"][0]["ticker"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let wanted = seen
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t)
        .unwrap();
    let q: Arc<dyn Queue> = Arc::new(EmbeddedQueue::new());
    let prefix = support::unique("raw");
    let (l, _stop, _task) = finlight(
        FinlightArgs {
            raw: true,
            query: Some(format!("ticker:{wanted}")),
            ..finlight_args(&sim, &prefix)
        },
        q.clone(),
    );
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        l.stats.articles.load(Ordering::Relaxed),
        0,
        "no initial article on raw"
    );
    let mut expected = 0;
    for _ in 0..200 {
        let a = fl.publish_article();
        if a["companies"][0]["ticker"] == wanted.as_str() {
            expected += 1;
        }
    }
    assert!(expected > 0);
    assert!(
        eventually(20, || l.stats.published.load(Ordering::Relaxed) == expected).await,
        "{}",
        l.status_json()
    );
    let mut c = q.consume(&format!("{prefix}.news"), 10).await.unwrap();
    let d = c.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    assert!(
        v.get("sentiment").is_none() && v.get("companies").is_none(),
        "{v}"
    );
    // A filter change through the admin API is validated, then reconnects.
    let addr = mdp::feed::admin::serve("127.0.0.1:0", mdp::feed::finlight::admin_router(l.clone()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/filter"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"language": "english"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("http://{addr}/filter"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"sources": ["www.reuters.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 2).await);
    assert_eq!(l.filter().sources, vec!["www.reuters.com".to_string()]);
}

#[tokio::test]
async fn finlight_connection_lifetime_limit_is_survived() {
    let sim = sim(SimulateArgs {
        finlight_max_lifetime_ms: 300,
        ..quiet()
    })
    .await;
    let q: Arc<dyn Queue> = Arc::new(EmbeddedQueue::new());
    let prefix = support::unique("life");
    let (l, _stop, _task) = finlight(finlight_args(&sim, &prefix), q);
    assert!(
        eventually(30, || l.stats.admits.load(Ordering::Relaxed) >= 3).await,
        "reconnects after each server-side close: {}",
        l.status_json()
    );
    let fl = sim.finlight();
    fl.publish_article();
    assert!(eventually(20, || l.stats.articles.load(Ordering::Relaxed) >= 1).await);
}

#[tokio::test]
async fn the_listener_is_started_stopped_and_restarted_through_the_control_api() {
    let sim = sim(quiet()).await;
    let args = MassiveArgs {
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
