//! A [`Worker`] runs batches through one plugin instance with crash
//! isolation: a fault drops the instance; the batch is retried once on a
//! fresh one; if it fails again the batch is bisected to find and reject the
//! poison event(s), and every good event's effects are kept.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::PluginError;
use super::bindings::{Effect, Event};
use super::effects::{kind, shift};
use super::host_state::HostServices;
use super::instance::{CallFault, Instance, Plugin};

/// Why a batch produced no result at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The host's infrastructure failed (store down): retry the batch later.
    #[error("{0}")]
    Host(String),
    /// The analyzer is not ready: retry the batch later.
    #[error("analyzer not ready: {0}")]
    NotReady(String),
    /// A fresh instance could not be created or initialised.
    #[error("plugin could not start: {0}")]
    Start(String),
    /// Isolating the poison events of a failing batch used up its budget
    /// (the plugin fails on too many events): retry the batch later.
    #[error("poison isolation gave up: {0}")]
    Isolation(String),
}

/// The result of one batch.
#[derive(Debug, Default, Clone)]
pub struct BatchOutput {
    /// Effects in batch order (input indexes relative to the whole batch);
    /// rejects included.
    pub effects: Vec<Effect>,
    /// Faults met and recovered from (each dropped an instance).
    pub faults: Vec<CallFault>,
}

/// Runs batches through a plugin, recycling instances after faults.
pub struct Worker {
    plugin: Arc<Plugin>,
    services: HostServices,
    config: Vec<(String, String)>,
    instance: Option<Instance>,
    handoff: Option<Vec<u8>>,
    /// Calls made so far.
    calls: u64,
    /// The current batch's poison events, described (logged once per batch).
    poisoned: Vec<String>,
    /// What the current batch's isolation may still spend: calls, and until when.
    isolation: (usize, Instant),
}

impl Worker {
    /// A worker for `plugin`; the first batch instantiates and `init`s it.
    pub fn new(plugin: Arc<Plugin>, services: HostServices, config: Vec<(String, String)>) -> Self {
        Worker {
            plugin,
            services,
            config,
            instance: None,
            handoff: None,
            calls: 0,
            poisoned: Vec::new(),
            isolation: (0, Instant::now()),
        }
    }

    /// Calls into the plugin made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The plugin this worker runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Give the next `init` a snapshot of a previous generation's state.
    pub fn hand_over(&mut self, state: Vec<u8>) {
        self.handoff = Some(state);
    }

    /// Instantiate and `init` now (rehydration before consuming).
    pub async fn start(&mut self) -> Result<(), BatchError> {
        self.instance().await.map(|_| ())
    }

