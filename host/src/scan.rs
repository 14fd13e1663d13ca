//! `mdp scan`: subscribe to store channels or patterns, batch messages by
//! linger time, run the analyzer, write its effects back into the store.
//! No idle back-off: a message is handled as soon as it arrives (the seed
//! could wait up to 60 s after a quiet period). The subscription is
//! re-established with backoff if the store connection goes away.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::plugin::EventBatch;
use crate::plugin::{Capabilities, LiveError, LiveWorker, convert, effects};
use crate::store::{Message, Store, Topic};

/// Settings of one scanner.
#[derive(Debug, Clone)]
pub struct ScannerConfig {
    /// Channels and patterns subscribed to.
    pub topics: Vec<Topic>,
    /// Most messages per analyzer call.
    pub batch_size: usize,
    /// Longest wait for a batch to fill after its first message.
    pub linger: Duration,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            topics: Vec::new(),
            batch_size: 256,
            linger: Duration::from_millis(5),
        }
    }
}

/// Counters of a scanner (seed MDS names).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScannerStats {
    /// Messages analyzed.
    pub processed: u64,
    /// Results applied, counted as the seed's `published_results`
    /// ([`crate::store::results`]).
    pub published_results: u64,
    /// Store writes applied.
    pub store_writes: u64,
    /// Batches that produced no effects.
    pub empty_results: u64,
    /// Messages rejected by the analyzer.
    pub rejected: u64,
    /// Failures (store, plugin start); each followed by a retry.
    pub errors: u64,
    /// Times the subscription was re-established.
    pub restarts: u64,
}

/// A scanner: one subscription, one plugin worker.
pub struct Scanner {
    config: ScannerConfig,
    store: Arc<dyn Store>,
    worker: LiveWorker,
    capabilities: Capabilities,
    stats: ScannerStats,
    health: crate::telemetry::Health,
}

impl Scanner {
    /// A scanner of `config.topics` through `worker`, writing to `store`.
    pub fn new(config: ScannerConfig, store: Arc<dyn Store>, worker: LiveWorker) -> Self {
        let capabilities = (*worker.plugin().capabilities).clone();
        Scanner {
            config,
            store,
            worker,
            capabilities,
            stats: ScannerStats::default(),
            health: crate::telemetry::Health::default(),
        }
    }

    /// Report the store's pub/sub connection (`store pub/sub`) to `health`.
    pub fn with_health(mut self, health: crate::telemetry::Health) -> Self {
        self.health = health;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> &ScannerStats {
        &self.stats
    }

    fn count(&self, name: &'static str, n: u64) {
        let plugin = self.worker.plugin().name.to_string();
        metrics::counter!(name, "role" => "scan", "plugin" => plugin).increment(n);
    }

    /// Run until `shutdown` turns true.
    pub async fn run(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<ScannerStats> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut first_time = true;
        // Readiness follows the pub/sub link and the store itself, watched
        // apart from the loop (which may be waiting on a hung store).
        let store = self.store.clone();
        let _pubsub = self.health.watch("store pub/sub", move || {
            let status = store.pubsub_status().map(|()| "subscribed".to_string());
            async move { status }
        });
        let store = self.store.clone();
        let _store = self.health.watch("store", move || {
            let store = store.clone();
            async move { crate::store::probe(store.as_ref()).await }
        });
        loop {
            let mut sub = match self.store.subscribe(&self.config.topics).await {
                Ok(s) => s,
                Err(e) => {
                    self.health.check("store pub/sub", false, e.to_string());
                    self.stats.errors += 1;
                    self.count("mdp_error_total", 1);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, "cannot subscribe; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shutdown.changed() => return Ok(self.stats.clone()),
                    }
                }
            };
            if !first_time {
                self.stats.restarts += 1;
            }
            first_time = false;
            tracing::info!(topics = ?self.config.topics, plugin = %self.worker.plugin().name, "scanner subscribed");
            loop {
                let first = tokio::select! {
                    m = sub.messages.recv() => m,
                    _ = shutdown.changed() => return Ok(self.stats.clone()),
                };
                let Some(first) = first else {
                    tracing::warn!("subscription ended; resubscribing");
                    break;
                };
                if let Err(LiveError::Removed(name)) = self.worker.refresh().await {
                    tracing::info!(plugin = %name, "plugin removed; scanner stopping");
                    return Ok(self.stats.clone());
                }
                self.capabilities = (*self.worker.plugin().capabilities).clone();
                let mut messages = vec![first];
                let deadline = tokio::time::Instant::now() + self.config.linger;
                while messages.len() < self.config.batch_size {
                    match tokio::time::timeout_at(deadline, sub.messages.recv()).await {
                        Ok(Some(m)) => messages.push(m),
                        _ => break,
                    }
                }
                if self.handle(&messages).await.is_err() {
                    let delay = backoff.next_delay();
                    tokio::time::sleep(delay).await;
                } else {
                    backoff.reset();
                }
            }
        }
    }

    /// Analyze and apply one batch of messages. Pub/sub has no redelivery:
    /// a batch that cannot be applied is retried once after a backoff, then
    /// dropped and counted.
    async fn handle(&mut self, messages: &[Message]) -> Result<(), ()> {
        let batch = EventBatch {
            events: messages
                .iter()
                .map(|m| convert::pubsub(&m.channel, &m.payload))
                .collect(),
            texts: messages.iter().map(|m| m.payload.to_string()).collect(),
        };
        let texts = batch.shared_texts();
        let mut last_error = String::new();
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let output = match self.worker.analyze_texts(&batch.events, &texts).await {
                Ok(o) => o,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let resolved = effects::resolve(&output.effects, &texts, &self.capabilities);
            if !resolved.denied.is_empty() {
                self.count("mdp_capability_denied_total", resolved.denied.len() as u64);
                effects::log_batch(
                    &self.worker.plugin().name,
                    "effects refused by the plugin's capabilities",
                    &resolved.denied,
                );
            }
            if let Err(e) = self.store.apply(&resolved.writes, false).await {
                last_error = e.to_string();
                continue;
            }
            self.stats.processed += messages.len() as u64;
            let results = crate::store::results(&resolved.writes);
            self.stats.published_results += results;
            self.stats.store_writes += resolved.writes.len() as u64;
            self.stats.rejected += resolved.rejects.len() as u64;
            if resolved.writes.is_empty() {
                self.stats.empty_results += 1;
            }
            self.count("mdp_processed_total", messages.len() as u64);
            self.count("mdp_published_total", results);
            self.count("mdp_store_writes_total", resolved.writes.len() as u64);
            return Ok(());
        }
        self.stats.errors += 1;
        self.count("mdp_error_total", 1);
        tracing::warn!(messages = messages.len(), error = %last_error, "scanner batch dropped");
        Err(())
    }
}
