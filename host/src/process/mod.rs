//! `mdp process`: consume a queue, cut batches by size or linger time, run
//! the analyzer once per batch, apply all effects of the batch in one store
//! pipeline, then acknowledge the batch. A plugin whose manifest sets
//! `idle_tick_ms` is also called once with an empty batch when the queue
//! goes idle that long after a batch (its effects applied the same way).
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
//! Companions (`mdp process --plugin primary,companion`): further analyzers
//! of the same batches, whose failures never hold up the queue (see
//! [`Companion`]).
//!
//! Pipelining: while one batch's writes are applied and its messages
//! acknowledged, the next batch is already being collected and decoded; a
//! plugin whose manifest sets `batches_in_flight = N > 1` (it keeps its state
//! in memory and does not read its latest writes back) is also *analyzed*
//! ahead, with up to N batches between analysis and acknowledgement. Writes
//! are applied and messages settled strictly in analysis order, so the store
//! sees the same sequence as with one batch at a time. If a batch cannot be
//! applied, it and every batch analyzed after it are requeued unapplied.

mod batch;
mod companion;
mod redeliveries;
mod settle;
mod stats;

pub use companion::Companion;
pub use stats::ProcessorStats;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::plugin::{Capabilities, LiveError, LiveWorker};
use crate::queue::{Acker, Consumer, Queue};
use crate::store::Store;
use crate::telemetry::{Health, WatchGuard};
use batch::Pending;
use redeliveries::Redeliveries;
use settle::{Pipeline, Settler};
use stats::Counters;

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

/// A processor: one consumer, one plugin worker.
pub struct Processor {
    config: ProcessorConfig,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    worker: LiveWorker,
    capabilities: Capabilities,
    /// Further analyzers of every batch, after `worker`.
    companions: Vec<Companion>,
    counters: Arc<Counters>,
    /// Symbols whose reference data was already warmed.
    warmed: HashSet<String>,
    /// Redelivery counts per message.
    redeliveries: Arc<Mutex<Redeliveries>>,
    /// Where the processor reports its dependencies and status.
    health: Health,
}

/// The names of the processor's health checks.
struct Checks {
    /// `queue:<name>`: the broker link.
    queue: String,
    /// `plugin:<name>`: the analyzer.
    plugin: String,
}

/// One consumer's state: its deliveries, the settler acknowledging them and
/// the batches between analysis and acknowledgement.
struct Consuming {
    consumer: Box<dyn Consumer>,
    acker: Arc<dyn Acker>,
    settler: Settler,
    pipeline: Pipeline,
}

