//! Constructors for [`Effect`]s, so analyzers read like what they do.

use crate::{Body, Effect, Hset, Publish, Push, Put, Reject, Zadd};

/// A JSON body from any serializable value.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Body {
    Body::Json(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
}

/// `SET key value [EX ttl]`.
pub fn put(key: impl Into<String>, value: Body, ttl_secs: Option<u32>) -> Effect {
    Effect::Put(Put {
        key: key.into(),
        value,
        ttl_secs,
    })
}

/// Push onto a capped list, newest first.
pub fn push(key: impl Into<String>, value: Body, max_len: u32, ttl_secs: Option<u32>) -> Effect {
    Effect::Push(Push {
        key: key.into(),
        value,
        max_len,
        ttl_secs,
    })
}

/// Add members to a sorted set, keeping the `keep_top` highest.
pub fn zadd(
    key: impl Into<String>,
    members: Vec<(String, f64)>,
    keep_top: Option<u32>,
    ttl_secs: Option<u32>,
) -> Effect {
    Effect::Zadd(Zadd {
        key: key.into(),
        members,
        keep_top,
        ttl_secs,
    })
}

/// Set hash fields.
pub fn hset(
    key: impl Into<String>,
    fields: Vec<(String, String)>,
    ttl_secs: Option<u32>,
) -> Effect {
    Effect::Hset(Hset {
        key: key.into(),
        fields,
        ttl_secs,
    })
}

/// Delete keys.
pub fn del(keys: Vec<String>) -> Effect {
    Effect::Del(keys)
}

/// Publish on a channel.
pub fn publish(channel: impl Into<String>, value: Body) -> Effect {
    Effect::Publish(Publish {
        channel: channel.into(),
        value,
    })
}

/// Reject the event at `index` of the batch, with a reason.
pub fn reject(index: usize, reason: impl Into<String>) -> Effect {
    Effect::Reject(Reject {
        index: index as u32,
        reason: reason.into(),
    })
}

/// The seed's `_cache_result`: store `value` under `key` (with `ttl_secs`)
/// and publish the same bytes on `key` as channel.
pub fn put_and_publish(key: &str, value: Body, ttl_secs: Option<u32>) -> [Effect; 2] {
    [put(key, value.clone(), ttl_secs), publish(key, value)]
}
