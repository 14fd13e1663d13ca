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
//! sending data for `stall_timeout_ms` is treated as stalled and
//! reconnected, unless REST market status says the market closed; an HTTP
//! 404 or 401 at connect is a configuration error (one ERROR naming the
//! flag, then the refused wait). An admin API ([`admin_router`]) reports status and changes
//! feed, market and subscriptions at runtime.
//!
//! Inside: `frame` parses frames, `settings` holds the config and what the
//! admin API may change, `session` runs one connection, `publish` is the
//! publishing side, `stats` counts, `admin` serves the HTTP routes.

mod admin;
mod frame;
mod publish;
mod session;
mod settings;
mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

pub use admin::admin_router;
pub use frame::{FrameError, MAX_FRAME_BYTES, ParsedFrame, parse_frame};
pub use settings::{
    DEFAULT_FEED_URL, DEFAULT_REST_URL, DEFAULT_SUBSCRIPTIONS, MASSIVE_KEY_FILE, MassiveConfig,
    MassiveSettings, TOPICS, feed_url_with_host, is_massive_host, market_url, massive_api_key,
    validate_feed, validate_market, validate_subscriptions,
};
pub use stats::ListenerStats;

use crate::event::MARKET_QUEUES;
use crate::feed::{Backoff, Recorder};
use crate::queue::{Queue, QueueSpec};
use session::Ended;
use settings::{allowed_feed_hosts, host_of};
use stats::Count;

/// Frames read ahead of the publisher.
const PIPELINE_FRAMES: usize = 64;

/// A parsed frame's events per queue.
type Routed = BTreeMap<&'static str, Vec<Value>>;

/// The Massive listener.
pub struct MassiveListener {
    config: MassiveConfig,
    queue: Arc<dyn Queue>,
    queues: [String; 5],
    settings: watch::Sender<MassiveSettings>,
    /// Hosts the feed URL may be changed to.
    feed_hosts: Vec<String>,
    http: reqwest::Client,
    /// Counters and state.
    pub stats: Arc<ListenerStats>,
    /// Started, stopped, restarted through the control API.
    lifecycle: crate::feed::lifecycle::Lifecycle,
}

impl MassiveListener {
    /// A listener publishing to `queue`. Settings from `config` that do not
    /// validate are kept as given and fail at connect time (logged).
    pub fn new(config: MassiveConfig, queue: Arc<dyn Queue>) -> Self {
        let subscriptions = crate::feed::list_setting(&[&config.subscriptions]);
        let settings = MassiveSettings {
            feed_url: config.feed_url.trim_end_matches('/').to_string(),
            market: config.market.clone(),
            subscriptions,
        };
        let queues = MARKET_QUEUES.map(|q| format!("{}{q}", config.queue_prefix));
        let stats = Arc::new(ListenerStats::default());
        stats.set_state("starting");
        MassiveListener {
            feed_hosts: allowed_feed_hosts(&config.feed_hosts, &config.feed_url),
            lifecycle: crate::feed::lifecycle::Lifecycle::new(config.auto_start),
            config,
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
                    message_ttl: Some(Duration::from_millis(self.config.message_ttl_ms)),
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
        let recorder = match &self.config.record {
            Some(path) => Some(Recorder::create(path).await?),
            None => None,
        };
        let mut backoff = Backoff::jittered(
            Duration::from_millis(500),
            Duration::from_millis(self.config.max_backoff_ms),
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
                .session(session::Inputs {
                    shutdown: &mut shutdown,
                    settings: &mut settings_rx,
                    backoff: &mut backoff,
                    recorder: recorder.as_ref(),
                    tx: &tx,
                })
                .await;
            self.stats.connected.store(false, Ordering::Relaxed);
            let wait = match ended {
                Ended::Shutdown => break,
                Ended::MarketClosed => continue,
                other => self.reconnect_wait(other, &mut backoff),
            };
            self.stats.add(Count::Reconnect, 1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = settings_rx.changed() => {}
                _ = shutdown.changed() => break,
            }
        }
        self.stats.set_state("stopped");
        Ok(())
    }

    /// How long to wait before reconnecting after a session `ended` (logged,
    /// and shown in the status).
    fn reconnect_wait(&self, ended: Ended, backoff: &mut Backoff) -> Duration {
        let refused_wait = Duration::from_millis(self.config.refused_wait_ms);
        let (wait, why, state) = match ended {
            Ended::Restart => {
                tracing::info!(settings = ?self.settings(), "massive listener settings changed; reconnecting");
                return Duration::ZERO;
            }
            Ended::Retry(why) => {
                let wait = backoff.next_delay();
                tracing::warn!(reason = %why, ?wait, "massive feed disconnected; reconnecting");
                (wait, why, "backing_off")
            }
            Ended::Refused(why) => {
                tracing::error!(reason = %why, wait = ?refused_wait, "MASSIVE FEED REFUSED THIS LISTENER; waiting before retrying");
                (refused_wait, why, "refused")
            }
            Ended::Misconfigured(why) => {
                tracing::error!(
                    wait = ?refused_wait,
                    "massive listener misconfigured: {why}; waiting before retrying"
                );
                (refused_wait, why, "misconfigured")
            }
            Ended::Shutdown | Ended::MarketClosed => return Duration::ZERO,
        };
        self.stats.set_error(&why);
        self.stats.set_state(state);
        wait
    }

    /// Poll REST market status while the market is closed; false on shutdown.
    /// A status that cannot be had is retried with backoff (1 s doubling to
    /// 60 s), not taken as open.
    async fn wait_while_closed(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let Some(rest) = self.config.market_status_url() else {
            return true;
        };
        let mut retry = Backoff::jittered(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let mut wait = Duration::from_millis(self.config.closed_poll_ms);
            match self.market_status(&rest).await {
                Ok(market) if market == "closed" => {
                    self.stats.add(Count::ClosedPoll, 1);
                    if self.stats.state() != "market_closed" {
                        tracing::info!(
                            poll_ms = self.config.closed_poll_ms,
                            "market closed; polling market status instead of connecting"
                        );
                    }
                    self.stats.set_state("market_closed");
                }
                Ok(_) => return true,
                Err(e) => {
                    self.stats.add(Count::RestError, 1);
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
    pub(super) async fn market_closed(&self) -> bool {
        match self.config.market_status_url() {
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

    /// The API key sent with `auth` and to REST (empty when none is known).
    fn api_key(&self) -> String {
        massive_api_key(self.config.api_key.as_deref()).unwrap_or_default()
    }

    /// Count and log a frame skipped as bad.
    fn bad_frame(&self, why: &str) {
        self.stats.add(Count::BadFrame, 1);
        tracing::warn!(error = %why, "bad frame skipped");
    }
}