/// Why a consumer's loop ended.
enum Ended {
    /// The consumer failed or ended: consume again.
    Reconnect,
    /// Shutdown, or the plugin was removed: the processor returns.
    Stop,
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
        let counters = Arc::new(Counters::new(
            config.queue.clone(),
            worker.plugin().name.clone(),
        ));
        Processor {
            config,
            queue,
            store,
            worker,
            capabilities,
            companions: Vec::new(),
            counters,
            warmed: HashSet::new(),
            redeliveries: Arc::default(),
            health: Health::default(),
        }
    }

    /// Run `companions` on every batch too (see [`Companion`]).
    pub fn with_companions(mut self, companions: Vec<Companion>) -> Self {
        self.companions = companions;
        self
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
        let checks = Checks {
            queue: format!("queue:{}", self.config.queue),
            plugin: format!("plugin:{}", self.worker.plugin().name),
        };
        self.health.check(&checks.plugin, true, "loaded");
        self.report(None);
        loop {
            let Some(consumer) = self.connect(&checks, &mut backoff, &mut shutdown).await else {
                return Ok(self.stats());
            };
            self.health.check(&checks.queue, true, "consuming");
            let acker = consumer.acker();
            let _watches = self.watch(&checks, &acker);
            let mut consuming = Consuming {
                consumer,
                settler: self.settler(acker.clone()),
                acker,
                pipeline: Pipeline::default(),
            };
            tracing::info!(queue = %self.config.queue, plugin = %self.worker.plugin().name, "processor consuming");
            let ended = self
                .consume(&mut consuming, &checks, &mut backoff, &mut shutdown)
                .await;
            consuming.pipeline.drain().await;
            if let Ended::Stop = ended {
                return Ok(self.stats());
            }
        }
    }

    /// Start consuming, retrying with backoff; `None` when shutdown comes first.
    async fn connect(
        &mut self,
        checks: &Checks,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Box<dyn Consumer>> {
        loop {
            match self
                .queue
                .consume(&self.config.queue, self.config.prefetch)
                .await
            {
                Ok(c) => return Some(c),
                Err(e) => {
                    self.health.check(&checks.queue, false, e.to_string());
                    self.counters.add("mdp_error_total", 1, |s| &mut s.error);
                    let delay = backoff.next_delay();
                    tracing::warn!(queue = %self.config.queue, error = %e, ?delay, "cannot consume; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
            }
        }
    }

    /// Follow the consumer's broker link and the store in `health` while the
    /// guards live. The consumer reconnects on its own while the broker is
    /// away; the store is probed so that an idle processor learns it is gone
    /// before its next batch does.
    fn watch(&self, checks: &Checks, acker: &Arc<dyn Acker>) -> [WatchGuard; 2] {
        let link = acker.clone();
        let link = self.health.watch(&checks.queue, move || {
            let up = link.connected();
            async move {
                match up {
                    true => Ok("consuming".into()),
                    false => Err("reconnecting to the broker".into()),
                }
            }
        });
        let store = self.store.clone();
        let store = self.health.watch("store", move || {
            let store = store.clone();
            async move { crate::store::probe(store.as_ref()).await }
        });
        [link, store]
    }

    /// The settler of batches consumed through `acker`.
    fn settler(&self, acker: Arc<dyn Acker>) -> Settler {
        Settler {
            queue_name: self.config.queue.clone(),
            dead_letter: self.config.dead_letter.clone(),
            atomic: self.config.atomic,
            queue: self.queue.clone(),
            store: self.store.clone(),
            acker,
            counters: self.counters.clone(),
            redeliveries: self.redeliveries.clone(),
            health: self.health.clone(),
        }
    }

    /// Collect, analyze and settle batches from one consumer until it ends,
    /// shutdown is asked for or the plugin is removed.
    async fn consume(
        &mut self,
        c: &mut Consuming,
        checks: &Checks,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        // A batch was analyzed since the last idle tick.
        let mut tick_due = false;
        loop {
            if *shutdown.borrow() {
                return Ended::Stop;
            }
            let idle = self.worker.plugin().limits.idle_tick.filter(|_| tick_due);
            let first = tokio::select! {
                d = c.consumer.next() => d,
                () = idle_timer(idle) => {
                    tick_due = false;
                    metrics::counter!("mdp_idle_ticks_total", "queue" => self.config.queue.clone()).increment(1);
                    if self.dispatch(c, Pending::default(), checks, backoff, shutdown).await.is_break() {
                        return Ended::Stop;
                    }
                    continue;
                }
                _ = shutdown.changed() => return Ended::Stop,
            };
            let first = match first {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.config.queue, error = %e, "consumer error; reconnecting");
                    self.health.check(&checks.queue, false, e.to_string());
                    return Ended::Reconnect;
                }
                None => {
                    tracing::warn!(queue = %self.config.queue, "consumer ended; reconnecting");
                    self.health.check(&checks.queue, false, "consumer ended");
                    return Ended::Reconnect;
                }
            };
            let pending = self.collect(first, c.consumer.as_mut(), &c.acker).await;
            if pending.deliveries.is_empty() {
                continue;
            }
            tick_due = true;
            if self
                .dispatch(c, pending, checks, backoff, shutdown)
                .await
                .is_break()
            {
                return Ended::Stop;
            }
        }
    }

    /// Analyze a collected batch and hand it to the pipeline, or requeue it
    /// (and wait) when an earlier batch or the analyzer failed. Breaks when
    /// the plugin was removed.
    async fn dispatch(
        &mut self,
        c: &mut Consuming,
        pending: Pending,
        checks: &Checks,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> ControlFlow<()> {
        let allowed = self.worker.plugin().limits.batches_in_flight.max(1);
        if !c.pipeline.make_room(allowed).await {
            // A batch could not be applied: let the store recover.
            c.settler
                .requeue(&pending, "an earlier batch was not applied")
                .await;
            c.pipeline.drain().await;
            wait(shutdown, backoff.next_delay()).await;
            return ControlFlow::Continue(());
        }
        if let Err(LiveError::Removed(name)) = self.refresh().await {
            tracing::info!(queue = %self.config.queue, plugin = %name, "plugin removed; processor stopping");
            self.health.check(&checks.plugin, false, "plugin removed");
            c.settler.requeue(&pending, "plugin removed").await;
            return ControlFlow::Break(());
        }
        match self.analyze(pending).await {
            Ok(analyzed) => {
                c.pipeline.push(c.settler.clone(), analyzed);
                backoff.reset();
                self.health.check(&checks.plugin, true, "analyzing");
                self.report(Some(chrono::Utc::now()));
            }
            Err((pending, error)) => {
                self.health.check(&checks.plugin, false, error.to_string());
                c.settler.requeue(&pending, &error.to_string()).await;
                c.pipeline.drain().await;
                let delay = match error {
                    LiveError::CircuitOpen { wait, .. } => wait,
                    _ => backoff.next_delay(),
                };
                wait(shutdown, delay).await;
            }
        }
        ControlFlow::Continue(())
    }

    /// Switch plugin generation if a new one was published.
    async fn refresh(&mut self) -> Result<(), LiveError> {
        self.worker.refresh().await?;
        self.capabilities = (*self.worker.plugin().capabilities).clone();
        self.counters.set_plugin(self.worker.plugin().name.clone());
        Ok(())
    }
}

/// Sleep for the idle tick's time; never, without one.
async fn idle_timer(idle: Option<Duration>) {
    match idle {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Sleep for `delay`, or less if shutdown is asked for.
async fn wait(shutdown: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}
