//! A loaded plugin ([`Plugin`]: compiled, type-checked, described) and one
//! live instance of it ([`Instance`]: a wasmtime store with limits and a
//! deadline per call).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};

use super::PluginError;
use super::bindings::{Analyzer, AnalyzerError, AnalyzerPre, Effect, Event, Info, Kinds};
use super::capability::Capabilities;
use super::engine::Runtime;
use super::host_state::{HostFault, HostServices, HostState};
use super::limiter::{GROWTH_REFUSED, MemoryBudget};
use super::share::PluginShare;
use tokio::sync::OwnedSemaphorePermit;

/// Resource limits of one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// Guest time allowed per call, before scaling by batch length.
    pub deadline_base: Duration,
    /// Extra guest time allowed per event of a batch.
    pub deadline_per_event: Duration,
    /// Guest time allowed for `init` (rehydration).
    pub init_deadline: Duration,
    /// Largest batch accepted, events.
    pub max_batch: usize,
    /// Batches a processor may have between analysis and acknowledgement at
    /// once. Above 1, batch N+1 is analyzed while batch N's writes are being
    /// applied, so the plugin must not need to read its own latest writes
    /// back through the cache imports (it keeps its state in memory).
    pub batches_in_flight: usize,
    /// Wall-clock time one call may take, time in host imports (cache,
    /// reference data) included; past it the call is abandoned, its
    /// instance dropped, and the batch handled as a timeout. Never less
    /// than the call's guest-time deadline.
    pub wall_budget: Duration,
    /// Calls a failing batch's poison-event isolation (bisection) may make
    /// before it gives up and the plugin's circuit breaker opens.
    pub isolation_calls: usize,
    /// Time a failing batch's isolation may take before it gives up.
    pub isolation_time: Duration,
    /// Most effects one call may return; more is a fault of the plugin.
    pub max_effects: usize,
    /// Most bytes one call's effects may resolve to (keys, channels, bodies
    /// with `input` bodies counted at their input's length, members, fields);
    /// more is a fault of the plugin.
    pub max_output_bytes: usize,
    /// Idle tick: when set, a queue processor that has analyzed a batch and
    /// then receives nothing for this long calls `analyze` once with an
    /// empty batch, so the plugin can do deferred work (boards, flushes)
    /// after a burst instead of in the middle of it.
    pub idle_tick: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            deadline_base: Duration::from_millis(50),
            deadline_per_event: Duration::from_micros(200),
            init_deadline: Duration::from_secs(5),
            max_batch: 10_000,
            batches_in_flight: 1,
            wall_budget: DEFAULT_WALL_BUDGET,
            isolation_calls: DEFAULT_ISOLATION_CALLS,
            isolation_time: DEFAULT_ISOLATION_TIME,
            max_effects: DEFAULT_MAX_EFFECTS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_MIB << 20,
            idle_tick: None,
        }
    }
}

/// Default of [`Limits::wall_budget`].
pub const DEFAULT_WALL_BUDGET: Duration = Duration::from_secs(5);
/// Default of [`Limits::isolation_calls`]: enough to find a handful of
/// poison events in a batch of thousands.
pub const DEFAULT_ISOLATION_CALLS: usize = 64;
/// Default of [`Limits::isolation_time`].
pub const DEFAULT_ISOLATION_TIME: Duration = Duration::from_secs(10);
/// Default of [`Limits::max_effects`].
pub const DEFAULT_MAX_EFFECTS: usize = 100_000;
/// Default of [`Limits::max_output_bytes`], MiB.
pub const DEFAULT_MAX_OUTPUT_MIB: usize = 32;

impl Limits {
    /// Guest time allowed for a batch of `len` events.
    pub fn deadline_for(&self, len: usize) -> Duration {
        self.deadline_base + self.deadline_per_event * len as u32
    }

