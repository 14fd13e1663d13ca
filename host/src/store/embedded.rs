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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::glob;
use super::{Message, Store, StoreError, StoreResult, Subscription, Topic, Write};

/// Messages a subscription buffers before dropping.
pub const SUBSCRIPTION_BUFFER: usize = 65_536;

#[derive(Debug, Clone)]
enum Value {
    Str(String),
    List(VecDeque<String>),
    ZSet(HashMap<String, f64>),
    Hash(HashMap<String, String>),
}

/// Estimated heap cost of a string: its bytes, header and allocator overhead.
fn str_cost(s: &str) -> usize {
    s.len() + 40
}

impl Value {
    /// Estimated heap bytes held by the value.
    fn cost(&self) -> usize {
        match self {
            Value::Str(v) => str_cost(v),
            Value::List(l) => 32 + l.iter().map(|v| str_cost(v)).sum::<usize>(),
            Value::ZSet(z) => 48 + z.keys().map(|m| str_cost(m) + 16).sum::<usize>(),
            Value::Hash(h) => {
                48 + h
                    .iter()
                    .map(|(f, v)| str_cost(f) + str_cost(v) + 8)
                    .sum::<usize>()
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::ZSet(_) => "zset",
            Value::Hash(_) => "hash",
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<Instant>,
    /// Estimated bytes of the key and value (kept up to date by writes).
    cost: usize,
}

/// Estimated bytes of an entry: its key, the map slot and its value.
fn entry_cost(key: &str, value: &Value) -> usize {
    str_cost(key) + 64 + value.cost()
}

impl Entry {
    fn new(key: &str, value: Value, expires: Option<Instant>) -> Entry {
        Entry {
            cost: entry_cost(key, &value),
            value,
            expires,
        }
    }
}

struct Subscriber {
    topics: Vec<Topic>,
    tx: mpsc::Sender<Message>,
}

#[derive(Default)]
struct Data {
    entries: HashMap<String, Entry>,
    writes: u64,
    /// Estimated bytes of all entries.
    used: usize,
    /// The memory budget, if any.
    max: Option<usize>,
}

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

fn wrong_type(key: &str, found: &Value, wanted: &str) -> StoreError {
    StoreError::WrongType {
        key: key.to_string(),
        detail: format!("holds a {}, not a {wanted}", found.kind()),
    }
}

impl Data {
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            self.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn insert(&mut self, key: String, entry: Entry) {
        self.used += entry.cost;
        if let Some(old) = self.entries.insert(key, entry) {
            self.used -= old.cost;
        }
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.used -= entry.cost;
        Some(entry)
    }

    fn purge(&mut self, now: Instant) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = e.expires.is_none_or(|t| t > now);
            if !keep {
                freed += e.cost;
            }
            keep
        });
        self.used -= freed;
    }

    /// Export the size gauges.
    fn report(&self) {
        metrics::gauge!("mdp_store_embedded_bytes").set(self.used as f64);
        metrics::gauge!("mdp_store_embedded_keys").set(self.entries.len() as f64);
    }