    /// Snapshot the live instance's state (empty when none is live).
    pub async fn snapshot(&mut self) -> Vec<u8> {
        match self.instance.as_mut() {
            Some(i) => i.snapshot().await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Counters of the live instance.
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        self.instance
            .as_ref()
            .map(|i| i.counters().clone())
            .unwrap_or_default()
    }

    async fn instance(&mut self) -> Result<&mut Instance, BatchError> {
        if self.instance.is_none() {
            let mut instance = Instance::new(&self.plugin, &self.services)
                .await
                .map_err(|e: PluginError| BatchError::Start(e.to_string()))?;
            let state = self.handoff.take();
            match instance.init(&self.config, state.as_deref()).await {
                Ok(()) => {}
                Err(CallFault::Host(h)) => return Err(BatchError::Host(h)),
                Err(CallFault::NotReady(r)) => return Err(BatchError::NotReady(r)),
                Err(f) => {
                    self.count("mdp_plugin_traps_total", 1);
                    return Err(BatchError::Start(format!("init failed: {f}")));
                }
            }
            self.instance = Some(instance);
        }
        Ok(self.instance.as_mut().expect("just created"))
    }

    fn count(&self, name: &'static str, n: u64) {
        metrics::counter!(name, &self.plugin.metric_labels()).increment(n);
    }

    /// One call into the plugin; `inputs` are the batch's input texts
    /// (empty when unknown), for `host.input-json` and the output caps.
    async fn call(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
    ) -> Result<Vec<Effect>, CallFault> {
        let plugin = self.plugin.clone();
        let instance = match self.instance().await {
            Ok(i) => i,
            Err(BatchError::Host(h)) => return Err(CallFault::Host(h)),
            Err(BatchError::NotReady(r)) => return Err(CallFault::NotReady(r)),
            Err(e) => return Err(CallFault::Trap(e.to_string())),
        };
        let started = Instant::now();
        let limits = &plugin.limits;
        let result = instance
            .analyze(batch, inputs)
            .await
            .and_then(|effects| limits.check_output(&effects, inputs).map(|()| effects));
        metrics::histogram!("mdp_plugin_call_seconds", &self.plugin.metric_labels())
            .record(started.elapsed().as_secs_f64());
        self.count("mdp_plugin_calls_total", 1);
        self.calls += 1;
        if let Err(fault) = &result {
            // A fault poisons the store: never call into it again.
            self.instance = None;
            match fault {
                CallFault::Timeout(_) | CallFault::WallClock(_) => {
                    self.count("mdp_plugin_timeouts_total", 1)
                }
                CallFault::OutputLimit(_) => self.count("mdp_plugin_output_cap_total", 1),
                f if f.is_crash() => self.count("mdp_plugin_traps_total", 1),
                _ => {}
            }
        }
        result
    }

    /// Analyze a batch with crash isolation.
    pub async fn analyze(&mut self, batch: &[Event]) -> Result<BatchOutput, BatchError> {
        self.run(batch, &[], true).await
    }

    /// Analyze a batch with crash isolation, knowing each event's input
    /// text (`inputs[i]` for `batch[i]`): the plugin can read it
    /// (`host.input-json`) and `input` bodies count towards the output cap
    /// at their real size.
    pub async fn analyze_texts(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
    ) -> Result<BatchOutput, BatchError> {
        self.run(batch, inputs, true).await
    }

    /// Analyze a batch without retry or isolation: the first fault is
    /// reported in `faults` with no effects (used for generations on
    /// probation). `inputs` as for [`Worker::analyze_texts`].
    pub async fn analyze_strict(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
    ) -> Result<BatchOutput, BatchError> {
        self.run(batch, inputs, false).await
    }

    /// Run `batch`, cut into calls of at most the plugin's `max_batch`
    /// events (one message may carry more), with each call's input indexes
    /// shifted back to the whole batch.
    async fn run(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
        isolate: bool,
    ) -> Result<BatchOutput, BatchError> {
        let max = self.plugin.limits.max_batch.max(1);
        if batch.len() <= max {
            return self.run_call(batch, inputs, isolate).await;
        }
        let mut out = BatchOutput::default();
        for (n, part) in batch.chunks(max).enumerate() {
            let texts = sub(inputs, n * max, part.len());
            let mut part_out = self.run_call(part, texts, isolate).await?;
            self.shift(&mut part_out.effects, n * max, part.len());
            out.effects.append(&mut part_out.effects);
            out.faults.append(&mut part_out.faults);
            if !isolate && !out.faults.is_empty() {
                // Strict mode reports the first fault with no effects.
                out.effects.clear();
                break;
            }
        }
        Ok(out)
    }

    async fn run_call(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
        isolate: bool,
    ) -> Result<BatchOutput, BatchError> {
        let span = tracing::info_span!(
            "analyze",
            plugin = %self.plugin.name,
            events = batch.len(),
            effects = tracing::field::Empty,
            faults = tracing::field::Empty,
        );
        let result = self
            .run_batch(batch, inputs, isolate)
            .instrument(span.clone())
            .await;
        if let Ok(out) = &result {
            span.record("effects", out.effects.len());
            span.record("faults", out.faults.len());
        }
        result
    }

    async fn run_batch(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
        isolate: bool,
    ) -> Result<BatchOutput, BatchError> {
        self.count("mdp_plugin_events_total", batch.len() as u64);
        let mut out = BatchOutput::default();
        match self.call(batch, inputs).await {
            Ok(effects) => out.effects = effects,
            Err(fault) => {
                fatal(&fault)?;
                out.faults.push(fault.clone());
                // An empty batch (an idle tick) has no event to isolate.
                if !isolate || batch.is_empty() {
                    return Ok(out);
                }
                tracing::warn!(plugin = %self.plugin.name, %fault, events = batch.len(), "batch failed; retrying once on a fresh instance");
                match self.call(batch, inputs).await {
                    Ok(effects) => out.effects = effects,
                    Err(fault) => {
                        fatal(&fault)?;
                        out.faults.push(fault.clone());
                        let limits = &self.plugin.limits;
                        self.isolation = (
                            limits.isolation_calls,
                            Instant::now() + limits.isolation_time,
                        );
                        self.poisoned.clear();
                        let isolated = self.isolate(batch, inputs, 0, fault, &mut out).await;
                        let poisoned = std::mem::take(&mut self.poisoned);
                        super::effects::log_batch(
                            &self.plugin.name,
                            "poison events rejected",
                            &poisoned,
                        );
                        isolated?;
                    }
                }
            }
        }
        // Count per kind once per batch, not per effect (labels allocate).
        let mut by_kind: [(&'static str, u64); 7] =
            ["put", "push", "zadd", "hset", "del", "publish", "reject"].map(|k| (k, 0));
        for e in &out.effects {
            if let Some(slot) = by_kind.iter_mut().find(|(k, _)| *k == kind(e)) {
                slot.1 += 1;
            }
        }
        for (k, n) in by_kind.into_iter().filter(|(_, n)| *n > 0) {
            metrics::counter!("mdp_plugin_effects_total", "plugin" => self.plugin.name.to_string(), "kind" => k)
                .increment(n);
        }
        Ok(out)
    }

    /// Shift the input indexes of a sub-batch's effects (`len` events that
    /// start at `start` in the whole batch); effects naming an index outside
    /// the sub-batch are refused, logged and counted.
    fn shift(&self, effects: &mut Vec<Effect>, start: usize, len: usize) {
        // Batches are far smaller than u32::MAX events; saturate rather than wrap.
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let denied = shift(effects, to_u32(start), to_u32(len));
        super::effects::log_batch(&self.plugin.name, "effects refused", &denied);
        self.count("mdp_plugin_bad_index_effects_total", denied.len() as u64);
    }

    /// `batch[..]` (starting at `offset` in the whole batch) failed with
    /// `fault`: bisect it, keep the effects of parts that succeed, reject the
    /// single events that still fail.
    async fn isolate(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
        offset: usize,
        fault: CallFault,
        out: &mut BatchOutput,
    ) -> Result<(), BatchError> {
        if batch.len() == 1 {
            self.poisoned.push(format!("event {offset}: {fault}"));
            self.count("mdp_plugin_poison_events_total", 1);
            out.effects.push(Effect::Reject(
                super::bindings::mdp::analyzer::types::Reject {
                    index: offset as u32,
                    reason: fault.to_string(),
                },
            ));
            return Ok(());
        }
        let mid = batch.len() / 2;
        for (part, from) in [(&batch[..mid], 0), (&batch[mid..], mid)] {
            let texts = sub(inputs, from, part.len());
            let start = offset + from;
            self.spend_isolation()?;
            match self.call(part, texts).await {
                Ok(mut effects) => {
                    self.shift(&mut effects, start, part.len());
                    out.effects.extend(effects);
                }
                Err(f) => {
                    fatal(&f)?;
                    Box::pin(self.isolate(part, texts, start, f, out)).await?;
                }
            }
        }
        Ok(())
    }
}

impl Worker {
    /// Take one call from the current batch's isolation budget, or give up:
    /// the breaker opens (see `LiveWorker`) and the batch is retried later.
    fn spend_isolation(&mut self) -> Result<(), BatchError> {
        let limits = &self.plugin.limits;
        let (left, until) = &mut self.isolation;
        if *left == 0 || Instant::now() > *until {
            self.count("mdp_plugin_isolation_exhausted_total", 1);
            return Err(BatchError::Isolation(format!(
                "the batch still fails after {} isolation calls or {:?} (limits isolation_calls, isolation_ms)",
                limits.isolation_calls, limits.isolation_time
            )));
        }
        *left -= 1;
        Ok(())
    }
}

/// The input texts of the `len` events from `start` (empty when unknown).
fn sub(inputs: &[Arc<str>], start: usize, len: usize) -> &[Arc<str>] {
    inputs.get(start..start + len).unwrap_or(&[])
}

/// Faults that are not the batch's fault end the attempt: the caller retries later.
fn fatal(fault: &CallFault) -> Result<(), BatchError> {
    match fault {
        CallFault::Host(h) => Err(BatchError::Host(h.clone())),
        CallFault::NotReady(r) => Err(BatchError::NotReady(r.clone())),
        _ => Ok(()),
    }
}
