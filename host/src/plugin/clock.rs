//! The clock plugins see: through the `host.now-us` import, and through
//! WASI's wall and monotonic clocks ([`WasiClocks`]). Time is the host's
//! (virtual: a [`FixedClock`] in tests and `mdp plugin test`), and a WASI
//! sleep does not wait in real time: its pollable is ready at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time, Unix microseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix microseconds.
    fn now_us(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// A clock that stands still until moved: for tests and `mdp plugin test --at`.
#[derive(Debug, Default, Clone)]
pub struct FixedClock(Arc<AtomicU64>);

impl FixedClock {
    /// A clock fixed at `now_us`.
    pub fn new(now_us: u64) -> Self {
        FixedClock(Arc::new(AtomicU64::new(now_us)))
    }
    /// Move the clock.
    pub fn set(&self, now_us: u64) {
        self.0.store(now_us, Ordering::Relaxed);
    }
}

impl Clock for FixedClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// WASI's clocks over a host [`Clock`]: the wall clock reads it, the
/// monotonic clock reads it in nanoseconds and never goes back.
#[derive(Clone)]
pub struct WasiClocks {
    clock: Arc<dyn Clock>,
    last_ns: Arc<AtomicU64>,
}

impl WasiClocks {
    /// Clocks over `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        WasiClocks {
            clock,
            last_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Monotonic now, nanoseconds.
    pub fn monotonic_ns(&self) -> u64 {
        let now = self.clock.now_us().saturating_mul(1000);
        self.last_ns.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

impl wasmtime_wasi::HostWallClock for WasiClocks {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_micros(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.clock.now_us())
    }
}

impl wasmtime_wasi::HostMonotonicClock for WasiClocks {
    fn resolution(&self) -> u64 {
        1000
    }
    fn now(&self) -> u64 {
        self.monotonic_ns()
    }
}
