//! `mdp listen massive`: the Massive stocks WebSocket client (protocols.md
//! §1). Handshake (`connected` → `auth` → `subscribe`), frame parsing
//! (statuses mixed with data in any position, unknown fields ignored,
//! unknown event types routed to `unknown` without aborting the frame),
//! conversion to the seed's queue JSON, routing to
//! `trades|aggregate|quotes|halts|unknown`, publishing with confirms (one
//! message per event, or one array message per queue per frame), and
//! reconnects with exponential backoff and jitter. `auth_failed` and
//! `max_connections` back off long and loudly instead of hammering the feed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::event::{MARKET_QUEUES, massive::to_queue_json, queue_for};
use crate::queue::{Queue, QueueSpec};

/// Largest frame accepted, bytes (larger ones are dropped and counted).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Settings of the Massive listener.
#[derive(Debug, Clone, clap::Args)]
pub struct MassiveArgs {
    /// Feed base URL; the market path `/stocks` is appended.
    #[arg(
        long,
        env = "MASSIVE_FEED_URL",
        default_value = "wss://socket.massive.com"
    )]
    pub feed_url: String,
    /// API key (falls back to POLYGON_API_KEY).
    #[arg(long, env = "MASSIVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Subscriptions, comma separated (seed default).
    #[arg(
        long,
        env = "MASSIVE_SUBSCRIPTIONS",
        default_value = "A.*,T.*,Q.*,LULD.*"
    )]
    pub subscriptions: String,
    /// Queue broker URL.
    #[arg(long, env = "RABBITMQ_URL", default_value = "memory://")]
    pub queue_url: String,
    /// Message TTL of the market-data queues, ms.
    #[arg(long, env = "MARKET_DATA_MESSAGE_TTL", default_value_t = 5000)]
    pub message_ttl_ms: u64,
    /// Publish one array message per queue per frame instead of one per event.
    #[arg(long)]
    pub batch_frames: bool,
}

/// Counters of the listener (also exported as metrics).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Events received (excluding statuses).
    pub events: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// Frames that could not be parsed.
    pub bad_frames: AtomicU64,
    /// Reconnects.
    pub reconnects: AtomicU64,
    /// Events per queue, in [`MARKET_QUEUES`] order.
    pub per_queue: [AtomicU64; 5],
}

/// What a frame holds, parsed.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedFrame {
    /// Queue JSON bodies per queue name.
    pub routed: BTreeMap<&'static str, Vec<Value>>,
    /// Status objects `(status, message)`.
    pub statuses: Vec<(String, String)>,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Over [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the 1 MB limit")]
    TooLarge(usize),
    /// Not JSON.
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    /// JSON but neither an array nor an object.
    #[error("frame is neither an array nor an object")]
    WrongShape,
}

/// Parse one server frame (an array of objects; a lone object is accepted).
pub fn parse_frame(text: &str) -> Result<ParsedFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(text.len()));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        v @ Value::Object(_) => vec![v],
        _ => return Err(FrameError::WrongShape),
    };
    let mut frame = ParsedFrame::default();
    for item in items {
        let Value::Object(obj) = item else { continue };
        match obj.get("ev").and_then(Value::as_str) {
            Some("status") => frame.statuses.push((
                obj.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                obj.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )),
            ev => {
                let queue = queue_for(ev.unwrap_or(""));
                frame
                    .routed
                    .entry(queue)
                    .or_default()
                    .push(Value::Object(to_queue_json(&obj)));
            }
        }
    }
    Ok(frame)
}

/// How the session ended.
#[derive(Debug)]
enum Ended {
    /// Reconnect soon (with backoff).
    Retry(String),
    /// Reconnect only after a long pause (auth failure, connection cap).
    BackOffLong(String),
    /// Shutdown requested.
    Shutdown,
}

/// The Massive listener.
pub struct MassiveListener {
    args: MassiveArgs,
    queue: Arc<dyn Queue>,
    /// Counters.
    pub stats: Arc<ListenerStats>,
}

