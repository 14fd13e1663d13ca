//! One connection of the Massive listener: connect, `auth`, `subscribe` on
//! `auth_success`, then stream. [`Session`] holds the loop's state; each kind
//! of input (a frame, a status in it, a settings change, the stall and ping
//! timers) has its own method, and [`Session::stream`] only dispatches.

use std::ops::ControlFlow;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::frame::{FrameError, MAX_FRAME_BYTES, parse_frame};
use super::publish::queue_index;
use super::settings::{MassiveSettings, market_url, misconfigured_flag};
use super::stats::Count;
use super::{MassiveListener, Routed};
use crate::feed::lifecycle::Run;
use crate::feed::{Backoff, Recorder, now_ms};

/// How a session ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// Reconnect with backoff.
    Retry(String),
    /// Reconnect only after `--refused-wait-ms` (auth failure, connection cap).
    Refused(String),
    /// The feed said the settings are wrong (HTTP 404 or 401 at the
    /// upgrade): log once as an error, then wait as for [`Ended::Refused`].
    Misconfigured(String),
    /// The feed went quiet because the market closed (REST status says so):
    /// poll the status until it opens, no backoff, not a stall.
    MarketClosed,
    /// Settings changed: reconnect now.
    Restart,
    /// Shutdown requested.
    Shutdown,
}

/// Go on with the session, or end it.
type Flow = ControlFlow<Ended>;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a session reads besides the feed: the listener's watches.
pub(super) struct Inputs<'a> {
    /// Turns true on shutdown.
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// Feed, market and subscriptions changed through the admin API.
    pub settings: &'a mut watch::Receiver<MassiveSettings>,
    /// The reconnect backoff, reset once data flows.
    pub backoff: &'a mut Backoff,
    /// Where received frames are recorded, if anywhere.
    pub recorder: Option<&'a Recorder>,
    /// To the publisher.
    pub tx: &'a mpsc::Sender<Routed>,
}

/// The state of one streaming connection.
struct Session<'a> {
    listener: &'a MassiveListener,
    ws: Ws,
    current: MassiveSettings,
    subscribed: bool,
    got_data: bool,
    last_frame: Instant,
    backoff: &'a mut Backoff,
    recorder: Option<&'a Recorder>,
    tx: &'a mpsc::Sender<Routed>,
}

impl MassiveListener {
    /// Run one session to its end.
    pub(super) async fn session(&self, inputs: Inputs<'_>) -> Ended {
        let current = inputs.settings.borrow_and_update().clone();
        // Stopped or restarted through the control API: this session ends.
        let mut run_rx = self.lifecycle.subscribe();
        if !run_rx.borrow_and_update().running {
            return Ended::Restart;
        }
        let ws = match self.connect(&current).await {
            Ok(ws) => ws,
            Err(ended) => return ended,
        };
        let mut session = Session {
            listener: self,
            ws,
            current,
            subscribed: false,
            got_data: false,
            last_frame: Instant::now(),
            backoff: inputs.backoff,
            recorder: inputs.recorder,
            tx: inputs.tx,
        };
        session
            .stream(inputs.shutdown, inputs.settings, &mut run_rx)
            .await
    }

    /// Open the WebSocket and send `auth`.
    async fn connect(&self, current: &MassiveSettings) -> Result<Ws, Ended> {
        let url = market_url(&current.feed_url, &current.market);
        self.stats.set_state("connecting");
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(4 * MAX_FRAME_BYTES))
            .max_frame_size(Some(4 * MAX_FRAME_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(&url, Some(config), false);
        let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                if let tokio_tungstenite::tungstenite::Error::Http(resp) = &e
                    && let Some(flag) = misconfigured_flag(resp.status().as_u16())
                {
                    self.stats.add(Count::ConfigError, 1);
                    return Err(Ended::Misconfigured(format!(
                        "connect {url}: HTTP {}; check {flag}",
                        resp.status()
                    )));
                }
                self.stats.add(Count::Dropped, 1);
                return Err(Ended::Retry(format!("connect {url}: {e}")));
            }
            Err(_) => {
                self.stats.add(Count::Dropped, 1);
                return Err(Ended::Retry(format!("connect {url}: timed out")));
            }
        };
        self.stats.set_state("authenticating");
        let auth = json!({"action": "auth", "params": self.api_key()}).to_string();
        if let Err(e) = ws.send(WsMessage::Text(auth.into())).await {
            return Err(Ended::Retry(format!("send auth: {e}")));
        }
        Ok(ws)
    }
}

