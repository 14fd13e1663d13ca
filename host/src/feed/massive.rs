//! `mdp listen massive`: the Massive stocks WebSocket client.
//! Handshake (`connected` → `auth` → `subscribe`), frame parsing
//! (statuses mixed with data in any position, unknown fields ignored,
//! unknown event types routed to `unknown` without aborting the frame),
//! conversion to the seed's queue JSON, routing to
//! `trades|aggregate|quotes|halts|unknown`, publishing with confirms (one
//! message per event, or array messages) on a pipelined publisher that
//! merges the frames waiting into one publish per queue.
//!
//! Robustness: every disconnect status is handled distinctly —
//! `auth_failed` and `max_connections` wait long and log loudly (retrying
//! at once would only knock the other session off again), `slow_consumer`
//! and `force_disconnect` reconnect with backoff — with exponential backoff
//! plus jitter; when the market is closed the listener polls REST market
//! status instead of hammering the feed; frames over 1 MB, garbage and
//! truncated frames are counted, logged and skipped; a feed that stops
//! sending data for `--stall-timeout-ms` is treated as stalled and
//! reconnected, unless REST market status says the market closed; an HTTP
//! 404 or 401 at connect is a configuration error (one ERROR naming the
//! flag, then the refused wait). An admin API ([`admin_router`]) reports status and changes
//! feed, market and subscriptions at runtime.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{Backoff, Recorder, now_ms};
use crate::event::{MARKET_QUEUES, massive::to_queue_json, queue_for};
use crate::queue::{Queue, QueueSpec};

/// Where the seed looks for the Massive key file when neither
/// `MASSIVE_API_KEY` nor `POLYGON_API_KEY` is set.
pub const MASSIVE_KEY_FILE: &str = "/app/massive_api_key.txt";

/// The Massive API key as the seed finds it: the flag or `MASSIVE_API_KEY`
/// (`given`), then `POLYGON_API_KEY`, then the contents of
/// [`MASSIVE_KEY_FILE`] (or `MASSIVE_API_KEY_FILE`), trimmed; blank counts as
/// none.
pub fn massive_api_key(given: Option<&str>) -> Option<String> {
    api_key_from(
        given,
        || std::env::var("POLYGON_API_KEY").ok(),
        || {
            let file = std::env::var("MASSIVE_API_KEY_FILE")
                .unwrap_or_else(|_| MASSIVE_KEY_FILE.to_string());
            std::fs::read_to_string(file).ok()
        },
    )
}

/// The first non-blank key (trimmed) of `given`, `polygon`, `file`, in that
/// order; later sources are not consulted. Like the seed's `a or b or c`, a
/// blank value falls through to the next source.
fn api_key_from(
    given: Option<&str>,
    polygon: impl FnOnce() -> Option<String>,
    file: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let nonblank = |k: Option<String>| k.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
    nonblank(given.map(str::to_string))
        .or_else(|| nonblank(polygon()))
        .or_else(|| nonblank(file()))
}

/// Largest frame accepted, bytes (larger ones are dropped and counted).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Frames read ahead of the publisher.
const PIPELINE_FRAMES: usize = 64;
/// Most events merged into one publish per queue.
const MAX_BATCH_EVENTS: usize = 2000;

/// Most events in one array message (`--batch-frames`).
const BATCH_MESSAGE_EVENTS: usize = 1000;

/// A parsed frame's events per queue.
type Routed = BTreeMap<&'static str, Vec<Value>>;

/// Topic codes a subscription may use (stocks).
pub const TOPICS: [&str; 6] = ["T", "Q", "A", "AM", "LULD", "NOI"];

