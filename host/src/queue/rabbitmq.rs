//! The RabbitMQ broker over `lapin`: durable queues declared exactly like
//! the seed (`x-message-ttl`, so a Python deployment's declarations do not
//! conflict), non-persistent JSON publishes on the default exchange with
//! publisher confirms (a channel per queue, all confirms of a call awaited
//! together), consumers on their own channels with prefetch, and reconnects
//! with exponential backoff after a broker restart.
//!
//! Delivery tags handed out carry the channel generation in their top bits,
//! so an acknowledgement for a delivery from a channel that has since been
//! replaced is recognised (the broker has already requeued it) and refused
//! instead of acknowledging an unrelated message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::{Acker, Consumer, Delivery, Queue, QueueError, QueueResult, QueueSpec};
use crate::secret::redact_url as redact;

/// Attempts to connect at start before giving up.
const CONNECT_ATTEMPTS: u32 = 5;
/// How long one connection attempt (TCP, TLS and AMQP handshakes) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bits of a delivery tag used by the broker's own tag.
const TAG_BITS: u32 = 40;

/// A RabbitMQ broker connection.
pub struct RabbitQueue {
    endpoint: RabbitHandle,
    /// Whether the last publish was confirmed.
    published: AtomicBool,
    state: Mutex<Option<Arc<Conn>>>,
    declared: std::sync::Mutex<HashMap<String, QueueSpec>>,
}

struct Conn {
    connection: Connection,
    publishers: Mutex<HashMap<String, Channel>>,
}

/// The `x-message-ttl` value encoded as the seed's Python client (pamqp)
/// encodes an int: the smallest signed integer type that holds it.
/// RabbitMQ compares argument types when a queue is re-declared.
pub fn ttl_value(ms: i64) -> AMQPValue {
    if let Ok(v) = i8::try_from(ms) {
        AMQPValue::ShortShortInt(v)
    } else if let Ok(v) = i16::try_from(ms) {
        AMQPValue::ShortInt(v)
    } else if let Ok(v) = i32::try_from(ms) {
        AMQPValue::LongInt(v)
    } else {
        AMQPValue::LongLongInt(ms)
    }
}

fn arguments(spec: &QueueSpec) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(ttl) = spec.message_ttl {
        args.insert("x-message-ttl".into(), ttl_value(ttl.as_millis() as i64));
    }
    if let Some(dlq) = &spec.dead_letter {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dlq.as_str().into()),
        );
    }
    args
}

