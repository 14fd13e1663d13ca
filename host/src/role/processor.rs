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
//! - store (or other host) unavailable — a transient error: nothing is
//!   acked, the batch's messages are requeued after a backoff. A batch's
//!   writes are applied all or nothing (`MULTI`/`EXEC` on Redis, checked
//!   before writing in the embedded store), so a connection lost half-way
//!   leaves nothing applied; a batch whose `EXEC` succeeded but whose reply
//!   was lost is applied again when redelivered (at-least-once);
//! - a store error that retrying cannot fix (a key of the wrong type, a
//!   command refused): the batch's messages are dead-lettered, counted as
//!   `mdp_dead_lettered_total`, with the reason logged. Redis does not roll
//!   back the other commands of a transaction in which one command failed;
//! - a message that comes back redelivered more than `max_redeliveries`
//!   times without this process having requeued it itself (a consumer that
//!   died holding it, or another replica giving it back) is dead-lettered
//!   instead of being analyzed again. The count lives in this process: one
//!   that dies on a message starts counting afresh (a broker-side delivery
//!   limit, such as a RabbitMQ quorum queue's, covers that case);
//! - a message that is not JSON or not events: rejected (dead-lettered),
//!   counted as a decoding error;
//! - shutdown: stop consuming, finish the batches in flight, apply, ack, return.
//!
//! Pipelining: while one batch's writes are applied and its messages
//! acknowledged, the next batch is already being collected and decoded; a
//! plugin whose manifest sets `batches_in_flight = N > 1` (it keeps its state
//! in memory and does not read its latest writes back) is also *analyzed*
//! ahead, with up to N batches between analysis and acknowledgement. Writes
//! are applied and messages settled strictly in analysis order, so the store
//! sees the same sequence as with one batch at a time. If a batch cannot be
//! applied, it and every batch analyzed after it are requeued unapplied.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use super::{Backoff, EventBatch};
use crate::plugin::{Capabilities, LiveError, LiveWorker, convert, effects};
use crate::queue::{Acker, Consumer, Delivery, Queue};
use crate::store::{Store, Write};
use crate::telemetry::Health;

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
    /// Apply each batch's writes atomically (`MULTI`/`EXEC`; on by default).
    pub atomic: bool,
    /// Redeliveries of one message (not requeued by this process) before it
    /// is dead-lettered; 0 for no limit.
    pub max_redeliveries: u32,
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
            atomic: true,
            max_redeliveries: 10,
        }
    }
}

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

/// A processor: one consumer, one plugin worker.
pub struct Processor {
    config: ProcessorConfig,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    worker: LiveWorker,
    capabilities: Capabilities,
    counters: Arc<Counters>,
    /// Symbols whose reference data was already warmed.
    warmed: HashSet<String>,
    /// Redelivery counts per message.
    redeliveries: Arc<Mutex<Redeliveries>>,
    /// Where the processor reports its dependencies and status.
    health: Health,
}

/// Messages remembered by the redelivery count before it starts over.
const REDELIVERIES_MAX: usize = 100_000;

/// How often each message came back redelivered without this process having
/// requeued it, keyed by a hash of its body.
#[derive(Default)]
struct Redeliveries {
    /// Redelivered sightings per message.
    seen: std::collections::HashMap<u64, u32>,
    /// Messages this process requeued itself (their redelivery is expected).
    requeued: HashSet<u64>,
}

impl Redeliveries {
    fn key(body: &[u8]) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(body)
    }

    /// Count a delivery; true when it came back more than `cap` times.
    fn over_cap(&mut self, delivery: &Delivery, cap: u32) -> bool {
        if !delivery.redelivered || cap == 0 {
            return false;
        }
        let key = Self::key(&delivery.body);
        if self.requeued.remove(&key) {
            return false;
        }
        if self.seen.len() > REDELIVERIES_MAX {
            self.seen.clear();
        }
        let n = self.seen.entry(key).or_insert(0);
        *n += 1;
        *n > cap
    }

    /// Remember that this process put `deliveries` back on the queue.
    fn requeued(&mut self, deliveries: &[Delivery]) {
        if self.requeued.len() > REDELIVERIES_MAX {
            self.requeued.clear();
        }
        for d in deliveries {
            self.requeued.insert(Self::key(&d.body));
        }
    }
}

/// Reference fetches in flight at once when warming a batch's symbols.
const PREFETCH_CONCURRENCY: usize = 32;
/// Symbols remembered as warmed before the set starts over (the provider's
/// own cache still answers; this only bounds memory).
const WARMED_MAX: usize = 100_000;

