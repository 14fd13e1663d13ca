//! The embedded store: Redis semantics in process (strings with expiry,
//! capped lists, sorted sets, hashes, SET NX PX, glob pub/sub). A real mode
//! for `mdp up` on one machine, not a mock.
//!
//! Slow subscribers: each subscription has a bounded channel; a message that
//! does not fit is dropped for that subscriber and counted
//! (`mdp_store_pubsub_dropped_total`), like Redis disconnecting a pub/sub
//! client past its output buffer limit — publishers never block.
//!
//! Memory: like Redis with `maxmemory` and the `volatile-ttl` policy, a store
//! opened with a budget (`memory://?max_memory_mib=N`) keeps its estimated
//! size under it by evicting keys that have an expiry, soonest expiry first
//! (for the seed's keys: the least recently written caches), down to 90 % of
//! the budget. Keys without an expiry are never evicted. Size and evictions
//! are exported (`mdp_store_embedded_bytes`, `mdp_store_embedded_keys`,
//! `mdp_store_evicted_total`).

mod keyspace;
mod memory;
mod pubsub;

pub use pubsub::SUBSCRIPTION_BUFFER;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Store, StoreResult, Subscription, Topic, Write};
use keyspace::{Data, Entry, Value, ranked, wrong_type};
use pubsub::Subscriber;

#[derive(Default)]
struct Inner {
    data: Mutex<Data>,
    subscribers: Mutex<Vec<Subscriber>>,
}

/// A source of Unix microseconds driving expiry instead of the monotonic clock.
type ClockFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// An in-process store with Redis semantics. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// When set, expiry follows this clock (base instant, its start, the clock).
    clock: Option<(Instant, u64, ClockFn)>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

impl EmbeddedStore {
    /// An empty store.
    pub fn new() -> Self {
        EmbeddedStore::default()
    }

    /// An empty store that keeps its estimated size under `max_bytes` by
    /// evicting keys with an expiry, soonest first (see the module docs).
    pub fn with_max_memory(max_bytes: usize) -> Self {
        let store = EmbeddedStore::default();
        store.data().max = Some(max_bytes);
        store
    }

    /// Estimated bytes held (keys and values).
    pub fn used_memory(&self) -> usize {
        self.data().used
    }

    /// An empty store whose expiry follows `now_us` (Unix microseconds)
    /// instead of the monotonic clock: for golden runs that move a fixed
    /// clock across TTLs. Time never runs backwards for the store.
    pub fn with_clock(now_us: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        let start = now_us();
        EmbeddedStore {
            inner: Arc::default(),
            clock: Some((Instant::now(), start, Arc::new(now_us))),
        }
    }

