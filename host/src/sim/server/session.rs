//! The simulated Massive WebSocket session: `connected`, `auth` (with the
//! connection cap per key), `subscribe`/`unsubscribe`, frames filtered per
//! client, scripted faults. [`Session`] holds a connection's state, one
//! method per kind of input.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{Control, Frame, KINDS, Shared, kind_index};
use crate::sim::{Fault, send_close};

/// A frame send blocked this long means the client stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);

/// Go on with the session, or end it.
type Flow = ControlFlow<()>;

fn status(status: &str, message: &str) -> String {
    json!([{"ev": "status", "status": status, "message": message}]).to_string()
}

/// `/stocks`: upgrade to a Massive session.
pub(super) async fn ws_handler(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
) -> Response {
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| Session::run(socket, shared))
}

/// Topics one client subscribed to: per event kind, `*` or a symbol set.
#[derive(Default)]
struct Subscriptions {
    all: [bool; 7],
    symbols: HashMap<usize, HashSet<String>>,
}

impl Subscriptions {
    /// Apply a `subscribe` (or `unsubscribe`) of `params`; returns the acks.
    fn apply(&mut self, params: &str, subscribe: bool) -> Vec<String> {
        let mut acks = Vec::new();
        for topic in params.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((kind, sym)) = topic.split_once('.') else {
                continue;
            };
            if !matches!(kind, "T" | "Q" | "A" | "AM" | "LULD" | "NOI") {
                continue; // unknown topic codes are silently ignored
            }
            let k = kind_index(kind);
            if sym == "*" {
                self.all[k] = subscribe;
            } else if subscribe {
                self.symbols.entry(k).or_default().insert(sym.to_string());
            } else if let Some(s) = self.symbols.get_mut(&k) {
                s.remove(sym);
            }
            let verb = if subscribe {
                "subscribed to"
            } else {
                "unsubscribed to"
            };
            acks.push(status("success", &format!("{verb}: {topic}")));
        }
        acks
    }

    /// Whether anything is subscribed.
    fn any(&self) -> bool {
        self.all.iter().any(|a| *a) || self.symbols.values().any(|s| !s.is_empty())
    }

    /// The frame text this client should get, with the kinds it holds.
    fn filter(&self, frame: &Frame) -> Option<(String, Vec<usize>)> {
        if frame.events.is_empty() {
            // A replayed frame that is not an event array: everyone gets it.
            return self.any().then(|| (frame.text.clone(), Vec::new()));
        }
        if frame.kinds.iter().all(|k| self.all[*k]) {
            return Some((frame.text.clone(), frame.kinds.clone()));
        }
        let mut events = Vec::new();
        let mut kinds = Vec::new();
        for (e, k) in frame.events.iter().zip(&frame.kinds) {
            let key = if matches!(KINDS[*k], "LULD" | "NOI") {
                "T"
            } else {
                "sym"
            };
            let wanted = self.all[*k]
                || self
                    .symbols
                    .get(k)
                    .is_some_and(|s| e[key].as_str().is_some_and(|sym| s.contains(sym)));
            if wanted {
                events.push(e);
                kinds.push(*k);
            }
        }
        (!events.is_empty()).then(|| (serde_json::to_string(&events).unwrap_or_default(), kinds))
    }
}

/// Removes a session from the registry when it ends.
struct Registered(Arc<Shared>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _)| *id != self.1);
    }
}