/// Messages of one batch and where their events sit in it.
struct Pending {
    deliveries: Vec<Delivery>,
    /// For each event of the batch: the index of its delivery.
    owner: Vec<usize>,
    /// Events per delivery.
    count: Vec<usize>,
    batch: EventBatch,
}

/// A batch after analysis: what to write and which events to reject.
struct Analyzed {
    pending: Pending,
    writes: Vec<Write>,
    rejects: Vec<(usize, String)>,
}

/// The processor's counters, shared with the settling tasks.
struct Counters {
    queue: String,
    plugin: Mutex<Arc<str>>,
    stats: Mutex<ProcessorStats>,
}

impl Counters {
    fn add(
        &self,
        metric: &'static str,
        n: u64,
        field: impl FnOnce(&mut ProcessorStats) -> &mut u64,
    ) {
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            *field(&mut stats) += n;
        }
        let plugin = self
            .plugin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_string();
        metrics::counter!(metric, "role" => "process", "queue" => self.queue.clone(), "plugin" => plugin)
            .increment(n);
    }

    fn snapshot(&self) -> ProcessorStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Applies analyzed batches and settles their messages, one batch at a time
/// in analysis order (each settling task waits for the one before it).
#[derive(Clone)]
struct Settler {
    queue_name: String,
    dead_letter: Option<String>,
    atomic: bool,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    acker: Arc<dyn Acker>,
    counters: Arc<Counters>,
    redeliveries: Arc<Mutex<Redeliveries>>,
    health: Health,
}

/// A settling task: whether its batch was applied.
type Settling = tokio::task::JoinHandle<bool>;

impl Processor {
    /// A processor of `config.queue` through `worker`, writing to `store`.
    pub fn new(
        config: ProcessorConfig,
        queue: Arc<dyn Queue>,
        store: Arc<dyn Store>,
        worker: LiveWorker,
    ) -> Self {
        let capabilities = (*worker.plugin().capabilities).clone();
        let counters = Arc::new(Counters {
            queue: config.queue.clone(),
            plugin: Mutex::new(worker.plugin().name.clone()),
            stats: Mutex::new(ProcessorStats::default()),
        });
        Processor {
            config,
            queue,
            store,
            worker,
            capabilities,
            counters,
            warmed: HashSet::new(),
            redeliveries: Arc::default(),
            health: Health::default(),
        }
    }

    /// Report dependencies (`queue:<name>`, `store`, `plugin:<name>`) and
    /// this worker's status (`process <queue>`) to `health`.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Publish this worker's status: queue, plugin generation, counts and
    /// when its last batch was analyzed.
    fn report(&self, last_batch: Option<chrono::DateTime<chrono::Utc>>) {
        let plugin = self.worker.plugin();
        let stats = self.stats();
        self.health.worker(
            &format!("process {}", self.config.queue),
            serde_json::json!({
                "queue": self.config.queue,
                "plugin": &*plugin.name,
                "version": plugin.info.version,
                "generation": plugin.hash.get(..12).unwrap_or(&plugin.hash),
                "last_batch": last_batch.map(|t| t.to_rfc3339()),
                "processed": stats.processed,
                "acked": stats.acked,
                "errors": stats.error,
                "dead_lettered": stats.dead_lettered,
                "processing_errors": stats.processing_error,
                "decoding_errors": stats.decoding_error,
            }),
        );
    }

    /// Counters so far.
    pub fn stats(&self) -> ProcessorStats {
        self.counters.snapshot()
    }

