//! Client authentication: signed HS256 and EdDSA tokens scoped to feeds,
//! expiry during a session, the origin allow-list, tokens signed by mdp
//! widget-token, and no secret in the dashboard.

use super::*;

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
    let args = ServeConfig {
        widgets: WidgetConfig {
            auth_enabled: true,
            auth_api_key: Some("shared".into()),
            jwt_secret: Some("jwt-secret".into()),
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
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
    let args = ServeConfig {
        widgets: WidgetConfig {
            jwt_public_key: Some(public),
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
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
    let args = ServeConfig {
        widgets: WidgetConfig {
            allow_origins: vec!["https://dash.example".into()],
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
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
    let args = ServeConfig {
        widgets: WidgetConfig {
            auth_enabled: true,
            auth_api_key: Some("shared-key-3f9a".into()),
            jwt_secret: Some("jwt-secret-77c1".into()),
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
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
async fn mdp_widget_token_signs_tokens_the_server_accepts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args(["widget-token", "--feed", "quote:*", "--ttl", "600"])
        .env("MDP_JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let args = ServeConfig {
        widgets: WidgetConfig {
            jwt_secret: Some("cli-secret".into()),
            ..WidgetConfig::default()
        },
        ..ServeConfig::default()
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
