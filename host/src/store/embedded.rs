//! The embedded store: Redis semantics in process (strings with expiry,
//! capped lists, sorted sets, hashes, SET NX PX, glob pub/sub). A real mode
//! for `mdp up` on one machine, not a mock.
//!
//! Slow subscribers: each subscription has a bounded channel; a message that
//! does not fit is dropped for that subscriber and counted
//! (`mdp_store_pubsub_dropped_total`), like Redis disconnecting a pub/sub
//! client past its output buffer limit — publishers never block.

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

impl Value {
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
}

struct Subscriber {
    topics: Vec<Topic>,
    tx: mpsc::Sender<Message>,
}

#[derive(Default)]
struct Data {
    entries: HashMap<String, Entry>,
    writes: u64,
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
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn purge(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| e.expires.is_none_or(|t| t > now));
    }

    /// The entry at `key`, created empty as `empty` when missing; a type check against `wanted`.
    fn slot(&mut self, key: &str, now: Instant, empty: Value) -> StoreResult<&mut Entry> {
        let wanted = empty.kind();
        if self.live(key, now).is_none() {
            self.entries.insert(
                key.to_string(),
                Entry {
                    value: empty,
                    expires: None,
                },
            );
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
                self.entries.insert(
                    key.clone(),
                    Entry {
                        value: Value::Str(value.clone()),
                        expires: ttl.map(|t| now + t),
                    },
                );
            }
            Write::Push {
                key,
                value,
                max_len,
                ttl,
            } => {
                if let Value::List(list) =
                    &mut self.slot(key, now, Value::List(VecDeque::new()))?.value
                {
                    list.push_front(value.clone());
                    list.truncate(*max_len as usize);
                }
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
                self.expire(key, *ttl, now);
            }
            Write::Del { keys } => {
                for k in keys {
                    self.entries.remove(k);
                }
            }
            Write::Publish { channel, message } => {
                return Ok(Some((channel.clone(), Arc::from(message.as_str()))));
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
        data.entries.insert(
            key.to_string(),
            Entry {
                value: Value::Str(value.to_string()),
                expires: Some(now + Duration::from_millis(ttl_ms)),
            },
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
                data.entries.remove(key);
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
}
