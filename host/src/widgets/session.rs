//! One client connection: the seed's protocol, with limits.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, mpsc};

use super::Server;
use super::hub::ClientHandle;

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Read a `get`: the string value (decoded) or the list (newest first, decoded), else null.
async fn snapshot(server: &Server, key: &str, limit: i64) -> Value {
    let decode = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.to_string()));
    if let Ok(Some(v)) = server.store.get(key).await {
        metrics::counter!("mdp_wds_cache_hit_total").increment(1);
        return decode(&v);
    }
    let stop = if limit > 0 { limit - 1 } else { -1 };
    match server.store.lrange(key, 0, stop).await {
        Ok(items) if !items.is_empty() => {
            metrics::counter!("mdp_wds_cache_hit_total").increment(1);
            Value::Array(items.iter().map(|s| decode(s)).collect())
        }
        Ok(_) => {
            metrics::counter!("mdp_wds_cache_miss_total").increment(1);
            // An existing empty or missing list reads as [] in the seed only
            // for list keys; a missing key is null.
            Value::Null
        }
        Err(_) => Value::Null,
    }
}

/// Serve one client until it leaves.
pub async fn run(server: Arc<Server>, socket: WebSocket) {
    let id = server.next_id.fetch_add(1, Ordering::Relaxed);
    server.clients.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("mdp_wds_clients").increment(1.0);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(server.args.client_queue.max(1));
    let too_slow = Arc::new(Notify::new());
    let handle = ClientHandle {
        tx,
        too_slow: too_slow.clone(),
    };
    let (reply_tx, mut reply_rx) = mpsc::channel::<Message>(64);
    // Writer: pushes and replies; closes on request.
    let writer = tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                biased;
                _ = too_slow.notified() => {
                    metrics::counter!("mdp_wds_disconnects_total", "reason" => "slow").increment(1);
                    let _ = sink.send(close(1013, "too slow: client queue full")).await;
                    break;
                }
                r = reply_rx.recv() => match r {
                    Some(m) => m,
                    None => break,
                },
                p = rx.recv() => match p {
                    Some(p) => Message::Text(p.as_ref().into()),
                    None => break,
                },
            };
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
    });

    let mut feeds: HashSet<String> = HashSet::new();
    let mut authed = !server.args.auth_enabled;
    let mut first = true;
    let mut window = (Instant::now(), 0u32);
    while let Some(frame) = stream.next().await {
        let Ok(frame) = frame else { break };
        let raw = match frame {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        if window.0.elapsed() >= Duration::from_secs(1) {
            window = (Instant::now(), 0);
        }
        window.1 += 1;
        if window.1 > server.args.max_rate {
            metrics::counter!("mdp_wds_disconnects_total", "reason" => "rate").increment(1);
            let _ = reply_tx.send(text(json!({"status": "rate limited"}))).await;
            let _ = reply_tx.send(close(1008, "rate limit exceeded")).await;
            break;
        }
        let Ok(req) = serde_json::from_str::<Value>(&raw) else {
            metrics::counter!("mdp_wds_bad_frames_total").increment(1);
            let _ = reply_tx.send(text(json!({"status": "invalid json"}))).await;
            continue;
        };
        let action = req.get("action").and_then(Value::as_str).unwrap_or("");
        if !authed {
            let given = req.get("api_key").and_then(Value::as_str).unwrap_or("");
            let key = server.args.auth_api_key.as_deref().unwrap_or("");
            if !first || action != "auth" {
                metrics::counter!("mdp_wds_unauthorized_total").increment(1);
                let _ = reply_tx.send(text(json!({"status": "unauthorized"}))).await;
                let _ = reply_tx.send(close(1008, "unauthorized")).await;
                break;
            }
            if bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
                authed = true;
                first = false;
                let _ = reply_tx.send(text(json!({"status": "authorized"}))).await;
                continue;
            }
            metrics::counter!("mdp_wds_unauthorized_total").increment(1);
            let _ = reply_tx.send(text(json!({"status": "invalid key"}))).await;
            let _ = reply_tx.send(close(1008, "invalid key")).await;
            break;
        }
        first = false;
        let reply = match action {
            "subscribe" => {
                let feed = req.get("feed").and_then(Value::as_str).unwrap_or("");
                if feed.is_empty() {
                    None
                } else if feeds.len() >= server.args.max_subscriptions && !feeds.contains(feed) {
                    Some(json!({"status": "too many subscriptions", "feed": feed}))
                } else {
                    if feeds.insert(feed.to_string()) {
                        server.hub.subscribe(feed, id, handle.clone());
                    }
                    Some(json!({"status": "subscribed", "feed": feed}))
                }
            }
            "unsubscribe" => {
                let feed = req.get("feed").and_then(Value::as_str).unwrap_or("");
                if feeds.remove(feed) {
                    server.hub.unsubscribe(feed, id);
                    Some(json!({"status": "unsubscribed", "feed": feed}))
                } else {
                    None
                }
            }
            "get" => match req.get("cache").and_then(Value::as_str) {
                Some(key) if !key.is_empty() => {
                    let limit = req.get("limit").and_then(Value::as_i64).unwrap_or(0);
                    Some(json!({"cache": key, "data": snapshot(&server, key, limit).await}))
                }
                _ => Some(json!({"status": "invalid action"})),
            },
            _ => Some(json!({"status": "invalid action"})),
        };
        if let Some(r) = reply
            && reply_tx.send(text(r)).await.is_err()
        {
            break;
        }
    }
    for feed in &feeds {
        server.hub.unsubscribe(feed, id);
    }
    drop(handle);
    drop(reply_tx);
    let _ = writer.await;
    server.clients.fetch_sub(1, Ordering::Relaxed);
    metrics::gauge!("mdp_wds_clients").decrement(1.0);
}
