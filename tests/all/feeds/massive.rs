//! The Massive stream end to end: nothing lost on either queue, each scripted
//! fault and its reconnect, evictions and slow consumers, record and replay.

use super::*;

/// Average profile for a few simulated seconds (crossing a minute), then the
/// market closes; every event the simulator sent must be on the queues.
async fn nothing_lost(queue: Arc<dyn Queue>, batch: bool) {
    let sim = sim(SimConfig {
        symbols: 2000,
        profile: Profile::Average,
        news_per_min: 0.0,
        ..SimConfig::default()
    })
    .await;
    let prefix = support::unique("e2e");
    let running = massive(
        MassiveConfig {
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

/// Arm `fault`, wait for the reaction counter, then for a new session that streams.
async fn fault_reconnects(fault: Fault, counter: impl Fn(&MassiveListener) -> u64) {
    let (sim, running) = streaming(|a| MassiveConfig {
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
    let (sim, first) = streaming(|a| MassiveConfig {
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
    let sim = sim(SimConfig {
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
    let (_sim, running) = streaming(|a| MassiveConfig {
        feed_url: format!("{}/stocks", a.feed_url),
        ..a
    })
    .await;
    let l = running.listener.clone();
    assert_eq!(l.stats.config_errors.load(Ordering::Relaxed), 0);
    assert_eq!(l.stats.sessions.load(Ordering::Relaxed), 1);
    running.stop().await;
}

#[tokio::test]
async fn record_and_replay_reproduce_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl");
    let original = sim(SimConfig {
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

    let replay = sim(SimConfig {
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
