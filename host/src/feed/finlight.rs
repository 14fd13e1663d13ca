//! `mdp listen finlight`: the Finlight news WebSocket client (seed FDL +
//! FDQ). Header auth on the upgrade (`x-api-key`,
//! `x-client-version`, `x-takeover`); the first frame is the filter (query,
//! tickers, sources, language, includeEntities; enhanced or raw stream);
//! an application `ping` every 25 s with a pong watchdog; server actions
//! `admit`, `sendArticle`, `pong`, `preempted` (terminal and loud),
//! `admin_kick` (wait `retryAfter`), `error` (`limit` → wait, `blocked` →
//! wait long); close codes as the official SDK reads them (1008 stops for
//! good, 1013/4001 rate limited, 4002 blocked, 4003 kicked); reconnects with
//! backoff 0.5 s doubling to 10 s. Articles go unchanged to the `news` queue
//! (15 min TTL as the seed); the enhanced stream re-sends the latest article
//! on every connect, so recent links are de-duplicated as the SDK does.

use std::collections::VecDeque;
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
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Backoff, now_ms};
use crate::event::NEWS_QUEUE;
use crate::queue::{Queue, QueueSpec};

/// Links remembered for de-duplication (the SDK keeps about 10).
const DEDUPE_LINKS: usize = 32;
/// Proactive rotation before the server's 2 h connection limit.
const MAX_LIFETIME: Duration = Duration::from_secs(115 * 60);
/// Wait after an `admin_kick` without `retryAfter`, ms (the SDK's).
const KICK_WAIT_MS: u64 = 900_000;
/// Longest `retryAfter` honoured: a larger one (a server bug, or a hostile
/// server) would park the listener for good.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long to wait after an `admin_kick` asking for `retry_after` ms: that,
/// capped at [`MAX_RETRY_AFTER`] (logged when capped), or [`KICK_WAIT_MS`]
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

/// One server frame of the Finlight stream, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `admit`: the session is admitted under `lease_id`.
    Admit {
        /// The lease id (empty when the server sent none).
        lease_id: String,
        /// The echoed `clientNonce`, if any.
        client_nonce: Option<String>,
    },
    /// `sendArticle`: one article (a JSON object), published unchanged.
    Article(serde_json::Map<String, Value>),
    /// `pong`: the answer to our application ping.
    Pong,
    /// `preempted`: another session of the key took over (terminal).
    Preempted {
        /// The server's reason (`preempted` when it gave none).
        reason: String,
    },
    /// `admin_kick`: reconnect only after `retry_after_ms` (see [`kick_wait`]).
    AdminKick {
        /// The server's `retryAfter`, ms.
        retry_after_ms: Option<u64>,
    },
    /// `error`: the server's error text (`data` or `error`).
    Error {
        /// The text (a non-string value as its JSON).
        text: String,
    },
    /// Any other `action` (empty when the frame had none): logged, ignored.
    Unknown {
        /// The action named.
        action: String,
    },
}

/// Why a Finlight server frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerFrameError {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A `sendArticle` whose `data` is not an object.
    #[error("sendArticle without an object `data`")]
    ArticleWithoutData,
}

/// Parse one text frame of the Finlight stream.
pub fn parse_frame(text: &str) -> Result<ServerMessage, ServerFrameError> {
    let Ok(Value::Object(mut msg)) = serde_json::from_str::<Value>(text) else {
        return Err(ServerFrameError::NotAnObject);
    };
    let string = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
    let action = string(msg.get("action")).unwrap_or_default();
    Ok(match action.as_str() {
        "admit" => ServerMessage::Admit {
            lease_id: string(msg.get("leaseId")).unwrap_or_default(),
            client_nonce: string(msg.get("clientNonce")),
        },
        "sendArticle" => match msg.remove("data") {
            Some(Value::Object(data)) => ServerMessage::Article(data),
            _ => return Err(ServerFrameError::ArticleWithoutData),
        },
        "pong" => ServerMessage::Pong,
        "preempted" => ServerMessage::Preempted {
            reason: string(msg.get("reason")).unwrap_or_else(|| "preempted".into()),
        },
        "admin_kick" => ServerMessage::AdminKick {
            retry_after_ms: msg.get("retryAfter").and_then(Value::as_u64),
        },
        "error" => ServerMessage::Error {
            text: msg
                .get("data")
                .or_else(|| msg.get("error"))
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_default(),
        },
        _ => ServerMessage::Unknown { action },
    })
}