    /// wasmtime's hostcall fuel: the bytes one guest-to-host transfer (an
    /// import's arguments, or `analyze`'s returned effects as lifted into
    /// host values) may allocate. Sized to what the output caps allow, so a
    /// flood is cut while it is being copied rather than after.
    pub fn hostcall_fuel(&self) -> usize {
        let effects = self
            .max_effects
            .saturating_mul(std::mem::size_of::<Effect>());
        self.max_output_bytes
            .saturating_mul(2)
            .saturating_add(effects)
            .saturating_add(1 << 20)
    }

    /// Check one call's `effects` against the output caps; `inputs[i]` is
    /// the text of input `i` (empty when unknown).
    pub fn check_output(&self, effects: &[Effect], inputs: &[Arc<str>]) -> Result<(), CallFault> {
        if effects.len() > self.max_effects {
            return Err(CallFault::OutputLimit(format!(
                "{} effects, over max_effects = {}",
                effects.len(),
                self.max_effects
            )));
        }
        let mut bytes = 0usize;
        for effect in effects {
            bytes = bytes.saturating_add(super::effects::output_bytes(effect, inputs));
            if bytes > self.max_output_bytes {
                return Err(CallFault::OutputLimit(format!(
                    "effects resolve to over {} MiB, over max_output_mib = {}",
                    self.max_output_bytes >> 20,
                    self.max_output_bytes >> 20
                )));
            }
        }
        Ok(())
    }
}

/// What an analyzer says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Kinds of event consumed.
    pub consumes: Vec<&'static str>,
    /// Snapshot format version.
    pub state_version: u32,
}

impl From<Info> for PluginInfo {
    fn from(info: Info) -> Self {
        let mut consumes = Vec::new();
        for (flag, name) in [
            (Kinds::TRADE, "trade"),
            (Kinds::QUOTE, "quote"),
            (Kinds::AGGREGATE, "aggregate"),
            (Kinds::LULD, "luld"),
            (Kinds::OTHER, "other"),
        ] {
            if info.consumes.contains(flag) {
                consumes.push(name);
            }
        }
        PluginInfo {
            name: info.name,
            version: info.version,
            consumes,
            state_version: info.state_version,
        }
    }
}

/// A compiled, type-checked plugin, ready to instantiate (cheap, from `InstancePre`).
pub struct Plugin {
    pub(crate) runtime: Runtime,
    pub(crate) pre: AnalyzerPre<HostState>,
    /// What `describe` returned.
    pub info: PluginInfo,
    /// SHA-256 of the component bytes, hex.
    pub hash: String,
    /// Limits applied to every instance.
    pub limits: Limits,
    /// Capabilities enforced on its effects.
    pub capabilities: Arc<Capabilities>,
    /// Name used in logs and metrics (the manifest name, else `describe`'s).
    pub name: Arc<str>,
    /// Reference data warmed for a batch's new symbols before analysis.
    pub reference_prefetch: Arc<[super::ReferenceKind]>,
    /// Its share of the process (instances, counter names), by name.
    pub share: Arc<PluginShare>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("info", &self.info)
            .field("hash", &self.hash)
            .finish()
    }
}

/// Options for [`Plugin::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Name for logs and metrics (default: the name `describe` returns).
    pub name: Option<String>,
    /// Limits (default: [`Limits::default`]).
    pub limits: Limits,
    /// Capabilities (default: unrestricted).
    pub capabilities: Capabilities,
    /// Reference data a processor warms for a batch's new symbols before
    /// the analyzer runs (manifest `reference_prefetch`).
    pub reference_prefetch: Vec<super::ReferenceKind>,
}

