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
//!
//! Inside: `frame` parses server frames, `settings` holds the config and the
//! filter, `session` runs one connection, `stats` counts, `admin` serves the
//! HTTP routes.

mod admin;
mod frame;
mod session;
mod settings;
mod stats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use admin::admin_router;
pub use frame::{ServerFrameError, ServerMessage, parse_frame};
pub use session::{MAX_RETRY_AFTER, kick_wait};
pub use settings::{DEFAULT_URL, FinlightConfig, FinlightFilter};
pub use stats::FinlightStats;

use crate::event::NEWS_QUEUE;
use crate::feed::{Backoff, now_ms};
use crate::queue::{Queue, QueueSpec};
use session::Ended;
use stats::Count;

/// Links remembered for de-duplication (the SDK keeps about 10).
const DEDUPE_LINKS: usize = 32;

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

/// The Finlight listener.
pub struct FinlightListener {
    config: FinlightConfig,
    queue: Arc<dyn Queue>,
    queue_name: String,
    filter: watch::Sender<FinlightFilter>,
    recent: Mutex<VecDeque<String>>,
    /// Counters and state.
    pub stats: Arc<FinlightStats>,
    /// Started, stopped, restarted through the control API.
    lifecycle: crate::feed::lifecycle::Lifecycle,
}

impl FinlightListener {
    /// A listener publishing to `queue`.
    pub fn new(config: FinlightConfig, queue: Arc<dyn Queue>) -> Self {
        let filter = FinlightFilter {
            query: config.query.clone().filter(|q| !q.trim().is_empty()),
            tickers: crate::feed::list_setting(&config.tickers),
            sources: crate::feed::list_setting(&config.sources),
            language: config.language.clone(),
        };
        let stats = Arc::new(FinlightStats::default());
        stats.set_state("starting");
        FinlightListener {
            queue_name: format!("{}{NEWS_QUEUE}", config.queue_prefix),
            lifecycle: crate::feed::lifecycle::Lifecycle::new(config.auto_start),
            config,
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
        if self.config.raw {
            json!({"query": f.query, "sources": list(&f.sources), "excludeSources": null,
                   "language": f.language, "includeUpdates": false, "clientNonce": nonce})
        } else {
            json!({"query": f.query, "sources": list(&f.sources), "excludeSources": null,
                   "optInSources": null, "language": f.language, "extended": false,
                   "tickers": list(&f.tickers), "includeEntities": self.config.include_entities,
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
            "mode": if self.config.raw { "raw" } else { "enhanced" },
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
                message_ttl: Some(Duration::from_millis(self.config.message_ttl_ms)),
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
            Duration::from_millis(self.config.max_backoff_ms),
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
            self.stats.add(Count::Reconnect, 1);
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

    /// The stream's URL: enhanced, or `/raw`.
    fn url(&self) -> String {
        let base = self.config.url.trim_end_matches('/');
        if self.config.raw {
            format!("{base}/raw")
        } else {
            base.to_string()
        }
    }

    /// Count and log a frame skipped as bad.
    pub(super) fn bad_frame(&self, why: &str) {
        self.stats.add(Count::BadFrame, 1);
        tracing::warn!(error = why, "bad finlight frame skipped");
    }

    /// Publish one article unchanged (enhanced: skip recently seen links).
    pub(super) async fn article(&self, data: &Value) {
        self.stats.add(Count::Article, 1);
        self.stats
            .last_message_ms
            .store(now_ms(), Ordering::Relaxed);
        if !self.config.raw
            && let Some(link) = data.get("link").and_then(Value::as_str)
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.iter().any(|l| l == link) {
                self.stats.add(Count::Duplicate, 1);
                tracing::debug!(link, "recently seen article skipped");
                return;
            }
            recent.push_back(link.to_string());
            if recent.len() > DEDUPE_LINKS {
                recent.pop_front();
            }
        }
        let body = Bytes::from(data.to_string());
        let published = crate::feed::publish(
            &*self.queue,
            &self.queue_name,
            &[body],
            1,
            "finlight",
            crate::feed::PUBLISH_TIMEOUT,
        )
        .await;
        match published {
            Ok(()) => self.stats.add(Count::Published, 1),
            Err(_) => self.stats.add(Count::PublishError, 1),
        }
    }
}
