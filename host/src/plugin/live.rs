//! [`LiveWorker`]: what a consumer holds. It follows its plugin's slot,
//! switching to a new generation at a batch boundary (handing over the
//! snapshot when the state versions match), keeps the previous generation as
//! a fallback while the new one is on probation, and opens a circuit breaker
//! when the plugin keeps crashing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::bindings::Event;
use super::registry::{Generation, PluginSlot};
use super::{BatchError, BatchOutput, HostServices, Plugin, Worker};

/// Batches a new generation must pass cleanly before its predecessor is dropped.
pub const PROBATION_BATCHES: u32 = 3;
/// Crashes within [`BREAKER_WINDOW`] that open the circuit breaker.
pub const BREAKER_CRASHES: usize = 5;
/// The window crashes are counted in.
pub const BREAKER_WINDOW: Duration = Duration::from_secs(60);

/// Why a live worker gave no output for a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LiveError {
    /// The batch failed; retry it later.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The plugin keeps crashing: stop feeding it until the given time.
    #[error("circuit breaker open for plugin `{plugin}` for {wait:?}")]
    CircuitOpen {
        /// The plugin.
        plugin: String,
        /// How long to wait before trying again.
        wait: Duration,
    },
    /// The plugin was removed from the plugin directory: stop consuming.
    #[error("plugin `{0}` was removed")]
    Removed(String),
}

struct Breaker {
    crashes: VecDeque<Instant>,
    open_until: Option<Instant>,
    backoff: Duration,
}

impl Breaker {
    fn new() -> Self {
        Breaker {
            crashes: VecDeque::new(),
            open_until: None,
            backoff: Duration::from_secs(1),
        }
    }

    fn record(&mut self, crashes: usize, plugin: &str) {
        let now = Instant::now();
        for _ in 0..crashes {
            self.crashes.push_back(now);
        }
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > BREAKER_WINDOW)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() >= BREAKER_CRASHES {
            let reason = format!("{} crashes within {BREAKER_WINDOW:?}", self.crashes.len());
            self.trip(plugin, &reason);
        }
    }

    /// Open the breaker now; returns how long it stays open.
    fn trip(&mut self, plugin: &str, reason: &str) -> Duration {
        let wait = self.backoff;
        self.open_until = Some(Instant::now() + wait);
        tracing::error!(plugin, ?wait, %reason, "plugin keeps crashing; circuit breaker open");
        metrics::counter!("mdp_plugin_breaker_open_total", "plugin" => plugin.to_string())
            .increment(1);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
        self.crashes.clear();
        wait
    }

    fn check(&mut self) -> Option<Duration> {
        match self.open_until {
            Some(t) if t > Instant::now() => Some(t - Instant::now()),
            Some(_) => {
                self.open_until = None;
                None
            }
            None => None,
        }
    }

    fn healthy(&mut self) {
        if self.crashes.is_empty() {
            self.backoff = Duration::from_secs(1);
        }
    }
}

/// A worker that follows its plugin slot.
pub struct LiveWorker {
    slot: Arc<PluginSlot>,
    changes: watch::Receiver<u64>,
    services: HostServices,
    generation: Arc<Generation>,
    worker: Worker,
    fallback: Option<(Arc<Generation>, Worker)>,
    probation: u32,
    breaker: Breaker,
    switches: u64,
}

fn worker_for(generation: &Arc<Generation>, services: &HostServices) -> Worker {
    Worker::new(
        generation.plugin.clone(),
        services.clone(),
        generation.manifest.config_pairs(),
    )
}

impl LiveWorker {
    /// Follow `slot`, starting with its current generation.
    pub fn new(slot: Arc<PluginSlot>, services: HostServices) -> Result<Self, LiveError> {
        let generation = slot
            .current()
            .ok_or_else(|| LiveError::Removed(slot.name().to_string()))?;
        let changes = slot.subscribe();
        Ok(LiveWorker {
            worker: worker_for(&generation, &services),
            slot,
            changes,
            services,
            generation,
            fallback: None,
            probation: 0,
            breaker: Breaker::new(),
            switches: 0,
        })
    }

    /// The plugin currently run.
    pub fn services(&self) -> &HostServices {
        &self.services
    }

    /// The plugin of the generation in use.
    pub fn plugin(&self) -> &Arc<Plugin> {
        self.worker.plugin()
    }

    /// The generation number currently run.
    pub fn generation(&self) -> u64 {
        self.generation.number
    }

