//! One connection of the Finlight listener: the upgrade with header auth,
//! the filter frame, then the stream. [`Session`] holds the loop's state;
//! each kind of input (a frame, the ping and watchdog timers, a close) has
//! its own method, and [`Session::stream`] only dispatches.

use std::ops::ControlFlow;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::frame::{ServerMessage, parse_frame};
use super::settings::FinlightFilter;
use super::stats::Count;
use super::{FinlightListener, Outcome};
use crate::feed::lifecycle::Run;
use crate::feed::{Backoff, now_ms};

/// Proactive rotation before the server's 2 h connection limit.
const MAX_LIFETIME: Duration = Duration::from_secs(115 * 60);
/// Wait after an `admin_kick` without `retryAfter`, ms (the SDK's).
const KICK_WAIT_MS: u64 = 900_000;
/// Longest `retryAfter` honoured: a larger one (a server bug, or a hostile
/// server) would park the listener for good.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long to wait after an `admin_kick` asking for `retry_after` ms: that,
/// capped at [`MAX_RETRY_AFTER`] (logged when capped), or `KICK_WAIT_MS`
/// when the server gave none.
pub fn kick_wait(retry_after: Option<u64>) -> Duration {
    let Some(ms) = retry_after else {
        return Duration::from_millis(KICK_WAIT_MS);
    };
    let asked = Duration::from_millis(ms);
    if asked > MAX_RETRY_AFTER {
        tracing::warn!(
            retry_after_ms = ms,
            cap = ?MAX_RETRY_AFTER,
            "finlight retryAfter capped"
        );
        return MAX_RETRY_AFTER;
    }
    asked
}

/// How a session ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// Reconnect with backoff.
    Retry(String),
    /// Reconnect after this long (the server asked for it).
    Wait(Duration, String),
    /// Reconnect now (filter changed, restarted, rotated).
    Restart,
    /// The listener stops for good.
    Stop(Outcome),
}

/// Go on with the session, or end it.
type Flow = ControlFlow<Ended>;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A random UUIDv4 string (the filter's `clientNonce`).
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// The state of one streaming connection.
struct Session<'a> {
    listener: &'a FinlightListener,
    ws: Ws,
    nonce: String,
    opened: Instant,
    last_pong: Instant,
    pong_timeout: Duration,
    backoff: &'a mut Backoff,
}