impl ServerMessage {
    /// The frame a server sends for this message: [`parse_frame`] of it
    /// gives this message back.
    pub fn to_frame(&self) -> Value {
        match self {
            ServerMessage::Admit {
                lease_id,
                client_nonce,
            } => json!({"action": "admit", "leaseId": lease_id, "clientNonce": client_nonce}),
            ServerMessage::Article(data) => json!({"action": "sendArticle", "data": data}),
            ServerMessage::Pong => json!({"action": "pong"}),
            ServerMessage::Preempted { reason } => json!({"action": "preempted", "reason": reason}),
            ServerMessage::AdminKick { retry_after_ms } => {
                json!({"action": "admin_kick", "retryAfter": retry_after_ms})
            }
            ServerMessage::Error { text } => json!({"action": "error", "data": text}),
            ServerMessage::Unknown { action } => json!({"action": action}),
        }
    }
}

/// Settings of the Finlight listener.
#[derive(Debug, Clone, clap::Args)]
pub struct FinlightArgs {
    /// WebSocket URL of the enhanced stream (`/raw` is appended for `--raw`).
    #[arg(long, env = "FINLIGHT_WS_URL", default_value = "wss://wss.finlight.me")]
    pub url: String,
    /// API key, sent as the `x-api-key` header.
    #[arg(long, env = "FINLIGHT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The raw stream (no AI enrichment, no initial article).
    #[arg(long, env = "FINLIGHT_RAW")]
    pub raw: bool,
    /// Advanced query, e.g. `ticker:AAPL OR ticker:NVDA`.
    #[arg(long, env = "FINLIGHT_QUERY")]
    pub query: Option<String>,
    /// Tickers (comma separated or a JSON array; enhanced only).
    #[arg(long, env = "FINLIGHT_TICKERS", value_delimiter = ',')]
    pub tickers: Vec<String>,
    /// Source domains (comma separated or a JSON array).
    #[arg(long, env = "FINLIGHT_SOURCES", value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Language (ISO 639-1).
    #[arg(long, env = "FINLIGHT_LANGUAGE", default_value = "en")]
    pub language: String,
    /// Include company entities (enhanced only).
    #[arg(long, env = "FINLIGHT_INCLUDE_ENTITIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub include_entities: bool,
    /// Displace other sessions of the key (`x-takeover: true`, as the seed).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub takeover: bool,
    /// Queue broker URL (`amqp://…`; `memory://` only when given explicitly); required.
    #[arg(long, env = "RABBITMQ_URL", default_value_t = String::new(), hide_default_value = true, hide_env_values = true)]
    pub queue_url: String,
    /// Message TTL of the `news` queue, ms.
    #[arg(long, env = "NEWS_MESSAGE_TTL", default_value_t = 900_000)]
    pub message_ttl_ms: u64,
    /// Application ping interval, ms.
    #[arg(long, default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// No pong for this long: reconnect, ms.
    #[arg(long, default_value_t = 60_000)]
    pub pong_timeout_ms: u64,
    /// Wait after a rate-limit answer (HTTP 429, `error` "limit", 1013/4001), ms.
    #[arg(long, default_value_t = 60_000)]
    pub rate_limit_wait_ms: u64,
    /// Wait after a `blocked` answer (4002), ms.
    #[arg(long, default_value_t = 3_600_000)]
    pub blocked_wait_ms: u64,
    /// Longest reconnect backoff, ms.
    #[arg(long, default_value_t = 10_000)]
    pub max_backoff_ms: u64,
    /// Prefix of the queue name.
    #[arg(long, env = "MDP_QUEUE_PREFIX", default_value = "")]
    pub queue_prefix: String,
    /// Admin API address (`/status`, `/filter`); none when unset.
    #[arg(long, env = "MDP_LISTENER_ADMIN")]
    pub admin_listen: Option<String>,
    /// Health, readiness, status and metrics only (`/health`, `/ready`,
    /// `/status`, `/metrics`), apart from the control API: the address for
    /// probes and scrapers; none when unset.
    #[arg(long, env = "MDP_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Connect when started (`false`: wait for `POST /start` on the control API).
    #[arg(long, env = "FDL_AUTO_START_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_start: bool,
    /// Who may change the filter through the admin API, and how often.
    #[command(flatten)]
    pub admin: super::admin::AdminAccess,
    /// Publisher confirms (the seed's `MDQ_PUBLISHER_CONFIRMS`).
    #[command(flatten)]
    pub confirms: super::PublisherConfirms,
}