    /// Generation switches so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Instantiate and `init` the current generation now.
    pub async fn start(&mut self) -> Result<(), LiveError> {
        self.worker.start().await.map_err(LiveError::from)
    }

    /// Switch to the slot's current generation if it changed (call between batches).
    pub async fn refresh(&mut self) -> Result<(), LiveError> {
        if !self.changes.has_changed().unwrap_or(false) {
            return Ok(());
        }
        self.changes.borrow_and_update();
        let Some(next) = self.slot.current() else {
            return Err(LiveError::Removed(self.slot.name().to_string()));
        };
        if next.number == self.generation.number {
            return Ok(());
        }
        let mut worker = worker_for(&next, &self.services);
        let same_state =
            next.plugin.info.state_version == self.generation.plugin.info.state_version;
        if same_state {
            let state = self.worker.snapshot().await;
            if !state.is_empty() {
                worker.hand_over(state);
            }
        }
        tracing::info!(plugin = %self.slot.name(), from = self.generation.number, to = next.number, handed_over = same_state, "switching generation at batch boundary");
        let old = std::mem::replace(&mut self.worker, worker);
        let old_generation = std::mem::replace(&mut self.generation, next);
        // A rollback returns to an older generation: no probation for it.
        let rolled_back = old_generation.number > self.generation.number;
        self.fallback = if rolled_back {
            None
        } else {
            Some((old_generation, old))
        };
        self.probation = if rolled_back { 0 } else { PROBATION_BATCHES };
        self.switches += 1;
        Ok(())
    }

    /// Analyze a batch with the current generation. During probation a
    /// batch the new generation fails by its own fault marks it bad (rolling
    /// the slot back) and is run again on the previous generation; a host
    /// error (store down) is returned for a later retry without blaming it.
    pub async fn analyze(&mut self, batch: &[Event]) -> Result<BatchOutput, LiveError> {
        self.analyze_texts(batch, &[]).await
    }

    /// [`LiveWorker::analyze`], knowing each event's input text (see
    /// [`Worker::analyze_texts`]).
    pub async fn analyze_texts(
        &mut self,
        batch: &[Event],
        inputs: &[std::sync::Arc<str>],
    ) -> Result<BatchOutput, LiveError> {
        if let Some(wait) = self.breaker.check() {
            return Err(LiveError::CircuitOpen {
                plugin: self.slot.name().to_string(),
                wait,
            });
        }
        let result = if self.probation > 0 {
            self.worker.analyze_strict(batch, inputs).await
        } else {
            self.worker.analyze_texts(batch, inputs).await
        };
        let crashed = match &result {
            Ok(out) => out.faults.iter().filter(|f| f.is_crash()).count(),
            Err(BatchError::Start(_)) => 1,
            Err(_) => 0,
        };
        if self.probation > 0 {
            // Only the plugin's own faults (trap, timeout, memory, output
            // caps, analyzer errors, a failing init) count against a new
            // generation: a store or queue blip (BatchError::Host) or a
            // not-ready analyzer neither passes nor fails its probation.
            if crashed > 0 {
                if let Some((generation, worker)) = self.fallback.take() {
                    let reason = match &result {
                        Ok(out) => out
                            .faults
                            .iter()
                            .find(|f| f.is_crash())
                            .map(|f| f.to_string())
                            .unwrap_or_default(),
                        Err(e) => e.to_string(),
                    };
                    self.slot.report_bad(self.generation.number, &reason);
                    self.changes.borrow_and_update();
                    self.generation = generation;
                    self.worker = worker;
                    self.probation = 0;
                    self.switches += 1;
                    return self
                        .worker
                        .analyze_texts(batch, inputs)
                        .await
                        .map_err(LiveError::from);
                }
            } else if result.is_ok() {
                self.probation -= 1;
                if self.probation == 0 {
                    self.fallback = None;
                }
            }
        }
        if let Err(BatchError::Isolation(reason)) = &result {
            // Bisecting further would cost more calls than the batch is worth.
            let wait = self.breaker.trip(self.slot.name(), reason);
            return Err(LiveError::CircuitOpen {
                plugin: self.slot.name().to_string(),
                wait,
            });
        }
        if crashed > 0 {
            self.breaker.record(crashed, self.slot.name());
        } else {
            self.breaker.healthy();
        }
        result.map_err(LiveError::from)
    }

    /// Snapshot of the live instance.
    pub async fn snapshot(&mut self) -> Vec<u8> {
        self.worker.snapshot().await
    }
}