/// What a fault does to the session: `true` = the session ends.
async fn apply_fault(socket: &mut WebSocket, fault: Fault, stalled: &mut bool) -> bool {
    match fault {
        Fault::AuthFailure | Fault::RestLie => false,
        Fault::MaxConnections => {
            let _ = socket.send(WsMessage::Text(status("max_connections", "Maximum number of websocket connections exceeded. You have reached the connection limit for your account. Please contact support at https://polygon.io/contact to increase your limit.").into())).await;
            send_close(socket, 1008, "max connections").await;
            true
        }
        Fault::SlowConsumer => {
            let _ = socket
                .send(WsMessage::Text(
                    status("slow_consumer", "Slow consumer: send buffer full").into(),
                ))
                .await;
            send_close(socket, 1011, "slow consumer").await;
            true
        }
        Fault::ForceDisconnect => {
            let _ = socket
                .send(WsMessage::Text(
                    status("force_disconnect", "Forced disconnect").into(),
                ))
                .await;
            send_close(socket, 1000, "force disconnect").await;
            true
        }
        Fault::Reset => true,
        Fault::Garbage => {
            let _ = socket
                .send(WsMessage::Text(
                    r#"[{"ev":"T","sym":"AAA","p":12.5,"s":1"#.into(),
                ))
                .await;
            let _ = socket
                .send(WsMessage::Text("\u{1}garbage \u{fffd} not json".into()))
                .await;
            let _ = socket
                .send(WsMessage::Binary(vec![0xff, 0x00, 0x13, 0x37].into()))
                .await;
            false
        }
        Fault::Oversize => {
            let one = r#"{"ev":"T","sym":"BIG","x":4,"i":"1","z":3,"p":1.0,"s":1,"t":1,"q":1}"#;
            let n = (1 << 20) / one.len() + 100;
            let text = format!("[{}]", vec![one; n].join(","));
            let _ = socket.send(WsMessage::Text(text.into())).await;
            false
        }
        Fault::Stall => {
            *stalled = true;
            false
        }
    }
}

/// One client connection.
struct Session {
    socket: WebSocket,
    shared: Arc<Shared>,
    id: u64,
    subs: Subscriptions,
    authed: bool,
    /// A `stall` fault fired: no more data on this session.
    stalled: bool,
    /// Held while authenticated: leaves the registry on drop.
    _registered: Option<Registered>,
}

impl Session {
    /// Serve one connection until it ends.
    async fn run(mut socket: WebSocket, shared: Arc<Shared>) {
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let connected = status("connected", "Connected Successfully");
        if socket
            .send(WsMessage::Text(connected.into()))
            .await
            .is_err()
        {
            return;
        }
        let mut frames = shared.frames.subscribe();
        let mut control = shared.control.subscribe();
        let auth_deadline = tokio::time::Instant::now() + shared.auth_timeout;
        let mut session = Session {
            socket,
            shared,
            id,
            subs: Subscriptions::default(),
            authed: false,
            stalled: false,
            _registered: None,
        };
        loop {
            let flow = tokio::select! {
                _ = tokio::time::sleep_until(auth_deadline), if !session.authed => {
                    session.on_auth_timeout().await
                }
                msg = session.socket.recv() => session.on_message(msg).await,
                c = control.recv() => session.on_control(c).await,
                frame = frames.recv() => session.on_frame(frame).await,
            };
            if flow.is_break() {
                return;
            }
        }
    }

    /// Send a text frame; false when the client is gone.
    async fn send(&mut self, text: String) -> bool {
        self.socket.send(WsMessage::Text(text.into())).await.is_ok()
    }

    /// No `auth` in time.
    async fn on_auth_timeout(&mut self) -> Flow {
        self.send(status(
            "auth_timeout",
            "No authentication request received.",
        ))
        .await;
        send_close(&mut self.socket, 1008, "auth timeout").await;
        Flow::Break(())
    }

    /// A message from the client: `auth`, `subscribe`, `unsubscribe`.
    async fn on_message(&mut self, msg: Option<Result<WsMessage, axum::Error>>) -> Flow {
        let Some(Ok(msg)) = msg else {
            return Flow::Break(());
        };
        let WsMessage::Text(text) = msg else {
            return Flow::Continue(());
        };
        let Ok(req) = serde_json::from_str::<Value>(&text) else {
            return Flow::Continue(());
        };
        let params = req["params"].as_str().unwrap_or("");
        let replies = match req["action"].as_str() {
            Some("auth") => self.on_auth(params).await?,
            Some("subscribe") if self.authed => self.subs.apply(params, true),
            Some("unsubscribe") if self.authed => self.subs.apply(params, false),
            Some(_) => vec![status("auth_required", "authentication required")],
            None => Vec::new(),
        };
        for r in replies {
            if !self.send(r).await {
                return Flow::Break(());
            }
        }
        if self.subs.any() {
            self.shared.subscribed.notify_one();
        }
        Flow::Continue(())
    }

