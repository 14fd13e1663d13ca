//! The Finlight listener's counters and state: one atomic per event kind
//! for the status document, each bumped with its Prometheus metric (when it
//! has one) by one [`FinlightStats::add`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use crate::event::NEWS_QUEUE;
use crate::feed::{Metric, count};

/// An event the Finlight listener counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// An article received.
    Article,
    /// An article published to the queue.
    Published,
    /// An article skipped as a recently seen link.
    Duplicate,
    /// A frame that was not a JSON object with an `action`.
    BadFrame,
    /// An unknown action.
    UnknownAction,
    /// An `error` action.
    Error,
    /// An `admin_kick` (action or close 4003).
    Kick,
    /// A rate-limit answer.
    RateLimited,
    /// A publish that failed.
    PublishError,
    /// A pong that did not come in time.
    PongTimeout,
    /// A pong.
    Pong,
    /// An admit.
    Admit,
    /// A reconnect.
    Reconnect,
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
    /// Count `n` of `what`: its status counter and, when it has one, its metric.
    pub(crate) fn add(&self, what: Count, n: u64) {
        let (counter, metric) = match what {
            Count::Article => (&self.articles, None),
            Count::Published => (
                &self.published,
                Some(Metric::Queue("mdp_fdq_messages_total", NEWS_QUEUE)),
            ),
            Count::Duplicate => (&self.duplicates, None),
            Count::BadFrame => (
                &self.bad_frames,
                Some(Metric::Feed("mdp_listener_bad_frames_total")),
            ),
            Count::UnknownAction => (&self.unknown_actions, None),
            Count::Error => (&self.errors, None),
            Count::Kick => (&self.kicks, None),
            Count::RateLimited => (&self.rate_limited, None),
            Count::PublishError => (&self.publish_errors, None),
            Count::PongTimeout => (&self.pong_timeouts, None),
            Count::Pong => (&self.pongs, None),
            Count::Admit => (&self.admits, None),
            Count::Reconnect => (
                &self.reconnects,
                Some(Metric::Feed("mdp_listener_reconnects_total")),
            ),
        };
        count(counter, n, "finlight", metric);
    }

    pub(crate) fn set_state(&self, s: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = s.to_string();
    }
    pub(crate) fn set_error(&self, s: &str) {
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
