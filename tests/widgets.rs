//! The widget WebSocket protocol (seed WDS, seed-inventory §5.1) against an
//! in-process server: every action and error path, both auth modes, pattern
//! subscriptions, limits, a slow client, and a store restart.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mdp::store::{EmbeddedStore, Store, Write};
use mdp::widgets::{ServeArgs, serve};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn server(
    store: Arc<dyn Store>,
    args: ServeArgs,
) -> (String, tokio::sync::watch::Sender<bool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = serve(store, args, rx).await.expect("serve");
    (format!("ws://{}/ws", handle.addr), tx)
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(c))) => {
                return json!({"closed": c.map(|c| u16::from(c.code)).unwrap_or(0)});
            }
            Some(Ok(_)) => continue,
            other => return json!({"closed": format!("{other:?}")}),
        }
    }
}

fn publish(channel: &str, message: &str) -> Write {
    Write::Publish {
        channel: channel.into(),
        message: message.into(),
    }
}

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
    let (url, _stop) = server(store.clone(), ServeArgs::default()).await;
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
    let (url, _stop) = server(store.clone(), ServeArgs::default()).await;
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
    let args = ServeArgs {
        auth_enabled: true,
        auth_api_key: Some("s3cret".into()),
        ..ServeArgs::default()
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
    let mut skipped = connect(&url).await;
    send(&mut skipped, json!({"action": "subscribe", "feed": "x"})).await;
    assert_eq!(recv(&mut skipped).await, json!({"status": "unauthorized"}));
    assert_eq!(recv(&mut skipped).await, json!({"closed": 1008}));
}

#[tokio::test]
async fn limits_close_abusive_clients_without_hurting_others() {
    let args = ServeArgs {
        max_rate: 20,
        max_subscriptions: 3,
        max_frame: 1024,
        ..ServeArgs::default()
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
    assert!(
        recv(&mut huge).await.get("closed").is_some(),
        "an oversized frame closes the connection"
    );
    store.apply(&[publish("f", "1")], false).await.unwrap();
    assert_eq!(
        recv(&mut good).await,
        json!(1),
        "other clients are unaffected"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_others_keep_receiving() {
    let args = ServeArgs {
        client_queue: 256,
        ..ServeArgs::default()
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
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 2000 {
            if recv(&mut fast).await.get("closed").is_some() {
                break;
            }
            n += 1;
        }
        n
    });
    // Bursts smaller than the queue, so a reading client keeps up.
    for _ in 0..40 {
        let writes: Vec<Write> = (0..50)
            .map(|_| publish("t", &format!("\"{payload}\"")))
            .collect();
        store.apply(&writes, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    let (url, _stop) = server(store.clone(), ServeArgs::default()).await;
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