    /// `auth` with key `params`: refused, or registered (evicting the oldest
    /// sessions of the key over the cap); returns the replies.
    async fn on_auth(&mut self, params: &str) -> ControlFlow<(), Vec<String>> {
        let shared = self.shared.clone();
        let key_ok = shared.api_key.as_deref().is_none_or(|k| k == params);
        if !key_ok || shared.take_fault(|f| f == Fault::AuthFailure).is_some() {
            self.send(status("auth_failed", "authentication failed"))
                .await;
            send_close(&mut self.socket, 1008, "authentication failed").await;
            return ControlFlow::Break(());
        }
        self.authed = true;
        shared.stats.authenticated.fetch_add(1, Ordering::Relaxed);
        let evict = {
            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.push((self.id, params.to_string()));
            let same: Vec<u64> = sessions
                .iter()
                .filter(|(_, k)| k == params)
                .map(|(i, _)| *i)
                .collect();
            same.len()
                .checked_sub(shared.max_connections)
                .map(|n| same[..n].to_vec())
                .unwrap_or_default()
        };
        self._registered = Some(Registered(shared.clone(), self.id));
        for target in evict {
            shared.stats.evictions.fetch_add(1, Ordering::Relaxed);
            let fault = Fault::MaxConnections;
            let _ = shared.control.send(Control { target, fault });
        }
        ControlFlow::Continue(vec![status("auth_success", "authenticated")])
    }

    /// A control message: a fault aimed at this session.
    async fn on_control(&mut self, c: Result<Control, broadcast::error::RecvError>) -> Flow {
        match c {
            Ok(c) if c.target == self.id => self.fault(c.fault).await,
            _ => Flow::Continue(()),
        }
    }

    /// Apply `fault` to this session.
    async fn fault(&mut self, fault: Fault) -> Flow {
        if apply_fault(&mut self.socket, fault, &mut self.stalled).await {
            Flow::Break(())
        } else {
            Flow::Continue(())
        }
    }

    /// A generated frame: an armed fault fires first, then the client gets
    /// its part of the frame.
    async fn on_frame(&mut self, frame: Result<Arc<Frame>, broadcast::error::RecvError>) -> Flow {
        let frame = match frame {
            Ok(frame) => frame,
            Err(broadcast::error::RecvError::Lagged(n)) => return self.on_lagged(n).await,
            Err(broadcast::error::RecvError::Closed) => return Flow::Break(()),
        };
        if self.stalled || !self.authed {
            return Flow::Continue(());
        }
        if self.subs.any()
            && let Some(fault) = self
                .shared
                .take_fault(|f| !matches!(f, Fault::AuthFailure | Fault::RestLie))
        {
            self.fault(fault).await?;
        }
        if self.stalled {
            return Flow::Continue(());
        }
        match self.subs.filter(&frame) {
            Some((text, kinds)) => self.send_frame(text, kinds).await,
            None => Flow::Continue(()),
        }
    }

    /// Send the client its frame (`kinds`: the kind of each event in it).
    async fn send_frame(&mut self, text: String, kinds: Vec<usize>) -> Flow {
        let send = self.socket.send(WsMessage::Text(text.into()));
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Flow::Break(()),
            Err(_) => {
                // The client stopped reading: latency grew past the limit.
                let stats = &self.shared.stats;
                stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    session = self.id,
                    "simulator: slow consumer (send blocked) disconnected"
                );
                let slow = status("slow_consumer", "Slow consumer: send buffer full");
                let slow = self.socket.send(WsMessage::Text(slow.into()));
                let _ = tokio::time::timeout(Duration::from_millis(100), slow).await;
                return Flow::Break(());
            }
        }
        let stats = &self.shared.stats;
        stats.frames.fetch_add(1, Ordering::Relaxed);
        for k in kinds {
            stats.sent[k].fetch_add(1, Ordering::Relaxed);
        }
        Flow::Continue(())
    }

    /// The client fell `n` frames behind the generator: a slow consumer.
    async fn on_lagged(&mut self, n: u64) -> Flow {
        self.shared
            .stats
            .slow_consumers
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            session = self.id,
            lagged_frames = n,
            "simulator: slow consumer disconnected"
        );
        self.send(status("slow_consumer", "Slow consumer: send buffer full"))
            .await;
        send_close(&mut self.socket, 1011, "slow consumer").await;
        Flow::Break(())
    }
}