/// Settings of the Massive listener.
#[derive(Debug, Clone, clap::Args)]
pub struct MassiveArgs {
    /// Feed base URL; the market path (`/stocks`) is appended unless the
    /// URL already ends in it.
    #[arg(long, env = "MASSIVE_FEED_URL", default_value = DEFAULT_FEED_URL)]
    pub feed_url: String,
    /// Feed host, the seed's `MASSIVE_FEED` (`socket.massive.com`,
    /// `delayed.massive.com`, or the SDK's names `RealTime` / `Delayed`): the
    /// feed URL becomes `wss://<host>` (`ws://` when --feed-secure false)
    /// unless --feed-url / MASSIVE_FEED_URL names another URL.
    #[arg(long, env = "MASSIVE_FEED")]
    pub feed_host: Option<String>,
    /// With --feed-host: TLS or not (the seed's `MASSIVE_SECURE`).
    #[arg(long, env = "MASSIVE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub feed_secure: bool,
    /// API key (falls back to POLYGON_API_KEY).
    #[arg(long, env = "MASSIVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Subscriptions, comma separated or a JSON array (seed default).
    #[arg(
        long,
        env = "MASSIVE_SUBSCRIPTIONS",
        default_value = "A.*,T.*,Q.*,LULD.*"
    )]
    pub subscriptions: String,
    /// Queue broker URL (`amqp://…`; `memory://` only when given explicitly); required.
    #[arg(long, env = "RABBITMQ_URL", default_value_t = String::new(), hide_default_value = true, hide_env_values = true)]
    pub queue_url: String,
    /// Message TTL of the market-data queues, ms.
    #[arg(long, env = "MARKET_DATA_MESSAGE_TTL", default_value_t = 5000)]
    pub message_ttl_ms: u64,
    /// Publish array messages (the frames waiting, per queue, up to 1,000
    /// events each) instead of one message per event. Only mdp's processors
    /// read arrays: the seed's (Python) processors expect one event per
    /// message, so leave this off in a deployment that mixes them.
    #[arg(long)]
    pub batch_frames: bool,
    /// Market (path segment); only `stocks` is implemented.
    #[arg(long, env = "MASSIVE_MARKET", default_value = "stocks")]
    pub market: String,
    /// Massive REST base URL, for market status while the market is closed
    /// (default: Massive's API when a key is set and the feed is Massive's;
    /// without either, the listener always connects).
    #[arg(long, env = "MASSIVE_REST_URL")]
    pub rest_url: Option<String>,
    /// Poll market status while the market is closed instead of connecting,
    /// whenever a REST endpoint is known.
    #[arg(long, env = "MASSIVE_MARKET_AWARE", default_value_t = true, action = clap::ArgAction::Set)]
    pub market_aware: bool,
    /// No data for this long (ms) means the feed stalled: reconnect.
    #[arg(long, env = "MASSIVE_STALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub stall_timeout_ms: u64,
    /// Longest reconnect backoff, ms (starts at 500 ms, doubles, jittered).
    #[arg(long, default_value_t = 30_000)]
    pub max_backoff_ms: u64,
    /// Wait after `auth_failed` or `max_connections`, ms.
    #[arg(long, default_value_t = 60_000)]
    pub refused_wait_ms: u64,
    /// Market-status poll interval while the market is closed, ms.
    #[arg(long, default_value_t = 60_000)]
    pub closed_poll_ms: u64,
    /// Prefix of the queue names (e.g. to share one broker between tests).
    #[arg(long, env = "MDP_QUEUE_PREFIX", default_value = "")]
    pub queue_prefix: String,
    /// Admin API address (`/status`, `/feed`, `/market`, `/subscriptions`); none when unset.
    #[arg(long, env = "MDP_LISTENER_ADMIN")]
    pub admin_listen: Option<String>,
    /// Health, readiness, status and metrics only (`/health`, `/ready`,
    /// `/status`, `/metrics`), apart from the control API: the address for
    /// probes and scrapers; none when unset.
    #[arg(long, env = "MDP_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Connect when started (`false`: wait for `POST /start` on the control API).
    #[arg(long, env = "MDL_AUTO_START_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_start: bool,
    /// Who may change settings through the admin API, and how often.
    #[command(flatten)]
    pub admin: super::admin::AdminAccess,
    /// Publisher confirms (the seed's `MDQ_PUBLISHER_CONFIRMS`).
    #[command(flatten)]
    pub confirms: super::PublisherConfirms,
    /// Hosts the admin API may point the feed at (comma separated, any
    /// port); default: the host of `--feed-url`.
    #[arg(long, env = "MASSIVE_FEED_HOSTS", value_delimiter = ',')]
    pub feed_hosts: Vec<String>,
    /// Record every received frame to this JSONL file (replayable by `mdp simulate --replay`).
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
}

impl Default for MassiveArgs {
    fn default() -> Self {
        MassiveArgs {
            feed_url: DEFAULT_FEED_URL.into(),
            feed_host: None,
            feed_secure: true,
            api_key: None,
            subscriptions: "A.*,T.*,Q.*,LULD.*".into(),
            queue_url: "memory://".into(),
            message_ttl_ms: 5000,
            batch_frames: false,
            market: "stocks".into(),
            rest_url: None,
            market_aware: true,
            stall_timeout_ms: 30_000,
            max_backoff_ms: 30_000,
            refused_wait_ms: 60_000,
            closed_poll_ms: 60_000,
            queue_prefix: String::new(),
            admin_listen: None,
            health_listen: None,
            auto_start: true,
            admin: Default::default(),
            confirms: Default::default(),
            feed_hosts: Vec::new(),
            record: None,
        }
    }
}

/// Massive's real-time feed.
pub const DEFAULT_FEED_URL: &str = "wss://socket.massive.com";

/// Whether `url` points at Massive's own servers (`massive.com`, `polygon.io`).
pub fn is_massive_host(url: &str) -> bool {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    ["massive.com", "polygon.io"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Massive's REST API.
pub const DEFAULT_REST_URL: &str = "https://api.massive.com";

impl MassiveArgs {
    /// Where the listener asks for market status: `--rest-url`, else
    /// Massive's API when a key is set and the feed is Massive's own; `None`
    /// when market-aware reconnect is off or no endpoint is known.
    pub fn market_status_url(&self) -> Option<String> {
        if !self.market_aware {
            return None;
        }
        if let Some(url) = &self.rest_url {
            return Some(url.clone());
        }
        let keyed = massive_api_key(self.api_key.as_deref()).is_some();
        (keyed && is_massive_host(&self.feed_url)).then(|| DEFAULT_REST_URL.to_string())
    }

    /// The feed URL once the seed's `MASSIVE_FEED` host is applied: a host
    /// given while the URL is the default replaces it (`RealTime` and
    /// `Delayed`, the names the seed documents, stand for Massive's hosts).
    pub fn resolve_feed_host(&mut self) {
        let Some(host) = self.feed_host.as_deref().map(str::trim) else {
            return;
        };
        if host.is_empty() || self.feed_url != DEFAULT_FEED_URL {
            return;
        }
        let host = match host {
            "RealTime" => "socket.massive.com",
            "Delayed" => "delayed.massive.com",
            other => other,
        };
        let scheme = if self.feed_secure { "wss" } else { "ws" };
        self.feed_url = format!("{scheme}://{host}");
    }
}

/// What the admin API may change at runtime.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MassiveSettings {
    /// Feed base URL.
    pub feed_url: String,
    /// Market path segment.
    pub market: String,
    /// Subscribed topics.
    pub subscriptions: Vec<String>,
}

/// Validate a feed base URL.
pub fn validate_feed(url: &str) -> Result<String, String> {
    super::admin::valid_ws_url(url)?;
    Ok(url.trim_end_matches('/').to_string())
}

/// The WebSocket URL of `market` on the feed at `feed_url`: the market path
/// is appended unless the URL's path already ends in it (`mdp simulate`
/// prints its feed as `ws://127.0.0.1:8090/stocks`).
pub fn market_url(feed_url: &str, market: &str) -> String {
    let base = feed_url.trim_end_matches('/');
    let ends_in_market = url::Url::parse(base)
        .ok()
        .and_then(|u| u.path_segments()?.next_back().map(|s| s == market))
        .unwrap_or(false);
    if ends_in_market {
        base.to_string()
    } else {
        format!("{base}/{market}")
    }
}

/// The flag to fix when the feed answers the WebSocket upgrade with
/// `status`: `--feed-url` for 404 (no such path), `--api-key` for 401/403;
/// none for other statuses (worth retrying).
fn misconfigured_flag(status: u16) -> Option<&'static str> {
    match status {
        404 => Some("--feed-url (MASSIVE_FEED_URL)"),
        401 | 403 => Some("--api-key (MASSIVE_API_KEY)"),
        _ => None,
    }
}

