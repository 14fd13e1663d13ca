//! One client connection: the seed's protocol, with
//! auth, limits and a bounded send queue.
//!
//! Status frames and close codes:
//! - `{"status":"authorized"}`; `invalid key` / `invalid token` /
//!   `token expired` / `unauthorized` → close 1008;
//! - `{"status":"forbidden","feed"|"cache":…}` for a feed outside the token's
//!   grant (connection stays open);
//! - `{"status":"too many subscriptions","feed":…}` (stays open);
//! - `{"status":"invalid json"}`, `{"status":"invalid action"}` (stay open);
//! - `{"status":"rate limited"}` → close 1008; a frame over the size limit
//!   → close 1009; a client whose queue overflows → close 1013.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use super::Server;
use super::auth::{AuthError, Grant};
use super::outbox::{Outbox, Outgoing, TOO_SLOW};
use super::protocol::{Request, parse_request};

/// Frames the writer sends before flushing.
const WRITE_BATCH: usize = 64;

fn count(reason: &'static str) {
    metrics::counter!("mdp_wds_rejected_total", "reason" => reason).increment(1);
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
            Value::Null
        }
        Err(e) => {
            tracing::warn!(%key, error = %e, "snapshot read failed");
            Value::Null
        }
    }
}

/// How long a client cut off as too slow gets to take its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Write one batch from the outbox; false when the connection is done.
async fn write_batch(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    outbox: &Outbox,
    batch: &mut Vec<Outgoing>,
) -> bool {
    outbox.take(batch, WRITE_BATCH).await;
    let mut closing = false;
    for frame in batch.drain(..) {
        let msg = match frame {
            Outgoing::Text(t) => Message::Text(t),
            Outgoing::Close(code, reason) => {
                closing = true;
                close_frame(code, reason)
            }
        };
        if sink.feed(msg).await.is_err() {
            return false;
        }
        if closing {
            break;
        }
    }
    sink.flush().await.is_ok() && !closing
}

/// Write the outbox to the socket until a close frame or a write error. A
/// client cut off as too slow gets 1013, or — if it does not even read that
/// within [`CLOSE_GRACE`] — its connection is dropped: a writer blocked on a
/// client that never reads cannot hold the connection open.
async fn write(mut sink: futures_util::stream::SplitSink<WebSocket, Message>, outbox: Arc<Outbox>) {
    let mut killed = outbox.killed();
    let cut_off = {
        let writing = async {
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            while write_batch(&mut sink, &outbox, &mut batch).await {}
        };
        // One waiter on the kill switch for the writer's life, not one per batch.
        tokio::select! {
            biased;
            _ = killed.wait_for(|k| *k) => true,
            () = writing => false,
        }
    };
    if cut_off {
        metrics::counter!("mdp_wds_disconnects_total", "reason" => "slow").increment(1);
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close_frame(1013, TOO_SLOW))).await;
    }
}

/// Whether a read error is a frame over the size limit.
fn too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    e.source()
        .and_then(|s| s.downcast_ref::<WsError>())
        .is_some_and(|e| matches!(e, WsError::Capacity(_)))
}

/// Go on reading the client, or end its connection.
type Flow = ControlFlow<()>;

/// One client's connection: what its read loop keeps between frames, one
/// method per kind of input.
struct Client {
    server: Arc<Server>,
    id: u64,
    outbox: Arc<Outbox>,
    /// Feeds subscribed to.
    feeds: HashSet<String>,
    /// What the client may read; none until authenticated.
    grant: Option<Grant>,
    /// No frame read yet (`auth` must be the first).
    first: bool,
    /// The current one-second rate window: its start and frames in it.
    window: (Instant, u32),
    /// Until authenticated: the time allowed to authenticate; then the
    /// credential's expiry (far future when it has none).
    expiry: Pin<Box<tokio::time::Sleep>>,
}

