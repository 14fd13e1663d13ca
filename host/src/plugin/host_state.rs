//! Per-instance host state and the implementation of the plugin's imports
//! (`cache`, `reference`, `host`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::mdp::analyzer::{cache, host, reference, types};
use super::bindings::{MarketStatus, ReferenceError};
use super::capability::Capabilities;
use super::clock::{Clock, WasiClocks};
use super::limiter::MemoryBudget;
use super::reference::{ReferenceData, ReferenceFault};
use super::share::PluginShare;
use crate::store::Store;

/// A failure of the host's own infrastructure during a plugin call (e.g. the
/// store is down). It aborts the call; the batch is retried later and the
/// plugin is not blamed.
#[derive(Debug, thiserror::Error)]
#[error("host fault during `{import}`: {detail}")]
pub struct HostFault {
    /// The import that failed.
    pub import: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// What the host offers one plugin instance.
#[derive(Clone)]
pub struct HostServices {
    /// The store cache reads go to.
    pub store: Arc<dyn Store>,
    /// Reference data.
    pub reference: Arc<dyn ReferenceData>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

/// Lines a plugin may log per second before the rest are dropped (and counted).
const LOG_LINES_PER_SEC: u32 = 100;
/// Bytes of a plugin call's stderr kept for trap reports (the newest ones).
const STDERR_CAPACITY: usize = 64 << 10;
/// Longest log line kept, in bytes.
const LOG_LINE_MAX: usize = 1024;

/// The data of a plugin's wasmtime `Store`.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) stderr: StderrTail,
    clocks: WasiClocks,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryBudget,
    share: Arc<PluginShare>,
    pub(crate) plugin: Arc<str>,
    pub(crate) services: HostServices,
    pub(crate) capabilities: Arc<Capabilities>,
    /// Time spent awaiting host imports during the current call (not charged
    /// to the plugin's deadline).
    pub(crate) import_time: Duration,
    /// Counters the plugin incremented, by name (for `mdp plugin test`).
    pub(crate) counters: BTreeMap<String, u64>,
    log_window: (Instant, u32),
    read_denied_logged: bool,
    /// Log lines dropped by the rate limit.
    pub(crate) logs_dropped: u64,
    /// The input texts of the batch being analyzed (`host.input-json`);
    /// empty between calls.
    pub(crate) inputs: Vec<Arc<str>>,
}

impl HostState {
    /// State for one instance of `plugin`.
    pub fn new(
        plugin: Arc<str>,
        services: HostServices,
        capabilities: Arc<Capabilities>,
        limits: MemoryBudget,
        share: Arc<PluginShare>,
    ) -> Self {
        // No filesystem, no network, no environment: a plugin's only way out
        // is its imports. stdout is discarded; the tail of each call's stderr
        // is kept so a trap can be reported with the guest's panic message.
        let stderr = StderrTail::new(STDERR_CAPACITY);
        let clocks = WasiClocks::new(services.clock.clone());
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(clocks.clone())
            .monotonic_clock(clocks.clone())
            .build();
        HostState {
            wasi,
            stderr,
            clocks,
            table: ResourceTable::new(),
            limits,
            share,
            plugin,
            services,
            capabilities,
            import_time: Duration::ZERO,
            counters: BTreeMap::new(),
            log_window: (Instant::now(), 0),
            read_denied_logged: false,
            logs_dropped: 0,
            inputs: Vec::new(),
        }
    }

    /// The last line the guest wrote to stderr (e.g. a panic message).
    pub fn last_stderr_line(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("note:"))
            .map(|l| l.trim().to_string())
    }

    /// True (counted, logged once per instance) when the plugin may not
    /// read `key`: the read then sees nothing.
    fn read_denied(&mut self, key: &str) -> bool {
        let Err(denied) = self.capabilities.check_read(key) else {
            return false;
        };
        metrics::counter!("mdp_plugin_capability_denied_total", "plugin" => self.plugin.to_string())
            .increment(1);
        if !self.read_denied_logged {
            self.read_denied_logged = true;
            tracing::warn!(plugin = %self.plugin, %denied, "cache read refused (reads outside read_prefixes see nothing; logged once per instance)");
        }
        true
    }

