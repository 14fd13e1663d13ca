//! `mdp process`: consume a queue, cut batches by size or linger time, run
//! the analyzer once per batch, apply all effects of the batch in one store
//! pipeline, then acknowledge the batch.
//!
//! Failure semantics:
//! - an event the analyzer rejects: its message is dead-lettered (broker DLX
//!   for a single-event message; for a frame-batch message the rejected
//!   events are published to the dead-letter queue and the message acked),
//!   or counted and logged when no dead-letter queue is set;
//! - a plugin trap: the runtime retries once and isolates the poison events
//!   (rejected as above);
//! - store (or other host) unavailable: nothing is acked, the batch's
//!   messages are requeued after a backoff; nothing acked was applied twice;
//! - a message that is not JSON or not events: rejected (dead-lettered),
//!   counted as a decoding error;
//! - shutdown: stop consuming, finish the batch in flight, apply, ack, return.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::{Backoff, EventBatch};
use crate::event::split_body;
use crate::plugin::{Capabilities, LiveError, LiveWorker, convert, effects};
use crate::queue::{Acker, Consumer, Delivery, Queue};
use crate::store::Store;

/// Settings of one processor.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// The queue consumed.
    pub queue: String,
    /// Prefetch window.
    pub prefetch: u16,
    /// Most events per analyzer call.
    pub batch_size: usize,
    /// Longest wait for a batch to fill after its first message.
    pub linger: Duration,
    /// Dead-letter queue for rejected events, if any.
    pub dead_letter: Option<String>,
    /// Largest message body accepted, bytes.
    pub max_body_bytes: usize,
    /// Apply each batch's writes atomically (`MULTI`/`EXEC`).
    pub atomic: bool,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            queue: String::new(),
            prefetch: 1024,
            batch_size: 256,
            linger: Duration::from_millis(5),
            dead_letter: None,
            max_body_bytes: 1 << 20,
            atomic: false,
        }
    }
}

/// Counters of a processor (also exported as metrics with the seed's names).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Events analyzed.
    pub processed: u64,
    /// Writes applied (the seed's `published`).
    pub published: u64,
    /// Events rejected by the analyzer or isolated as poison.
    pub processing_error: u64,
    /// Messages that were not JSON events.
    pub decoding_error: u64,
    /// Infrastructure errors (store/queue), each followed by a requeue.
    pub error: u64,
    /// Messages acknowledged.
    pub acked: u64,
}

/// A processor: one consumer, one plugin worker.
pub struct Processor {
    config: ProcessorConfig,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    worker: LiveWorker,
    capabilities: Capabilities,
    stats: ProcessorStats,
}

/// Messages of one batch and where their events sit in it.
struct Pending {
    deliveries: Vec<Delivery>,
    /// For each event of the batch: the index of its delivery.
    owner: Vec<usize>,
    /// Events per delivery.
    count: Vec<usize>,
    batch: EventBatch,
}