impl Plugin {
    /// Compile (or load from the artifact cache) and type-check `bytes`, then
    /// instantiate once to call `describe`. Compilation runs on a blocking
    /// thread so async workers are not starved.
    pub async fn load(
        runtime: &Runtime,
        bytes: Vec<u8>,
        options: LoadOptions,
        services: &HostServices,
    ) -> Result<Arc<Plugin>, PluginError> {
        let rt = runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || rt.compile(&bytes))
            .await
            .map_err(|e| PluginError::Compile(format!("compile task failed: {e}")))??;
        metrics::histogram!("mdp_plugin_compile_seconds", "cached" => compiled.from_cache.to_string())
            .record(compiled.took.as_secs_f64());
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&compiled.component)
            .map_err(|e| PluginError::WrongWorld(format!("{e:#}")))?;
        let pre = AnalyzerPre::new(instance_pre)
            .map_err(|e| PluginError::WrongWorld(format!("{e:#}")))?;
        let mut plugin = Plugin {
            runtime: runtime.clone(),
            pre,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                consumes: Vec::new(),
                state_version: 0,
            },
            hash: compiled.hash.clone(),
            limits: options.limits,
            capabilities: Arc::new(options.capabilities),
            reference_prefetch: options.reference_prefetch.into(),
            share: runtime.share(options.name.as_deref().unwrap_or(&compiled.hash)),
            name: Arc::from(options.name.clone().unwrap_or_default()),
        };
        let mut instance = Instance::new(&plugin, services).await?;
        let info = instance
            .describe()
            .await
            .map_err(|f| PluginError::Describe(f.to_string()))?;
        drop(instance);
        plugin.info = PluginInfo::from(info);
        if options.name.is_none() {
            plugin.name = Arc::from(plugin.info.name.as_str());
            plugin.share = runtime.share(&plugin.name);
        }
        tracing::info!(
            plugin = %plugin.name, version = %plugin.info.version, hash = %&plugin.hash[..12],
            cached = compiled.from_cache, compile_ms = compiled.took.as_millis() as u64,
            "plugin loaded"
        );
        Ok(Arc::new(plugin))
    }

    /// The labels of this plugin's metrics.
    pub fn metric_labels(&self) -> [(&'static str, String); 3] {
        [
            ("plugin", self.name.to_string()),
            ("version", self.info.version.clone()),
            ("hash", self.hash[..12.min(self.hash.len())].to_string()),
        ]
    }
}

/// Why a call into the plugin did not return effects.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallFault {
    /// The guest trapped (panic, `unreachable`, out of bounds, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The guest ran past its deadline and was interrupted.
    #[error("plugin exceeded its deadline of {0:?}")]
    Timeout(Duration),
    /// The call (host imports included) ran past its wall-clock budget.
    #[error("plugin exceeded its wall-clock budget of {0:?} (time in host imports included)")]
    WallClock(Duration),
    /// The guest tried to grow memory past its limit.
    #[error("plugin exceeded its memory limit of {0} MiB")]
    MemoryLimit(usize),
    /// The call's output was over the plugin's caps.
    #[error("plugin exceeded its output cap: {0}")]
    OutputLimit(String),
    /// The analyzer returned an error.
    #[error("analyzer error: {0}")]
    Analyzer(String),
    /// The analyzer is not ready (e.g. reference data missing): retry later.
    #[error("analyzer not ready: {0}")]
    NotReady(String),
    /// The host's own infrastructure failed (e.g. the store is down).
    #[error("{0}")]
    Host(String),
}

impl CallFault {
    /// True when the plugin is to blame (a crash or misbehaviour).
    pub fn is_crash(&self) -> bool {
        matches!(
            self,
            CallFault::Trap(_)
                | CallFault::Timeout(_)
                | CallFault::WallClock(_)
                | CallFault::MemoryLimit(_)
                | CallFault::OutputLimit(_)
                | CallFault::Analyzer(_)
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// One live instance of a plugin. A fault poisons it: drop it and make another.
pub struct Instance {
    /// One of the plugin's instance slots, held while the instance lives.
    _slot: OwnedSemaphorePermit,
    store: Store<HostState>,
    bindings: Analyzer,
    limits: Limits,
    call_started: Arc<std::sync::Mutex<(Instant, Duration)>>,
}

/// Instantiations tried when the kernel answers busy (see [`Instance::new`]).
const BUSY_ATTEMPTS: u32 = 3;

/// Whether an instantiation failed on a transient `EBUSY` from the kernel:
/// sealing the memfd of a module's memory image can find its pages pinned
/// for a moment (page migration, reclaim), and a later try succeeds.
fn kernel_busy(e: &wasmtime::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ResourceBusy)
    })
}

