//! The clock plugins see through the `host.now-us` import.

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