/// The host of `url`, lower case (none when it does not parse or has none).
fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(str::to_ascii_lowercase)
}

/// The hosts the feed may be changed to: `given` (trimmed, lower case), or
/// else the host of the configured `feed_url`.
fn allowed_feed_hosts(given: &[String], feed_url: &str) -> Vec<String> {
    let given: Vec<String> = super::list_setting(given)
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if given.is_empty() {
        host_of(feed_url).into_iter().collect()
    } else {
        given
    }
}

/// Validate a market (only `stocks` is implemented).
pub fn validate_market(market: &str) -> Result<String, String> {
    match market {
        "stocks" => Ok(market.to_string()),
        "options" | "forex" | "crypto" | "indices" | "futures" => Err(format!(
            "market `{market}` is not supported by this listener (only `stocks`)"
        )),
        _ => Err(format!("unknown market `{market}` (only `stocks`)")),
    }
}

/// Validate subscription topics (`T.*`, `AM.AAPL`, ...; trimmed, deduplicated, order kept).
pub fn validate_subscriptions<S: AsRef<str>>(topics: &[S]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for raw in topics {
        let topic = raw.as_ref().trim();
        let Some((kind, sym)) = topic.split_once('.') else {
            return Err(format!("`{topic}` is not TOPIC.TICKER"));
        };
        if !TOPICS.contains(&kind) {
            return Err(format!(
                "unknown topic `{kind}` in `{topic}` (one of {})",
                TOPICS.join(", ")
            ));
        }
        if !super::admin::valid_symbol(sym) {
            return Err(format!("bad ticker `{sym}` in `{topic}`"));
        }
        if !out.iter().any(|t| t == topic) {
            out.push(topic.to_string());
        }
    }
    if out.is_empty() {
        return Err("no subscriptions given".into());
    }
    Ok(out)
}

/// Counters and state of the listener (also exported as metrics).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Events received (excluding statuses).
    pub events: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// Events whose publish the broker confirmed.
    pub confirmed: AtomicU64,
    /// Frames that could not be parsed (garbage, truncated, not UTF-8).
    pub bad_frames: AtomicU64,
    /// Frames over [`MAX_FRAME_BYTES`].
    pub too_large: AtomicU64,
    /// Reconnects.
    pub reconnects: AtomicU64,
    /// Events per queue, in [`MARKET_QUEUES`] order.
    pub per_queue: [AtomicU64; 5],
    /// Publishes that failed (their events are lost).
    pub publish_errors: AtomicU64,
    /// `auth_failed` statuses.
    pub auth_failures: AtomicU64,
    /// Connects refused as misconfigured (HTTP 404 or 401 at the upgrade).
    pub config_errors: AtomicU64,
    /// `max_connections` evictions.
    pub max_connections: AtomicU64,
    /// `slow_consumer` disconnects.
    pub slow_consumers: AtomicU64,
    /// `force_disconnect` kicks.
    pub force_disconnects: AtomicU64,
    /// Sessions ended because the feed stopped sending data.
    pub stalls: AtomicU64,
    /// Connections lost without a status (reset, close, refused dial).
    pub dropped: AtomicU64,
    /// Market-status polls that found the market closed.
    pub closed_polls: AtomicU64,
    /// Market-status calls that failed or returned nonsense.
    pub rest_errors: AtomicU64,
    /// Sessions that reached `auth_success`.
    pub sessions: AtomicU64,
    /// True while authenticated and streaming.
    pub connected: AtomicBool,
    /// Unix ms of the last data frame (0 = none yet).
    pub last_message_ms: AtomicU64,
    /// Current state and the last disconnect reason.
    pub state: Mutex<(String, String)>,
}

impl ListenerStats {
    fn set_state(&self, state: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = state.to_string();
    }

    fn set_error(&self, error: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = error.to_string();
    }