impl Instance {
    /// Instantiate `plugin` (from its `InstancePre`) with fresh state; an
    /// instantiation the kernel refused as busy is tried again, up to
    /// three times in all.
    pub async fn new(plugin: &Plugin, services: &HostServices) -> Result<Instance, PluginError> {
        let mut attempt = 1;
        loop {
            match Self::instantiate(plugin, services).await {
                Ok(instance) => return Ok(instance),
                Err((e, true)) if attempt < BUSY_ATTEMPTS => {
                    tracing::warn!(plugin = %plugin.name, attempt, error = %e, "instantiation refused as busy by the kernel; trying again");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One instantiation; on failure, the error and whether it was
    /// [`kernel_busy`].
    async fn instantiate(
        plugin: &Plugin,
        services: &HostServices,
    ) -> Result<Instance, (PluginError, bool)> {
        let started = Instant::now();
        let slot = plugin
            .share
            .acquire_instance()
            .map_err(|e| (PluginError::Instantiate(e), false))?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(plugin.limits.memory_bytes)
            .instances(64)
            .memories(8)
            .tables(16)
            .table_elements(200_000)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState::new(
            plugin.name.clone(),
            services.clone(),
            plugin.capabilities.clone(),
            MemoryBudget::new(limits, plugin.limits.memory_bytes),
            plugin.share.clone(),
        );
        let mut store = Store::new(plugin.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_hostcall_fuel(plugin.limits.hostcall_fuel());
        let call_started = Arc::new(std::sync::Mutex::new((
            Instant::now(),
            Duration::from_secs(3600),
        )));
        let budget = call_started.clone();
        store.epoch_deadline_callback(move |ctx| {
            let (start, allowed) = *budget.lock().unwrap_or_else(|p| p.into_inner());
            let spent = start.elapsed().saturating_sub(ctx.data().import_time);
            if spent > allowed {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        let bindings = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| (PluginError::Instantiate(format!("{e:#}")), kernel_busy(&e)))?;
        metrics::histogram!("mdp_plugin_instantiate_seconds", "plugin" => plugin.name.to_string())
            .record(started.elapsed().as_secs_f64());
        Ok(Instance {
            _slot: slot,
            store,
            bindings,
            limits: plugin.limits.clone(),
            call_started,
        })
    }

    fn arm(&mut self, allowed: Duration) {
        *self.call_started.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), allowed);
        self.store.data_mut().import_time = Duration::ZERO;
        self.store.data().stderr.clear();
        self.store.set_epoch_deadline(1);
    }

    fn classify(&self, error: wasmtime::Error, allowed: Duration) -> CallFault {
        if let Some(fault) = error.downcast_ref::<HostFault>() {
            return CallFault::Host(fault.to_string());
        }
        if error.downcast_ref::<DeadlineExceeded>().is_some()
            || matches!(
                error.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            )
        {
            return CallFault::Timeout(allowed);
        }
        let text = format!("{error:#}");
        if text.contains(GROWTH_REFUSED) {
            return CallFault::MemoryLimit(self.limits.memory_bytes >> 20);
        }
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return CallFault::OutputLimit(format!(
                "copied more than {} MiB from the guest in one transfer (hostcall fuel, from max_effects and max_output_mib)",
                self.limits.hostcall_fuel() >> 20
            ));
        }
        let trap = error
            .downcast_ref::<wasmtime::Trap>()
            .map(|t| t.to_string())
            .unwrap_or_else(|| text.lines().next().unwrap_or("unknown").to_string());
        match self.store.data().last_stderr_line() {
            Some(line) => CallFault::Trap(format!("{trap} ({line})")),
            None => CallFault::Trap(trap),
        }
    }

    /// The wall-clock budget of a call whose guest time is `allowed`.
    fn wall(&self, allowed: Duration) -> Duration {
        self.limits.wall_budget.max(allowed)
    }

    /// Call `describe`.
    pub async fn describe(&mut self) -> Result<Info, CallFault> {
        let allowed = self.limits.init_deadline;
        self.arm(allowed);
        let wall = self.wall(allowed);
        let result = within(wall, self.bindings.call_describe(&mut self.store)).await?;
        result.map_err(|e| self.classify(e, allowed))
    }

    /// Call `init` with config and an optional snapshot.
    pub async fn init(
        &mut self,
        config: &[(String, String)],
        state: Option<&[u8]>,
    ) -> Result<(), CallFault> {
        let allowed = self.limits.init_deadline;
        self.arm(allowed);
        let wall = self.wall(allowed);
        let state = state.map(|s| s.to_vec());
        let result = within(
            wall,
            self.bindings
                .call_init(&mut self.store, config, state.as_deref()),
        )
        .await?;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(analyzer_fault(e)),
            Err(e) => Err(self.classify(e, allowed)),
        }
    }

    /// Call `analyze` on a batch, under a deadline scaled by its length;
    /// `inputs[i]` is the text of `batch[i]` (served by `host.input-json`;
    /// empty when unknown).
    pub async fn analyze(
        &mut self,
        batch: &[Event],
        inputs: &[Arc<str>],
    ) -> Result<Vec<Effect>, CallFault> {
        let allowed = self.limits.deadline_for(batch.len());
        self.arm(allowed);
        let wall = self.wall(allowed);
        self.store.data_mut().inputs = inputs.to_vec();
        let result = within(wall, self.bindings.call_analyze(&mut self.store, batch)).await;
        self.store.data_mut().inputs.clear();
        match result? {
            Ok(Ok(effects)) => Ok(effects),
            Ok(Err(e)) => Err(analyzer_fault(e)),
            Err(e) => Err(self.classify(e, allowed)),
        }
    }

    /// Call `snapshot`.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>, CallFault> {
        let allowed = self.limits.init_deadline;
        self.arm(allowed);
        let wall = self.wall(allowed);
        let result = within(wall, self.bindings.call_snapshot(&mut self.store)).await?;
        result.map_err(|e| self.classify(e, allowed))
    }

    /// Counters the plugin incremented in this instance.
    pub fn counters(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.store.data().counters
    }
}

/// Run a call under its wall-clock budget. Past it the call's future is
/// dropped mid-flight: the instance must not be used again (the worker drops
/// it on any fault).
async fn within<T>(wall: Duration, call: impl Future<Output = T>) -> Result<T, CallFault> {
    tokio::time::timeout(wall, call)
        .await
        .map_err(|_| CallFault::WallClock(wall))
}

fn analyzer_fault(e: AnalyzerError) -> CallFault {
    match e {
        AnalyzerError::NotReady(s) => CallFault::NotReady(s),
        AnalyzerError::BadConfig(s) => CallFault::Analyzer(format!("bad config: {s}")),
        AnalyzerError::Internal(s) => CallFault::Analyzer(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error like memfd's: a wrapper whose source is the kernel's answer.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot add seals to the memfd")]
    struct Seals(#[source] std::io::Error);

    #[test]
    fn only_a_busy_kernel_answer_is_tried_again() {
        let busy = std::io::Error::from(std::io::ErrorKind::ResourceBusy);
        let e = wasmtime::Error::new(Seals(busy)).context("instantiate");
        assert!(kernel_busy(&e));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!kernel_busy(&wasmtime::Error::new(Seals(denied))));
        assert!(!kernel_busy(&wasmtime::Error::msg("trap in start")));
    }

    #[test]
    fn default_hostcall_fuel_is_below_wasmtimes_default() {
        let fuel = Limits::default().hostcall_fuel();
        println!("default hostcall fuel: {} MiB", fuel >> 20);
        assert!(fuel < 128 << 20, "{fuel}");
    }
}
