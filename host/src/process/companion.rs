//! Companions: further analyzers on a processor's queue. A queue's messages
//! go to one consumer, so a second analyzer of the same events (the chart's
//! minute bars beside the leaderboard on `aggregate`) runs in the processor
//! of the first, on every batch, after it.
//!
//! The first analyzer (the *primary*) decides the fate of each message: its
//! rejects dead-letter events, its failures requeue the batch. A companion's
//! writes go to its own store (its manifest's placement) before the
//! primary's, and a transient store error requeues the batch like the
//! primary's would (at-least-once for both). A companion cannot stall the
//! queue: its own failures (traps past the runtime's bisection, timeouts,
//! an open circuit breaker, rejects, refused effects) drop its effects for
//! that batch and are counted as `mdp_companion_dropped_total{queue,plugin}`;
//! a companion removed from the plugin directory stops being called.

use std::sync::Arc;

use crate::plugin::bindings::Event;
use crate::plugin::{Capabilities, LiveError, LiveWorker, effects};
use crate::store::{Store, Write};

/// One further analyzer of a processor's batches.
pub struct Companion {
    worker: LiveWorker,
    store: Arc<dyn Store>,
    capabilities: Capabilities,
    removed: bool,
}

/// A companion's writes for one batch, for the store they go to.
pub(super) struct CompanionWrites {
    pub(super) store: Arc<dyn Store>,
    pub(super) writes: Vec<Write>,
}

impl Companion {
    /// A companion running `worker` (already started), writing to `store`.
    pub fn new(worker: LiveWorker, store: Arc<dyn Store>) -> Self {
        let capabilities = (*worker.plugin().capabilities).clone();
        Companion {
            worker,
            store,
            capabilities,
            removed: false,
        }
    }

    /// The companion's plugin name.
    pub fn name(&self) -> &str {
        &self.worker.plugin().name
    }

    /// Analyze a batch; its writes, or `None` when the companion failed on it
    /// (counted and logged) or was removed.
    pub(super) async fn analyze(
        &mut self,
        queue: &str,
        events: &[Event],
        texts: &[Arc<str>],
    ) -> Option<CompanionWrites> {
        if self.removed {
            return None;
        }
        match self.worker.refresh().await {
            Err(LiveError::Removed(name)) => {
                tracing::info!(queue, plugin = %name, "companion plugin removed; no longer called");
                self.removed = true;
                return None;
            }
            Err(e) => return self.dropped(queue, events.len(), &e.to_string()),
            Ok(()) => self.capabilities = (*self.worker.plugin().capabilities).clone(),
        }
        let output = match self.worker.analyze_texts(events, texts).await {
            Ok(output) => output,
            Err(e) => return self.dropped(queue, events.len(), &e.to_string()),
        };
        let resolved = effects::resolve(&output.effects, texts, &self.capabilities);
        if !resolved.denied.is_empty() {
            effects::log_batch(
                self.name(),
                "effects refused by the plugin's capabilities",
                &resolved.denied,
            );
        }
        if !resolved.rejects.is_empty() {
            let (index, reason) = &resolved.rejects[0];
            tracing::warn!(queue, plugin = %self.name(), rejected = resolved.rejects.len(), index, %reason, "a companion rejected events (the primary analyzer decides their messages' fate)");
        }
        let lost = resolved.rejects.len() + resolved.denied.len();
        if lost > 0 {
            self.count(queue, lost as u64);
        }
        Some(CompanionWrites {
            store: self.store.clone(),
            writes: resolved.writes,
        })
    }

    fn dropped(&self, queue: &str, events: usize, error: &str) -> Option<CompanionWrites> {
        tracing::warn!(queue, plugin = %self.name(), events, %error, "companion failed on a batch; its effects for it are dropped");
        self.count(queue, events as u64);
        None
    }

    fn count(&self, queue: &str, n: u64) {
        metrics::counter!("mdp_companion_dropped_total", "queue" => queue.to_string(), "plugin" => self.name().to_string())
            .increment(n);
    }
}
