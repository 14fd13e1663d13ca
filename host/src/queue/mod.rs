//! Durable work queues between listeners and processors: RabbitMQ in
//! distributed deployments, an in-process broker in embedded mode. Both
//! implement [`Queue`] with the same semantics (TTL, prefetch, acks,
//! competing consumers, redelivery of unacked messages).

use std::time::Duration;

mod embedded;
mod rabbitmq;

pub use embedded::EmbeddedQueue;
pub use rabbitmq::{RabbitQueue, ttl_value as rabbitmq_ttl_value};

use std::sync::Arc;

use async_trait::async_trait;

/// Errors a queue operation can end with.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker could not be reached or the connection broke.
    #[error("queue broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message (negative publisher confirm).
    #[error("publish to `{queue}` not confirmed")]
    NotConfirmed {
        /// The queue.
        queue: String,
    },
    /// The queue does not exist or was declared with other arguments.
    #[error("queue `{queue}`: {detail}")]
    Declaration {
        /// The queue.
        queue: String,
        /// What the broker said.
        detail: String,
    },
    /// Anything else.
    #[error("queue error: {0}")]
    Other(String),
}

/// Result of a queue operation.
pub type QueueResult<T> = Result<T, QueueError>;

/// How a queue is declared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// `x-message-ttl`: messages older than this are dropped.
    pub message_ttl: Option<Duration>,
    /// Queue that rejected messages are dead-lettered to, if any.
    pub dead_letter: Option<String>,
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Message body (JSON: one event object or an array of events).
    pub body: bytes::Bytes,
    /// Tag to acknowledge it with, on this consumer.
    pub tag: u64,
    /// True when the broker delivered it before (to this or another consumer).
    pub redelivered: bool,
}

/// Acknowledgement side of a consumer; cheap to clone and usable while the
/// consumer is waiting for the next delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledge `tag` (and every earlier tag with `multiple`).
    async fn ack(&self, tag: u64, multiple: bool) -> QueueResult<()>;
    /// Negative acknowledgement; `requeue` puts the message(s) back.
    async fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> QueueResult<()>;
    /// Reject one message; without `requeue` it is dead-lettered (or dropped).
    async fn reject(&self, tag: u64, requeue: bool) -> QueueResult<()>;
    /// Whether the consumer is attached to the broker right now (false while
    /// it reconnects after the broker went away).
    fn connected(&self) -> bool {
        true
    }
}

/// A consumer on one queue, with a prefetch window.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` when the consumer was cancelled or the queue deleted.
    async fn next(&mut self) -> Option<QueueResult<Delivery>>;
    /// A handle to acknowledge this consumer's deliveries.
    fn acker(&self) -> std::sync::Arc<dyn Acker>;
}

/// A message broker.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Declare a durable queue (idempotent; arguments compatible with the seed's).
    async fn declare(&self, spec: &QueueSpec) -> QueueResult<()>;
    /// Publish bodies to `queue` (default exchange, non-persistent, JSON) and
    /// wait for every publisher confirm.
    async fn publish(&self, queue: &str, bodies: &[bytes::Bytes]) -> QueueResult<()>;
    /// Start consuming `queue` with at most `prefetch` unacknowledged deliveries.
    async fn consume(&self, queue: &str, prefetch: u16) -> QueueResult<Box<dyn Consumer>>;
    /// Number of ready messages in `queue`.
    async fn depth(&self, queue: &str) -> QueueResult<u64>;
    /// Whether the broker took the last publish (true before the first):
    /// a publisher's readiness.
    fn connected(&self) -> bool {
        true
    }
}

/// Open a broker by URL: `memory://` (or `embedded`) for the embedded broker,
/// `amqp://` / `amqps://` (TLS, see [`crate::tls`]) for RabbitMQ.
///
/// An empty URL is refused with a message naming `RABBITMQ_URL`: a role never
/// falls back to an in-process queue nobody else can reach.
pub async fn open(url: &str) -> QueueResult<Arc<dyn Queue>> {
    if url.trim().is_empty() {
        return Err(QueueError::Other(
            "no queue URL: set RABBITMQ_URL (or --queue-url) to amqp://user:pass@host:port/vhost; \
             memory:// (an in-process queue) is used only when given explicitly"
                .into(),
        ));
    }
    if url == "embedded" || url.starts_with("memory://") {
        return Ok(Arc::new(EmbeddedQueue::new()));
    }
    if url.starts_with("amqp://") || url.starts_with("amqps://") {
        return Ok(Arc::new(RabbitQueue::connect(url).await?));
    }
    Err(QueueError::Other(format!(
        "unsupported queue URL `{}`: use memory:// or amqp://user:pass@host:port/vhost",
        crate::secret::redact_url(url)
    )))
}