impl RabbitQueue {
    /// Connect to `url`, retrying with backoff a few times; errors name the
    /// URL without its password. An `amqps://` URL is TLS (see [`crate::tls`]).
    pub async fn connect(url: &str) -> QueueResult<RabbitQueue> {
        let queue = RabbitQueue {
            endpoint: RabbitHandle {
                url: url.to_string(),
                shown: redact(url),
                tls: crate::tls::amqp_config().map_err(|e| QueueError::Other(e.to_string()))?,
            },
            published: AtomicBool::new(true),
            state: Mutex::new(None),
            declared: std::sync::Mutex::new(HashMap::new()),
        };
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=CONNECT_ATTEMPTS {
            match queue.conn().await {
                Ok(_) => return Ok(queue),
                Err(e) if attempt < CONNECT_ATTEMPTS => {
                    tracing::warn!(url = %queue.endpoint.shown, error = %e, ?delay, "rabbitmq not reachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    return Err(QueueError::Unavailable(format!(
                        "cannot connect to {} after {attempt} attempts: {e}",
                        queue.endpoint.shown
                    )));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Publish and wait for every confirm.
    async fn publish_confirmed(&self, queue: &str, bodies: &[Bytes]) -> QueueResult<()> {
        let started = std::time::Instant::now();
        let conn = self.conn().await?;
        let channel = self.publisher(&conn, queue).await?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut confirms = Vec::with_capacity(bodies.len());
        for body in bodies {
            let properties = BasicProperties::default()
                .with_delivery_mode(1)
                .with_content_type("application/json".into())
                .with_timestamp(timestamp);
            match channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
            {
                Ok(c) => confirms.push(c),
                Err(e) => {
                    self.drop_conn().await;
                    return Err(self.unavailable(e));
                }
            }
        }
        for confirm in confirms {
            match confirm.await {
                Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => {}
                Ok(Confirmation::Nack(_)) => {
                    return Err(QueueError::NotConfirmed {
                        queue: queue.to_string(),
                    });
                }
                Err(e) => {
                    self.drop_conn().await;
                    return Err(self.unavailable(e));
                }
            }
        }
        metrics::histogram!("mdp_queue_publish_seconds", "backend" => "rabbitmq", "queue" => queue.to_string())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("mdp_queue_published_total", "backend" => "rabbitmq", "queue" => queue.to_string())
            .increment(bodies.len() as u64);
        Ok(())
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> QueueError {
        self.endpoint.unavailable(e)
    }

    /// The live connection, reconnecting (and re-declaring queues) if it broke.
    async fn conn(&self) -> QueueResult<Arc<Conn>> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.as_ref()
            && c.connection.status().connected()
        {
            return Ok(c.clone());
        }
        let connection = self.endpoint.open_connection().await?;
        let conn = Arc::new(Conn {
            connection,
            publishers: Mutex::new(HashMap::new()),
        });
        let specs: Vec<QueueSpec> = self
            .declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        if !specs.is_empty() {
            let channel = conn
                .connection
                .create_channel()
                .await
                .map_err(|e| self.unavailable(e))?;
            for spec in &specs {
                declare_on(&channel, spec)
                    .await
                    .map_err(|e| self.unavailable(e))?;
            }
            let _ = channel.close(200, "declared".into()).await;
            tracing::info!(url = %self.endpoint.shown, queues = specs.len(), "rabbitmq reconnected; queues re-declared");
        }
        *state = Some(conn.clone());
        Ok(conn)
    }

    async fn drop_conn(&self) {
        *self.state.lock().await = None;
    }

    async fn publisher(&self, conn: &Conn, queue: &str) -> QueueResult<Channel> {
        let mut publishers = conn.publishers.lock().await;
        if let Some(ch) = publishers.get(queue)
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let channel = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| self.unavailable(e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.unavailable(e))?;
        publishers.insert(queue.to_string(), channel.clone());
        Ok(channel)
    }
}

async fn declare_on(channel: &Channel, spec: &QueueSpec) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            ShortString::from(spec.name.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments(spec),
        )
        .await
}

#[async_trait]
impl Queue for RabbitQueue {
    async fn declare(&self, spec: &QueueSpec) -> QueueResult<()> {
        let conn = self.conn().await?;
        let channel = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| self.unavailable(e))?;
        let result = declare_on(&channel, spec).await;
        let _ = channel.close(200, "declared".into()).await;
        result.map_err(|e| QueueError::Declaration {
            queue: spec.name.clone(),
            detail: e.to_string(),
        })?;
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    async fn publish(&self, queue: &str, bodies: &[Bytes]) -> QueueResult<()> {
        let result = self.publish_confirmed(queue, bodies).await;
        let reached = !matches!(result, Err(QueueError::Unavailable(_)));
        self.published.store(reached, Ordering::Relaxed);
        result
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> QueueResult<Box<dyn Consumer>> {
        let mut consumer = RabbitConsumer {
            owner: self.endpoint.clone(),
            queue: queue.to_string(),
            prefetch,
            stream: None,
            acker: Arc::new(RabbitAcker {
                current: Mutex::new(None),
                up: AtomicBool::new(false),
                shown: self.endpoint.shown.clone(),
            }),
            generation: 0,
        };
        consumer.open().await?;
        Ok(Box::new(consumer))
    }

    fn connected(&self) -> bool {
        self.published.load(Ordering::Relaxed)
    }

    async fn depth(&self, queue: &str) -> QueueResult<u64> {
        let conn = self.conn().await?;
        let channel = conn
            .connection
            .create_channel()
            .await
            .map_err(|e| self.unavailable(e))?;
        let result = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "depth".into()).await;
        let q = result.map_err(|e| QueueError::Declaration {
            queue: queue.to_string(),
            detail: e.to_string(),
        })?;
        Ok(u64::from(q.message_count()))
    }
}

/// Where the broker is and how to connect (a consumer reconnects on its own).
#[derive(Clone)]
struct RabbitHandle {
    url: String,
    shown: String,
    /// TLS settings of an `amqps://` connection.
    tls: OwnedTLSConfig,
}

impl RabbitHandle {
    fn unavailable(&self, e: impl std::fmt::Display) -> QueueError {
        QueueError::Unavailable(format!("{}: {e}", self.shown))
    }

