//! The widget protocol: subscribe, get and unsubscribe, patterns, the shared
//! key, per-client limits, slow readers and a Redis restart.

use super::*;

#[tokio::test]
async fn subscribe_get_unsubscribe_and_invalid_actions() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    store
        .apply(
            &[
                Write::Set {
                    key: "quote:AAA".into(),
                    value: r#"{"symbol":"AAA","close":1.5}"#.into(),
                    ttl: None,
                },
                Write::Push {
                    key: "news:feed:latest".into(),
                    value: r#"{"title":"a"}"#.into(),
                    max_len: 10,
                    ttl: None,
                },
                Write::Push {
                    key: "news:feed:latest".into(),
                    value: r#"{"title":"b"}"#.into(),
                    max_len: 10,
                    ttl: None,
                },
            ],
            false,
        )
        .await
        .unwrap();
    let (url, _stop) = server(store.clone(), ServeConfig::default()).await;
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"action": "get", "cache": "quote:AAA"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"cache": "quote:AAA", "data": {"symbol": "AAA", "close": 1.5}})
    );
    send(
        &mut ws,
        json!({"action": "get", "cache": "news:feed:latest", "limit": 1}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"cache": "news:feed:latest", "data": [{"title": "b"}]}),
        "newest first, limited"
    );
    send(&mut ws, json!({"action": "get", "cache": "nothing:here"})).await;
    assert_eq!(recv(&mut ws).await["data"], Value::Null);
    send(&mut ws, json!({"action": "subscribe", "feed": "quote:AAA"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"status": "subscribed", "feed": "quote:AAA"})
    );
    store
        .apply(
            &[publish("quote:AAA", r#"{"symbol":"AAA","close":2}"#)],
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        recv(&mut ws).await,
        json!({"symbol": "AAA", "close": 2}),
        "raw payload pushed"
    );
    send(
        &mut ws,
        json!({"action": "unsubscribe", "feed": "quote:AAA"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"status": "unsubscribed", "feed": "quote:AAA"})
    );
    send(&mut ws, json!({"action": "dance"})).await;
    assert_eq!(recv(&mut ws).await, json!({"status": "invalid action"}));
    send(&mut ws, json!({"action": "auth", "api_key": "x"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"status": "invalid action"}),
        "auth is invalid when auth is off"
    );
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await, json!({"status": "invalid json"}));
    // After unsubscribing nothing more arrives; the connection still works.
    store
        .apply(&[publish("quote:AAA", "{}")], false)
        .await
        .unwrap();
    send(&mut ws, json!({"action": "get", "cache": "quote:AAA"})).await;
    assert_eq!(recv(&mut ws).await["cache"], "quote:AAA");
}

