//! The key/value + pub/sub store the pipeline writes results into and reads
//! reference data from: Redis in distributed deployments, an in-process store
//! in embedded mode. Both implement [`Store`] with the same semantics.

use std::time::Duration;

mod embedded;
pub(crate) mod glob;
mod placed;
mod redis;

pub use embedded::EmbeddedStore;
pub use glob::matches as glob_matches;
pub use placed::PlacedStore;
pub use redis::RedisStore;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// Errors a store operation can end with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The server could not be reached or the connection broke.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The key holds a value of another type than the operation needs.
    #[error("wrong type for key `{key}`: {detail}")]
    WrongType {
        /// The key.
        key: String,
        /// What the server said.
        detail: String,
    },
    /// Anything else the server or the client library reported.
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether retrying later can succeed: the server was unreachable, the
    /// connection broke or timed out, or the server said "not now" (loading,
    /// busy, read-only replica, out of memory). Everything else — a key of
    /// the wrong type, a command the server refuses — fails again however
    /// often it is retried.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// One write, the host-side form of a plugin effect (with its body resolved).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `SET key value [EX ttl]`.
    Set {
        /// Key.
        key: String,
        /// Value (JSON text).
        value: Arc<str>,
        /// Expiry; `None` = no expiry.
        ttl: Option<Duration>,
    },
    /// `LPUSH key value; LTRIM key 0 max_len-1; [EXPIRE key ttl]`.
    Push {
        /// List key.
        key: String,
        /// Value pushed at the head.
        value: Arc<str>,
        /// Maximum list length kept.
        max_len: u32,
        /// Expiry of the list; `None` leaves it unchanged.
        ttl: Option<Duration>,
    },
    /// `ZADD key score member...; [ZREMRANGEBYRANK key 0 -(keep_top+1)]; [EXPIRE]`.
    ZAdd {
        /// Sorted-set key.
        key: String,
        /// Members and scores.
        members: Vec<(String, f64)>,
        /// Keep only this many highest-scored members.
        keep_top: Option<u32>,
        /// Expiry; `None` leaves it unchanged.
        ttl: Option<Duration>,
    },
    /// `HSET key field value...; [EXPIRE key ttl]`.
    HSet {
        /// Hash key.
        key: String,
        /// Fields and values.
        fields: Vec<(String, String)>,
        /// Expiry; `None` leaves it unchanged.
        ttl: Option<Duration>,
    },
    /// `DEL key...`.
    Del {
        /// Keys deleted.
        keys: Vec<String>,
    },
    /// `PUBLISH channel message`.
    Publish {
        /// Channel.
        channel: String,
        /// Message (JSON text).
        message: Arc<str>,
    },
}

/// How many results `writes` hold as the seed's processors count them
/// (their `published`): each value cached for clients (`SET`, `LPUSH`), and
/// each message published on a channel that none of those keys shares (a
/// result the seed published without caching). Analyzer state (`ZADD`,
/// `HSET`, `DEL`) is not a result.
pub fn results(writes: &[Write]) -> u64 {
    let cached: std::collections::HashSet<&str> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Set { key, .. } | Write::Push { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let publish_only = writes
        .iter()
        .filter(
            |w| matches!(w, Write::Publish { channel, .. } if !cached.contains(channel.as_str())),
        )
        .count();
    let cached_values = writes
        .iter()
        .filter(|w| matches!(w, Write::Set { .. } | Write::Push { .. }))
        .count();
    (cached_values + publish_only) as u64
}

/// What to subscribe to on the store's pub/sub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An exact channel name (`SUBSCRIBE`).
    Channel(String),
    /// A glob pattern (`PSUBSCRIBE`), e.g. `quote:*`.
    Pattern(String),
}

impl Topic {
    /// A pattern when the name contains glob characters (`*`, `?`, `[`), else a channel.
    pub fn parse(name: &str) -> Topic {
        if name.contains(['*', '?', '[']) {
            Topic::Pattern(name.to_string())
        } else {
            Topic::Channel(name.to_string())
        }
    }
}

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The channel it was published on.
    pub channel: String,
    /// The topic that matched it.
    pub topic: Topic,
    /// The payload, shared so fan-out does not copy it.
    pub payload: std::sync::Arc<str>,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    /// Messages in publish order per channel.
    pub messages: mpsc::Receiver<Message>,
}

