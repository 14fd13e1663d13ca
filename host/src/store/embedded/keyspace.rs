//! The embedded store's keyspace: typed values with expiry ([`Data`]), and
//! how each [`Write`] changes it, type-checked first so that a batch is
//! applied all or nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{StoreError, StoreResult, Write};

/// A value of one of the Redis types the store keeps.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Str(String),
    List(VecDeque<String>),
    ZSet(HashMap<String, f64>),
    Hash(HashMap<String, String>),
}

impl Value {
    /// The Redis type name (as `TYPE` answers).
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::ZSet(_) => "zset",
            Value::Hash(_) => "hash",
        }
    }
}

/// A key's value, its expiry and its estimated size.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) expires: Option<Instant>,
    /// Estimated bytes of the key and value (kept up to date by writes).
    pub(super) cost: usize,
}

/// The keyspace and its size accounting.
#[derive(Default)]
pub(super) struct Data {
    pub(super) entries: HashMap<String, Entry>,
    /// Writes since the last sweep of expired keys.
    pub(super) writes: u64,
    /// Estimated bytes of all entries.
    pub(super) used: usize,
    /// The memory budget, if any.
    pub(super) max: Option<usize>,
}

/// The error of an operation on `key` that wanted a `wanted`, not what it found.
pub(super) fn wrong_type(key: &str, found: &Value, wanted: &str) -> StoreError {
    StoreError::WrongType {
        key: key.to_string(),
        detail: format!("holds a {}, not a {wanted}", found.kind()),
    }
}

/// A published message: its channel and payload.
pub(super) type Published = (String, Arc<str>);

impl Data {
    /// The entry at `key` unless it has expired (an expired one is removed).
    pub(super) fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            self.remove(key);
        }
        self.entries.get_mut(key)
    }

    /// Insert or replace the entry at `key`.
    pub(super) fn insert(&mut self, key: String, entry: Entry) {
        self.used += entry.cost;
        if let Some(old) = self.entries.insert(key, entry) {
            self.used -= old.cost;
        }
    }

    /// Remove the entry at `key`.
    pub(super) fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.used -= entry.cost;
        Some(entry)
    }

    /// Remove every expired entry.
    pub(super) fn purge(&mut self, now: Instant) {
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
    pub(super) fn check(&mut self, w: &Write, now: Instant) -> StoreResult<()> {
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

    /// Apply one write; a publish is returned for the caller to deliver
    /// once the whole batch is visible.
    pub(super) fn write(&mut self, w: &Write, now: Instant) -> StoreResult<Option<Published>> {
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
                self.push(key, value, *max_len, now)?;
                self.expire(key, *ttl, now);
            }
            Write::ZAdd {
                key,
                members,
                keep_top,
                ttl,
            } => {
                self.zadd(key, members, *keep_top, now)?;
                self.expire(key, *ttl, now);
            }
            Write::HSet { key, fields, ttl } => {
                self.hset(key, fields, now)?;
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

    /// `LPUSH` then `LTRIM` to `max_len`, keeping the size estimate exact.
    fn push(&mut self, key: &str, value: &str, max_len: u32, now: Instant) -> StoreResult<()> {
        let entry = self.slot(key, now, Value::List(VecDeque::new()))?;
        let before = entry.cost;
        if let Value::List(list) = &mut entry.value {
            list.push_front(value.to_string());
            entry.cost += str_cost(value);
            while list.len() > max_len as usize {
                if let Some(dropped) = list.pop_back() {
                    entry.cost -= str_cost(&dropped);
                }
            }
        }
        let after = entry.cost;
        self.used = self.used + after - before;
        Ok(())
    }

    /// `ZADD`, then keep only the `keep_top` highest-ranked members.
    fn zadd(
        &mut self,
        key: &str,
        members: &[(String, f64)],
        keep_top: Option<u32>,
        now: Instant,
    ) -> StoreResult<()> {
        if let Value::ZSet(set) = &mut self.slot(key, now, Value::ZSet(HashMap::new()))?.value {
            for (m, s) in members {
                set.insert(m.clone(), *s);
            }
            if let Some(keep) = keep_top
                && set.len() > keep as usize
            {
                let keep: HashSet<String> = ranked(set)
                    .into_iter()
                    .take(keep as usize)
                    .map(|(m, _)| m)
                    .collect();
                set.retain(|m, _| keep.contains(m));
            }
        }
        self.recost(key);
        Ok(())
    }

    /// `HSET` of every field.
    fn hset(&mut self, key: &str, fields: &[(String, String)], now: Instant) -> StoreResult<()> {
        if let Value::Hash(hash) = &mut self.slot(key, now, Value::Hash(HashMap::new()))?.value {
            for (f, v) in fields {
                hash.insert(f.clone(), v.clone());
            }
        }
        self.recost(key);
        Ok(())
    }
}

/// Members by score descending, ties by member descending (Redis `ZREVRANGE`).
pub(super) fn ranked(set: &HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = set.iter().map(|(m, s)| (m.clone(), *s)).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    all
}

/// Estimated heap cost of a string: its bytes, header and allocator overhead.
pub(super) fn str_cost(s: &str) -> usize {
    s.len() + 40
}