    fn now(&self) -> Instant {
        match &self.clock {
            None => Instant::now(),
            Some((base, start, now_us)) => {
                *base + Duration::from_micros(now_us().saturating_sub(*start))
            }
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.inner.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn apply(&self, writes: &[Write], _atomic: bool) -> StoreResult<()> {
        let now = self.now();
        let published = {
            let mut data = self.data();
            for w in writes {
                data.check(w, now)?;
            }
            let mut published = Vec::new();
            for w in writes {
                if let Some(p) = data.write(w, now)? {
                    published.push(p);
                }
            }
            data.writes += writes.len() as u64;
            if data.writes > 10_000 {
                data.writes = 0;
                data.purge(now);
            }
            data.evict(now);
            data.report();
            published
        };
        // Published after the writes are visible, in order.
        for (channel, payload) in published {
            self.publish(&channel, payload);
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        match self.data().live(key, self.now()) {
            None => Ok(None),
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => Ok(Some(s.clone())),
            Some(e) => Err(wrong_type(key, &e.value, "string")),
        }
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        let now = self.now();
        let mut data = self.data();
        Ok(keys
            .iter()
            .map(|k| match data.live(k, now) {
                Some(Entry {
                    value: Value::Str(s),
                    ..
                }) => Some(s.clone()),
                _ => None,
            })
            .collect())
    }

    async fn ztop(&self, key: &str, n: u32) -> StoreResult<Vec<(String, f64)>> {
        match self.data().live(key, self.now()) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::ZSet(set),
                ..
            }) => {
                let mut all = ranked(set);
                all.truncate(n as usize);
                Ok(all)
            }
            Some(e) => Err(wrong_type(key, &e.value, "zset")),
        }
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, String)>> {
        match self.data().live(key, self.now()) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::Hash(h),
                ..
            }) => {
                let mut all: Vec<(String, String)> =
                    h.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                all.sort();
                Ok(all)
            }
            Some(e) => Err(wrong_type(key, &e.value, "hash")),
        }
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<String>> {
        match self.data().live(key, self.now()) {
            None => Ok(Vec::new()),
            Some(Entry {
                value: Value::List(list),
                ..
            }) => {
                let len = list.len() as i64;
                let norm = |i: i64| if i < 0 { len + i } else { i };
                let (s, e) = (norm(start).max(0), norm(stop).min(len - 1));
                if s > e {
                    return Ok(Vec::new());
                }
                Ok(list.range(s as usize..=e as usize).cloned().collect())
            }
            Some(e) => Err(wrong_type(key, &e.value, "list")),
        }
    }

    async fn set_nx_px(&self, key: &str, value: &str, ttl_ms: u64) -> StoreResult<bool> {
        let now = self.now();
        let mut data = self.data();
        if data.live(key, now).is_some() {
            return Ok(false);
        }
        let expires = Some(now + Duration::from_millis(ttl_ms));
        data.insert(
            key.to_string(),
            Entry::new(key, Value::Str(value.to_string()), expires),
        );
        Ok(true)
    }

    async fn del_if_eq(&self, key: &str, value: &str) -> StoreResult<bool> {
        let mut data = self.data();
        match data.live(key, self.now()) {
            Some(Entry {
                value: Value::Str(s),
                ..
            }) if s == value => {
                data.remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn scan_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let now = self.now();
        let data = self.data();
        let mut keys: Vec<String> = data
            .entries
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && e.expires.is_none_or(|t| t > now))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<u64>> {
        let now = self.now();
        Ok(self
            .data()
            .live(key, now)
            .and_then(|e| e.expires)
            .map(|t| ((t - now).as_millis() as u64 + 500) / 1000))
    }

    async fn subscribe(&self, topics: &[Topic]) -> StoreResult<Subscription> {
        Ok(self.add_subscriber(topics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn expiry_follows_an_external_clock() {
        let now = Arc::new(AtomicU64::new(1_000_000_000));
        let store = EmbeddedStore::with_clock({
            let now = now.clone();
            move || now.load(Ordering::Relaxed)
        });
        store
            .apply(
                &[Write::Set {
                    key: "k".into(),
                    value: "v".into(),
                    ttl: Some(Duration::from_secs(2)),
                }],
                false,
            )
            .await
            .unwrap();
        assert!(store.set_nx_px("lock", "1", 1000).await.unwrap());
        assert!(!store.set_nx_px("lock", "1", 1000).await.unwrap());
        now.fetch_add(1_500_000, Ordering::Relaxed);
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some("v"));
        // The 1 s lock taken at the start has expired, the 2 s key not yet.
        assert!(store.set_nx_px("lock", "1", 1000).await.unwrap());
        now.fetch_add(600_000, Ordering::Relaxed);
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn store_urls_set_or_refuse_a_budget() {
        assert!(
            crate::store::open("memory://?max_memory_mib=8")
                .await
                .is_ok()
        );
        assert!(
            crate::store::open("memory://?max_memory_mib=0")
                .await
                .is_ok()
        );
        for bad in ["memory://?max_memory_mib=lots", "memory://?maxmemory=8"] {
            let err = crate::store::open(bad).await.err().expect("refused");
            assert!(err.to_string().contains("max_memory_mib"), "{err}");
        }
    }
}