/// A key/value store with pub/sub, Redis semantics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Apply writes in order as one pipeline (one round trip). With `atomic`,
    /// all or nothing (`MULTI`/`EXEC`).
    async fn apply(&self, writes: &[Write], atomic: bool) -> StoreResult<()>;
    /// `GET key`.
    async fn get(&self, key: &str) -> StoreResult<Option<String>>;
    /// `MGET keys...`, same order as `keys`.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>>;
    /// The `n` highest-scored members with scores, highest first (ties: member descending, as Redis `ZREVRANGE`).
    async fn ztop(&self, key: &str, n: u32) -> StoreResult<Vec<(String, f64)>>;
    /// `HGETALL key`.
    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, String)>>;
    /// `LRANGE key start stop`.
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<String>>;
    /// `SET key value NX PX ttl_ms`: true when set.
    async fn set_nx_px(&self, key: &str, value: &str, ttl_ms: u64) -> StoreResult<bool>;
    /// Delete `key` only if it still holds `value` (lock release): true when deleted.
    async fn del_if_eq(&self, key: &str, value: &str) -> StoreResult<bool>;
    /// All keys starting with `prefix` (`SCAN MATCH prefix*`).
    async fn scan_prefix(&self, prefix: &str) -> StoreResult<Vec<String>>;
    /// `TTL key` in whole seconds: `None` when the key has no expiry or does not exist.
    async fn ttl(&self, key: &str) -> StoreResult<Option<u64>>;
    /// Subscribe to channels and patterns. Implementations share one pub/sub
    /// connection per process and resubscribe after reconnecting.
    async fn subscribe(&self, topics: &[Topic]) -> StoreResult<Subscription>;
    /// Whether the pub/sub connection is up; `Err` says why not. A store
    /// without a connection (the embedded one) is always up.
    fn pubsub_status(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How long a readiness probe waits for the store.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `store` answers a read within [`PROBE_TIMEOUT`]: the readiness
/// probe of the roles that write to it.
pub async fn probe(store: &dyn Store) -> Result<String, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, store.get("mdp:probe")).await {
        Ok(Ok(_)) => Ok("reachable".into()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Open a store by URL: `memory://` (or `embedded`) for the embedded store,
/// optionally with a memory budget (`memory://?max_memory_mib=N`, `0` for
/// none; default [`EMBEDDED_MAX_MEMORY_MIB`]); `redis://` for Redis, `rediss://` over TLS (the
/// database index may be given as the path).
///
/// An empty URL is refused with a message naming `WDC_REDIS_URL`: a role
/// never falls back to an in-process store nobody else can reach.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.trim().is_empty() {
        return Err(StoreError::Other(
            "no store URL: set WDC_REDIS_URL (or --store-url) to redis://host:port/db; \
             memory:// (an in-process store) is used only when given explicitly"
                .into(),
        ));
    }
    if url == "embedded" || url.starts_with("memory://") {
        let mib = embedded_budget_mib(url)?;
        return Ok(Arc::new(if mib == 0 {
            EmbeddedStore::new()
        } else {
            EmbeddedStore::with_max_memory(mib << 20)
        }));
    }
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
    {
        return Ok(Arc::new(RedisStore::connect(url).await?));
    }
    Err(StoreError::Other(format!(
        "unsupported store URL `{}`: use memory:// or redis://host:port/db",
        redact(url)
    )))
}

/// The embedded store's default memory budget, MiB. The latest values of
/// 3,000 symbols take ~6 MB; the rest holds the most recently written
/// recent-trade lists, so `mdp up` runs in bounded memory.
pub const EMBEDDED_MAX_MEMORY_MIB: usize = 32;

/// The memory budget of a `memory://` URL, MiB.
fn embedded_budget_mib(url: &str) -> StoreResult<usize> {
    let query = url
        .strip_prefix("memory://")
        .and_then(|rest| rest.split_once('?'))
        .map(|(_, q)| q);
    let mut mib = EMBEDDED_MAX_MEMORY_MIB;
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("max_memory_mib", v)) => {
                mib = v.parse().map_err(|_| {
                    StoreError::Other(format!(
                        "store URL `{url}`: max_memory_mib must be a whole number of MiB, not `{v}`"
                    ))
                })?;
            }
            _ => {
                return Err(StoreError::Other(format!(
                    "store URL `{url}`: unknown parameter `{pair}` (the embedded store takes max_memory_mib=N)"
                )));
            }
        }
    }
    Ok(mib)
}

/// A URL with any password replaced by `***` (the one implementation,
/// [`crate::secret::redact_url`], which parses the URL).
pub use crate::secret::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_count_cached_values_and_publish_only_messages_not_state() {
        let set = |key: &str| Write::Set {
            key: key.into(),
            value: "1".into(),
            ttl: None,
        };
        let publish = |channel: &str| Write::Publish {
            channel: channel.into(),
            message: "1".into(),
        };
        // The router: SET + PUBLISH of one key is one result, as in the seed.
        assert_eq!(
            results(&[set("stocks:quotes:A"), publish("stocks:quotes:A")]),
            1
        );
        // A publish-only result, and state that is no result.
        let state = Write::HSet {
            key: "symbol:A:data".into(),
            fields: vec![("close".into(), "1".into())],
            ttl: None,
        };
        assert_eq!(results(&[publish("alerts"), state, set("quote:A")]), 2);
        assert_eq!(results(&[]), 0);
    }

    #[tokio::test]
    async fn a_password_with_at_signs_is_hidden_whole() {
        let url = "foo://ops:p@ss@w0rd@redis.internal:6379/0";
        assert_eq!(redact(url), "foo://ops:***@redis.internal:6379/0");
        let Err(e) = open(url).await else {
            panic!("foo:// is not a store URL")
        };
        let shown = e.to_string();
        assert!(shown.contains("ops:***@redis.internal"), "{shown}");
        for part in ["p@ss", "ss@w0rd", "w0rd@"] {
            assert!(!shown.contains(part), "{shown} leaks {part}");
        }
    }
}