    /// Consume until `shutdown` turns true; then finish the batches in flight and return.
    pub async fn run(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<ProcessorStats> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let queue_check = format!("queue:{}", self.config.queue);
        let plugin_check = format!("plugin:{}", self.worker.plugin().name);
        self.health.check(&plugin_check, true, "loaded");
        self.report(None);
        loop {
            let mut consumer = loop {
                match self
                    .queue
                    .consume(&self.config.queue, self.config.prefetch)
                    .await
                {
                    Ok(c) => break c,
                    Err(e) => {
                        self.health.check(&queue_check, false, e.to_string());
                        self.counters.add("mdp_error_total", 1, |s| &mut s.error);
                        let delay = backoff.next_delay();
                        tracing::warn!(queue = %self.config.queue, error = %e, ?delay, "cannot consume; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => return Ok(self.stats()),
                        }
                    }
                }
            };
            self.health.check(&queue_check, true, "consuming");
            let acker = consumer.acker();
            // The consumer reconnects on its own while the broker is away;
            // readiness follows its link (the task ends with this consumer).
            let link = acker.clone();
            let _link = self.health.watch(&queue_check, move || {
                let up = link.connected();
                async move {
                    match up {
                        true => Ok("consuming".into()),
                        false => Err("reconnecting to the broker".into()),
                    }
                }
            });
            // The store is probed too: an idle processor learns it is gone
            // before its next batch does.
            let store = self.store.clone();
            let _store = self.health.watch("store", move || {
                let store = store.clone();
                async move { crate::store::probe(store.as_ref()).await }
            });
            let settler = Settler {
                queue_name: self.config.queue.clone(),
                dead_letter: self.config.dead_letter.clone(),
                atomic: self.config.atomic,
                queue: self.queue.clone(),
                store: self.store.clone(),
                acker: acker.clone(),
                counters: self.counters.clone(),
                redeliveries: self.redeliveries.clone(),
                health: self.health.clone(),
            };
            let mut pipeline = Pipeline::default();
            tracing::info!(queue = %self.config.queue, plugin = %self.worker.plugin().name, "processor consuming");
            loop {
                if *shutdown.borrow() {
                    pipeline.drain().await;
                    return Ok(self.stats());
                }
                let first = tokio::select! {
                    d = consumer.next() => d,
                    _ = shutdown.changed() => {
                        pipeline.drain().await;
                        return Ok(self.stats());
                    }
                };
                let first = match first {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        tracing::warn!(queue = %self.config.queue, error = %e, "consumer error; reconnecting");
                        self.health.check(&queue_check, false, e.to_string());
                        break;
                    }
                    None => {
                        tracing::warn!(queue = %self.config.queue, "consumer ended; reconnecting");
                        self.health.check(&queue_check, false, "consumer ended");
                        break;
                    }
                };
                let pending = self.collect(first, consumer.as_mut(), &acker).await;
                if pending.deliveries.is_empty() {
                    continue;
                }
                let allowed = self.worker.plugin().limits.batches_in_flight.max(1);
                if !pipeline.make_room(allowed).await {
                    // A batch could not be applied: let the store recover.
                    settler
                        .requeue(&pending, "an earlier batch was not applied")
                        .await;
                    pipeline.drain().await;
                    wait(&mut shutdown, backoff.next_delay()).await;
                    continue;
                }
                if let Err(LiveError::Removed(name)) = self.refresh().await {
                    tracing::info!(queue = %self.config.queue, plugin = %name, "plugin removed; processor stopping");
                    self.health.check(&plugin_check, false, "plugin removed");
                    settler.requeue(&pending, "plugin removed").await;
                    pipeline.drain().await;
                    return Ok(self.stats());
                }
                match self.analyze(pending).await {
                    Ok(analyzed) => {
                        pipeline.push(settler.clone(), analyzed);
                        backoff.reset();
                        self.health.check(&plugin_check, true, "analyzing");
                        self.report(Some(chrono::Utc::now()));
                    }
                    Err((pending, error)) => {
                        self.health.check(&plugin_check, false, error.to_string());
                        settler.requeue(&pending, &error.to_string()).await;
                        pipeline.drain().await;
                        let delay = match error {
                            LiveError::CircuitOpen { wait, .. } => wait,
                            _ => backoff.next_delay(),
                        };
                        wait(&mut shutdown, delay).await;
                    }
                }
            }
            pipeline.drain().await;
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

    /// Switch plugin generation if a new one was published.
    async fn refresh(&mut self) -> Result<(), LiveError> {
        self.worker.refresh().await?;
        self.capabilities = (*self.worker.plugin().capabilities).clone();
        *self
            .counters
            .plugin
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.worker.plugin().name.clone();
        Ok(())
    }

    /// Fetch, concurrently, the reference data the plugin's manifest names
    /// for symbols of the batch not seen before, so that the plugin's own
    /// calls (one at a time, inside the guest) hit the provider's cache.
    /// Failures are left for the plugin's own call to see and handle.
    async fn warm_reference(&mut self, events: &[crate::plugin::bindings::Event]) {
        use crate::plugin::bindings::Event;
        use futures_util::StreamExt;
        let kinds = self.worker.plugin().reference_prefetch.clone();
        if kinds.is_empty() {
            return;
        }
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

    /// Run the analyzer on a batch and resolve its effects; on failure the
    /// batch comes back to be requeued.
    async fn analyze(&mut self, pending: Pending) -> Result<Analyzed, (Pending, LiveError)> {
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
        Ok(Analyzed {
            pending,
            writes: resolved.writes,
            rejects: resolved.rejects,
        })
    }
}

/// Settling tasks between analysis and acknowledgement, chained so that each
/// applies its writes only after the one before it has settled.
#[derive(Default)]
struct Pipeline {
    tasks: VecDeque<Settling>,
    /// Outcome of the newest task, which the next one awaits.
    newest: Option<oneshot::Receiver<bool>>,
}

impl Pipeline {
    /// Settle `analyzed` after every batch already in the pipeline.
    fn push(&mut self, settler: Settler, analyzed: Analyzed) {
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
    async fn make_room(&mut self, allowed: usize) -> bool {
        let mut all_applied = true;
        while self.tasks.len() >= allowed {
            if let Some(task) = self.tasks.pop_front() {
                all_applied &= task.await.unwrap_or(false);
            }
        }
        all_applied
    }

    /// Wait for every batch to settle and start a fresh chain.
    async fn drain(&mut self) {
        while let Some(task) = self.tasks.pop_front() {
            let _ = task.await;
        }
        self.newest = None;
    }
}

/// Sleep for `delay`, or less if shutdown is asked for.
async fn wait(shutdown: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}

impl Settler {
    /// Apply a batch's writes, then acknowledge, reject or dead-letter its
    /// messages. A batch after one that was not applied is requeued unapplied.
    /// Returns whether the batch was applied.
    async fn settle(&self, analyzed: Analyzed, earlier_failed: bool) -> bool {
        let Analyzed {
            pending,
            writes,
            rejects,
        } = analyzed;
        if earlier_failed {
            self.requeue(&pending, "an earlier batch was not applied")
                .await;
            return false;
        }
        let applying = tracing::info_span!(
            "apply",
            messages = pending.deliveries.len(),
            events = pending.batch.len(),
            writes = writes.len()
        );
        if let Err(e) = self
            .store
            .apply(&writes, self.atomic)
            .instrument(applying)
            .await
        {
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
        let n = pending.batch.len() as u64;
        self.counters
            .add("mdp_processed_total", n, |s| &mut s.processed);
        self.counters
            .add("mdp_published_total", crate::store::results(&writes), |s| {
                &mut s.published
            });
        self.counters
            .add("mdp_store_writes_total", writes.len() as u64, |s| {
                &mut s.store_writes
            });

        // Settle rejected events per message.
        let mut rejected: Vec<Vec<(usize, String)>> = vec![Vec::new(); pending.deliveries.len()];
        for (index, reason) in rejects {
            if let Some(&owner) = pending.owner.get(index) {
                rejected[owner].push((index, reason));
            }
        }
        if rejected.iter().all(Vec::is_empty) {
            // Batches settle in order, so every earlier tag is settled: one
            // multiple-ack settles the whole batch.
            let last = pending.deliveries.last().map(|d| d.tag).unwrap_or_default();
            match self.acker.ack(last, true).await {
                Ok(()) => {
                    self.counters
                        .add("mdp_acked_total", pending.deliveries.len() as u64, |s| {
                            &mut s.acked
                        })
                }
                Err(e) => {
                    tracing::warn!(queue = %self.queue_name, error = %e, "acknowledgement failed")
                }
            }
            return true;
        }
        let described: Vec<String> = rejected
            .iter()
            .flatten()
            .map(|(index, reason)| format!("event {index}: {reason}"))
            .collect();
        let plugin = self
            .counters
            .plugin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        effects::log_batch(&plugin, "events rejected", &described);
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
        true
    }

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
    async fn requeue(&self, pending: &Pending, reason: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body: &'static str, redelivered: bool) -> Delivery {
        Delivery {
            body: Bytes::from_static(body.as_bytes()),
            tag: 1,
            redelivered,
        }
    }

    #[test]
    fn redeliveries_past_the_cap_are_caught_but_own_requeues_are_not_counted() {
        let mut r = Redeliveries::default();
        // First deliveries never count.
        assert!(!r.over_cap(&delivery("a", false), 2));
        // Given back by someone else: counted, over the cap on the third.
        assert!(!r.over_cap(&delivery("a", true), 2));
        assert!(!r.over_cap(&delivery("a", true), 2));
        assert!(r.over_cap(&delivery("a", true), 2));
        // What this process requeued itself comes back without counting.
        r.requeued(&[delivery("b", false)]);
        for _ in 0..5 {
            assert!(!r.over_cap(&delivery("b", true), 2));
            r.requeued(&[delivery("b", true)]);
        }
        // No limit when the cap is 0.
        assert!(!r.over_cap(&delivery("a", true), 0));
    }
}
