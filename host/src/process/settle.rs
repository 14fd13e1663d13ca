//! After analysis: the [`Settler`] applies a batch's writes and settles its
//! messages (ack, reject, dead-letter or requeue), and the [`Pipeline`]
//! chains the settling tasks so that batches settle in analysis order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::batch::{Analyzed, Pending};
use super::companion::CompanionWrites;
use super::redeliveries::Redeliveries;
use super::stats::Counters;
use crate::plugin::effects;
use crate::queue::{Acker, Queue};
use crate::store::{Store, StoreError, Write};
use crate::telemetry::Health;

/// Applies analyzed batches and settles their messages, one batch at a time
/// in analysis order (each settling task waits for the one before it).
#[derive(Clone)]
pub(super) struct Settler {
    pub(super) queue_name: String,
    pub(super) dead_letter: Option<String>,
    pub(super) atomic: bool,
    pub(super) queue: Arc<dyn Queue>,
    pub(super) store: Arc<dyn Store>,
    pub(super) acker: Arc<dyn Acker>,
    pub(super) counters: Arc<Counters>,
    pub(super) redeliveries: Arc<Mutex<Redeliveries>>,
    pub(super) health: Health,
}

/// Rejected events of a batch, per message: (event index, reason).
type Rejected = Vec<Vec<(usize, String)>>;

impl Settler {
    /// Apply a batch's writes, then acknowledge, reject or dead-letter its
    /// messages. A batch after one that was not applied is requeued unapplied.
    /// Returns whether the batch was applied.
    async fn settle(&self, analyzed: Analyzed, earlier_failed: bool) -> bool {
        let Analyzed {
            pending,
            writes,
            rejects,
            companions,
        } = analyzed;
        if earlier_failed {
            self.requeue(&pending, "an earlier batch was not applied")
                .await;
            return false;
        }
        if let Err(e) = self.apply_companions(&companions).await {
            self.health.check("store", false, e.to_string());
            self.requeue(&pending, &e.to_string()).await;
            return false;
        }
        if let Err(e) = self.apply(&pending, &writes).await {
            if e.is_transient() {
                self.health.check("store", false, e.to_string());
                self.requeue(&pending, &e.to_string()).await;
                return false;
            }
            // Retrying cannot fix it: dead-letter the batch and go on.
            self.dead_letter_batch(&pending, &e.to_string()).await;
            return true;
        }
        self.health.check("store", true, "applied");
        self.count_applied(&pending, &writes);
        let rejected = per_message(&pending, rejects);
        if rejected.iter().all(Vec::is_empty) {
            self.ack_batch(&pending).await;
        } else {
            self.settle_each(&pending, &rejected).await;
        }
        true
    }