    /// Over budget: evict keys with an expiry, soonest first, to 90 % of it.
    /// The caller reports the size afterwards, so a scrape never sees the
    /// transient over-budget size between a write and its eviction.
    fn evict(&mut self, now: Instant) {
        let Some(max) = self.max else {
            return;
        };
        if self.used <= max {
            return;
        }
        self.purge(now);
        let target = max / 10 * 9;
        let mut victims: Vec<(Instant, String)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| e.expires.map(|t| (t, k.clone())))
            .collect();
        victims.sort_unstable_by_key(|(t, _)| *t);
        let mut evicted = 0u64;
        for (_, key) in victims {
            if self.used <= target {
                break;
            }
            self.remove(&key);
            evicted += 1;
        }
        metrics::counter!("mdp_store_evicted_total").increment(evicted);
        if self.used > max {
            tracing::warn!(
                used = self.used,
                max,
                "embedded store over its memory budget with nothing left to evict (keys without expiry)"
            );
        }
    }

    /// Re-estimate `key`'s cost after an in-place change.
    fn recost(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            let cost = entry_cost(key, &e.value);
            self.used = self.used - e.cost + cost;
            e.cost = cost;
        }
    }

    /// The entry at `key`, created empty as `empty` when missing; a type check against `wanted`.
    fn slot(&mut self, key: &str, now: Instant, empty: Value) -> StoreResult<&mut Entry> {
        let wanted = empty.kind();
        if self.live(key, now).is_none() {
            self.insert(key.to_string(), Entry::new(key, empty, None));
        }
        let entry = self.entries.get_mut(key).expect("present");
        if entry.value.kind() != wanted {
            return Err(wrong_type(key, &entry.value, wanted));
        }
        Ok(entry)
    }

    fn expire(&mut self, key: &str, ttl: Option<Duration>, now: Instant) {
        if let (Some(ttl), Some(entry)) = (ttl, self.entries.get_mut(key)) {
            entry.expires = Some(now + ttl);
        }
    }

    /// Check a write's type before applying anything (so `apply` is all or nothing).
    fn check(&mut self, w: &Write, now: Instant) -> StoreResult<()> {
        let (key, wanted) = match w {
            Write::Push { key, .. } => (key, "list"),
            Write::ZAdd { key, .. } => (key, "zset"),
            Write::HSet { key, .. } => (key, "hash"),
            _ => return Ok(()),
        };
        match self.live(key, now) {
            Some(e) if e.value.kind() != wanted => Err(wrong_type(key, &e.value, wanted)),
            _ => Ok(()),
        }
    }

    fn write(&mut self, w: &Write, now: Instant) -> StoreResult<Option<(String, Arc<str>)>> {
        match w {
            Write::Set { key, value, ttl } => {
                let entry = Entry::new(key, Value::Str(value.to_string()), ttl.map(|t| now + t));
                self.insert(key.clone(), entry);
            }
            Write::Push {
                key,
                value,
                max_len,
                ttl,
            } => {
                let entry = self.slot(key, now, Value::List(VecDeque::new()))?;
                let before = entry.cost;
                if let Value::List(list) = &mut entry.value {
                    list.push_front(value.to_string());
                    entry.cost += str_cost(value);
                    while list.len() > *max_len as usize {
                        if let Some(dropped) = list.pop_back() {
                            entry.cost -= str_cost(&dropped);
                        }
                    }
                }
                let after = entry.cost;
                self.used = self.used + after - before;
                self.expire(key, *ttl, now);
            }
            Write::ZAdd {
                key,
                members,
                keep_top,
                ttl,
            } => {
                if let Value::ZSet(set) =
                    &mut self.slot(key, now, Value::ZSet(HashMap::new()))?.value
                {
                    for (m, s) in members {
                        set.insert(m.clone(), *s);
                    }
                    if let Some(keep) = keep_top
                        && set.len() > *keep as usize
                    {
                        let keep: std::collections::HashSet<String> = ranked(set)
                            .into_iter()
                            .take(*keep as usize)
                            .map(|(m, _)| m)
                            .collect();
                        set.retain(|m, _| keep.contains(m));
                    }
                }
                self.recost(key);
                self.expire(key, *ttl, now);
            }
            Write::HSet { key, fields, ttl } => {
                if let Value::Hash(hash) =
                    &mut self.slot(key, now, Value::Hash(HashMap::new()))?.value
                {
                    for (f, v) in fields {
                        hash.insert(f.clone(), v.clone());
                    }
                }
                self.recost(key);
                self.expire(key, *ttl, now);
            }
            Write::Del { keys } => {
                for k in keys {
                    self.remove(k);
                }
            }
            Write::Publish { channel, message } => {
                return Ok(Some((channel.clone(), message.clone())));
            }
        }
        Ok(None)
    }
}

/// Members by score descending, ties by member descending (Redis `ZREVRANGE`).
fn ranked(set: &HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = set.iter().map(|(m, s)| (m.clone(), *s)).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    all
}

