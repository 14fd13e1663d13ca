//! The processor's counters: [`ProcessorStats`] as callers read them, and
//! [`Counters`], through which every event is counted once, in the stats
//! and as a Prometheus metric together.

use std::sync::{Arc, Mutex};

/// Counters of a processor (also exported as metrics with the seed's names).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Events analyzed.
    pub processed: u64,
    /// Results applied, counted as the seed's `published` counts them
    /// ([`crate::store::results`]: one per routed event).
    pub published: u64,
    /// Store writes applied (every SET, LPUSH, ZADD, HSET, DEL, PUBLISH).
    pub store_writes: u64,
    /// Events rejected by the analyzer or isolated as poison.
    pub processing_error: u64,
    /// Messages that were not JSON events.
    pub decoding_error: u64,
    /// Infrastructure errors (store/queue), each followed by a requeue.
    pub error: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Effects refused by the capability check.
    pub denied: u64,
    /// Messages dead-lettered whole: a permanent store error, or too many
    /// redeliveries.
    pub dead_lettered: u64,
}

/// The processor's counters, shared with the settling tasks.
pub(super) struct Counters {
    queue: String,
    plugin: Mutex<Arc<str>>,
    stats: Mutex<ProcessorStats>,
}

impl Counters {
    /// Fresh counters of `queue` analyzed by `plugin`.
    pub(super) fn new(queue: String, plugin: Arc<str>) -> Self {
        Counters {
            queue,
            plugin: Mutex::new(plugin),
            stats: Mutex::new(ProcessorStats::default()),
        }
    }

    /// Add `n` to one counter: the stats `field` and the metric `metric`
    /// (labelled with the queue and the plugin).
    pub(super) fn add(
        &self,
        metric: &'static str,
        n: u64,
        field: impl FnOnce(&mut ProcessorStats) -> &mut u64,
    ) {
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            *field(&mut stats) += n;
        }
        let plugin = self.plugin().to_string();
        metrics::counter!(metric, "role" => "process", "queue" => self.queue.clone(), "plugin" => plugin)
            .increment(n);
    }

    /// The plugin the counts are labelled with.
    pub(super) fn plugin(&self) -> Arc<str> {
        self.plugin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Label further counts with `plugin` (after a reload).
    pub(super) fn set_plugin(&self, plugin: Arc<str>) {
        *self.plugin.lock().unwrap_or_else(|e| e.into_inner()) = plugin;
    }

    /// The counts so far.
    pub(super) fn snapshot(&self) -> ProcessorStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