impl Default for FinlightArgs {
    fn default() -> Self {
        FinlightArgs {
            url: "wss://wss.finlight.me".into(),
            api_key: None,
            raw: false,
            query: None,
            tickers: Vec::new(),
            sources: Vec::new(),
            language: "en".into(),
            include_entities: true,
            takeover: true,
            queue_url: "memory://".into(),
            message_ttl_ms: 900_000,
            ping_interval_ms: 25_000,
            pong_timeout_ms: 60_000,
            rate_limit_wait_ms: 60_000,
            blocked_wait_ms: 3_600_000,
            max_backoff_ms: 10_000,
            queue_prefix: String::new(),
            admin_listen: None,
            health_listen: None,
            auto_start: true,
            admin: Default::default(),
            confirms: Default::default(),
        }
    }
}

/// The subscription filter (runtime-changeable; a change reconnects, as
/// Finlight has no unsubscribe).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FinlightFilter {
    /// Advanced query.
    pub query: Option<String>,
    /// Tickers.
    pub tickers: Vec<String>,
    /// Source domains.
    pub sources: Vec<String>,
    /// Language.
    pub language: String,
}

impl FinlightFilter {
    /// Validate: language ISO 639-1, tickers upper case, sources domain-like, query non-empty.
    pub fn validate(self) -> Result<Self, String> {
        if self.language.len() != 2 || !self.language.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "language `{}` is not an ISO 639-1 code like `en`",
                self.language
            ));
        }
        for t in &self.tickers {
            if t == "*" || !super::admin::valid_symbol(t) {
                return Err(format!("bad ticker `{t}`"));
            }
        }
        for s in &self.sources {
            if s.is_empty() || !s.contains('.') || s.contains(['/', ' ', ':']) || !s.is_ascii() {
                return Err(format!(
                    "source `{s}` is not a domain like `www.reuters.com`"
                ));
            }
        }
        if self.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
            return Err("query is empty (omit it instead)".into());
        }
        Ok(self)
    }
}

/// Counters and state of the Finlight listener.
#[derive(Debug, Default)]
pub struct FinlightStats {
    /// Articles received.
    pub articles: AtomicU64,
    /// Articles published to the queue.
    pub published: AtomicU64,
    /// Articles skipped as recently seen links.
    pub duplicates: AtomicU64,
    /// Frames that were not JSON objects with an `action`.
    pub bad_frames: AtomicU64,
    /// Unknown actions (logged, ignored).
    pub unknown_actions: AtomicU64,
    /// `error` actions.
    pub errors: AtomicU64,
    /// `admin_kick` actions.
    pub kicks: AtomicU64,
    /// Rate-limit answers (429, "limit", 1013/4001).
    pub rate_limited: AtomicU64,
    /// Publishes that failed.
    pub publish_errors: AtomicU64,
    /// Pong timeouts.
    pub pong_timeouts: AtomicU64,
    /// Pongs received.
    pub pongs: AtomicU64,
    /// Admits received (one per successful session).
    pub admits: AtomicU64,
    /// Reconnects.
    pub reconnects: AtomicU64,
    /// True while admitted.
    pub connected: AtomicBool,
    /// Unix ms of the last article.
    pub last_message_ms: AtomicU64,
    /// `(state, last error, lease id)`.
    pub state: Mutex<(String, String, String)>,
}