/// Serve one client until it leaves.
pub async fn run(server: Arc<Server>, socket: WebSocket) {
    let id = server.next_id.fetch_add(1, Ordering::Relaxed);
    server.clients.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("mdp_wds_clients").increment(1.0);
    let (sink, mut stream) = socket.split();
    let outbox = Outbox::new(
        server.args.client_queue,
        server.args.client_queue_bytes,
        server.args.slow_client,
    );
    let mut writer = tokio::spawn(write(sink, outbox.clone()));
    let grant: Option<Grant> = server.auth.is_none().then(Grant::all);
    let expiry = Box::pin(tokio::time::sleep(if grant.is_none() {
        Duration::from_secs(server.args.auth_timeout_secs)
    } else {
        FAR_FUTURE
    }));
    let mut client = Client {
        server: server.clone(),
        id,
        outbox,
        feeds: HashSet::new(),
        grant,
        first: true,
        window: (Instant::now(), 0),
        expiry,
    };
    let mut writer_done = false;
    loop {
        let flow = tokio::select! {
            f = stream.next() => client.on_read(f).await,
            _ = &mut writer => {
                writer_done = true;
                Flow::Break(())
            }
            _ = &mut client.expiry => client.on_expiry(),
        };
        if flow.is_break() {
            break;
        }
    }
    client.leave();
    if !writer_done
        && tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
    server.clients.fetch_sub(1, Ordering::Relaxed);
    metrics::gauge!("mdp_wds_clients").decrement(1.0);
}

/// The expiry of a credential without one.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

impl Client {
    /// Queue `v` for the client; false when the client is gone.
    fn reply(&self, v: Value) -> bool {
        self.outbox.reply(v.to_string().into())
    }

    /// Answer with `status`, then close with `code` and `reason`.
    fn refuse(&self, status: &str, code: u16, reason: &'static str) -> Flow {
        self.reply(json!({ "status": status }));
        self.outbox.close(code, reason);
        Flow::Break(())
    }

    /// Refuse a client that did not authenticate as it must.
    fn unauthorized(&self, reason: &'static str) -> Flow {
        count("unauthorized");
        self.refuse("unauthorized", 1008, reason)
    }

    /// The time to authenticate ran out, or the credential expired.
    fn on_expiry(&self) -> Flow {
        if self.grant.is_none() {
            self.unauthorized("no auth frame in time")
        } else {
            count("expired");
            self.refuse("token expired", 1008, "token expired")
        }
    }

    /// One read from the socket.
    async fn on_read(&mut self, frame: Option<Result<Message, axum::Error>>) -> Flow {
        match frame {
            Some(Ok(Message::Text(t))) => self.on_frame(&t).await,
            Some(Ok(Message::Close(_))) | None => Flow::Break(()),
            Some(Ok(_)) => Flow::Continue(()),
            Some(Err(e)) => {
                if too_big(&e) {
                    count("frame_size");
                    self.outbox.close(1009, "frame too large");
                } else {
                    tracing::debug!(client = self.id, error = %e, "read error");
                }
                Flow::Break(())
            }
        }
    }

    /// A text frame: rate limited, parsed, then an `auth` or a request.
    async fn on_frame(&mut self, raw: &str) -> Flow {
        if self.window.0.elapsed() >= Duration::from_secs(1) {
            self.window = (Instant::now(), 0);
        }
        self.window.1 += 1;
        if self.window.1 > self.server.args.max_rate {
            count("rate");
            return self.refuse("rate limited", 1008, "rate limit exceeded");
        }
        let Ok(req) = parse_request(raw) else {
            count("bad_json");
            if self.grant.is_none() {
                return self.unauthorized("unauthorized");
            }
            self.reply(json!({"status": "invalid json"}));
            return Flow::Continue(());
        };
        if self.grant.is_none() {
            return self.on_auth(req);
        }
        self.first = false;
        self.on_request(req).await
    }