    /// The current state (`connecting`, `streaming`, `market_closed`, ...).
    pub fn state(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Events counted on `queue` (one of [`MARKET_QUEUES`]).
    pub fn queue_count(&self, queue: &str) -> u64 {
        MARKET_QUEUES
            .iter()
            .position(|q| *q == queue)
            .map(|i| self.per_queue[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }
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

/// How a session ended.
#[derive(Debug)]
enum Ended {
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

/// The Massive listener.
pub struct MassiveListener {
    args: MassiveArgs,
    queue: Arc<dyn Queue>,
    queues: [String; 5],
    settings: watch::Sender<MassiveSettings>,
    /// Hosts the feed URL may be changed to.
    feed_hosts: Vec<String>,
    http: reqwest::Client,
    /// Counters and state.
    pub stats: Arc<ListenerStats>,
    /// Started, stopped, restarted through the control API.
    lifecycle: super::lifecycle::Lifecycle,
}

impl MassiveListener {
    /// A listener publishing to `queue`. Settings from `args` that do not
    /// validate are kept as given and fail at connect time (logged).
    pub fn new(args: MassiveArgs, queue: Arc<dyn Queue>) -> Self {
        let subscriptions = super::list_setting(&[&args.subscriptions]);
        let settings = MassiveSettings {
            feed_url: args.feed_url.trim_end_matches('/').to_string(),
            market: args.market.clone(),
            subscriptions,
        };
        let queues = MARKET_QUEUES.map(|q| format!("{}{q}", args.queue_prefix));
        let stats = Arc::new(ListenerStats::default());
        stats.set_state("starting");
        MassiveListener {
            feed_hosts: allowed_feed_hosts(&args.feed_hosts, &args.feed_url),
            lifecycle: super::lifecycle::Lifecycle::new(args.auto_start),
            args,
            queue,
            queues,
            settings: watch::channel(settings).0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            stats,
        }
    }

    /// The current runtime settings.
    pub fn settings(&self) -> MassiveSettings {
        self.settings.borrow().clone()
    }

    /// Declare the market-data queues as the seed does.
    pub async fn declare_queues(&self) -> anyhow::Result<()> {
        for name in &self.queues {
            self.queue
                .declare(&QueueSpec {
                    name: name.clone(),
                    message_ttl: Some(Duration::from_millis(self.args.message_ttl_ms)),
                    dead_letter: None,
                })
                .await?;
        }
        Ok(())
    }

    /// Status as the admin API reports it.
    pub fn status_json(&self) -> Value {
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (state, last_error) = s.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = load(&s.last_message_ms);
        let per_queue: serde_json::Map<String, Value> = MARKET_QUEUES
            .iter()
            .enumerate()
            .map(|(i, q)| (q.to_string(), json!(load(&s.per_queue[i]))))
            .collect();
        let run = self.lifecycle.state();
        json!({
            "feed": "massive",
            "state": state,
            "running": run.running,
            "restarts": run.restarts,
            "connected": s.connected.load(Ordering::Relaxed),
            "settings": self.settings(),
            "reconnects": load(&s.reconnects),
            "sessions": load(&s.sessions),
            "events": load(&s.events),
            "published": load(&s.published),
            "confirmed": load(&s.confirmed),
            "per_queue": per_queue,
            "last_message_time": (last > 0).then(|| chrono::DateTime::from_timestamp_millis(last as i64).map(|t| t.to_rfc3339())),
            "last_message_ms": last,
            "last_error": last_error,
            "bad_frames": load(&s.bad_frames),
            "too_large": load(&s.too_large),
            "publish_errors": load(&s.publish_errors),
            "auth_failures": load(&s.auth_failures),
            "config_errors": load(&s.config_errors),
            "max_connections": load(&s.max_connections),
            "slow_consumers": load(&s.slow_consumers),
            "force_disconnects": load(&s.force_disconnects),
            "stalls": load(&s.stalls),
            "dropped": load(&s.dropped),
            "closed_polls": load(&s.closed_polls),
            "rest_errors": load(&s.rest_errors),
        })
    }

    /// Change the feed URL (validated, and only to a host of `--feed-hosts`,
    /// since the listener sends the API key there; reconnects when it changed).
    pub fn set_feed(&self, url: &str) -> Result<MassiveSettings, String> {
        let url = validate_feed(url)?;
        let host = host_of(&url).unwrap_or_default();
        if !self.feed_hosts.contains(&host) {
            return Err(format!(
                "feed host `{host}` is not allowed (allowed: {}; see --feed-hosts)",
                self.feed_hosts.join(", ")
            ));
        }
        self.settings.send_if_modified(|s| {
            let changed = s.feed_url != url;
            s.feed_url = url.clone();
            changed
        });
        Ok(self.settings())
    }

    /// Change the market (validated; reconnects when it changed).
    pub fn set_market(&self, market: &str) -> Result<MassiveSettings, String> {
        let market = validate_market(market)?;
        self.settings.send_if_modified(|s| {
            let changed = s.market != market;
            s.market = market.clone();
            changed
        });
        Ok(self.settings())
    }

    /// Replace the subscriptions (validated; applied on the open connection
    /// with `unsubscribe` / `subscribe`).
    pub fn set_subscriptions<S: AsRef<str>>(
        &self,
        topics: &[S],
    ) -> Result<MassiveSettings, String> {
        let topics = validate_subscriptions(topics)?;
        self.settings.send_if_modified(|s| {
            let changed = s.subscriptions != topics;
            s.subscriptions = topics.clone();
            changed
        });
        Ok(self.settings())
    }

    /// Run until `shutdown`, reconnecting as needed. Frames are read on one
    /// side and published on the other, through a bounded channel: the
    /// publisher merges the frames waiting into one publish per queue, so
    /// confirm round trips are shared, and a broker that falls behind slows
    /// the reading down (the feed then sees a slow consumer) instead of
    /// growing memory. On shutdown the frames read are published first.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.declare_queues().await?;
        let (tx, rx) = mpsc::channel(PIPELINE_FRAMES);
        let (read, ()) = tokio::join!(self.read_loop(shutdown, tx), self.publish_loop(rx));
        read
    }

    async fn read_loop(
        &self,
        mut shutdown: watch::Receiver<bool>,
        tx: mpsc::Sender<Routed>,
    ) -> anyhow::Result<()> {
        let recorder = match &self.args.record {
            Some(path) => Some(Recorder::create(path).await?),
            None => None,
        };
        let mut backoff = Backoff::jittered(
            Duration::from_millis(500),
            Duration::from_millis(self.args.max_backoff_ms),
        );
        let mut settings_rx = self.settings.subscribe();
        loop {
            if !self.lifecycle.state().running {
                self.stats.set_state("stopped");
                tracing::info!("massive listener stopped; POST /start (or /restart) connects it");
            }
            if !self.lifecycle.wait_running(&mut shutdown).await {
                break;
            }
            if !self.wait_while_closed(&mut shutdown).await {
                break;
            }
            let ended = self
                .session(
                    &mut shutdown,
                    &mut settings_rx,
                    &mut backoff,
                    recorder.as_ref(),
                    &tx,
                )
                .await;
            self.stats.connected.store(false, Ordering::Relaxed);
            let wait = match ended {
                Ended::Shutdown => break,
                Ended::MarketClosed => continue,
                Ended::Restart => {
                    tracing::info!(settings = ?self.settings(), "massive listener settings changed; reconnecting");
                    Duration::ZERO
                }
                Ended::Retry(why) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(reason = %why, ?wait, "massive feed disconnected; reconnecting");
                    self.stats.set_error(&why);
                    self.stats.set_state("backing_off");
                    wait
                }
                Ended::Refused(why) => {
                    let wait = Duration::from_millis(self.args.refused_wait_ms);
                    tracing::error!(reason = %why, ?wait, "MASSIVE FEED REFUSED THIS LISTENER; waiting before retrying");
                    self.stats.set_error(&why);
                    self.stats.set_state("refused");
                    wait
                }
                Ended::Misconfigured(why) => {
                    let wait = Duration::from_millis(self.args.refused_wait_ms);
                    tracing::error!(
                        ?wait,
                        "massive listener misconfigured: {why}; waiting before retrying"
                    );
                    self.stats.set_error(&why);
                    self.stats.set_state("misconfigured");
                    wait
                }
            };
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("mdp_listener_reconnects_total", "feed" => "massive").increment(1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = settings_rx.changed() => {}
                _ = shutdown.changed() => break,
            }
        }
        self.stats.set_state("stopped");
        Ok(())
    }

    /// Poll REST market status while the market is closed; false on shutdown.
    /// A status that cannot be had is retried with backoff (1 s doubling to
    /// 60 s), not taken as open.
    async fn wait_while_closed(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let Some(rest) = self.args.market_status_url() else {
            return true;
        };
        let mut retry = Backoff::jittered(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let mut wait = Duration::from_millis(self.args.closed_poll_ms);
            match self.market_status(&rest).await {
                Ok(market) if market == "closed" => {
                    self.stats.closed_polls.fetch_add(1, Ordering::Relaxed);
                    if self.stats.state() != "market_closed" {
                        tracing::info!(
                            poll_ms = self.args.closed_poll_ms,
                            "market closed; polling market status instead of connecting"
                        );
                    }
                    self.stats.set_state("market_closed");
                }
                Ok(_) => return true,
                Err(e) => {
                    self.stats.rest_errors.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("mdp_listener_rest_errors_total", "feed" => "massive")
                        .increment(1);
                    wait = retry.next_delay();
                    tracing::warn!(error = %e, retry_in = ?wait, "market status unavailable; asking again before connecting");
                    self.stats.set_state("market_status_unavailable");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return false,
            }
        }
    }

    /// Whether REST market status (when an endpoint is known) says the market is closed.
    async fn market_closed(&self) -> bool {
        match self.args.market_status_url() {
            Some(rest) => matches!(self.market_status(&rest).await.as_deref(), Ok("closed")),
            None => false,
        }
    }

    /// `market` of `GET /v1/marketstatus/now`; a body without a string `market` is an error.
    async fn market_status(&self, rest: &str) -> anyhow::Result<String> {
        let key = self.api_key();
        let url = format!("{}/v1/marketstatus/now", rest.trim_end_matches('/'));
        let resp = self.http.get(&url).bearer_auth(&key).send().await?;
        let code = resp.status();
        if !code.is_success() {
            anyhow::bail!("market status: HTTP {code}");
        }
        let body: Value = resp.json().await?;
        match body.get("market").and_then(Value::as_str) {
            Some(m @ ("open" | "closed" | "extended-hours")) => Ok(m.to_string()),
            other => anyhow::bail!("market status: unexpected `market` {other:?}"),
        }
    }

    fn api_key(&self) -> String {
        massive_api_key(self.args.api_key.as_deref()).unwrap_or_default()
    }

    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        settings_rx: &mut watch::Receiver<MassiveSettings>,
        backoff: &mut Backoff,
        recorder: Option<&Recorder>,
        tx: &mpsc::Sender<Routed>,
    ) -> Ended {
        let mut current = settings_rx.borrow_and_update().clone();
        // Stopped or restarted through the control API: this session ends.
        let mut run_rx = self.lifecycle.subscribe();
        if !run_rx.borrow_and_update().running {
            return Ended::Restart;
        }
        let url = market_url(&current.feed_url, &current.market);
        self.stats.set_state("connecting");
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(4 * MAX_FRAME_BYTES))
            .max_frame_size(Some(4 * MAX_FRAME_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(&url, Some(config), false);
        let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if let tokio_tungstenite::tungstenite::Error::Http(resp) = &e
                    && let Some(flag) = misconfigured_flag(resp.status().as_u16())
                {
                    self.stats.config_errors.fetch_add(1, Ordering::Relaxed);
                    return Ended::Misconfigured(format!(
                        "connect {url}: HTTP {}; check {flag}",
                        resp.status()
                    ));
                }
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Ended::Retry(format!("connect {url}: {e}"));
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Ended::Retry(format!("connect {url}: timed out"));
            }
        };
        self.stats.set_state("authenticating");
        let auth = json!({"action": "auth", "params": self.api_key()}).to_string();
        if let Err(e) = ws.send(WsMessage::Text(auth.into())).await {
            return Ended::Retry(format!("send auth: {e}"));
        }
        let mut subscribed = false;
        let mut got_data = false;
        let stall = Duration::from_millis(self.args.stall_timeout_ms.max(1));
        let mut ping = tokio::time::interval(Duration::from_secs(10));
        ping.tick().await;
        let mut last_frame = tokio::time::Instant::now();
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep_until(last_frame + stall) => {
                    if self.market_closed().await {
                        let _ = ws.close(None).await;
                        return Ended::MarketClosed;
                    }
                    self.stats.stalls.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("mdp_listener_stalls_total", "feed" => "massive").increment(1);
                    let _ = ws.close(None).await;
                    return Ended::Retry(format!("feed stalled: no data for {stall:?}"));
                }
                _ = ping.tick() => {
                    if let Err(e) = ws.send(WsMessage::Ping(Bytes::new())).await {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        return Ended::Retry(format!("ping: {e}"));
                    }
                    continue;
                }
                _ = run_rx.changed() => {
                    let _ = ws.close(None).await;
                    return Ended::Restart;
                }
                changed = settings_rx.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let next = settings_rx.borrow_and_update().clone();
                    if next.feed_url != current.feed_url || next.market != current.market {
                        let _ = ws.close(None).await;
                        return Ended::Restart;
                    }
                    if subscribed && let Err(e) = self.resubscribe(&mut ws, &current.subscriptions, &next.subscriptions).await {
                        return Ended::Retry(format!("send subscription change: {e}"));
                    }
                    current = next;
                    continue;
                }
                _ = shutdown.changed() => {
                    let _ = ws.close(None).await;
                    return Ended::Shutdown;
                }
            };
            let text = match msg {
                None => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ended::Retry("connection closed".into());
                }
                Some(Err(e)) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ended::Retry(format!("read: {e}"));
                }
                Some(Ok(WsMessage::Text(t))) => t,
                Some(Ok(WsMessage::Binary(b))) => {
                    self.bad_frame(&format!("binary frame of {} bytes", b.len()));
                    continue;
                }
                Some(Ok(WsMessage::Close(c))) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ended::Retry(format!("closed by server: {c:?}"));
                }
                Some(Ok(_)) => continue,
            };
            last_frame = tokio::time::Instant::now();
            if let Some(r) = recorder {
                r.record(now_ms(), &text);
            }
            let frame = match parse_frame(&text) {
                Ok(f) => f,
                Err(e @ FrameError::TooLarge(_)) => {
                    self.stats.too_large.fetch_add(1, Ordering::Relaxed);
                    self.bad_frame(&e.to_string());
                    continue;
                }
                Err(e) => {
                    self.bad_frame(&e.to_string());
                    continue;
                }
            };
            for (status, message) in &frame.statuses {
                match status.as_str() {
                    "auth_success" if !subscribed => {
                        tracing::info!(
                            subscriptions = %current.subscriptions.join(","),
                            "massive feed authenticated; subscribing"
                        );
                        let subscribe = json!({"action": "subscribe", "params": current.subscriptions.join(",")}).to_string();
                        if let Err(e) = ws.send(WsMessage::Text(subscribe.into())).await {
                            return Ended::Retry(format!("send subscribe: {e}"));
                        }
                        subscribed = true;
                        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
                        self.stats.connected.store(true, Ordering::Relaxed);
                        self.stats.set_state("streaming");
                    }
                    "auth_failed" => {
                        self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("mdp_listener_refusals_total", "feed" => "massive", "status" => "auth_failed").increment(1);
                        return Ended::Refused(format!("auth_failed: {message}"));
                    }
                    "max_connections" => {
                        self.stats.max_connections.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("mdp_listener_refusals_total", "feed" => "massive", "status" => "max_connections").increment(1);
                        return Ended::Refused(format!(
                            "max_connections (another session uses this key): {message}"
                        ));
                    }
                    "slow_consumer" => {
                        self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("mdp_listener_kicks_total", "feed" => "massive", "status" => "slow_consumer").increment(1);
                        tracing::error!(%message, "massive feed dropped us as a SLOW CONSUMER; publishing is not keeping up");
                        return Ended::Retry(format!("slow_consumer: {message}"));
                    }
                    "force_disconnect" => {
                        self.stats.force_disconnects.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("mdp_listener_kicks_total", "feed" => "massive", "status" => "force_disconnect").increment(1);
                        return Ended::Retry(format!("force_disconnect: {message}"));
                    }
                    "auth_timeout" => return Ended::Retry(format!("auth_timeout: {message}")),
                    "error" => tracing::warn!(%message, "massive feed error status"),
                    _ => tracing::debug!(%status, %message, "massive status"),
                }
            }
            if frame.routed.is_empty() {
                continue;
            }
            if !got_data {
                got_data = true;
                backoff.reset();
            }
            self.stats
                .last_message_ms
                .store(now_ms(), Ordering::Relaxed);
            for (queue, events) in &frame.routed {
                let n = events.len() as u64;
                self.stats.events.fetch_add(n, Ordering::Relaxed);
                self.stats.per_queue[queue_index(queue)].fetch_add(n, Ordering::Relaxed);
            }
            if tx.send(frame.routed).await.is_err() {
                return Ended::Shutdown;
            }
        }
    }

    async fn resubscribe<S>(&self, ws: &mut S, old: &[String], new: &[String]) -> anyhow::Result<()>
    where
        S: futures_util::Sink<WsMessage, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
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
            ws.send(WsMessage::Text(m.into())).await?;
        }
        if !added.is_empty() {
            let m = json!({"action": "subscribe", "params": added.join(",")}).to_string();
            ws.send(WsMessage::Text(m.into())).await?;
        }
        tracing::info!(?added, ?removed, "massive subscriptions changed");
        Ok(())
    }

    fn bad_frame(&self, why: &str) {
        self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mdp_listener_bad_frames_total", "feed" => "massive").increment(1);
        tracing::warn!(error = %why, "bad frame skipped");
    }

    /// Publish frames as they come, merging those waiting (up to
    /// [`MAX_BATCH_EVENTS`] per queue) and publishing the queues concurrently.
    async fn publish_loop(&self, mut rx: mpsc::Receiver<Routed>) {
        while let Some(first) = rx.recv().await {
            let mut merged: [Vec<Value>; 5] = Default::default();
            let add = |merged: &mut [Vec<Value>; 5], routed: Routed| {
                for (queue, events) in routed {
                    merged[queue_index(queue)].extend(events);
                }
            };
            add(&mut merged, first);
            while merged.iter().map(Vec::len).max().unwrap_or(0) < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(routed) => add(&mut merged, routed),
                    Err(_) => break,
                }
            }
            let publishes = merged
                .into_iter()
                .enumerate()
                .filter(|(_, events)| !events.is_empty())
                .map(|(i, events)| self.publish_queue(i, events));
            futures_util::future::join_all(publishes).await;
        }
    }

    async fn publish_queue(&self, i: usize, events: Vec<Value>) {
        let queue = MARKET_QUEUES[i];
        let n = events.len() as u64;
        let bodies: Vec<Bytes> = if self.args.batch_frames {
            // Array messages of at most BATCH_MESSAGE_EVENTS events stay well
            // under the processors' 1 MB body limit.
            events
                .chunks(BATCH_MESSAGE_EVENTS)
                .map(|c| Bytes::from(serde_json::to_string(c).unwrap_or_default()))
                .collect()
        } else {
            events
                .into_iter()
                .map(|e| Bytes::from(e.to_string()))
                .collect()
        };
        let published = super::publish(
            &*self.queue,
            &self.queues[i],
            &bodies,
            n,
            "massive",
            super::PUBLISH_TIMEOUT,
        )
        .await;
        match published {
            Ok(()) => {
                self.stats
                    .published
                    .fetch_add(bodies.len() as u64, Ordering::Relaxed);
                self.stats.confirmed.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("mdp_mdq_messages_total", "queue" => queue).increment(n);
            }
            Err(_) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("mdp_listener_publish_errors_total", "feed" => "massive")
                    .increment(1);
            }
        }
    }
}