impl FinlightStats {
    fn set_state(&self, s: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = s.to_string();
    }
    fn set_error(&self, s: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = s.to_string();
    }
    /// Current state (`connecting`, `admitted`, `preempted`, ...).
    pub fn state(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

/// How the listener stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown requested.
    Shutdown,
    /// Another session of the key took over (`preempted`): terminal.
    Preempted(String),
    /// The server closed with 1008 (blocked user): terminal.
    Blocked(String),
}

#[derive(Debug)]
enum Ended {
    Retry(String),
    Wait(Duration, String),
    Restart,
    Stop(Outcome),
}

/// The Finlight listener.
pub struct FinlightListener {
    args: FinlightArgs,
    queue: Arc<dyn Queue>,
    queue_name: String,
    filter: watch::Sender<FinlightFilter>,
    recent: Mutex<VecDeque<String>>,
    /// Counters and state.
    pub stats: Arc<FinlightStats>,
    /// Started, stopped, restarted through the control API.
    lifecycle: super::lifecycle::Lifecycle,
}

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

impl FinlightListener {
    /// A listener publishing to `queue`.
    pub fn new(args: FinlightArgs, queue: Arc<dyn Queue>) -> Self {
        let filter = FinlightFilter {
            query: args.query.clone().filter(|q| !q.trim().is_empty()),
            tickers: super::list_setting(&args.tickers),
            sources: super::list_setting(&args.sources),
            language: args.language.clone(),
        };
        let stats = Arc::new(FinlightStats::default());
        stats.set_state("starting");
        FinlightListener {
            queue_name: format!("{}{NEWS_QUEUE}", args.queue_prefix),
            lifecycle: super::lifecycle::Lifecycle::new(args.auto_start),
            args,
            queue,
            filter: watch::channel(filter).0,
            recent: Mutex::new(VecDeque::new()),
            stats,
        }
    }

    /// The current filter.
    pub fn filter(&self) -> FinlightFilter {
        self.filter.borrow().clone()
    }

    /// Replace the filter (validated; reconnects when it changed).
    pub fn set_filter(&self, filter: FinlightFilter) -> Result<FinlightFilter, String> {
        let filter = filter.validate()?;
        self.filter.send_if_modified(|f| {
            let changed = *f != filter;
            *f = filter.clone();
            changed
        });
        Ok(self.filter())
    }

    /// The filter frame sent first on every connection (nulls included, as the Python SDK).
    pub fn filter_frame(&self, nonce: &str) -> Value {
        let f = self.filter();
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        if self.args.raw {
            json!({"query": f.query, "sources": list(&f.sources), "excludeSources": null,
                   "language": f.language, "includeUpdates": false, "clientNonce": nonce})
        } else {
            json!({"query": f.query, "sources": list(&f.sources), "excludeSources": null,
                   "optInSources": null, "language": f.language, "extended": false,
                   "tickers": list(&f.tickers), "includeEntities": self.args.include_entities,
                   "excludeEmptyContent": false, "countries": null, "categories": null,
                   "includeUpdates": false, "clientNonce": nonce})
        }
    }

    /// Status as the admin API reports it.
    pub fn status_json(&self) -> Value {
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (state, last_error, lease) = s.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = load(&s.last_message_ms);
        let run = self.lifecycle.state();
        json!({
            "feed": "finlight",
            "mode": if self.args.raw { "raw" } else { "enhanced" },
            "state": state,
            "running": run.running,
            "restarts": run.restarts,
            "connected": s.connected.load(Ordering::Relaxed),
            "lease_id": lease,
            "filter": self.filter(),
            "reconnects": load(&s.reconnects),
            "articles": load(&s.articles),
            "published": load(&s.published),
            "per_queue": {NEWS_QUEUE: load(&s.published)},
            "duplicates": load(&s.duplicates),
            "last_message_time": (last > 0).then(|| chrono::DateTime::from_timestamp_millis(last as i64).map(|t| t.to_rfc3339())),
            "last_error": last_error,
            "bad_frames": load(&s.bad_frames),
            "unknown_actions": load(&s.unknown_actions),
            "errors": load(&s.errors),
            "kicks": load(&s.kicks),
            "rate_limited": load(&s.rate_limited),
            "publish_errors": load(&s.publish_errors),
            "pong_timeouts": load(&s.pong_timeouts),
            "pongs": load(&s.pongs),
            "admits": load(&s.admits),
        })
    }