    async fn timed<T>(&mut self, f: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = f.await;
        self.import_time += start.elapsed();
        out
    }

    fn store_fault(import: &'static str, e: crate::store::StoreError) -> wasmtime::Error {
        wasmtime::Error::new(HostFault {
            import,
            detail: e.to_string(),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl cache::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        if self.read_denied(&key) {
            return Ok(None);
        }
        let store = self.services.store.clone();
        self.timed(store.get(&key))
            .await
            .map_err(|e| Self::store_fault("cache.get", e))
    }

    async fn get_many(&mut self, keys: Vec<String>) -> wasmtime::Result<Vec<Option<String>>> {
        let allowed: Vec<bool> = keys.iter().map(|k| !self.read_denied(k)).collect();
        let readable: Vec<String> = keys
            .into_iter()
            .zip(&allowed)
            .filter(|(_, ok)| **ok)
            .map(|(k, _)| k)
            .collect();
        let store = self.services.store.clone();
        let mut values = self
            .timed(store.get_many(&readable))
            .await
            .map_err(|e| Self::store_fault("cache.get-many", e))?
            .into_iter();
        Ok(allowed
            .into_iter()
            .map(|ok| if ok { values.next().flatten() } else { None })
            .collect())
    }

    async fn ztop(&mut self, key: String, n: u32) -> wasmtime::Result<Vec<(String, f64)>> {
        if self.read_denied(&key) {
            return Ok(Vec::new());
        }
        let store = self.services.store.clone();
        self.timed(store.ztop(&key, n))
            .await
            .map_err(|e| Self::store_fault("cache.ztop", e))
    }

    async fn hgetall(&mut self, key: String) -> wasmtime::Result<Vec<(String, String)>> {
        if self.read_denied(&key) {
            return Ok(Vec::new());
        }
        let store = self.services.store.clone();
        self.timed(store.hgetall(&key))
            .await
            .map_err(|e| Self::store_fault("cache.hgetall", e))
    }

    async fn lrange(
        &mut self,
        key: String,
        start: i32,
        stop: i32,
    ) -> wasmtime::Result<Vec<String>> {
        if self.read_denied(&key) {
            return Ok(Vec::new());
        }
        let store = self.services.store.clone();
        self.timed(store.lrange(&key, i64::from(start), i64::from(stop)))
            .await
            .map_err(|e| Self::store_fault("cache.lrange", e))
    }

    async fn try_acquire(&mut self, key: String, ttl_ms: u32) -> wasmtime::Result<bool> {
        if let Err(denied) = self.capabilities.check_key(&key) {
            tracing::warn!(plugin = %self.plugin, %denied, "try-acquire refused");
            metrics::counter!("mdp_plugin_capability_denied_total", "plugin" => self.plugin.to_string())
                .increment(1);
            return Ok(false);
        }
        let store = self.services.store.clone();
        self.timed(store.set_nx_px(&key, "1", u64::from(ttl_ms)))
            .await
            .map_err(|e| Self::store_fault("cache.try-acquire", e))
    }
}

fn reference_error(fault: ReferenceFault) -> ReferenceError {
    match fault {
        ReferenceFault::Unavailable(s) => ReferenceError::Unavailable(s),
        ReferenceFault::Invalid(s) => ReferenceError::Invalid(s),
    }
}

impl reference::Host for HostState {
    async fn ticker_snapshot(
        &mut self,
        symbol: String,
    ) -> wasmtime::Result<Result<Option<String>, ReferenceError>> {
        let r = self.services.reference.clone();
        Ok(self
            .timed(r.ticker_snapshot(&symbol))
            .await
            .map_err(reference_error))
    }

    async fn avg_volume(
        &mut self,
        symbol: String,
    ) -> wasmtime::Result<Result<f64, ReferenceError>> {
        let r = self.services.reference.clone();
        Ok(self
            .timed(r.avg_volume(&symbol))
            .await
            .map_err(reference_error))
    }

    async fn free_float(
        &mut self,
        symbol: String,
    ) -> wasmtime::Result<Result<f64, ReferenceError>> {
        let r = self.services.reference.clone();
        Ok(self
            .timed(r.free_float(&symbol))
            .await
            .map_err(reference_error))
    }

    async fn market_now(&mut self) -> wasmtime::Result<Result<MarketStatus, ReferenceError>> {
        let r = self.services.reference.clone();
        Ok(self.timed(r.market_now()).await.map_err(reference_error))
    }
}

impl host::Host for HostState {
    async fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let now = Instant::now();
        if now.duration_since(self.log_window.0) >= Duration::from_secs(1) {
            self.log_window = (now, 0);
        }
        self.log_window.1 += 1;
        if self.log_window.1 > LOG_LINES_PER_SEC {
            self.logs_dropped += 1;
            metrics::counter!("mdp_plugin_logs_dropped_total", "plugin" => self.plugin.to_string())
                .increment(1);
            return Ok(());
        }
        let mut message = message;
        if message.len() > LOG_LINE_MAX {
            let mut cut = LOG_LINE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    async fn counter(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        // Names become Prometheus label values, never freed: validated and
        // capped per plugin.
        if !self.share.admit_counter(&name) {
            return Ok(());
        }
        metrics::counter!("mdp_plugin_counter_total", "plugin" => self.plugin.to_string(), "name" => name.clone())
            .increment(delta);
        *self.counters.entry(name).or_default() += delta;
        Ok(())
    }

    async fn now_us(&mut self) -> wasmtime::Result<u64> {
        Ok(self.services.clock.now_us())
    }

    async fn input_json(&mut self, index: u32) -> wasmtime::Result<Option<String>> {
        Ok(self.inputs.get(index as usize).map(|t| t.to_string()))
    }
}

/// A WASI sleep's pollable: ready at once (plugin time is the host's
/// virtual clock, and a call's wall-clock budget bounds it anyway).
struct NoWait;

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for NoWait {
    async fn ready(&mut self) {
        tokio::task::yield_now().await
    }
}

use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;

/// `wasi:clocks/monotonic-clock` over the host clock, replacing WASI's own
/// (whose subscriptions sleep in real time).
impl monotonic_clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clocks.monotonic_ns())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1000)
    }

    fn subscribe_instant(
        &mut self,
        _when: monotonic_clock::Instant,
    ) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
        let ready = self.table.push(NoWait)?;
        wasmtime_wasi::p2::subscribe(&mut self.table, ready)
    }

    fn subscribe_duration(
        &mut self,
        _duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
        let ready = self.table.push(NoWait)?;
        wasmtime_wasi::p2::subscribe(&mut self.table, ready)
    }
}

/// The newest bytes a plugin wrote to stderr, at most a fixed capacity
/// (older bytes are dropped, so a chatty plugin never fills it up and
/// traps); cleared at the start of each call.
#[derive(Clone)]
pub(crate) struct StderrTail {
    bytes: Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>,
    capacity: usize,
}

impl StderrTail {
    fn new(capacity: usize) -> Self {
        StderrTail {
            bytes: Arc::default(),
            capacity,
        }
    }

    fn push(&self, data: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let over = (bytes.len() + data.len()).saturating_sub(self.capacity);
        bytes.drain(..over);
        bytes.extend(data);
    }

    /// Forget what was written (a new call starts).
    pub(crate) fn clear(&self) {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// What is kept.
    pub(crate) fn contents(&self) -> Vec<u8> {
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        bytes.iter().copied().collect()
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for StderrTail {
    fn write(&mut self, data: bytes::Bytes) -> Result<(), wasmtime_wasi::p2::StreamError> {
        self.push(&data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), wasmtime_wasi::p2::StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, wasmtime_wasi::p2::StreamError> {
        Ok(self.capacity)
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(data);
        std::task::Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}
