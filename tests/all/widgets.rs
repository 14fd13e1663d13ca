//! The widget WebSocket protocol (seed WDS) against an
//! in-process server: every action and error path, both auth modes, pattern
//! subscriptions, limits, a slow client, and a store restart.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mdp::store::{EmbeddedStore, Store, Write};
use mdp::widgets::{ServeArgs, WidgetArgs, serve};
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
        widgets: WidgetArgs {
            auth_enabled: true,
            auth_api_key: Some("s3cret".into()),
            auth_timeout_secs: 1,
            ..WidgetArgs::default()
        },
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
    let args = ServeArgs {
        widgets: WidgetArgs {
            max_rate: 20,
            max_subscriptions: 3,
            max_frame: 1024,
            ..WidgetArgs::default()
        },
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
    let args = ServeArgs {
        widgets: WidgetArgs {
            client_queue: 256,
            ..WidgetArgs::default()
        },
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

/// Connect with extra request headers (e.g. `Origin`).
async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Ws, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(secret: &str, exp: u64, feeds: Option<&[&str]>) -> String {
    let claims = mdp::widgets::auth::Claims {
        exp,
        sub: Some("tester".into()),
        feeds: feeds.map(|f| f.iter().map(|s| s.to_string()).collect()),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Authenticate with `frame` on a fresh connection; the first reply.
async fn auth_reply(url: &str, frame: Value) -> (Ws, Value) {
    let mut ws = connect(url).await;
    send(&mut ws, frame).await;
    let v = recv(&mut ws).await;
    (ws, v)
}

#[tokio::test]
async fn signed_tokens_grant_only_their_feeds() {
    let args = ServeArgs {
        widgets: WidgetArgs {
            auth_enabled: true,
            auth_api_key: Some("shared".into()),
            jwt_secret: Some("jwt-secret".into()),
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
    };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    store
        .apply(
            &[Write::Set {
                key: "scanners:top_volume".into(),
                value: "[1]".into(),
                ttl: None,
            }],
            false,
        )
        .await
        .unwrap();
    let (url, _stop) = server(store.clone(), args).await;
    let token = hs256(
        "jwt-secret",
        now_secs() + 600,
        Some(&["quote:*", "news:feed:latest"]),
    );

    let (mut ws, v) = auth_reply(&url, json!({"action": "auth", "token": token})).await;
    assert_eq!(v, json!({"status": "authorized"}));
    for (feed, status) in [
        ("quote:AAA", "subscribed"),
        ("quote:B*", "subscribed"),
        ("news:feed:latest", "subscribed"),
        ("news:*", "forbidden"),
        ("*", "forbidden"),
        ("scanners:top_volume", "forbidden"),
    ] {
        send(&mut ws, json!({"action": "subscribe", "feed": feed})).await;
        assert_eq!(
            recv(&mut ws).await,
            json!({"status": status, "feed": feed}),
            "{feed}"
        );
    }
    send(
        &mut ws,
        json!({"action": "get", "cache": "scanners:top_volume"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"status": "forbidden", "cache": "scanners:top_volume"})
    );
    send(&mut ws, json!({"action": "auth", "token": "again"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"status": "invalid action"}),
        "auth only once"
    );
    store
        .apply(&[publish("quote:BBB", r#"{"symbol":"BBB"}"#)], false)
        .await
        .unwrap();
    assert_eq!(
        recv(&mut ws).await,
        json!({"symbol": "BBB"}),
        "pattern grant delivers"
    );
    send(
        &mut ws,
        json!({"action": "unsubscribe", "feed": "quote:B*"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"status": "unsubscribed", "feed": "quote:B*"})
    );
    send(&mut ws, json!({"action": "unsubscribe", "feed": "never"})).await;
    send(&mut ws, json!({"action": "get", "cache": "quote:AAA"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"cache": "quote:AAA", "data": null}),
        "unsubscribing from a feed not held is silent"
    );

    // The seed's front end can carry a token in `api_key`; the shared key still works.
    let (mut ws, v) = auth_reply(&url, json!({"action": "auth", "api_key": token})).await;
    assert_eq!(v, json!({"status": "authorized"}));
    send(
        &mut ws,
        json!({"action": "subscribe", "feed": "scanners:top_volume"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "forbidden");
    let (mut ws, v) = auth_reply(&url, json!({"action": "auth", "api_key": "shared"})).await;
    assert_eq!(v, json!({"status": "authorized"}));
    send(
        &mut ws,
        json!({"action": "get", "cache": "scanners:top_volume"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await["data"],
        json!([1]),
        "the shared key grants all"
    );

    // Error paths: each a status, then close 1008.
    let forged = hs256("other-secret", now_secs() + 600, None);
    let expired = hs256("jwt-secret", now_secs() - 3600, None);
    for (frame, status) in [
        (json!({"action": "auth", "token": forged}), "invalid token"),
        (json!({"action": "auth", "token": "a.b.c"}), "invalid token"),
        (json!({"action": "auth", "token": expired}), "token expired"),
        (json!({"action": "auth", "api_key": "wrong"}), "invalid key"),
        (json!({"action": "auth"}), "invalid key"),
        (json!({"action": "get", "cache": "x"}), "unauthorized"),
    ] {
        let (mut ws, v) = auth_reply(&url, frame.clone()).await;
        assert_eq!(v, json!({"status": status}), "{frame}");
        assert_eq!(recv(&mut ws).await, json!({"closed": 1008}), "{frame}");
    }
    let mut ws = connect(&url).await;
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await, json!({"status": "unauthorized"}));
    assert_eq!(recv(&mut ws).await, json!({"closed": 1008}));
}

#[tokio::test]
async fn eddsa_tokens_and_expiry_during_a_session() {
    // A throwaway Ed25519 key pair, for this test only.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIN0/vIpJkb4gcMYHEFZSTPA4WtuCyHnEGcq8khOyQGMX\n-----END PRIVATE KEY-----\n";
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA2r/EafRGhL71yYWVl3QxpflSuvaZJvanJ4/PdgISHcU=\n-----END PUBLIC KEY-----\n";
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("jwt.pub");
    std::fs::write(&public, PUBLIC).unwrap();
    let args = ServeArgs {
        widgets: WidgetArgs {
            jwt_public_key: Some(public),
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
    };
    let (url, _stop) = server(Arc::new(EmbeddedStore::new()), args).await;
    let sign = |exp: u64| {
        let claims = mdp::widgets::auth::Claims {
            exp,
            sub: None,
            feeds: None,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_pem(PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let mut anon = connect(&url).await;
    send(&mut anon, json!({"action": "subscribe", "feed": "x"})).await;
    assert_eq!(
        recv(&mut anon).await,
        json!({"status": "unauthorized"}),
        "a JWT key alone turns auth on"
    );
    let (mut ws, v) = auth_reply(
        &url,
        json!({"action": "auth", "token": sign(now_secs() + 600)}),
    )
    .await;
    assert_eq!(v, json!({"status": "authorized"}));
    send(&mut ws, json!({"action": "subscribe", "feed": "x"})).await;
    assert_eq!(recv(&mut ws).await["status"], "subscribed");
    let hs = hs256("whatever", now_secs() + 600, None);
    let (_, v) = auth_reply(&url, json!({"action": "auth", "token": hs})).await;
    assert_eq!(
        v,
        json!({"status": "invalid token"}),
        "HS256 is not configured"
    );
    // Inside the 5 s leeway: accepted, then closed when it runs out.
    let (mut ws, v) = auth_reply(
        &url,
        json!({"action": "auth", "token": sign(now_secs() - 3)}),
    )
    .await;
    assert_eq!(v, json!({"status": "authorized"}));
    let mut end = Vec::new();
    while end.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => end.push(serde_json::from_str::<Value>(&t).unwrap()),
            Ok(Some(Ok(Message::Close(c)))) => {
                end.push(json!({"closed": c.map(|c| u16::from(c.code))}))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        end,
        [json!({"status": "token expired"}), json!({"closed": 1008})]
    );
}

#[tokio::test]
async fn origin_allow_list() {
    let args = ServeArgs {
        widgets: WidgetArgs {
            allow_origins: vec!["https://dash.example".into()],
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
    };
    let (url, _stop) = server(Arc::new(EmbeddedStore::new()), args).await;
    let err = connect_with(&url, &[("Origin", "https://evil.example")])
        .await
        .expect_err("a foreign origin is refused");
    assert!(err.contains("403"), "{err}");
    assert!(
        connect_with(&url, &[]).await.is_err(),
        "no origin is refused too"
    );
    let mut ws = connect_with(&url, &[("Origin", "https://dash.example")])
        .await
        .unwrap();
    send(&mut ws, json!({"action": "get", "cache": "k"})).await;
    assert_eq!(recv(&mut ws).await, json!({"cache": "k", "data": null}));
}

#[tokio::test]
async fn no_secret_reaches_the_dashboard() {
    let args = ServeArgs {
        widgets: WidgetArgs {
            auth_enabled: true,
            auth_api_key: Some("shared-key-3f9a".into()),
            jwt_secret: Some("jwt-secret-77c1".into()),
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = serve(Arc::new(EmbeddedStore::new()), args, rx)
        .await
        .unwrap();
    let index = support::http_text(&format!("http://{}/", handle.addr)).await;
    assert!(index.contains("Top Gainers"), "the dashboard is served");
    // Every script the page loads, and the other HTTP endpoints.
    let mut paths = vec!["/".to_string(), "/health".into(), "/metrics".into()];
    for attr in ["src=\"", "href=\""] {
        paths.extend(
            index
                .split(attr)
                .skip(1)
                .filter_map(|s| s.split('"').next())
                .filter(|p| p.starts_with('/'))
                .map(str::to_string),
        );
    }
    assert!(
        paths.iter().any(|p| p == "/app.js") && paths.iter().any(|p| p == "/feed.js"),
        "the page loads its modules: {paths:?}"
    );
    for path in &paths {
        let body = support::http_text(&format!("http://{}{path}", handle.addr)).await;
        for secret in ["shared-key-3f9a", "jwt-secret-77c1"] {
            assert!(!body.contains(secret), "{path} leaks a secret");
        }
    }
    let _ = tx.send(true);
}

#[tokio::test]
async fn a_conflating_server_keeps_slow_clients_bounded_and_current() {
    let args = ServeArgs {
        widgets: WidgetArgs {
            client_queue: 64,
            slow_client: mdp::widgets::SlowClientPolicy::Conflate,
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
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
    let args = ServeArgs {
        widgets: WidgetArgs {
            client_queue: 64,
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
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

#[tokio::test]
async fn mdp_widget_token_signs_tokens_the_server_accepts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args(["widget-token", "--feed", "quote:*", "--ttl", "600"])
        .env("MDP_JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let args = ServeArgs {
        widgets: WidgetArgs {
            jwt_secret: Some("cli-secret".into()),
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
    };
    let (url, _stop) = server(Arc::new(EmbeddedStore::new()), args).await;
    let (mut ws, v) = auth_reply(&url, json!({"action": "auth", "token": token})).await;
    assert_eq!(v, json!({"status": "authorized"}));
    send(&mut ws, json!({"action": "subscribe", "feed": "quote:X"})).await;
    assert_eq!(recv(&mut ws).await["status"], "subscribed");
    send(
        &mut ws,
        json!({"action": "subscribe", "feed": "news:feed:latest"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "forbidden");
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
    let per_ip = ServeArgs {
        widgets: WidgetArgs {
            max_clients_per_ip: 2,
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
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

    let total = ServeArgs {
        widgets: WidgetArgs {
            max_clients: 1,
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
    };
    let (url, _stop) = server(store, total).await;
    let _only = connect(&url).await;
    assert_eq!(refused_status(&url).await, 503, "a client over the total");
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let args = ServeArgs {
        widgets: WidgetArgs {
            metrics_token: Some("m-tok".into()),
            ..WidgetArgs::default()
        },
        ..ServeArgs::default()
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
    let (open, _stop) = server(Arc::new(EmbeddedStore::new()), ServeArgs::default()).await;
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
