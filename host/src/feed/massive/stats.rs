//! The Massive listener's counters and state: one atomic per event kind for
//! the status document, each bumped with its Prometheus metric by one
//! [`ListenerStats::add`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::event::MARKET_QUEUES;
use crate::feed::{Metric, count};

/// An event the Massive listener counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Events received for the queue at this index of [`MARKET_QUEUES`].
    Queued(usize),
    /// Messages published.
    Published,
    /// Events confirmed on this queue.
    Confirmed(&'static str),
    /// A frame that could not be parsed.
    BadFrame,
    /// A frame over the size limit (also a [`Count::BadFrame`]).
    TooLarge,
    /// A reconnect.
    Reconnect,
    /// A publish that failed.
    PublishError,
    /// An `auth_failed` status.
    AuthFailed,
    /// A connect refused as misconfigured.
    ConfigError,
    /// A `max_connections` eviction.
    MaxConnections,
    /// A `slow_consumer` disconnect.
    SlowConsumer,
    /// A `force_disconnect` kick.
    ForceDisconnect,
    /// A session ended as stalled.
    Stall,
    /// A connection lost without a status.
    Dropped,
    /// A market-status poll that found the market closed.
    ClosedPoll,
    /// A market-status call that failed.
    RestError,
    /// A session that reached `auth_success`.
    Session,
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
    /// Frames over [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES).
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
    /// Count `n` of `what`: its status counter and, when it has one, its metric.
    pub(crate) fn add(&self, what: Count, n: u64) {
        let refusal = |status| Some(Metric::Status("mdp_listener_refusals_total", status));
        let kick = |status| Some(Metric::Status("mdp_listener_kicks_total", status));
        let (counter, metric) = match what {
            Count::Queued(i) => {
                self.per_queue[i].fetch_add(n, Ordering::Relaxed);
                (&self.events, None)
            }
            Count::Published => (&self.published, None),
            Count::Confirmed(queue) => (
                &self.confirmed,
                Some(Metric::Queue("mdp_mdq_messages_total", queue)),
            ),
            Count::BadFrame => (
                &self.bad_frames,
                Some(Metric::Feed("mdp_listener_bad_frames_total")),
            ),
            Count::TooLarge => (&self.too_large, None),
            Count::Reconnect => (
                &self.reconnects,
                Some(Metric::Feed("mdp_listener_reconnects_total")),
            ),
            Count::PublishError => (
                &self.publish_errors,
                Some(Metric::Feed("mdp_listener_publish_errors_total")),
            ),
            Count::AuthFailed => (&self.auth_failures, refusal("auth_failed")),
            Count::ConfigError => (&self.config_errors, None),
            Count::MaxConnections => (&self.max_connections, refusal("max_connections")),
            Count::SlowConsumer => (&self.slow_consumers, kick("slow_consumer")),
            Count::ForceDisconnect => (&self.force_disconnects, kick("force_disconnect")),
            Count::Stall => (
                &self.stalls,
                Some(Metric::Feed("mdp_listener_stalls_total")),
            ),
            Count::Dropped => (&self.dropped, None),
            Count::ClosedPoll => (&self.closed_polls, None),
            Count::RestError => (
                &self.rest_errors,
                Some(Metric::Feed("mdp_listener_rest_errors_total")),
            ),
            Count::Session => (&self.sessions, None),
        };
        count(counter, n, "massive", metric);
    }

    pub(crate) fn set_state(&self, state: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = state.to_string();
    }

    pub(crate) fn set_error(&self, error: &str) {
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