fn queue_index(queue: &str) -> usize {
    MARKET_QUEUES
        .iter()
        .position(|q| *q == queue)
        .unwrap_or(MARKET_QUEUES.len() - 1)
}

/// A list of topics given as a JSON array or `{"subscriptions": [...]}` or a comma string.
fn topics_of(body: &Value) -> Option<Vec<String>> {
    let v = body.get("subscriptions").unwrap_or(body);
    match v {
        Value::Array(items) => items.iter().map(|i| i.as_str().map(String::from)).collect(),
        Value::String(s) => Some(s.split(',').map(String::from).collect()),
        _ => None,
    }
}

fn field<'a>(body: &'a Value, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| body.get(*n).and_then(Value::as_str))
        .or_else(|| body.as_str())
}

/// The admin routes of a Massive listener: `GET /status`, `GET /ready`, `GET|POST /feed`,
/// `GET|POST /market`, `GET|POST /subscriptions` (JSON bodies: `{"feed": url}`,
/// `{"market": "stocks"}`, `["T.*","Q.AAPL"]`); the `POST`s are
/// [guarded](super::admin::guarded) by the listener's `--admin-token`.
pub fn admin_router(listener: Arc<MassiveListener>) -> Router {
    let access = listener.args.admin.clone();
    type L = State<Arc<MassiveListener>>;
    fn answer(l: &MassiveListener, r: Result<MassiveSettings, String>) -> Response {
        match r {
            Ok(s) => Json(json!({"ok": true, "settings": s})).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "admin change rejected");
                super::admin::rejected(e, json!(l.settings()))
            }
        }
    }
    async fn settings(State(l): L) -> Json<MassiveSettings> {
        Json(l.settings())
    }
    let router = super::admin::status_routes::<MassiveListener>()
        .merge(super::lifecycle::routes::<MassiveListener>())
        .route(
            "/feed",
            get(settings).post(|State(l): L, Json(body): Json<Value>| async move {
                let r = field(&body, &["feed", "url", "feed_url"])
                    .ok_or_else(|| "expected {\"feed\": \"ws://host:port\"}".to_string())
                    .and_then(|u| l.set_feed(u));
                answer(&l, r)
            }),
        )
        .route(
            "/market",
            get(settings).post(|State(l): L, Json(body): Json<Value>| async move {
                let r = field(&body, &["market"])
                    .ok_or_else(|| "expected {\"market\": \"stocks\"}".to_string())
                    .and_then(|m| l.set_market(m));
                answer(&l, r)
            }),
        )
        .route(
            "/subscriptions",
            get(settings).post(|State(l): L, Json(body): Json<Value>| async move {
                let r = topics_of(&body)
                    .ok_or_else(|| {
                        "expected a JSON array of topics like [\"T.*\",\"Q.AAPL\"]".to_string()
                    })
                    .and_then(|t| l.set_subscriptions(&t));
                answer(&l, r)
            }),
        )
        .with_state(listener);
    super::admin::guarded(router, &access)
}