impl MassiveListener {
    /// A listener publishing to `queue`.
    pub fn new(args: MassiveArgs, queue: Arc<dyn Queue>) -> Self {
        MassiveListener {
            args,
            queue,
            stats: Arc::new(ListenerStats::default()),
        }
    }

    /// Declare the market-data queues as the seed does.
    pub async fn declare_queues(&self) -> anyhow::Result<()> {
        for name in MARKET_QUEUES {
            self.queue
                .declare(&QueueSpec {
                    name: name.to_string(),
                    message_ttl: Some(Duration::from_millis(self.args.message_ttl_ms)),
                    dead_letter: None,
                })
                .await?;
        }
        Ok(())
    }

    /// Run until `shutdown`, reconnecting as needed.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.declare_queues().await?;
        let mut delay = Duration::from_millis(500);
        loop {
            let ended = self.session(&mut shutdown).await;
            let wait = match ended {
                Ended::Shutdown => return Ok(()),
                Ended::Retry(why) => {
                    tracing::warn!(reason = %why, ?delay, "massive feed disconnected; reconnecting");
                    let d = delay;
                    delay = (delay * 2).min(Duration::from_secs(30));
                    d
                }
                Ended::BackOffLong(why) => {
                    tracing::error!(reason = %why, "massive feed refused us; waiting 60 s before retrying");
                    Duration::from_secs(60)
                }
            };
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("mdp_listener_reconnects_total", "feed" => "massive").increment(1);
            let jitter = Duration::from_millis(rand::random::<u64>() % 250);
            tokio::select! {
                _ = tokio::time::sleep(wait + jitter) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    async fn session(&self, shutdown: &mut watch::Receiver<bool>) -> Ended {
        let url = format!("{}/stocks", self.args.feed_url.trim_end_matches('/'));
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(4 * MAX_FRAME_BYTES))
            .max_frame_size(Some(4 * MAX_FRAME_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(&url, Some(config), false);
        let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Ended::Retry(format!("connect {url}: {e}")),
            Err(_) => return Ended::Retry(format!("connect {url}: timed out")),
        };
        let key = self
            .args
            .api_key
            .clone()
            .or_else(|| std::env::var("POLYGON_API_KEY").ok())
            .unwrap_or_default();
        let auth = serde_json::json!({"action": "auth", "params": key}).to_string();
        if let Err(e) = ws.send(WsMessage::Text(auth.into())).await {
            return Ended::Retry(format!("send auth: {e}"));
        }
        let subscribe =
            serde_json::json!({"action": "subscribe", "params": self.args.subscriptions})
                .to_string();
        let mut subscribed = false;
        let idle = Duration::from_secs(30);
        loop {
            let msg = tokio::select! {
                m = tokio::time::timeout(idle, ws.next()) => m,
                _ = shutdown.changed() => {
                    let _ = ws.close(None).await;
                    return Ended::Shutdown;
                }
            };
            let text = match msg {
                Err(_) => return Ended::Retry("feed silent for 30 s".into()),
                Ok(None) => return Ended::Retry("connection closed".into()),
                Ok(Some(Err(e))) => return Ended::Retry(format!("read: {e}")),
                Ok(Some(Ok(WsMessage::Text(t)))) => t,
                Ok(Some(Ok(WsMessage::Close(c)))) => {
                    return Ended::Retry(format!("closed by server: {c:?}"));
                }
                Ok(Some(Ok(_))) => continue,
            };
            let frame = match parse_frame(&text) {
                Ok(f) => f,
                Err(e) => {
                    self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("mdp_listener_bad_frames_total", "feed" => "massive")
                        .increment(1);
                    tracing::warn!(error = %e, "bad frame skipped");
                    continue;
                }
            };
            for (status, message) in &frame.statuses {
                match status.as_str() {
                    "auth_success" if !subscribed => {
                        tracing::info!(
                            "massive feed authenticated; subscribing to {}",
                            self.args.subscriptions
                        );
                        if let Err(e) = ws.send(WsMessage::Text(subscribe.clone().into())).await {
                            return Ended::Retry(format!("send subscribe: {e}"));
                        }
                        subscribed = true;
                    }
                    "auth_failed" => return Ended::BackOffLong(format!("auth_failed: {message}")),
                    "max_connections" => {
                        return Ended::BackOffLong(format!("max_connections: {message}"));
                    }
                    "slow_consumer" | "force_disconnect" => {
                        return Ended::Retry(format!("{status}: {message}"));
                    }
                    "error" => tracing::warn!(%message, "massive feed error status"),
                    _ => tracing::debug!(%status, %message, "massive status"),
                }
            }
            if let Err(e) = self.publish(frame.routed).await {
                tracing::warn!(error = %e, "publish failed; frame events lost");
                metrics::counter!("mdp_listener_publish_errors_total", "feed" => "massive")
                    .increment(1);
            }
        }
    }

    async fn publish(&self, routed: BTreeMap<&'static str, Vec<Value>>) -> anyhow::Result<()> {
        for (queue, events) in routed {
            let n = events.len() as u64;
            self.stats.events.fetch_add(n, Ordering::Relaxed);
            if let Some(i) = MARKET_QUEUES.iter().position(|q| *q == queue) {
                self.stats.per_queue[i].fetch_add(n, Ordering::Relaxed);
            }
            let bodies: Vec<Bytes> = if self.args.batch_frames {
                vec![Bytes::from(Value::Array(events).to_string())]
            } else {
                events
                    .into_iter()
                    .map(|e| Bytes::from(e.to_string()))
                    .collect()
            };
            self.queue.publish(queue, &bodies).await?;
            self.stats
                .published
                .fetch_add(bodies.len() as u64, Ordering::Relaxed);
            metrics::counter!("mdp_mdq_messages_total", "queue" => queue).increment(n);
        }
        Ok(())
    }
}

/// Run `mdp listen massive` until ctrl-c.
pub async fn run(args: MassiveArgs) -> anyhow::Result<std::process::ExitCode> {
    let queue = crate::queue::open(&args.queue_url).await?;
    let listener = MassiveListener::new(args, queue);
    listener.run(crate::cli::roles::shutdown_signal()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_data_mix_and_unknown_types_do_not_abort_the_frame() {
        let f = parse_frame(r#"[{"ev":"status","status":"success","message":"subscribed to: T.*"},{"ev":"T","sym":"A","p":1,"s":1,"t":1,"new_field":true},{"ev":"NOI","T":"X"},{"ev":"Q","sym":"A","bp":1,"ap":2}]"#).unwrap();
        assert_eq!(
            f.statuses,
            vec![("success".to_string(), "subscribed to: T.*".to_string())]
        );
        assert_eq!(f.routed["trades"][0]["symbol"], "A");
        assert_eq!(f.routed["unknown"][0]["T"], "X");
        assert_eq!(f.routed["quotes"].len(), 1);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(matches!(
            parse_frame("[{\"ev\":"),
            Err(FrameError::NotJson(_))
        ));
        assert_eq!(parse_frame("42"), Err(FrameError::WrongShape));
        assert!(matches!(
            parse_frame(&"x".repeat(MAX_FRAME_BYTES + 1)),
            Err(FrameError::TooLarge(_))
        ));
        // Property-style: random bytes and every truncation of a valid frame never panic.
        let valid = r#"[{"ev":"T","sym":"A","p":1.5,"s":100,"t":1},{"ev":"A","sym":"B","v":1}]"#;
        for cut in 0..valid.len() {
            let _ = parse_frame(&valid[..cut]);
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"[]{}\",:evTsymp0123 "[(x % 20) as usize]
                })
                .collect();
            let _ = parse_frame(&String::from_utf8_lossy(&bytes));
        }
    }
}