    /// A new connection, within [`CONNECT_TIMEOUT`]; a failure carries a
    /// hint when TLS, or its absence, may be the cause.
    async fn open_connection(&self) -> QueueResult<Connection> {
        let runtime = lapin::runtime::default_runtime().map_err(|e| self.unavailable(e))?;
        let connect = Connection::connect_with_config(
            &self.url,
            ConnectionProperties::default(),
            self.tls.clone(),
            runtime,
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => {
                let e = e.to_string();
                let hint = crate::tls::connect_hint(&self.url, &e);
                Err(self.unavailable(format!("{e}{hint}")))
            }
            Err(_) => Err(self.unavailable(format!(
                "no AMQP handshake within {CONNECT_TIMEOUT:?}{}",
                crate::tls::connect_hint(&self.url, "")
            ))),
        }
    }
}

struct RabbitAcker {
    current: Mutex<Option<(u64, Channel)>>,
    /// A consuming channel is open (false while reconnecting).
    up: AtomicBool,
    shown: String,
}

impl RabbitAcker {
    /// The channel for `tag` if it is still the live one, and the broker's tag.
    async fn channel_for(&self, tag: u64) -> QueueResult<(Channel, u64)> {
        let generation = tag >> TAG_BITS;
        match self.current.lock().await.as_ref() {
            Some((g, ch)) if *g == generation => Ok((ch.clone(), tag & ((1 << TAG_BITS) - 1))),
            _ => Err(QueueError::Unavailable(format!(
                "{}: the channel of this delivery is gone (the broker requeued it)",
                self.shown
            ))),
        }
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(&self, tag: u64, multiple: bool) -> QueueResult<()> {
        let (ch, t) = self.channel_for(tag).await?;
        ch.basic_ack(t, BasicAckOptions { multiple })
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    async fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> QueueResult<()> {
        let (ch, t) = self.channel_for(tag).await?;
        ch.basic_nack(t, BasicNackOptions { multiple, requeue })
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    async fn reject(&self, tag: u64, requeue: bool) -> QueueResult<()> {
        let (ch, t) = self.channel_for(tag).await?;
        ch.basic_reject(t, BasicRejectOptions { requeue })
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    fn connected(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

struct RabbitConsumer {
    owner: RabbitHandle,
    queue: String,
    prefetch: u16,
    stream: Option<lapin::Consumer>,
    acker: Arc<RabbitAcker>,
    generation: u64,
}

impl RabbitConsumer {
    async fn open(&mut self) -> QueueResult<()> {
        let unavailable =
            |e: lapin::Error| QueueError::Unavailable(format!("{}: {e}", self.owner.shown));
        let connection = self.owner.open_connection().await?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel
            .basic_qos(self.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let stream = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| QueueError::Declaration {
                queue: self.queue.clone(),
                detail: e.to_string(),
            })?;
        self.generation += 1;
        *self.acker.current.lock().await = Some((self.generation, channel));
        self.acker.up.store(true, Ordering::Relaxed);
        self.stream = Some(stream);
        Ok(())
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<QueueResult<Delivery>> {
        let mut delay = Duration::from_millis(200);
        loop {
            if let Some(stream) = self.stream.as_mut() {
                match stream.next().await {
                    Some(Ok(d)) => {
                        return Some(Ok(Delivery {
                            body: Bytes::from(d.data),
                            tag: (self.generation << TAG_BITS) | d.delivery_tag,
                            redelivered: d.redelivered,
                        }));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(queue = %self.queue, error = %e, "rabbitmq consumer failed; reconnecting");
                    }
                    None => {
                        tracing::warn!(queue = %self.queue, "rabbitmq consumer cancelled; reconnecting");
                    }
                }
                self.stream = None;
                self.acker.up.store(false, Ordering::Relaxed);
                *self.acker.current.lock().await = None;
            }
            match self.open().await {
                Ok(()) => {
                    tracing::info!(queue = %self.queue, "rabbitmq consumer resumed");
                    delay = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!(queue = %self.queue, error = %e, ?delay, "rabbitmq consumer reconnect failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }
}