#[tokio::test]
async fn pattern_subscriptions_deliver() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let (url, _stop) = server(store.clone(), ServeConfig::default()).await;
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"action": "subscribe", "feed": "quote:*"})).await;
    recv(&mut ws).await;
    store
        .apply(
            &[
                publish("quote:ZZZ", r#"{"symbol":"ZZZ"}"#),
                publish("quotes:no", "{}"),
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await, json!({"symbol": "ZZZ"}));
}

#[tokio::test]
async fn shared_key_auth() {
    let args = ServeConfig {
        widgets: WidgetConfig {
            auth_enabled: true,
            auth_api_key: Some("s3cret".into()),
            auth_timeout_secs: 1,
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let (url, _stop) = server(Arc::new(EmbeddedStore::new()), args).await;
    let mut ok = connect(&url).await;
    send(&mut ok, json!({"action": "auth", "api_key": "s3cret"})).await;
    assert_eq!(recv(&mut ok).await, json!({"status": "authorized"}));
    send(&mut ok, json!({"action": "subscribe", "feed": "x"})).await;
    assert_eq!(recv(&mut ok).await["status"], "subscribed");
    let mut wrong = connect(&url).await;
    send(&mut wrong, json!({"action": "auth", "api_key": "nope"})).await;
    assert_eq!(recv(&mut wrong).await, json!({"status": "invalid key"}));
    assert_eq!(recv(&mut wrong).await, json!({"closed": 1008}));
    // The shared key has no expiry: the auth deadline no longer applies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&mut ok, json!({"action": "get", "cache": "k"})).await;
    assert_eq!(recv(&mut ok).await["cache"], "k", "still connected");
    let mut silent = connect(&url).await;
    assert_eq!(
        recv(&mut silent).await,
        json!({"status": "unauthorized"}),
        "no auth frame within the auth timeout"
    );
    assert_eq!(recv(&mut silent).await, json!({"closed": 1008}));
    let mut skipped = connect(&url).await;
    send(&mut skipped, json!({"action": "subscribe", "feed": "x"})).await;
    assert_eq!(recv(&mut skipped).await, json!({"status": "unauthorized"}));
    assert_eq!(recv(&mut skipped).await, json!({"closed": 1008}));
}

#[tokio::test]
async fn limits_close_abusive_clients_without_hurting_others() {
    let args = ServeConfig {
        widgets: WidgetConfig {
            max_rate: 20,
            max_subscriptions: 3,
            max_frame: 1024,
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let (url, _stop) = server(store.clone(), args).await;
    let mut good = connect(&url).await;
    send(&mut good, json!({"action": "subscribe", "feed": "f"})).await;
    recv(&mut good).await;
    let mut many = connect(&url).await;
    for i in 0..3 {
        send(
            &mut many,
            json!({"action": "subscribe", "feed": format!("f{i}")}),
        )
        .await;
        assert_eq!(recv(&mut many).await["status"], "subscribed");
    }
    send(&mut many, json!({"action": "subscribe", "feed": "f9"})).await;
    assert_eq!(recv(&mut many).await["status"], "too many subscriptions");
    let mut flood = connect(&url).await;
    let mut closed = false;
    for _ in 0..40 {
        if flood
            .send(Message::Text(
                json!({"action": "get", "cache": "k"}).to_string().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    for _ in 0..60 {
        let v = recv(&mut flood).await;
        if v.get("closed").is_some() {
            closed = v["closed"] == 1008;
            break;
        }
    }
    assert!(closed, "a flooding client is closed with 1008");
    let mut huge = connect(&url).await;
    let _ = huge.send(Message::Text("x".repeat(10_000).into())).await;
    assert_eq!(
        recv(&mut huge).await,
        json!({"closed": 1009}),
        "an oversized frame closes the connection with 1009"
    );
    store.apply(&[publish("f", "1")], false).await.unwrap();
    assert_eq!(
        recv(&mut good).await,
        json!(1),
        "other clients are unaffected"
    );
    // Each rejection is counted by reason.
    let metrics = reqwest::get(url.replace("ws://", "http://").replace("/ws", "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["rate", "subscriptions", "frame_size"] {
        assert!(
            metrics.contains(&format!("mdp_wds_rejected_total{{reason=\"{reason}\"}}")),
            "{reason} counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_others_keep_receiving() {
    let args = ServeConfig {
        widgets: WidgetConfig {
            client_queue: 256,
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let (url, _stop) = server(store.clone(), args).await;
    let mut slow = connect(&url).await;
    send(&mut slow, json!({"action": "subscribe", "feed": "t"})).await;
    recv(&mut slow).await;
    let mut fast = connect(&url).await;
    send(&mut fast, json!({"action": "subscribe", "feed": "t"})).await;
    recv(&mut fast).await;
    let payload = "y".repeat(8 * 1024);
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 2000 {
            if recv(&mut fast).await.get("closed").is_some() {
                break;
            }
            n += 1;
            progress_tx.send_replace(n);
        }
        n
    });
    // Bursts smaller than the queue, and never more than two ahead of the
    // reading client, so it keeps up however loaded the machine is.
    for burst in 0..40 {
        let writes: Vec<Write> = (0..50)
            .map(|_| publish("t", &format!("\"{payload}\"")))
            .collect();
        store.apply(&writes, false).await.unwrap();
        let behind = (burst as usize).saturating_sub(1) * 50;
        progress.wait_for(|n| *n >= behind).await.unwrap();
    }
    assert_eq!(
        reader.await.unwrap(),
        2000,
        "the reading client got every message"
    );
    // The slow one was closed with 1013 after its bounded queue filled.
    let mut code = None;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
        if let Ok(Message::Close(c)) = frame {
            code = c.map(|c| u16::from(c.code));
            break;
        }
    }
    assert_eq!(code, Some(1013));
}

#[tokio::test]
async fn subscriptions_resume_after_a_redis_restart() {
    let mut redis = support::PrivateRedis::start().await;
    let store = mdp::store::open(&redis.url()).await.unwrap();
    let (url, _stop) = server(store.clone(), ServeConfig::default()).await;
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"action": "subscribe", "feed": "quote:*"})).await;
    recv(&mut ws).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().await;
    let mut got = None;
    for _ in 0..60 {
        let _ = store
            .apply(&[publish("quote:R", r#"{"symbol":"R"}"#)], false)
            .await;
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(200), ws.next()).await
        {
            got = Some(t.to_string());
            break;
        }
    }
    assert_eq!(got.as_deref(), Some(r#"{"symbol":"R"}"#));
}
