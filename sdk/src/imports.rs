//! Host imports: cache reads, reference data, logging, counters and the clock.
//!
//! In a Wasm build these call the host; in a native build they are served by
//! the current [`crate::testing::TestHost`].

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::with_host;

/// Reads from the analyzer's store.
pub mod cache {
    #[cfg(not(target_arch = "wasm32"))]
    use super::with_host;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::mdp::analyzer::cache as imp;

    /// The string at `key`.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return imp::get(key);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.store.get(key))
    }

    /// The strings at `keys`, in order.
    pub fn get_many(keys: &[String]) -> Vec<Option<String>> {
        #[cfg(target_arch = "wasm32")]
        return imp::get_many(keys);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| keys.iter().map(|k| h.store.get(k)).collect())
    }

    /// The `n` highest-scored members of a sorted set, highest first.
    pub fn ztop(key: &str, n: u32) -> Vec<(String, f64)> {
        #[cfg(target_arch = "wasm32")]
        return imp::ztop(key, n);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.store.ztop(key, n))
    }

    /// All fields of a hash.
    pub fn hgetall(key: &str) -> Vec<(String, String)> {
        #[cfg(target_arch = "wasm32")]
        return imp::hgetall(key);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.store.hgetall(key))
    }

    /// List elements `start..=stop` (negative indexes from the end).
    pub fn lrange(key: &str, start: i32, stop: i32) -> Vec<String> {
        #[cfg(target_arch = "wasm32")]
        return imp::lrange(key, start, stop);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.store.lrange(key, start, stop))
    }

    /// `SET key NX PX ttl_ms`: true if acquired.
    pub fn try_acquire(key: &str, ttl_ms: u32) -> bool {
        #[cfg(target_arch = "wasm32")]
        return imp::try_acquire(key, ttl_ms);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| {
            let now = h.now_us / 1000;
            h.store.try_acquire(key, ttl_ms, now)
        })
    }
}

/// Reference data (ticker snapshot, average volume, free float, market status).
pub mod reference {
    #[cfg(not(target_arch = "wasm32"))]
    use super::with_host;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::mdp::analyzer::reference as imp;
    use crate::{MarketStatus, ReferenceError};

    /// The ticker snapshot as camelCase JSON, `None` for an unknown ticker.
    pub fn ticker_snapshot(symbol: &str) -> Result<Option<String>, ReferenceError> {
        #[cfg(target_arch = "wasm32")]
        return imp::ticker_snapshot(symbol);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.reference.ticker_snapshot(symbol))
    }

    /// The 30-day average daily volume.
    pub fn avg_volume(symbol: &str) -> Result<f64, ReferenceError> {
        #[cfg(target_arch = "wasm32")]
        return imp::avg_volume(symbol);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.reference.avg_volume(symbol))
    }

    /// The free float in shares.
    pub fn free_float(symbol: &str) -> Result<f64, ReferenceError> {
        #[cfg(target_arch = "wasm32")]
        return imp::free_float(symbol);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.reference.free_float(symbol))
    }

    /// The market status now.
    pub fn market_status() -> Result<MarketStatus, ReferenceError> {
        #[cfg(target_arch = "wasm32")]
        return imp::market_now();
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.reference.market_status())
    }
}

/// Logging, counters and the host clock.
pub mod host {
    #[cfg(not(target_arch = "wasm32"))]
    use super::with_host;
    use crate::Level;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::mdp::analyzer::host as imp;

    /// Log a line attributed to this plugin.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        imp::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.logs.push((level, message.to_string())))
    }

    /// Add to a plugin counter.
    pub fn counter(name: &str, delta: u64) {
        #[cfg(target_arch = "wasm32")]
        imp::counter(name, delta);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| *h.counters.entry(name.to_string()).or_default() += delta)
    }

    /// The host clock, Unix microseconds.
    pub fn now_us() -> u64 {
        #[cfg(target_arch = "wasm32")]
        return imp::now_us();
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.now_us)
    }

    /// The host clock, Unix milliseconds.
    pub fn now_ms() -> u64 {
        now_us() / 1000
    }

    /// The input event at `index` of the batch being analyzed, as JSON text
    /// byte for byte as the host received it (`None` past the batch's end):
    /// for fields the typed records do not carry, such as a trade's
    /// `trf_id`. Needs a host of `mdp:analyzer@1.1.0` or later.
    pub fn input_json(index: u32) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return imp::input_json(index);
        #[cfg(not(target_arch = "wasm32"))]
        with_host(|h| h.inputs.get(index as usize).cloned())
    }
}