    /// Declare the `news` queue as the seed does.
    pub async fn declare_queue(&self) -> anyhow::Result<()> {
        self.queue
            .declare(&QueueSpec {
                name: self.queue_name.clone(),
                message_ttl: Some(Duration::from_millis(self.args.message_ttl_ms)),
                dead_letter: None,
            })
            .await?;
        Ok(())
    }

    /// Run until shutdown, or until the server ends the listener for good
    /// (`preempted`, close 1008).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<Outcome> {
        self.declare_queue().await?;
        let mut backoff = Backoff::jittered(
            Duration::from_millis(500),
            Duration::from_millis(self.args.max_backoff_ms),
        );
        let mut filter_rx = self.filter.subscribe();
        let outcome = loop {
            if !self.lifecycle.state().running {
                self.stats.set_state("stopped");
                tracing::info!("finlight listener stopped; POST /start (or /restart) connects it");
            }
            if !self.lifecycle.wait_running(&mut shutdown).await {
                break Outcome::Shutdown;
            }
            let ended = self
                .session(&mut shutdown, &mut filter_rx, &mut backoff)
                .await;
            self.stats.connected.store(false, Ordering::Relaxed);
            let wait = match ended {
                Ended::Stop(outcome) => break outcome,
                Ended::Restart => Duration::ZERO,
                Ended::Retry(why) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(reason = %why, ?wait, "finlight feed disconnected; reconnecting");
                    self.stats.set_error(&why);
                    self.stats.set_state("backing_off");
                    wait
                }
                Ended::Wait(wait, why) => {
                    tracing::warn!(reason = %why, ?wait, "finlight feed asked us to wait");
                    self.stats.set_error(&why);
                    self.stats.set_state("waiting");
                    wait
                }
            };
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("mdp_listener_reconnects_total", "feed" => "finlight").increment(1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = filter_rx.changed() => {}
                _ = shutdown.changed() => break Outcome::Shutdown,
            }
        };
        match &outcome {
            Outcome::Shutdown => self.stats.set_state("stopped"),
            Outcome::Preempted(reason) => {
                self.stats.set_state("preempted");
                self.stats.set_error(reason);
                tracing::error!(%reason, "FINLIGHT SESSION PREEMPTED by another connection with this key (takeover); this listener stops for good");
            }
            Outcome::Blocked(reason) => {
                self.stats.set_state("blocked");
                self.stats.set_error(reason);
                tracing::error!(%reason, "FINLIGHT CLOSED THE SESSION AS BLOCKED (1008); this listener stops for good");
            }
        }
        Ok(outcome)
    }

    fn url(&self) -> String {
        let base = self.args.url.trim_end_matches('/');
        if self.args.raw {
            format!("{base}/raw")
        } else {
            base.to_string()
        }
    }

    async fn session(
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
        let url = self.url();
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return Ended::Wait(Duration::from_secs(60), format!("bad URL {url}: {e}")),
        };
        let headers = request.headers_mut();
        let key = self.args.api_key.clone().unwrap_or_default();
        match key.parse() {
            Ok(v) => {
                headers.insert("x-api-key", v);
            }
            Err(_) => {
                return Ended::Wait(
                    Duration::from_secs(60),
                    "API key is not a valid header value".into(),
                );
            }
        }
        headers.insert(
            "x-client-version",
            concat!("rust/mdp@", env!("CARGO_PKG_VERSION"))
                .parse()
                .expect("static header value"),
        );
        if self.args.takeover {
            headers.insert("x-takeover", "true".parse().expect("static header value"));
        }
        let connect = tokio_tungstenite::connect_async(request);
        let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let code = resp.status().as_u16();
                return if code == 429 {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    Ended::Wait(
                        Duration::from_millis(self.args.rate_limit_wait_ms),
                        "HTTP 429 at upgrade (connection or rate limit)".into(),
                    )
                } else {
                    if matches!(code, 401 | 403) {
                        tracing::error!(code, "finlight refused the API key");
                    }
                    Ended::Retry(format!("upgrade refused: HTTP {code}"))
                };
            }
            Ok(Err(e)) => return Ended::Retry(format!("connect {url}: {e}")),
            Err(_) => return Ended::Retry(format!("connect {url}: timed out")),
        };
        let nonce = uuid_v4();
        let subscribe = self.filter_frame(&nonce).to_string();
        if let Err(e) = ws.send(WsMessage::Text(subscribe.into())).await {
            return Ended::Retry(format!("send filter: {e}"));
        }
        self.stats.set_state("subscribing");
        let opened = tokio::time::Instant::now();
        let mut ping =
            tokio::time::interval(Duration::from_millis(self.args.ping_interval_ms.max(10)));
        ping.tick().await;
        let pong_timeout = Duration::from_millis(self.args.pong_timeout_ms.max(10));
        let mut last_pong = tokio::time::Instant::now();
        let mut watchdog = tokio::time::interval(Duration::from_millis(
            (self.args.pong_timeout_ms / 4).clamp(10, 5000),
        ));
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = ping.tick() => {
                    let p = json!({"action": "ping", "t": now_ms()}).to_string();
                    if let Err(e) = ws.send(WsMessage::Text(p.into())).await {
                        return Ended::Retry(format!("send ping: {e}"));
                    }
                    continue;
                }
                _ = watchdog.tick() => {
                    if last_pong.elapsed() > pong_timeout {
                        self.stats.pong_timeouts.fetch_add(1, Ordering::Relaxed);
                        let _ = ws.close(None).await;
                        return Ended::Retry(format!("no pong for {pong_timeout:?}"));
                    }
                    if opened.elapsed() > MAX_LIFETIME {
                        let _ = ws.close(Some(close(4000, "Proactive rotation"))).await;
                        return Ended::Restart;
                    }
                    continue;
                }
                _ = run_rx.changed() => {
                    let _ = ws.close(Some(close(1000, "listener stopped or restarted"))).await;
                    return Ended::Restart;
                }
                _ = filter_rx.changed() => {
                    tracing::info!(filter = ?self.filter(), "finlight filter changed; reconnecting");
                    let _ = ws.close(Some(close(1000, "filter changed"))).await;
                    return Ended::Restart;
                }
                _ = shutdown.changed() => {
                    let _ = ws.close(Some(close(1000, "shutdown"))).await;
                    return Ended::Stop(Outcome::Shutdown);
                }
            };
            let text = match msg {
                None => return Ended::Retry("connection closed".into()),
                Some(Err(e)) => return Ended::Retry(format!("read: {e}")),
                Some(Ok(WsMessage::Text(t))) => t,
                Some(Ok(WsMessage::Close(frame))) => return self.closed(frame),
                Some(Ok(WsMessage::Binary(_))) => {
                    self.bad_frame("binary frame");
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            let msg = match parse_frame(&text) {
                Ok(msg) => msg,
                Err(e) => {
                    self.bad_frame(&e.to_string());
                    continue;
                }
            };
            match msg {
                ServerMessage::Admit {
                    lease_id,
                    client_nonce,
                } => {
                    if client_nonce.as_deref() != Some(nonce.as_str()) {
                        tracing::warn!("finlight admit carries another clientNonce");
                    }
                    tracing::info!(lease = %lease_id, "finlight session admitted");
                    self.stats.admits.fetch_add(1, Ordering::Relaxed);
                    self.stats.connected.store(true, Ordering::Relaxed);
                    {
                        let mut st = self.stats.state.lock().unwrap_or_else(|p| p.into_inner());
                        st.0 = "admitted".into();
                        st.2 = lease_id;
                    }
                    backoff.reset();
                }
                ServerMessage::Article(data) => self.article(&Value::Object(data)).await,
                ServerMessage::Pong => {
                    last_pong = tokio::time::Instant::now();
                    self.stats.pongs.fetch_add(1, Ordering::Relaxed);
                }
                ServerMessage::Preempted { reason } => {
                    let _ = ws.close(Some(close(1000, "Preempted by server"))).await;
                    return Ended::Stop(Outcome::Preempted(reason));
                }
                ServerMessage::AdminKick { retry_after_ms } => {
                    self.stats.kicks.fetch_add(1, Ordering::Relaxed);
                    let wait = kick_wait(retry_after_ms);
                    let _ = ws.close(Some(close(4003, "admin kick"))).await;
                    return Ended::Wait(
                        wait,
                        format!("admin_kick (retry after {} ms)", wait.as_millis()),
                    );
                }
                ServerMessage::Error { text } => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let lower = text.to_lowercase();
                    if lower.contains("limit") {
                        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                        let _ = ws.close(Some(close(4001, "rate limited"))).await;
                        return Ended::Wait(
                            Duration::from_millis(self.args.rate_limit_wait_ms),
                            format!("error: {text}"),
                        );
                    }
                    if lower.contains("blocked") {
                        tracing::error!(%text, "finlight says this key is blocked");
                        let _ = ws.close(Some(close(4002, "blocked"))).await;
                        return Ended::Wait(
                            Duration::from_millis(self.args.blocked_wait_ms),
                            format!("error: {text}"),
                        );
                    }
                    tracing::warn!(%text, "finlight error");
                }
                ServerMessage::Unknown { action } => {
                    self.stats.unknown_actions.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%action, "unknown finlight message action; ignored");
                }
            }
        }
    }

    fn closed(&self, frame: Option<CloseFrame>) -> Ended {
        let (code, reason) = frame
            .map(|f| (u16::from(f.code), f.reason.to_string()))
            .unwrap_or((1005, String::new()));
        match code {
            1008 => Ended::Stop(Outcome::Blocked(format!("closed 1008: {reason}"))),
            1013 | 4001 => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                Ended::Wait(
                    Duration::from_millis(self.args.rate_limit_wait_ms),
                    format!("closed {code} (rate limited): {reason}"),
                )
            }
            4002 => Ended::Wait(
                Duration::from_millis(self.args.blocked_wait_ms),
                format!("closed 4002 (blocked): {reason}"),
            ),
            4003 => {
                self.stats.kicks.fetch_add(1, Ordering::Relaxed);
                Ended::Wait(
                    Duration::from_millis(KICK_WAIT_MS),
                    format!("closed 4003 (admin kick): {reason}"),
                )
            }
            _ => Ended::Retry(format!("closed {code}: {reason}")),
        }
    }

    fn bad_frame(&self, why: &str) {
        self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mdp_listener_bad_frames_total", "feed" => "finlight").increment(1);
        tracing::warn!(error = why, "bad finlight frame skipped");
    }

    /// Publish one article unchanged (enhanced: skip recently seen links).
    async fn article(&self, data: &Value) {
        self.stats.articles.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_message_ms
            .store(now_ms(), Ordering::Relaxed);
        if !self.args.raw
            && let Some(link) = data.get("link").and_then(Value::as_str)
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.iter().any(|l| l == link) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(link, "recently seen article skipped");
                return;
            }
            recent.push_back(link.to_string());
            if recent.len() > DEDUPE_LINKS {
                recent.pop_front();
            }
        }
        let body = Bytes::from(data.to_string());
        let published = super::publish(
            &*self.queue,
            &self.queue_name,
            &[body],
            1,
            "finlight",
            super::PUBLISH_TIMEOUT,
        )
        .await;
        match published {
            Ok(()) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("mdp_fdq_messages_total", "queue" => NEWS_QUEUE).increment(1);
            }
            Err(_) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn close(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// The admin routes of a Finlight listener: `GET /status`, `GET /ready`, `GET|POST /filter`
/// (`{"query":…, "tickers":[…], "sources":[…], "language":"en"}`; omitted
/// fields keep their value); the `POST` is [guarded](super::admin::guarded)
/// by the listener's `--admin-token`.
pub fn admin_router(listener: Arc<FinlightListener>) -> Router {
    type L = State<Arc<FinlightListener>>;
    let access = listener.args.admin.clone();
    async fn set(State(l): L, Json(body): Json<Value>) -> Response {
        let mut f = l.filter();
        let strings = |v: &Value| -> Option<Vec<String>> {
            match v {
                Value::Null => Some(Vec::new()),
                Value::Array(a) => a.iter().map(|i| i.as_str().map(String::from)).collect(),
                Value::String(s) => Some(
                    s.split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect(),
                ),
                _ => None,
            }
        };
        let r = (|| {
            let Value::Object(body) = &body else {
                return Err("expected a JSON object".to_string());
            };
            for (k, v) in body {
                match k.as_str() {
                    "query" => {
                        f.query = match v {
                            Value::Null => None,
                            Value::String(s) => Some(s.clone()),
                            _ => return Err("query must be a string or null".into()),
                        }
                    }
                    "tickers" => {
                        f.tickers = strings(v).ok_or("tickers must be a list of strings")?
                    }
                    "sources" => {
                        f.sources = strings(v).ok_or("sources must be a list of strings")?
                    }
                    "language" => {
                        f.language = v.as_str().ok_or("language must be a string")?.to_string()
                    }
                    other => return Err(format!("unknown field `{other}`")),
                }
            }
            l.set_filter(f)
        })();
        match r {
            Ok(f) => Json(json!({"ok": true, "filter": f})).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "admin change rejected");
                super::admin::rejected(e, json!(l.filter()))
            }
        }
    }
    let router = super::admin::status_routes::<FinlightListener>()
        .merge(super::lifecycle::routes::<FinlightListener>())
        .route(
            "/filter",
            get(|State(l): L| async move { Json(l.filter()) }).post(set),
        )
        .with_state(listener);
    super::admin::guarded(router, &access)
}