impl Processor {
    /// A processor of `config.queue` through `worker`, writing to `store`.
    pub fn new(
        config: ProcessorConfig,
        queue: Arc<dyn Queue>,
        store: Arc<dyn Store>,
        worker: LiveWorker,
    ) -> Self {
        let capabilities = (*worker.plugin().capabilities).clone();
        Processor {
            config,
            queue,
            store,
            worker,
            capabilities,
            stats: ProcessorStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &ProcessorStats {
        &self.stats
    }

    fn count(&self, name: &'static str, n: u64) {
        let plugin = self.worker.plugin().name.to_string();
        metrics::counter!(name, "role" => "process", "queue" => self.config.queue.clone(), "plugin" => plugin)
            .increment(n);
    }

    /// Consume until `shutdown` turns true; then finish the batch in flight and return.
    pub async fn run(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<ProcessorStats> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let mut consumer = loop {
                match self
                    .queue
                    .consume(&self.config.queue, self.config.prefetch)
                    .await
                {
                    Ok(c) => break c,
                    Err(e) => {
                        self.stats.error += 1;
                        self.count("mdp_error_total", 1);
                        let delay = backoff.next_delay();
                        tracing::warn!(queue = %self.config.queue, error = %e, ?delay, "cannot consume; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => return Ok(self.stats.clone()),
                        }
                    }
                }
            };
            let acker = consumer.acker();
            tracing::info!(queue = %self.config.queue, plugin = %self.worker.plugin().name, "processor consuming");
            loop {
                if *shutdown.borrow() {
                    return Ok(self.stats.clone());
                }
                let first = tokio::select! {
                    d = consumer.next() => d,
                    _ = shutdown.changed() => return Ok(self.stats.clone()),
                };
                let Some(first) = first else {
                    tracing::warn!(queue = %self.config.queue, "consumer ended; reconnecting");
                    break;
                };
                let first = match first {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(queue = %self.config.queue, error = %e, "consumer error; reconnecting");
                        break;
                    }
                };
                if let Err(LiveError::Removed(name)) = self.refresh().await {
                    tracing::info!(queue = %self.config.queue, plugin = %name, "plugin removed; processor stopping");
                    let _ = acker.nack(first.tag, false, true).await;
                    return Ok(self.stats.clone());
                }
                let pending = self.collect(first, consumer.as_mut(), &acker).await;
                if pending.deliveries.is_empty() {
                    continue;
                }
                match self.handle(pending, &acker).await {
                    Ok(()) => backoff.reset(),
                    Err(wait) => {
                        let delay = wait.unwrap_or_else(|| backoff.next_delay());
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
            }
        }
    }

    /// Gather deliveries until the batch is full or the linger time is up.
    async fn collect(
        &mut self,
        first: Delivery,
        consumer: &mut dyn Consumer,
        acker: &Arc<dyn Acker>,
    ) -> Pending {
        let mut pending = Pending {
            deliveries: Vec::new(),
            owner: Vec::new(),
            count: Vec::new(),
            batch: EventBatch::default(),
        };
        self.add(&mut pending, first, acker).await;
        let deadline = tokio::time::Instant::now() + self.config.linger;
        while pending.batch.len() < self.config.batch_size {
            let next = tokio::time::timeout_at(deadline, consumer.next()).await;
            match next {
                Ok(Some(Ok(d))) => self.add(&mut pending, d, acker).await,
                _ => break,
            }
        }
        pending
    }

    /// Decode one delivery into the batch, or reject it as undecodable.
    async fn add(&mut self, pending: &mut Pending, delivery: Delivery, acker: &Arc<dyn Acker>) {
        let parts = split_body(&delivery.body, self.config.max_body_bytes).and_then(|parts| {
            parts
                .into_iter()
                .map(|p| {
                    convert::decode_value(&p.value, &p.text)
                        .map(|e| (e, p.text))
                        .map_err(|_| crate::event::BodyError::WrongShape)
                })
                .collect::<Result<Vec<_>, _>>()
        });
        match parts {
            Ok(parts) if !parts.is_empty() => {
                let index = pending.deliveries.len();
                pending.count.push(parts.len());
                for (event, text) in parts {
                    pending.owner.push(index);
                    pending.batch.events.push(event);
                    pending.batch.texts.push(text);
                }
                pending.deliveries.push(delivery);
            }
            Ok(_) => {
                // An empty array: nothing to do.
                let _ = acker.ack(delivery.tag, false).await;
            }
            Err(e) => {
                self.stats.decoding_error += 1;
                self.count("mdp_decoding_error_total", 1);
                tracing::warn!(queue = %self.config.queue, error = %e, bytes = delivery.body.len(), "undecodable message rejected");
                if let Err(e) = acker.reject(delivery.tag, false).await {
                    tracing::warn!(error = %e, "reject failed");
                }
            }
        }
    }

    /// Switch plugin generation if a new one was published.
    async fn refresh(&mut self) -> Result<(), LiveError> {
        self.worker.refresh().await?;
        self.capabilities = (*self.worker.plugin().capabilities).clone();
        Ok(())
    }

    /// Analyze, apply, acknowledge one batch. `Err` = requeued; back off
    /// (for the given time, if any).
    async fn handle(
        &mut self,
        pending: Pending,
        acker: &Arc<dyn Acker>,
    ) -> Result<(), Option<Duration>> {
        let n = pending.batch.len();
        let output = match self.worker.analyze(&pending.batch.events).await {
            Ok(o) => o,
            Err(e) => {
                self.requeue(&pending, &e.to_string(), acker).await;
                return Err(match e {
                    LiveError::CircuitOpen { wait, .. } => Some(wait),
                    _ => None,
                });
            }
        };
        let resolved = effects::resolve(&output.effects, &pending.batch.texts, &self.capabilities);
        for denied in &resolved.denied {
            self.count("mdp_capability_denied_total", 1);
            tracing::warn!(plugin = %self.worker.plugin().name, %denied, "effect refused");
        }
        if let Err(e) = self.store.apply(&resolved.writes, self.config.atomic).await {
            self.requeue(&pending, &e.to_string(), acker).await;
            return Err(None);
        }
        self.stats.processed += n as u64;
        self.stats.published += resolved.writes.len() as u64;
        self.count("mdp_processed_total", n as u64);
        self.count("mdp_published_total", resolved.writes.len() as u64);

        // Settle rejected events per message.
        let mut rejected: Vec<Vec<(usize, String)>> = vec![Vec::new(); pending.deliveries.len()];
        for (index, reason) in resolved.rejects {
            if let Some(&owner) = pending.owner.get(index) {
                rejected[owner].push((index, reason));
            }
        }
        let mut acked = 0u64;
        if rejected.iter().all(Vec::is_empty) {
            // Batches are handled one at a time per consumer, so every earlier
            // tag is settled: one multiple-ack settles the whole batch.
            let last = pending.deliveries.last().map(|d| d.tag).unwrap_or_default();
            match acker.ack(last, true).await {
                Ok(()) => self.stats.acked += pending.deliveries.len() as u64,
                Err(e) => {
                    tracing::warn!(queue = %self.config.queue, error = %e, "acknowledgement failed")
                }
            }
            return Ok(());
        }
        for (i, delivery) in pending.deliveries.iter().enumerate() {
            let bad = &rejected[i];
            let result = if bad.is_empty() {
                acker.ack(delivery.tag, false).await
            } else {
                self.stats.processing_error += bad.len() as u64;
                self.count("mdp_processing_error_total", bad.len() as u64);
                for (index, reason) in bad {
                    tracing::warn!(queue = %self.config.queue, index, %reason, "event rejected");
                }
                if bad.len() == pending.count[i] {
                    acker.reject(delivery.tag, false).await
                } else {
                    self.dead_letter_events(bad, &pending.batch.texts).await;
                    acker.ack(delivery.tag, false).await
                }
            };
            match result {
                Ok(()) => acked += 1,
                Err(e) => {
                    tracing::warn!(queue = %self.config.queue, error = %e, "acknowledgement failed")
                }
            }
        }
        self.stats.acked += acked;
        Ok(())
    }

    async fn dead_letter_events(&mut self, bad: &[(usize, String)], texts: &[String]) {
        let Some(dlq) = &self.config.dead_letter else {
            return;
        };
        let body = format!(
            "[{}]",
            bad.iter()
                .map(|(i, _)| texts[*i].as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        if let Err(e) = self.queue.publish(dlq, &[Bytes::from(body)]).await {
            tracing::warn!(queue = %dlq, error = %e, "dead-letter publish failed");
        }
    }

    async fn requeue(&mut self, pending: &Pending, reason: &str, acker: &Arc<dyn Acker>) {
        self.stats.error += 1;
        self.count("mdp_error_total", 1);
        tracing::warn!(queue = %self.config.queue, messages = pending.deliveries.len(), %reason, "batch not applied; requeueing");
        for d in &pending.deliveries {
            if let Err(e) = acker.nack(d.tag, false, true).await {
                tracing::warn!(error = %e, "requeue failed");
            }
        }
    }
}