impl FinlightListener {
    /// Run one session to its end.
    pub(super) async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        filter_rx: &mut watch::Receiver<FinlightFilter>,
        backoff: &mut Backoff,
    ) -> Ended {
        filter_rx.borrow_and_update();
        // Stopped or restarted through the control API: this session ends.
        let mut run_rx = self.lifecycle.subscribe();
        if !run_rx.borrow_and_update().running {
            return Ended::Restart;
        }
        self.stats.set_state("connecting");
        let (ws, nonce) = match self.connect().await {
            Ok(c) => c,
            Err(ended) => return ended,
        };
        let mut session = Session {
            listener: self,
            ws,
            nonce,
            opened: Instant::now(),
            last_pong: Instant::now(),
            pong_timeout: Duration::from_millis(self.config.pong_timeout_ms.max(10)),
            backoff,
        };
        session.stream(shutdown, filter_rx, &mut run_rx).await
    }

    /// The upgrade request: URL and the `x-api-key`, `x-client-version` and
    /// `x-takeover` headers.
    fn request(&self) -> Result<Request, Ended> {
        let url = self.url();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Ended::Wait(Duration::from_secs(60), format!("bad URL {url}: {e}")))?;
        let headers = request.headers_mut();
        let key = self.config.api_key.clone().unwrap_or_default();
        let key = key.parse().map_err(|_| {
            Ended::Wait(
                Duration::from_secs(60),
                "API key is not a valid header value".into(),
            )
        })?;
        headers.insert("x-api-key", key);
        headers.insert(
            "x-client-version",
            concat!("rust/mdp@", env!("CARGO_PKG_VERSION"))
                .parse()
                .expect("static header value"),
        );
        if self.config.takeover {
            headers.insert("x-takeover", "true".parse().expect("static header value"));
        }
        Ok(request)
    }

    /// Open the WebSocket and send the filter; returns the socket and the
    /// filter's `clientNonce`.
    async fn connect(&self) -> Result<(Ws, String), Ended> {
        let url = self.url();
        let connect = tokio_tungstenite::connect_async(self.request()?);
        let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                return Err(self.refused(resp.status().as_u16()));
            }
            Ok(Err(e)) => return Err(Ended::Retry(format!("connect {url}: {e}"))),
            Err(_) => return Err(Ended::Retry(format!("connect {url}: timed out"))),
        };
        let nonce = uuid_v4();
        let subscribe = self.filter_frame(&nonce).to_string();
        if let Err(e) = ws.send(WsMessage::Text(subscribe.into())).await {
            return Err(Ended::Retry(format!("send filter: {e}")));
        }
        self.stats.set_state("subscribing");
        Ok((ws, nonce))
    }

    /// The upgrade was answered with HTTP `code`.
    fn refused(&self, code: u16) -> Ended {
        if code == 429 {
            self.stats.add(Count::RateLimited, 1);
            return Ended::Wait(
                Duration::from_millis(self.config.rate_limit_wait_ms),
                "HTTP 429 at upgrade (connection or rate limit)".into(),
            );
        }
        if matches!(code, 401 | 403) {
            tracing::error!(code, "finlight refused the API key");
        }
        Ended::Retry(format!("upgrade refused: HTTP {code}"))
    }

    /// The server closed the connection with `frame`.
    fn closed(&self, frame: Option<CloseFrame>) -> Ended {
        let (code, reason) = frame
            .map(|f| (u16::from(f.code), f.reason.to_string()))
            .unwrap_or((1005, String::new()));
        match code {
            1008 => Ended::Stop(Outcome::Blocked(format!("closed 1008: {reason}"))),
            1013 | 4001 => {
                self.stats.add(Count::RateLimited, 1);
                Ended::Wait(
                    Duration::from_millis(self.config.rate_limit_wait_ms),
                    format!("closed {code} (rate limited): {reason}"),
                )
            }
            4002 => Ended::Wait(
                Duration::from_millis(self.config.blocked_wait_ms),
                format!("closed 4002 (blocked): {reason}"),
            ),
            4003 => {
                self.stats.add(Count::Kick, 1);
                Ended::Wait(
                    Duration::from_millis(KICK_WAIT_MS),
                    format!("closed 4003 (admin kick): {reason}"),
                )
            }
            _ => Ended::Retry(format!("closed {code}: {reason}")),
        }
    }
}

