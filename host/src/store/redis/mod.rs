//! The Redis store (`redis` crate): a `ConnectionManager` (reconnecting) for
//! commands, one pipeline per `apply` (`MULTI`/`EXEC` when atomic), and one
//! pub/sub connection per store owned by a supervisor task that multiplexes
//! every subscription (each channel or pattern subscribed once, however many
//! subscribers) and resubscribes after reconnecting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

mod hub;

use super::{Message, Store, StoreError, StoreResult, Subscription, Topic, Write, redact};

/// Attempts to connect at start before giving up.
const CONNECT_ATTEMPTS: u32 = 5;

/// A store backed by Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    url: String,
    hub: mpsc::UnboundedSender<Control>,
    /// Why the pub/sub connection is down, or `None` while it is up.
    pubsub_down: PubSubDown,
}

/// Shared between the store and its pub/sub task: why the connection is
/// down, or `None` while it is up.
type PubSubDown = Arc<std::sync::Mutex<Option<String>>>;

/// Record (and export) whether the pub/sub connection is up.
fn set_down(down: &PubSubDown, why: Option<String>) {
    metrics::gauge!("mdp_store_pubsub_connected", "backend" => "redis")
        .set(f64::from(u8::from(why.is_none())));
    *down.lock().unwrap_or_else(|e| e.into_inner()) = why;
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish()
    }
}

enum Control {
    Subscribe {
        topics: Vec<Topic>,
        tx: mpsc::Sender<Message>,
        done: oneshot::Sender<StoreResult<()>>,
    },
}

fn map_err(url: &str, e: redis::RedisError) -> StoreError {
    if e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE") {
        return StoreError::WrongType {
            key: String::new(),
            detail: e.to_string(),
        };
    }
    // Server answers that mean "not now": retrying later can succeed.
    const BUSY: [&str; 7] = [
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "READONLY",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "OOM",
    ];
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code().is_some_and(|c| BUSY.contains(&c))
    {
        return StoreError::Unavailable(format!("{url}: {e}"));
    }
    StoreError::Other(format!("{url}: {e}"))
}

fn observe(op: &'static str, started: Instant, failed: bool) {
    metrics::histogram!("mdp_store_op_seconds", "backend" => "redis", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if failed {
        metrics::counter!("mdp_store_errors_total", "backend" => "redis", "op" => op).increment(1);
    }
}

impl RedisStore {
    /// Connect to `url` (retrying with backoff a few times); errors name the
    /// URL without its password.
    pub async fn connect(url: &str) -> StoreResult<RedisStore> {
        let shown = redact(url);
        let client = crate::tls::redis_client(url)
            .map_err(|e| StoreError::Other(format!("{shown}: {e}")))?;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        let conn = loop {
            attempt += 1;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(Duration::from_secs(10)))
                .set_number_of_retries(2);
            match client.get_connection_manager_with_config(config).await {
                Ok(c) => break c,
                Err(e) if attempt < CONNECT_ATTEMPTS => {
                    tracing::warn!(url = %shown, error = %e, ?delay, "redis not reachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to {shown} after {attempt} attempts: {e}{}",
                        crate::tls::connect_hint(url, &e.to_string())
                    )));
                }
            }
        };
        let (hub, control) = mpsc::unbounded_channel();
        let pubsub_down: PubSubDown = Arc::new(std::sync::Mutex::new(Some("connecting".into())));
        tokio::spawn(hub::run(
            client,
            shown.clone(),
            control,
            pubsub_down.clone(),
        ));
        Ok(RedisStore {
            conn,
            url: shown,
            hub,
            pubsub_down,
        })
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let mut conn = self.conn.clone();
        let result = cmd.query_async::<T>(&mut conn).await;
        observe(op, started, result.is_err());
        result.map_err(|e| map_err(&self.url, e))
    }
}

fn ttl_secs(ttl: &Option<Duration>) -> Option<u64> {
    ttl.map(|t| t.as_secs().max(1))
}