/// Run `mdp listen massive` until ctrl-c.
pub async fn run(args: MassiveArgs) -> anyhow::Result<std::process::ExitCode> {
    let queue = crate::queue::open(&args.queue_url).await?;
    let (admin, health) = (args.admin_listen.clone(), args.health_listen.clone());
    let listener = Arc::new(MassiveListener::new(args, queue));
    if let Some(addr) = admin {
        super::admin::serve(&addr, admin_router(listener.clone())).await?;
    }
    if let Some(addr) = health {
        super::admin::serve(&addr, super::admin::read_router(listener.clone())).await?;
    }
    listener.run(crate::cli::roles::shutdown_signal()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

impl super::lifecycle::Controlled for MassiveListener {
    fn lifecycle(&self) -> &super::lifecycle::Lifecycle {
        &self.lifecycle
    }
}

impl super::admin::ListenerStatus for MassiveListener {
    fn status_json(&self) -> Value {
        MassiveListener::status_json(self)
    }
    fn connected(&self) -> bool {
        self.stats.connected.load(Ordering::Relaxed)
    }
    fn broker_connected(&self) -> bool {
        self.queue.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_aware_reconnect_is_on_whenever_a_rest_endpoint_is_known() {
        let with = |key: Option<&str>, feed: &str, rest: Option<&str>, aware: bool| {
            MassiveArgs {
                api_key: key.map(String::from),
                feed_url: feed.into(),
                rest_url: rest.map(String::from),
                market_aware: aware,
                ..MassiveArgs::default()
            }
            .market_status_url()
        };
        // A key on Massive's feed: Massive's REST API, without a flag.
        assert_eq!(
            with(Some("k"), DEFAULT_FEED_URL, None, true).as_deref(),
            Some(DEFAULT_REST_URL)
        );
        // A simulator's REST URL given (as `mdp up` does).
        assert_eq!(
            with(None, "ws://127.0.0.1:1", Some("http://127.0.0.1:1"), true).as_deref(),
            Some("http://127.0.0.1:1")
        );
        // Another feed without a REST URL: nothing to ask. Off: never.
        assert_eq!(with(Some("k"), "ws://127.0.0.1:1", None, true), None);
        assert_eq!(with(Some("k"), DEFAULT_FEED_URL, None, false), None);
        assert!(is_massive_host("wss://delayed.massive.com"));
        assert!(is_massive_host("wss://socket.polygon.io/stocks"));
        assert!(!is_massive_host("wss://massive.com.evil.example"));
    }

    #[test]
    fn the_seeds_massive_feed_host_sets_the_feed_url() {
        let resolved = |host: Option<&str>, secure: bool, url: &str| {
            let mut args = MassiveArgs {
                feed_host: host.map(String::from),
                feed_secure: secure,
                feed_url: url.into(),
                ..MassiveArgs::default()
            };
            args.resolve_feed_host();
            args.feed_url
        };
        assert_eq!(
            resolved(Some("delayed.massive.com"), true, DEFAULT_FEED_URL),
            "wss://delayed.massive.com"
        );
        assert_eq!(
            resolved(Some("Delayed"), true, DEFAULT_FEED_URL),
            "wss://delayed.massive.com"
        );
        assert_eq!(
            resolved(Some("RealTime"), true, DEFAULT_FEED_URL),
            "wss://socket.massive.com"
        );
        assert_eq!(
            resolved(Some("127.0.0.1:9000"), false, DEFAULT_FEED_URL),
            "ws://127.0.0.1:9000"
        );
        // MASSIVE_FEED_URL, when it names another URL, wins; no host, no change.
        assert_eq!(
            resolved(Some("delayed.massive.com"), true, "ws://sim:1/stocks"),
            "ws://sim:1/stocks"
        );
        assert_eq!(resolved(None, true, DEFAULT_FEED_URL), DEFAULT_FEED_URL);
    }

    #[test]
    fn api_key_sources_in_the_seeds_order_blank_values_fall_through() {
        let key = |a: Option<&str>, b: Option<&str>, c: Option<&str>| {
            api_key_from(a, || b.map(str::to_string), || c.map(str::to_string))
        };
        assert_eq!(
            key(Some("flag"), Some("polygon"), Some("file")).as_deref(),
            Some("flag")
        );
        assert_eq!(
            key(None, Some("polygon"), Some("file")).as_deref(),
            Some("polygon")
        );
        assert_eq!(
            key(None, None, Some(" file-key\n")).as_deref(),
            Some("file-key"),
            "file trimmed"
        );
        assert_eq!(
            key(Some("  "), Some("polygon"), None).as_deref(),
            Some("polygon"),
            "blank falls through"
        );
        assert_eq!(key(None, Some(""), Some("\n")), None, "all blank: no key");
        assert_eq!(key(None, None, None), None);
        let mut read = false;
        let found = api_key_from(
            Some("flag"),
            || None,
            || {
                read = true;
                None
            },
        );
        assert_eq!(found.as_deref(), Some("flag"));
        assert!(
            !read,
            "later sources (the key file) are not read once a key is found"
        );
    }

    #[test]
    fn the_market_path_is_appended_once() {
        let url = |feed| market_url(feed, "stocks");
        assert_eq!(
            url("wss://socket.massive.com"),
            "wss://socket.massive.com/stocks"
        );
        assert_eq!(
            url("ws://127.0.0.1:8090/stocks"),
            "ws://127.0.0.1:8090/stocks"
        );
        assert_eq!(
            url("ws://127.0.0.1:8090/stocks/"),
            "ws://127.0.0.1:8090/stocks"
        );
        assert_eq!(
            url("ws://stocks:80"),
            "ws://stocks:80/stocks",
            "a host named like the market"
        );
        assert_eq!(url("ws://h/v2/stocks"), "ws://h/v2/stocks");
        assert_eq!(url("ws://h/stocksx"), "ws://h/stocksx/stocks");
        assert_eq!(
            misconfigured_flag(404),
            Some("--feed-url (MASSIVE_FEED_URL)")
        );
        assert_eq!(misconfigured_flag(401), Some("--api-key (MASSIVE_API_KEY)"));
        assert_eq!(misconfigured_flag(503), None, "server trouble is retried");
    }

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
                    let alphabet = b"[]{}\",:evTsymp0123 ";
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse_frame(&String::from_utf8_lossy(&bytes));
        }
    }
}