    /// The frame of a client not yet authenticated: it must be the first, an `auth`.
    fn on_auth(&mut self, req: Request) -> Flow {
        let Some(auth) = self.server.auth.as_ref() else {
            return Flow::Break(()); // unreachable: without auth every client has a grant
        };
        let Request::Auth { token, api_key } = req else {
            return self.unauthorized("unauthorized");
        };
        if !self.first {
            return self.unauthorized("unauthorized");
        }
        self.first = false;
        let result = match (token, api_key) {
            (Some(token), _) if auth.accepts_tokens() => auth.check_token(&token),
            (Some(_), _) => Err(AuthError::InvalidToken("tokens are not enabled".into())),
            (None, Some(key)) => auth.check_key(&key),
            (None, None) => Err(AuthError::InvalidKey),
        };
        match result {
            Ok(g) => {
                let left = match g.expires {
                    Some(at) => at
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default(),
                    None => FAR_FUTURE,
                };
                self.expiry
                    .as_mut()
                    .reset(tokio::time::Instant::now() + left);
                tracing::debug!(client = self.id, subject = ?g.subject, "authorized");
                self.grant = Some(g);
                self.reply(json!({"status": "authorized"}));
                Flow::Continue(())
            }
            Err(e) => {
                let (status, reason) = match &e {
                    AuthError::InvalidKey => ("invalid key", "invalid key"),
                    AuthError::InvalidToken(_) => ("invalid token", "invalid token"),
                    AuthError::Expired => ("token expired", "token expired"),
                };
                count("unauthorized");
                tracing::info!(client = self.id, error = %e, "authentication failed");
                self.refuse(status, 1008, reason)
            }
        }
    }

    /// A request of an authenticated client, answered.
    async fn on_request(&mut self, req: Request) -> Flow {
        let answer = match req {
            Request::Subscribe { feed } if feed.is_empty() => None,
            Request::Subscribe { feed } => Some(self.subscribe(feed)),
            Request::Unsubscribe { feed } => {
                if self.feeds.remove(&feed) {
                    self.server.hub.unsubscribe(&feed, self.id);
                    Some(json!({"status": "unsubscribed", "feed": feed}))
                } else {
                    None
                }
            }
            Request::Get { cache, .. } if !self.allows(&cache) => {
                count("forbidden");
                Some(json!({"status": "forbidden", "cache": cache}))
            }
            Request::Get { cache, limit } => {
                let data = snapshot(&self.server, &cache, limit).await;
                Some(json!({"cache": cache, "data": data}))
            }
            Request::Auth { .. } | Request::Invalid { .. } => {
                count("invalid_action");
                Some(json!({"status": "invalid action"}))
            }
        };
        match answer {
            Some(a) => {
                if self.reply(a) {
                    Flow::Continue(())
                } else {
                    Flow::Break(())
                }
            }
            None => Flow::Continue(()),
        }
    }

    /// Whether the client's grant covers `feed`.
    fn allows(&self, feed: &str) -> bool {
        self.grant.as_ref().is_some_and(|g| g.allows(feed))
    }

    /// `subscribe`: within the grant and the subscription cap.
    fn subscribe(&mut self, feed: String) -> Value {
        if !self.allows(&feed) {
            count("forbidden");
            json!({"status": "forbidden", "feed": feed})
        } else if self.feeds.len() >= self.server.args.max_subscriptions
            && !self.feeds.contains(&feed)
        {
            count("subscriptions");
            json!({"status": "too many subscriptions", "feed": feed})
        } else {
            if self.feeds.insert(feed.clone()) {
                self.server
                    .hub
                    .subscribe(&feed, self.id, self.outbox.clone());
            }
            json!({"status": "subscribed", "feed": feed})
        }
    }

    /// The client left: its subscriptions go, and the writer is told to
    /// send what is queued (the close frame, if any).
    fn leave(&self) {
        for feed in &self.feeds {
            self.server.hub.unsubscribe(feed, self.id);
        }
        self.outbox.close(1000, "bye");
    }
}