    /// Apply the companions' writes, each in one pipeline to its store. A
    /// transient error is returned (the batch is requeued); one retrying
    /// cannot fix is logged, and the companion's writes for the batch dropped.
    async fn apply_companions(&self, companions: &[CompanionWrites]) -> Result<(), StoreError> {
        for c in companions.iter().filter(|c| !c.writes.is_empty()) {
            match c.store.apply(&c.writes, self.atomic).await {
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::warn!(queue = %self.queue_name, error = %e, writes = c.writes.len(), "companion writes refused by the store; dropped");
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Apply the batch's writes in one store pipeline.
    async fn apply(&self, pending: &Pending, writes: &[Write]) -> Result<(), StoreError> {
        let applying = tracing::info_span!(
            "apply",
            messages = pending.deliveries.len(),
            events = pending.batch.len(),
            writes = writes.len()
        );
        self.store
            .apply(writes, self.atomic)
            .instrument(applying)
            .await
    }

    /// Count an applied batch: its events, results and writes.
    fn count_applied(&self, pending: &Pending, writes: &[Write]) {
        let n = pending.batch.len() as u64;
        self.counters
            .add("mdp_processed_total", n, |s| &mut s.processed);
        self.counters
            .add("mdp_published_total", crate::store::results(writes), |s| {
                &mut s.published
            });
        self.counters
            .add("mdp_store_writes_total", writes.len() as u64, |s| {
                &mut s.store_writes
            });
    }

    /// Acknowledge a batch without rejected events. Batches settle in order,
    /// so every earlier tag is settled: one multiple-ack settles the whole
    /// batch.
    async fn ack_batch(&self, pending: &Pending) {
        let last = pending.deliveries.last().map(|d| d.tag).unwrap_or_default();
        match self.acker.ack(last, true).await {
            Ok(()) => self
                .counters
                .add("mdp_acked_total", pending.deliveries.len() as u64, |s| {
                    &mut s.acked
                }),
            Err(e) => {
                tracing::warn!(queue = %self.queue_name, error = %e, "acknowledgement failed")
            }
        }
    }

    /// Settle a batch with rejected events message by message: a message
    /// whose events were all rejected is rejected (to the dead-letter
    /// exchange), one with some rejected has those published to the
    /// dead-letter queue and is acked, the others are acked.
    async fn settle_each(&self, pending: &Pending, rejected: &Rejected) {
        let described: Vec<String> = rejected
            .iter()
            .flatten()
            .map(|(index, reason)| format!("event {index}: {reason}"))
            .collect();
        effects::log_batch(&self.counters.plugin(), "events rejected", &described);
        let mut acked = 0u64;
        for (i, delivery) in pending.deliveries.iter().enumerate() {
            let bad = &rejected[i];
            let result = if bad.is_empty() {
                self.acker.ack(delivery.tag, false).await
            } else {
                self.counters
                    .add("mdp_processing_error_total", bad.len() as u64, |s| {
                        &mut s.processing_error
                    });
                if bad.len() == pending.count[i] {
                    self.acker.reject(delivery.tag, false).await
                } else {
                    self.dead_letter_events(bad, &pending.batch.texts).await;
                    self.acker.ack(delivery.tag, false).await
                }
            };
            match result {
                Ok(()) => acked += 1,
                Err(e) => {
                    tracing::warn!(queue = %self.queue_name, error = %e, "acknowledgement failed")
                }
            }
        }
        self.counters
            .add("mdp_acked_total", acked, |s| &mut s.acked);
    }

    /// Publish the rejected events of one message, as a JSON array, to the
    /// dead-letter queue (if one is set).
    async fn dead_letter_events(&self, bad: &[(usize, String)], texts: &[String]) {
        let Some(dlq) = &self.dead_letter else {
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

    /// Reject every message of a batch that can never be applied (to the
    /// queue's dead-letter exchange, or dropped without one), counting them.
    async fn dead_letter_batch(&self, pending: &Pending, reason: &str) {
        let n = pending.deliveries.len() as u64;
        self.counters
            .add("mdp_dead_lettered_total", n, |s| &mut s.dead_lettered);
        tracing::error!(queue = %self.queue_name, messages = n, %reason, "batch cannot be applied; dead-lettered");
        for d in &pending.deliveries {
            if let Err(e) = self.acker.reject(d.tag, false).await {
                tracing::warn!(error = %e, "reject failed");
            }
        }
    }

    /// Put a batch's messages back on the queue, counting an error.
    pub(super) async fn requeue(&self, pending: &Pending, reason: &str) {
        self.counters.add("mdp_error_total", 1, |s| &mut s.error);
        self.redeliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requeued(&pending.deliveries);
        tracing::warn!(queue = %self.queue_name, messages = pending.deliveries.len(), %reason, "batch not applied; requeueing");
        for d in &pending.deliveries {
            if let Err(e) = self.acker.nack(d.tag, false, true).await {
                tracing::warn!(error = %e, "requeue failed");
            }
        }
    }
}

/// The analyzer's rejects grouped by the message their event came from.
fn per_message(pending: &Pending, rejects: Vec<(usize, String)>) -> Rejected {
    let mut rejected: Rejected = vec![Vec::new(); pending.deliveries.len()];
    for (index, reason) in rejects {
        if let Some(&owner) = pending.owner.get(index) {
            rejected[owner].push((index, reason));
        }
    }
    rejected
}

/// A settling task: whether its batch was applied.
type Settling = tokio::task::JoinHandle<bool>;

/// Settling tasks between analysis and acknowledgement, chained so that each
/// applies its writes only after the one before it has settled.
#[derive(Default)]
pub(super) struct Pipeline {
    tasks: VecDeque<Settling>,
    /// Outcome of the newest task, which the next one awaits.
    newest: Option<oneshot::Receiver<bool>>,
}

impl Pipeline {
    /// Settle `analyzed` after every batch already in the pipeline.
    pub(super) fn push(&mut self, settler: Settler, analyzed: Analyzed) {
        let earlier = self.newest.take();
        let (done, newest) = oneshot::channel();
        self.newest = Some(newest);
        self.tasks.push_back(tokio::spawn(async move {
            let earlier_failed = match earlier {
                Some(rx) => !rx.await.unwrap_or(false),
                None => false,
            };
            let settled = settler.settle(analyzed, earlier_failed).await;
            let _ = done.send(settled);
            settled
        }));
    }

    /// Wait until fewer than `allowed` batches are unsettled; false if one
    /// of the settled batches was requeued instead of applied.
    pub(super) async fn make_room(&mut self, allowed: usize) -> bool {
        let mut all_applied = true;
        while self.tasks.len() >= allowed {
            if let Some(task) = self.tasks.pop_front() {
                all_applied &= task.await.unwrap_or(false);
            }
        }
        all_applied
    }

    /// Wait for every batch to settle and start a fresh chain.
    pub(super) async fn drain(&mut self) {
        while let Some(task) = self.tasks.pop_front() {
            let _ = task.await;
        }
        self.newest = None;
    }
}