/// Add the commands of one write to `pipe` (their replies ignored).
fn queue_write(pipe: &mut redis::Pipeline, w: &Write) {
    match w {
        Write::Set { key, value, ttl } => {
            let cmd = pipe.cmd("SET").arg(key).arg(value.as_ref());
            if let Some(s) = ttl_secs(ttl) {
                cmd.arg("EX").arg(s);
            }
            cmd.ignore();
        }
        Write::Push {
            key,
            value,
            max_len,
            ttl,
        } => {
            pipe.cmd("LPUSH").arg(key).arg(value.as_ref()).ignore();
            pipe.cmd("LTRIM")
                .arg(key)
                .arg(0)
                .arg(i64::from(*max_len) - 1)
                .ignore();
            if let Some(s) = ttl_secs(ttl) {
                pipe.cmd("EXPIRE").arg(key).arg(s).ignore();
            }
        }
        Write::ZAdd {
            key,
            members,
            keep_top,
            ttl,
        } => {
            if !members.is_empty() {
                let cmd = pipe.cmd("ZADD").arg(key);
                for (m, s) in members {
                    cmd.arg(*s).arg(m);
                }
                cmd.ignore();
            }
            if let Some(keep) = keep_top {
                pipe.cmd("ZREMRANGEBYRANK")
                    .arg(key)
                    .arg(0)
                    .arg(-(i64::from(*keep)) - 1)
                    .ignore();
            }
            if let Some(s) = ttl_secs(ttl) {
                pipe.cmd("EXPIRE").arg(key).arg(s).ignore();
            }
        }
        Write::HSet { key, fields, ttl } => {
            if !fields.is_empty() {
                let cmd = pipe.cmd("HSET").arg(key);
                for (f, v) in fields {
                    cmd.arg(f).arg(v);
                }
                cmd.ignore();
            }
            if let Some(s) = ttl_secs(ttl) {
                pipe.cmd("EXPIRE").arg(key).arg(s).ignore();
            }
        }
        Write::Del { keys } => {
            if !keys.is_empty() {
                pipe.cmd("DEL").arg(keys).ignore();
            }
        }
        Write::Publish { channel, message } => {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(message.as_ref())
                .ignore();
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn apply(&self, writes: &[Write], atomic: bool) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for w in writes {
            queue_write(&mut pipe, w);
        }
        let started = Instant::now();
        let mut conn = self.conn.clone();
        let result = pipe.query_async::<()>(&mut conn).await;
        observe("apply", started, result.is_err());
        result.map_err(|e| map_err(&self.url, e))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        self.query("get", redis::cmd("GET").arg(key)).await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query("mget", redis::cmd("MGET").arg(keys)).await
    }

    async fn ztop(&self, key: &str, n: u32) -> StoreResult<Vec<(String, f64)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.query(
            "ztop",
            redis::cmd("ZREVRANGE")
                .arg(key)
                .arg(0)
                .arg(i64::from(n) - 1)
                .arg("WITHSCORES"),
        )
        .await
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, String)>> {
        let map: HashMap<String, String> = self
            .query("hgetall", redis::cmd("HGETALL").arg(key))
            .await?;
        let mut all: Vec<(String, String)> = map.into_iter().collect();
        all.sort();
        Ok(all)
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<String>> {
        self.query("lrange", redis::cmd("LRANGE").arg(key).arg(start).arg(stop))
            .await
    }

    async fn set_nx_px(&self, key: &str, value: &str, ttl_ms: u64) -> StoreResult<bool> {
        let reply: Option<String> = self
            .query(
                "set_nx",
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms.max(1)),
            )
            .await?;
        Ok(reply.is_some())
    }

    async fn del_if_eq(&self, key: &str, value: &str) -> StoreResult<bool> {
        let script = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        let n: i64 = self
            .query(
                "del_if_eq",
                redis::cmd("EVAL").arg(script).arg(1).arg(key).arg(value),
            )
            .await?;
        Ok(n == 1)
    }

    async fn scan_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let mut escaped = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push('*');
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    "scan",
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&escaped)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<u64>> {
        let t: i64 = self.query("ttl", redis::cmd("TTL").arg(key)).await?;
        Ok((t >= 0).then_some(t as u64))
    }

    async fn subscribe(&self, topics: &[Topic]) -> StoreResult<Subscription> {
        let (tx, rx) = mpsc::channel(super::embedded::SUBSCRIPTION_BUFFER);
        let (done, wait) = oneshot::channel();
        self.hub
            .send(Control::Subscribe {
                topics: topics.to_vec(),
                tx,
                done,
            })
            .map_err(|_| StoreError::Unavailable(format!("{}: pub/sub task stopped", self.url)))?;
        wait.await.map_err(|_| {
            StoreError::Unavailable(format!("{}: pub/sub task stopped", self.url))
        })??;
        Ok(Subscription { messages: rx })
    }

    fn pubsub_status(&self) -> Result<(), String> {
        match &*self.pubsub_down.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(why) => Err(format!("{}: pub/sub {why}", self.url)),
        }
    }
}