impl Session<'_> {
    /// Dispatch inputs until the session ends.
    async fn stream(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        settings: &mut watch::Receiver<MassiveSettings>,
        run: &mut watch::Receiver<Run>,
    ) -> Ended {
        let stall = Duration::from_millis(self.listener.config.stall_timeout_ms.max(1));
        let mut ping = tokio::time::interval(Duration::from_secs(10));
        ping.tick().await;
        loop {
            let flow = tokio::select! {
                m = self.ws.next() => self.on_message(m).await,
                _ = tokio::time::sleep_until(self.last_frame + stall) => self.on_stall(stall).await,
                _ = ping.tick() => self.on_ping().await,
                _ = run.changed() => self.close(Ended::Restart).await,
                changed = settings.changed() => match changed {
                    Ok(()) => {
                        let next = settings.borrow_and_update().clone();
                        self.on_settings(next).await
                    }
                    Err(_) => Flow::Continue(()),
                },
                _ = shutdown.changed() => self.close(Ended::Shutdown).await,
            };
            if let ControlFlow::Break(ended) = flow {
                return ended;
            }
        }
    }

    /// Close the connection (best effort) and end the session.
    async fn close(&mut self, ended: Ended) -> Flow {
        let _ = self.ws.close(None).await;
        Flow::Break(ended)
    }

    /// The connection was lost without a status.
    fn dropped(&self, why: String) -> Flow {
        self.listener.stats.add(Count::Dropped, 1);
        Flow::Break(Ended::Retry(why))
    }

    /// One read from the socket.
    async fn on_message(
        &mut self,
        msg: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Flow {
        match msg {
            None => self.dropped("connection closed".into()),
            Some(Err(e)) => self.dropped(format!("read: {e}")),
            Some(Ok(WsMessage::Text(text))) => self.on_frame(&text).await,
            Some(Ok(WsMessage::Binary(b))) => {
                self.listener
                    .bad_frame(&format!("binary frame of {} bytes", b.len()));
                Flow::Continue(())
            }
            Some(Ok(WsMessage::Close(c))) => self.dropped(format!("closed by server: {c:?}")),
            Some(Ok(_)) => Flow::Continue(()),
        }
    }

    /// A text frame: recorded, parsed, its statuses handled, its events sent on.
    async fn on_frame(&mut self, text: &str) -> Flow {
        self.last_frame = Instant::now();
        if let Some(r) = self.recorder {
            r.record(now_ms(), text);
        }
        let frame = match parse_frame(text) {
            Ok(f) => f,
            Err(e) => {
                if matches!(e, FrameError::TooLarge(_)) {
                    self.listener.stats.add(Count::TooLarge, 1);
                }
                self.listener.bad_frame(&e.to_string());
                return Flow::Continue(());
            }
        };
        for (status, message) in &frame.statuses {
            self.on_status(status, message).await?;
        }
        self.on_data(frame.routed).await
    }

    /// A status object of the feed.
    async fn on_status(&mut self, status: &str, message: &str) -> Flow {
        let listener = self.listener;
        let stats = &listener.stats;
        match status {
            "auth_success" if !self.subscribed => return self.on_authenticated().await,
            "auth_failed" => {
                stats.add(Count::AuthFailed, 1);
                return Flow::Break(Ended::Refused(format!("auth_failed: {message}")));
            }
            "max_connections" => {
                stats.add(Count::MaxConnections, 1);
                return Flow::Break(Ended::Refused(format!(
                    "max_connections (another session uses this key): {message}"
                )));
            }
            "slow_consumer" => {
                stats.add(Count::SlowConsumer, 1);
                tracing::error!(%message, "massive feed dropped us as a SLOW CONSUMER; publishing is not keeping up");
                return Flow::Break(Ended::Retry(format!("slow_consumer: {message}")));
            }
            "force_disconnect" => {
                stats.add(Count::ForceDisconnect, 1);
                return Flow::Break(Ended::Retry(format!("force_disconnect: {message}")));
            }
            "auth_timeout" => return Flow::Break(Ended::Retry(format!("auth_timeout: {message}"))),
            "error" => tracing::warn!(%message, "massive feed error status"),
            _ => tracing::debug!(%status, %message, "massive status"),
        }
        Flow::Continue(())
    }

    /// `auth_success`: subscribe; the session is streaming.
    async fn on_authenticated(&mut self) -> Flow {
        let topics = self.current.subscriptions.join(",");
        tracing::info!(subscriptions = %topics, "massive feed authenticated; subscribing");
        let subscribe = json!({"action": "subscribe", "params": topics}).to_string();
        if let Err(e) = self.ws.send(WsMessage::Text(subscribe.into())).await {
            return Flow::Break(Ended::Retry(format!("send subscribe: {e}")));
        }
        self.subscribed = true;
        let listener = self.listener;
        let stats = &listener.stats;
        stats.add(Count::Session, 1);
        stats
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        stats.set_state("streaming");
        Flow::Continue(())
    }

    /// The events of a frame: counted and handed to the publisher.
    async fn on_data(&mut self, routed: Routed) -> Flow {
        if routed.is_empty() {
            return Flow::Continue(());
        }
        if !self.got_data {
            self.got_data = true;
            self.backoff.reset();
        }
        let listener = self.listener;
        let stats = &listener.stats;
        stats
            .last_message_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        for (queue, events) in &routed {
            stats.add(Count::Queued(queue_index(queue)), events.len() as u64);
        }
        if self.tx.send(routed).await.is_err() {
            return Flow::Break(Ended::Shutdown);
        }
        Flow::Continue(())
    }

    /// No frame for `stall`: the market closed, or the feed stalled.
    async fn on_stall(&mut self, stall: Duration) -> Flow {
        if self.listener.market_closed().await {
            return self.close(Ended::MarketClosed).await;
        }
        self.listener.stats.add(Count::Stall, 1);
        self.close(Ended::Retry(format!("feed stalled: no data for {stall:?}")))
            .await
    }

    /// Time to ping the feed.
    async fn on_ping(&mut self) -> Flow {
        match self.ws.send(WsMessage::Ping(Bytes::new())).await {
            Ok(()) => Flow::Continue(()),
            Err(e) => self.dropped(format!("ping: {e}")),
        }
    }

    /// Settings changed: reconnect for a new feed or market, resubscribe on
    /// this connection for new topics.
    async fn on_settings(&mut self, next: MassiveSettings) -> Flow {
        if next.feed_url != self.current.feed_url || next.market != self.current.market {
            return self.close(Ended::Restart).await;
        }
        if self.subscribed
            && let Err(e) = self.resubscribe(&next.subscriptions).await
        {
            return Flow::Break(Ended::Retry(format!("send subscription change: {e}")));
        }
        self.current = next;
        Flow::Continue(())
    }

    /// `unsubscribe` the topics dropped and `subscribe` the ones added.
    async fn resubscribe(&mut self, new: &[String]) -> anyhow::Result<()> {
        let old = &self.current.subscriptions;
        let removed: Vec<&str> = old
            .iter()
            .filter(|t| !new.contains(t))
            .map(String::as_str)
            .collect();
        let added: Vec<&str> = new
            .iter()
            .filter(|t| !old.contains(t))
            .map(String::as_str)
            .collect();
        if !removed.is_empty() {
            let m = json!({"action": "unsubscribe", "params": removed.join(",")}).to_string();
            self.ws.send(WsMessage::Text(m.into())).await?;
        }
        if !added.is_empty() {
            let m = json!({"action": "subscribe", "params": added.join(",")}).to_string();
            self.ws.send(WsMessage::Text(m.into())).await?;
        }
        tracing::info!(?added, ?removed, "massive subscriptions changed");
        Ok(())
    }
}
