//! The SDK's in-memory store (`mdp_sdk::testing::MemStore`, what native
//! plugin tests run against) behind the host's [`Store`] trait, so the
//! conformance suite checks it against the same expectations as the
//! embedded and Redis stores. Writes go through `MemStore::apply` as the
//! plugin effects they come from; its clock follows the wall clock.
//!
//! MemStore models what a plugin sees of the cache (effects and reads); the
//! host-side operations it has no counterpart for (lock values, key scans,
//! pub/sub) answer `Other`, and the suite does not run those parts on it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mdp::store::{Store, StoreError, StoreResult, Subscription, Topic, Write};
use mdp_sdk::testing::MemStore;
use mdp_sdk::{Body, Effect, Hset, Push, Put, Zadd};

/// A [`MemStore`] shared by the suite's calls.
#[derive(Default)]
pub struct MemBackend(Mutex<MemStore>);

/// A fresh one, as the suite's backends are opened.
pub fn open() -> Arc<dyn Store> {
    Arc::new(MemBackend::default())
}

fn secs(ttl: Option<std::time::Duration>) -> Option<u32> {
    ttl.map(|t| u32::try_from(t.as_secs()).expect("a test TTL fits"))
}

/// The plugin effect a host write comes from.
fn effect(write: &Write) -> Option<Effect> {
    let json = |v: &str| Body::Json(v.to_string());
    Some(match write {
        Write::Set { key, value, ttl } => Effect::Put(Put {
            key: key.clone(),
            value: json(value),
            ttl_secs: secs(*ttl),
        }),
        Write::Push {
            key,
            value,
            max_len,
            ttl,
        } => Effect::Push(Push {
            key: key.clone(),
            value: json(value),
            max_len: *max_len,
            ttl_secs: secs(*ttl),
        }),
        Write::ZAdd {
            key,
            members,
            keep_top,
            ttl,
        } => Effect::Zadd(Zadd {
            key: key.clone(),
            members: members.clone(),
            keep_top: *keep_top,
            ttl_secs: secs(*ttl),
        }),
        Write::HSet { key, fields, ttl } => Effect::Hset(Hset {
            key: key.clone(),
            fields: fields.clone(),
            ttl_secs: secs(*ttl),
        }),
        Write::Del { keys } => Effect::Del(keys.clone()),
        Write::Publish { .. } => return None,
    })
}

fn unsupported<T>(what: &str) -> StoreResult<T> {
    Err(StoreError::Other(format!("MemStore has no {what}")))
}

/// The wall clock in Unix ms.
fn wall_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(now.as_millis()).expect("ms fit")
}

impl MemBackend {
    /// The store with its clock set to now.
    fn now(&self) -> std::sync::MutexGuard<'_, MemStore> {
        let mut store = self.0.lock().expect("not poisoned");
        store.set_now_ms(wall_ms());
        store
    }
}

#[async_trait]
impl Store for MemBackend {
    async fn apply(&self, writes: &[Write], _atomic: bool) -> StoreResult<()> {
        let mut store = self.now();
        let resolve = |body: &Body| match body {
            Body::Json(text) => text.clone(),
            Body::Input(i) => panic!("no input {i} outside a batch"),
        };
        for effect in writes.iter().filter_map(effect) {
            store.apply(&effect, &resolve);
        }
        Ok(())
    }
    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.now().get(key))
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        let store = self.now();
        Ok(keys.iter().map(|k| store.get(k)).collect())
    }
    async fn ztop(&self, key: &str, n: u32) -> StoreResult<Vec<(String, f64)>> {
        Ok(self.now().ztop(key, n))
    }
    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(self.now().hgetall(key))
    }
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<String>> {
        let index = |i: i64| i32::try_from(i).expect("a test index fits");
        Ok(self.now().lrange(key, index(start), index(stop)))
    }
    async fn set_nx_px(&self, _: &str, _: &str, _: u64) -> StoreResult<bool> {
        unsupported("lock values")
    }
    async fn del_if_eq(&self, _: &str, _: &str) -> StoreResult<bool> {
        unsupported("lock values")
    }
    async fn scan_prefix(&self, _: &str) -> StoreResult<Vec<String>> {
        unsupported("key scan")
    }
    async fn ttl(&self, key: &str) -> StoreResult<Option<u64>> {
        let store = self.now();
        let now_ms = wall_ms();
        Ok(store
            .expiry_ms(key)
            .map(|at| (at.saturating_sub(now_ms) + 500) / 1000))
    }
    async fn subscribe(&self, _: &[Topic]) -> StoreResult<Subscription> {
        unsupported("pub/sub")
    }
}
