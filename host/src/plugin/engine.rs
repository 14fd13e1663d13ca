//! The one wasmtime [`Engine`] of a process, its [`Linker`], the epoch ticker
//! thread, and compilation with an authenticated compiled-artifact cache
//! ([`super::artifact_cache`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::artifact_cache::{ArtifactCache, CacheKey};
use super::bindings::Analyzer;
use super::host_state::HostState;
use super::share::PluginShare;

/// How often the epoch ticker thread advances the engine's epoch.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Settings of the plugin engine.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Use the pooling instance allocator (falls back to on-demand when the
    /// address space cannot be reserved).
    pub pooling: bool,
    /// Largest linear memory any plugin may have (per-plugin limits are lower).
    pub max_memory_bytes: usize,
    /// Component instances the pool holds at once.
    pub pool_instances: u32,
    /// Live instances one plugin (by name) may hold at once: its share of
    /// the pool, so one plugin cannot exhaust it for the others.
    pub instances_per_plugin: u32,
    /// Where compiled artifacts are cached (`None`: no cache). Never inside
    /// a plugin directory (see [`super::artifact_cache`]).
    pub cache_dir: Option<PathBuf>,
    /// The key that authenticates cached artifacts.
    pub cache_key: CacheKey,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            pooling: true,
            max_memory_bytes: 512 << 20,
            pool_instances: 64,
            instances_per_plugin: 16,
            cache_dir: None,
            cache_key: CacheKey::Host,
        }
    }
}

/// The plugin runtime of a process: engine, linker, epoch ticker.
/// Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    cache: Option<ArtifactCache>,
    shares: Mutex<HashMap<String, Arc<PluginShare>>>,
    pooling: bool,
    compat: String,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config
}

fn pooling_config(rc: &RuntimeConfig) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    let n = rc.pool_instances;
    pool.total_component_instances(n)
        .total_core_instances(n * 24)
        .total_memories(n * 4)
        .total_tables(n * 8)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .table_elements(100_000)
        .max_memory_size(rc.max_memory_bytes)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20);
    pool
}

impl Runtime {
    /// Build the engine (pooling if possible), the linker with WASI (no
    /// filesystem, no network) and the analyzer imports, and start the epoch
    /// ticker thread.
    pub fn new(rc: RuntimeConfig) -> Result<Runtime, PluginError> {
        let mut pooling = false;
        let mut engine = None;
        if rc.pooling {
            let mut config = base_config();
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(&rc)));
            match Engine::new(&config) {
                Ok(e) => {
                    pooling = true;
                    engine = Some(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation")
                }
            }
        }
        let engine = match engine {
            Some(e) => e,
            None => Engine::new(&base_config()).map_err(|e| PluginError::Engine(e.to_string()))?,
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        // WASI's monotonic clock is replaced by the host's virtual one (its
        // sleeps do not wait in real time); see `clock.rs`.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<
            _,
            HasSelf<HostState>,
        >(&mut linker, |s| s)
        .map_err(|e| PluginError::Engine(e.to_string()))?;
        linker.allow_shadowing(false);
        Analyzer::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;

        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };

        let cache = match &rc.cache_dir {
            Some(dir) => Some(
                ArtifactCache::open(dir, &rc.cache_key)
                    .map_err(|e| PluginError::ArtifactCache(e.to_string()))?,
            ),
            None => None,
        };

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            // A dedicated OS thread: a busy or blocked tokio worker must not stop epochs.
            std::thread::Builder::new()
                .name("mdp-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(format!("epoch ticker thread: {e}")))?;
        }

        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config: rc,
                cache,
                shares: Mutex::new(HashMap::new()),
                pooling,
                compat,
                ticker_stop,
            }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The linker with every import a plugin may use.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    /// True when the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.inner.pooling
    }

    /// The engine's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Compile component bytes (blocking: call from `spawn_blocking`), using
    /// the artifact cache when configured. Returns the component, the bytes'
    /// SHA-256 (hex) and whether it came from the cache.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, PluginError> {
        let started = Instant::now();
        check_is_component(bytes)?;
        let hash = hex::encode(Sha256::digest(bytes));
        let cache = self.inner.cache.as_ref();
        let name = self.artifact_name(&hash);
        if let Some(component) = cache.and_then(|c| c.load(&self.inner.engine, &name)) {
            return Ok(Compiled {
                component,
                hash,
                from_cache: true,
                took: started.elapsed(),
            });
        }
        let component = Component::new(&self.inner.engine, bytes)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        if let Some(cache) = cache
            && let Err(e) = cache.store(&name, &component)
        {
            tracing::warn!(path = %cache.path(&name).display(), error = %e, "could not cache compiled artifact");
        }
        Ok(Compiled {
            component,
            hash,
            from_cache: false,
            took: started.elapsed(),
        })
    }

    /// The share of the process plugin `name` holds (instances, counter
    /// names), the same for all its generations.
    pub fn share(&self, name: &str) -> Arc<PluginShare> {
        let mut shares = self.inner.shares.lock().unwrap_or_else(|p| p.into_inner());
        shares
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(PluginShare::new(
                    name,
                    self.inner.config.instances_per_plugin.max(1) as usize,
                ))
            })
            .clone()
    }

    /// The artifact cache, when configured.
    pub fn artifact_cache(&self) -> Option<&ArtifactCache> {
        self.inner.cache.as_ref()
    }

    /// The cache file name of the artifact of component bytes hashing to
    /// `hash`, for this engine (version and compatibility hash).
    pub fn artifact_name(&self, hash: &str) -> String {
        format!(
            "{hash}-wasmtime{}-{}.cwasm",
            wasmtime_version(),
            self.inner.compat
        )
    }
}

/// The wasmtime version this host was built with (from `Cargo.lock`, by the
/// build script).
pub fn wasmtime_version() -> &'static str {
    env!("MDP_WASMTIME_VERSION")
}

/// Refuse bytes that are not a WebAssembly component, with a clear reason.
fn check_is_component(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(PluginError::NotWasm);
    }
    // Core modules are version 1 layer 0; components are layer 1.
    if bytes[6..8] != [0x01, 0x00] {
        return Err(PluginError::NotAComponent);
    }
    Ok(())
}

/// A compiled component.
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// SHA-256 of the source bytes, hex.
    pub hash: String,
    /// True when loaded from the artifact cache.
    pub from_cache: bool,
    /// How long compiling (or loading) took.
    pub took: Duration,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wasmtime_version_is_the_locked_crates() {
        let version = super::wasmtime_version();
        let parts: Vec<u32> = version
            .split('.')
            .map(|p| p.parse().expect("numeric"))
            .collect();
        assert_eq!(parts.len(), 3, "{version}");
        let lock = include_str!("../../../Cargo.lock");
        assert!(
            lock.contains(&format!("name = \"wasmtime\"\nversion = \"{version}\"")),
            "{version}"
        );
    }
}