fn topic_matches(topic: &Topic, channel: &str) -> bool {
    match topic {
        Topic::Channel(c) => c == channel,
        Topic::Pattern(p) => glob::matches(p, channel),
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

    fn publish(&self, channel: &str, payload: Arc<str>) {
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| !s.tx.is_closed());
        for sub in subs.iter() {
            if let Some(topic) = sub.topics.iter().find(|t| topic_matches(t, channel)) {
                let message = Message {
                    channel: channel.to_string(),
                    topic: topic.clone(),
                    payload: payload.clone(),
                };
                if sub.tx.try_send(message).is_err() {
                    metrics::counter!("mdp_store_pubsub_dropped_total", "backend" => "embedded")
                        .increment(1);
                }
            }
        }
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
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber {
                topics: topics.to_vec(),
                tx,
            });
        Ok(Subscription { messages: rx })
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

    /// The store's running estimate, recomputed from scratch.
    fn recounted(store: &EmbeddedStore) -> usize {
        store
            .data()
            .entries
            .iter()
            .map(|(k, e)| entry_cost(k, &e.value))
            .sum()
    }

    fn del(keys: &[&str]) -> Write {
        Write::Del {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn push(key: &str, value: &str, ttl_s: u64) -> Write {
        Write::Push {
            key: key.into(),
            value: value.into(),
            max_len: 10,
            ttl: Some(Duration::from_secs(ttl_s)),
        }
    }

    #[tokio::test]
    async fn the_size_estimate_follows_every_kind_of_write() {
        let store = EmbeddedStore::new();
        let writes = vec![
            Write::Set {
                key: "s".into(),
                value: "x".repeat(100).into(),
                ttl: None,
            },
            Write::Set {
                key: "s".into(),
                value: "y".repeat(10).into(),
                ttl: None,
            },
            push("l", &"a".repeat(50), 60),
            Write::ZAdd {
                key: "z".into(),
                members: (0..20).map(|i| (format!("m{i}"), f64::from(i))).collect(),
                keep_top: Some(5),
                ttl: None,
            },
            Write::HSet {
                key: "h".into(),
                fields: vec![("f".into(), "v".into()), ("g".into(), "w".repeat(30))],
                ttl: None,
            },
        ];
        store.apply(&writes, false).await.unwrap();
        for i in 0..25 {
            store
                .apply(&[push("l", &"b".repeat(i), 60)], false)
                .await
                .unwrap();
        }
        assert_eq!(store.used_memory(), recounted(&store));
        assert!(store.set_nx_px("lock", "me", 10_000).await.unwrap());
        assert!(store.del_if_eq("lock", "me").await.unwrap());
        store.apply(&[del(&["h", "s"])], false).await.unwrap();
        assert_eq!(store.used_memory(), recounted(&store));
        store.apply(&[del(&["l", "z"])], false).await.unwrap();
        assert_eq!(store.used_memory(), 0);
    }

    /// Records the largest value ever set on `mdp_store_embedded_bytes`.
    #[derive(Default)]
    struct PeakBytes(std::sync::Mutex<f64>);

    impl metrics::GaugeFn for PeakBytes {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            let mut peak = self.0.lock().unwrap();
            *peak = peak.max(value);
        }
    }

    /// A recorder that hands out [`PeakBytes`] for the size gauge only.
    #[derive(Default)]
    struct PeakRecorder(Arc<PeakBytes>);

    impl metrics::Recorder for PeakRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            if key.name() == "mdp_store_embedded_bytes" {
                metrics::Gauge::from_arc(self.0.clone())
            } else {
                metrics::Gauge::noop()
            }
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn the_exported_size_never_shows_a_transient_over_budget_value() {
        // Regression: the size was exported before eviction, so a scrape
        // between a write and its eviction read more than the budget.
        let budget = 100_000;
        let recorder = PeakRecorder::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let store = EmbeddedStore::with_max_memory(budget);
                let item = "i".repeat(200);
                for i in 0..2_000u64 {
                    let writes: Vec<Write> = (0..10)
                        .map(|_| push(&format!("list:{i}"), &item, 1000 + i))
                        .collect();
                    store.apply(&writes, false).await.unwrap();
                }
            })
        });
        let peak = *recorder.0.0.lock().unwrap();
        assert!(peak > 0.0, "the size was exported");
        assert!(peak <= budget as f64, "exported {peak} > budget {budget}");
    }

    #[tokio::test]
    async fn a_memory_budget_evicts_the_soonest_expiring_keys_and_never_keys_without_expiry() {
        let budget = 200_000;
        let store = EmbeddedStore::with_max_memory(budget);
        let keep = "k".repeat(1000);
        store
            .apply(
                &[Write::Set {
                    key: "keep".into(),
                    value: keep.as_str().into(),
                    ttl: None,
                }],
                false,
            )
            .await
            .unwrap();
        // 500 lists of 10 × 200 bytes (~2.4 KB each, ~1.2 MB in all), list i
        // expiring after 1000 + i seconds: far more than the budget.
        let item = "i".repeat(200);
        for i in 0..500u64 {
            let writes: Vec<Write> = (0..10)
                .map(|_| push(&format!("list:{i}"), &item, 1000 + i))
                .collect();
            store.apply(&writes, false).await.unwrap();
            assert!(store.used_memory() <= budget, "over budget after list {i}");
        }
        assert_eq!(store.used_memory(), recounted(&store));
        assert!(
            store.used_memory() > budget / 2,
            "evicts to 90 %, not to nothing"
        );
        assert_eq!(
            store.get("keep").await.unwrap(),
            Some(keep),
            "no expiry: never evicted"
        );
        assert!(
            store.lrange("list:0", 0, -1).await.unwrap().is_empty(),
            "soonest expiry went first"
        );
        assert_eq!(
            store.lrange("list:499", 0, -1).await.unwrap().len(),
            10,
            "latest expiry kept"
        );
        let survivors = (0..500)
            .filter(|i| store.data().entries.contains_key(&format!("list:{i}")))
            .collect::<Vec<_>>();
        assert!(
            survivors.windows(2).all(|w| w[1] == w[0] + 1),
            "the survivors are the latest-expiring lists: {survivors:?}"
        );
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