impl Session<'_> {
    /// Dispatch inputs until the session ends.
    async fn stream(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        filter: &mut watch::Receiver<FinlightFilter>,
        run: &mut watch::Receiver<Run>,
    ) -> Ended {
        let config = &self.listener.config;
        let mut ping =
            tokio::time::interval(Duration::from_millis(config.ping_interval_ms.max(10)));
        ping.tick().await;
        let mut watchdog = tokio::time::interval(Duration::from_millis(
            (config.pong_timeout_ms / 4).clamp(10, 5000),
        ));
        loop {
            let flow = tokio::select! {
                m = self.ws.next() => self.on_message(m).await,
                _ = ping.tick() => self.on_ping().await,
                _ = watchdog.tick() => self.on_watchdog().await,
                _ = run.changed() => {
                    self.close(1000, "listener stopped or restarted", Ended::Restart).await
                }
                _ = filter.changed() => {
                    tracing::info!(filter = ?self.listener.filter(), "finlight filter changed; reconnecting");
                    self.close(1000, "filter changed", Ended::Restart).await
                }
                _ = shutdown.changed() => {
                    self.close(1000, "shutdown", Ended::Stop(Outcome::Shutdown)).await
                }
            };
            if let ControlFlow::Break(ended) = flow {
                return ended;
            }
        }
    }

    /// Close the connection with `code` and `reason` (best effort) and end the session.
    async fn close(&mut self, code: u16, reason: &'static str, ended: Ended) -> Flow {
        let _ = self.ws.close(Some(close_frame(code, reason))).await;
        Flow::Break(ended)
    }

    /// Time to send the application ping.
    async fn on_ping(&mut self) -> Flow {
        let p = json!({"action": "ping", "t": now_ms()}).to_string();
        match self.ws.send(WsMessage::Text(p.into())).await {
            Ok(()) => Flow::Continue(()),
            Err(e) => Flow::Break(Ended::Retry(format!("send ping: {e}"))),
        }
    }

    /// The watchdog: no pong for too long, or the connection is due for rotation.
    async fn on_watchdog(&mut self) -> Flow {
        if self.last_pong.elapsed() > self.pong_timeout {
            self.listener.stats.add(Count::PongTimeout, 1);
            let _ = self.ws.close(None).await;
            let why = format!("no pong for {:?}", self.pong_timeout);
            return Flow::Break(Ended::Retry(why));
        }
        if self.opened.elapsed() > MAX_LIFETIME {
            return self.close(4000, "Proactive rotation", Ended::Restart).await;
        }
        Flow::Continue(())
    }

    /// One read from the socket.
    async fn on_message(
        &mut self,
        msg: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Flow {
        let text = match msg {
            None => return Flow::Break(Ended::Retry("connection closed".into())),
            Some(Err(e)) => return Flow::Break(Ended::Retry(format!("read: {e}"))),
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Close(frame))) => return Flow::Break(self.listener.closed(frame)),
            Some(Ok(WsMessage::Binary(_))) => {
                self.listener.bad_frame("binary frame");
                return Flow::Continue(());
            }
            Some(Ok(_)) => return Flow::Continue(()),
        };
        match parse_frame(&text) {
            Ok(msg) => self.on_frame(msg).await,
            Err(e) => {
                self.listener.bad_frame(&e.to_string());
                Flow::Continue(())
            }
        }
    }

    /// One parsed server message.
    async fn on_frame(&mut self, msg: ServerMessage) -> Flow {
        let listener = self.listener;
        let stats = &listener.stats;
        match msg {
            ServerMessage::Admit {
                lease_id,
                client_nonce,
            } => self.on_admit(lease_id, client_nonce),
            ServerMessage::Article(data) => self.listener.article(&Value::Object(data)).await,
            ServerMessage::Pong => {
                self.last_pong = Instant::now();
                stats.add(Count::Pong, 1);
            }
            ServerMessage::Preempted { reason } => {
                let ended = Ended::Stop(Outcome::Preempted(reason));
                return self.close(1000, "Preempted by server", ended).await;
            }
            ServerMessage::AdminKick { retry_after_ms } => {
                stats.add(Count::Kick, 1);
                let wait = kick_wait(retry_after_ms);
                let why = format!("admin_kick (retry after {} ms)", wait.as_millis());
                return self.close(4003, "admin kick", Ended::Wait(wait, why)).await;
            }
            ServerMessage::Error { text } => return self.on_error(text).await,
            ServerMessage::Unknown { action } => {
                stats.add(Count::UnknownAction, 1);
                tracing::warn!(%action, "unknown finlight message action; ignored");
            }
        }
        Flow::Continue(())
    }

    /// `admit`: the session is on.
    fn on_admit(&mut self, lease_id: String, client_nonce: Option<String>) {
        if client_nonce.as_deref() != Some(self.nonce.as_str()) {
            tracing::warn!("finlight admit carries another clientNonce");
        }
        tracing::info!(lease = %lease_id, "finlight session admitted");
        let listener = self.listener;
        let stats = &listener.stats;
        stats.add(Count::Admit, 1);
        stats
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        {
            let mut st = stats.state.lock().unwrap_or_else(|p| p.into_inner());
            st.0 = "admitted".into();
            st.2 = lease_id;
        }
        self.backoff.reset();
    }

    /// `error`: a rate limit or a block ends the session; others are logged.
    async fn on_error(&mut self, text: String) -> Flow {
        self.listener.stats.add(Count::Error, 1);
        let config = &self.listener.config;
        let lower = text.to_lowercase();
        if lower.contains("limit") {
            self.listener.stats.add(Count::RateLimited, 1);
            let wait = Duration::from_millis(config.rate_limit_wait_ms);
            let ended = Ended::Wait(wait, format!("error: {text}"));
            return self.close(4001, "rate limited", ended).await;
        }
        if lower.contains("blocked") {
            tracing::error!(%text, "finlight says this key is blocked");
            let wait = Duration::from_millis(config.blocked_wait_ms);
            let ended = Ended::Wait(wait, format!("error: {text}"));
            return self.close(4002, "blocked", ended).await;
        }
        tracing::warn!(%text, "finlight error");
        Flow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_capped() {
        assert_eq!(kick_wait(Some(200)), Duration::from_millis(200));
        assert_eq!(kick_wait(Some(300_000)), MAX_RETRY_AFTER);
        assert_eq!(kick_wait(Some(300_001)), MAX_RETRY_AFTER);
        assert_eq!(kick_wait(Some(u64::MAX)), MAX_RETRY_AFTER);
        assert_eq!(kick_wait(None), Duration::from_millis(KICK_WAIT_MS));
    }

    #[test]
    fn nonces_are_uuid_v4() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, uuid_v4());
    }
}