/// Run `mdp listen finlight` until ctrl-c, or until preempted/blocked (exit code 3).
pub async fn run(args: FinlightArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.api_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
        anyhow::bail!("no Finlight API key: set FINLIGHT_API_KEY or pass --api-key");
    }
    let queue = crate::queue::open(&args.queue_url).await?;
    let (admin, health) = (args.admin_listen.clone(), args.health_listen.clone());
    let listener = Arc::new(FinlightListener::new(args, queue));
    if let Some(addr) = admin {
        super::admin::serve(&addr, admin_router(listener.clone())).await?;
    }
    if let Some(addr) = health {
        super::admin::serve(&addr, super::admin::read_router(listener.clone())).await?;
    }
    match listener.run(crate::cli::roles::shutdown_signal()).await? {
        Outcome::Shutdown => Ok(std::process::ExitCode::SUCCESS),
        Outcome::Preempted(reason) => {
            eprintln!("mdp: finlight session preempted by another connection: {reason}");
            Ok(std::process::ExitCode::from(3))
        }
        Outcome::Blocked(reason) => {
            eprintln!("mdp: finlight blocked this key: {reason}");
            Ok(std::process::ExitCode::from(3))
        }
    }
}

impl super::lifecycle::Controlled for FinlightListener {
    fn lifecycle(&self) -> &super::lifecycle::Lifecycle {
        &self.lifecycle
    }
}

impl super::admin::ListenerStatus for FinlightListener {
    fn status_json(&self) -> Value {
        FinlightListener::status_json(self)
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
    fn filters_are_validated() {
        let ok = FinlightFilter {
            query: Some("ticker:AAPL".into()),
            tickers: vec!["AAPL".into()],
            sources: vec!["www.reuters.com".into()],
            language: "en".into(),
        };
        assert!(ok.clone().validate().is_ok());
        let bad_lang = FinlightFilter {
            language: "english".into(),
            ..ok.clone()
        };
        assert!(bad_lang.validate().unwrap_err().contains("ISO 639-1"));
        let bad_ticker = FinlightFilter {
            tickers: vec!["aapl".into()],
            ..ok.clone()
        };
        assert!(bad_ticker.validate().is_err());
        let bad_source = FinlightFilter {
            sources: vec!["https://x.com/".into()],
            ..ok
        };
        assert!(bad_source.validate().is_err());
    }

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
