//! Before settling: deliveries gathered into a batch ([`Pending`]), decoded,
//! their reference data warmed, and analyzed into writes and rejects
//! ([`Analyzed`]).

use std::sync::Arc;

use super::Processor;
use super::companion::CompanionWrites;
use crate::plugin::EventBatch;
use crate::plugin::bindings::Event;
use crate::plugin::{LiveError, convert, effects};
use crate::queue::{Acker, Consumer, Delivery};
use crate::store::Write;

/// Reference fetches in flight at once when warming a batch's symbols.
const PREFETCH_CONCURRENCY: usize = 32;
/// Symbols remembered as warmed before the set starts over (the provider's
/// own cache still answers; this only bounds memory).
const WARMED_MAX: usize = 100_000;

/// Messages of one batch and where their events sit in it.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) deliveries: Vec<Delivery>,
    /// For each event of the batch: the index of its delivery.
    pub(super) owner: Vec<usize>,
    /// Events per delivery.
    pub(super) count: Vec<usize>,
    pub(super) batch: EventBatch,
}

/// A batch after analysis: what to write and which events to reject.
pub(super) struct Analyzed {
    pub(super) pending: Pending,
    pub(super) writes: Vec<Write>,
    pub(super) rejects: Vec<(usize, String)>,
    /// The companions' writes, applied before `writes`.
    pub(super) companions: Vec<CompanionWrites>,
}

impl Processor {
    /// Gather deliveries until the batch is full or the linger time is up.
    pub(super) async fn collect(
        &mut self,
        first: Delivery,
        consumer: &mut dyn Consumer,
        acker: &Arc<dyn Acker>,
    ) -> Pending {
        let mut pending = Pending::default();
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

    /// Decode one delivery into the batch, or reject it as undecodable (or
    /// dead-letter it when it came back too often).
    async fn add(&mut self, pending: &mut Pending, delivery: Delivery, acker: &Arc<dyn Acker>) {
        let over_cap = self
            .redeliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .over_cap(&delivery, self.config.max_redeliveries);
        if over_cap {
            self.counters
                .add("mdp_dead_lettered_total", 1, |s| &mut s.dead_lettered);
            tracing::warn!(queue = %self.config.queue, limit = self.config.max_redeliveries, bytes = delivery.body.len(), "message redelivered too often; dead-lettered");
            if let Err(e) = acker.reject(delivery.tag, false).await {
                tracing::warn!(error = %e, "reject failed");
            }
            return;
        }
        let parts = convert::decode_body(&delivery.body, self.config.max_body_bytes);
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
                self.counters
                    .add("mdp_decoding_error_total", 1, |s| &mut s.decoding_error);
                tracing::warn!(queue = %self.config.queue, error = %e, bytes = delivery.body.len(), "undecodable message rejected");
                if let Err(e) = acker.reject(delivery.tag, false).await {
                    tracing::warn!(error = %e, "reject failed");
                }
            }
        }
    }

    /// Fetch, concurrently, the reference data the plugin's manifest names
    /// for symbols of the batch not seen before, so that the plugin's own
    /// calls (one at a time, inside the guest) hit the provider's cache.
    /// Failures are left for the plugin's own call to see and handle.
    async fn warm_reference(&mut self, events: &[Event]) {
        use futures_util::StreamExt;
        let kinds = self.worker.plugin().reference_prefetch.clone();
        if kinds.is_empty() {
            return;
        }
        let fresh = self.unwarmed_symbols(events);
        if fresh.is_empty() {
            return;
        }
        let reference = self.worker.services().reference.clone();
        let calls: Vec<(crate::plugin::ReferenceKind, String)> = fresh
            .into_iter()
            .flat_map(|s| kinds.iter().map(move |k| (*k, s.clone())))
            .collect();
        let outcomes: Vec<bool> = futures_util::stream::iter(calls)
            .map(move |(kind, symbol)| {
                let reference = reference.clone();
                async move { kind.warm(reference.as_ref(), &symbol).await.is_ok() }
            })
            .buffer_unordered(PREFETCH_CONCURRENCY)
            .collect()
            .await;
        let failed = outcomes.iter().filter(|ok| !**ok).count();
        if failed > 0 {
            tracing::debug!(queue = %self.config.queue, failed, "reference prefetch incomplete");
        }
    }

    /// The symbols of `events` not warmed before, now marked as warmed.
    fn unwarmed_symbols(&mut self, events: &[Event]) -> Vec<String> {
        if self.warmed.len() > WARMED_MAX {
            self.warmed.clear();
        }
        let mut fresh = Vec::new();
        for event in events {
            let symbol = match event {
                Event::Trade(t) => &t.symbol,
                Event::Quote(q) => &q.symbol,
                Event::Aggregate(a) => &a.symbol,
                Event::Luld(l) => &l.symbol,
                Event::Other(_) => continue,
            };
            if !self.warmed.contains(symbol.as_str()) {
                self.warmed.insert(symbol.clone());
                fresh.push(symbol.clone());
            }
        }
        fresh
    }

    /// Run the analyzer on a batch and resolve its effects; on failure the
    /// batch comes back to be requeued.
    pub(super) async fn analyze(
        &mut self,
        pending: Pending,
    ) -> Result<Analyzed, (Pending, LiveError)> {
        self.warm_reference(&pending.batch.events).await;
        let texts = pending.batch.shared_texts();
        let output = match self
            .worker
            .analyze_texts(&pending.batch.events, &texts)
            .await
        {
            Ok(o) => o,
            Err(e) => return Err((pending, e)),
        };
        let resolved = effects::resolve(&output.effects, &texts, &self.capabilities);
        if !resolved.denied.is_empty() {
            self.counters.add(
                "mdp_capability_denied_total",
                resolved.denied.len() as u64,
                |s| &mut s.denied,
            );
            effects::log_batch(
                &self.worker.plugin().name,
                "effects refused by the plugin's capabilities",
                &resolved.denied,
            );
        }
        let mut companions = Vec::new();
        // Idle ticks are the primary's: companions see only events.
        let ticked = pending.batch.events.is_empty();
        for companion in self.companions.iter_mut().filter(|_| !ticked) {
            let events = &pending.batch.events;
            if let Some(writes) = companion.analyze(&self.config.queue, events, &texts).await {
                companions.push(writes);
            }
        }
        Ok(Analyzed {
            pending,
            writes: resolved.writes,
            rejects: resolved.rejects,
            companions,
        })
    }
}
