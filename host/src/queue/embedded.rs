//! The embedded queue broker: named durable-for-the-process queues with
//! message TTL, prefetch windows, ack/nack/reject (single and multiple),
//! dead-lettering, competing consumers, and redelivery of unacknowledged
//! messages when a consumer goes away. A real mode for `mdp up`.
//!
//! Publishing to a queue that was never declared is an error (RabbitMQ's
//! default exchange would silently drop such a message).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{Acker, Consumer, Delivery, Queue, QueueError, QueueResult, QueueSpec};

#[derive(Debug, Clone)]
struct Msg {
    body: Bytes,
    enqueued: Instant,
    redelivered: bool,
}

#[derive(Default)]
struct QueueState {
    spec: QueueSpec,
    ready: VecDeque<Msg>,
    /// Unacknowledged deliveries per consumer id, by tag.
    unacked: HashMap<u64, BTreeMap<u64, Msg>>,
}

#[derive(Default)]
struct Broker {
    queues: HashMap<String, QueueState>,
    next_consumer: u64,
}

#[derive(Default)]
struct Inner {
    broker: Mutex<Broker>,
    notify: Notify,
}

/// An in-process message broker. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedQueue")
    }
}

impl QueueState {
    /// Drop expired messages at the head (as RabbitMQ does).
    fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.spec.message_ttl else {
            return;
        };
        while self
            .ready
            .front()
            .is_some_and(|m| now.duration_since(m.enqueued) >= ttl)
        {
            self.ready.pop_front();
            metrics::counter!("mdp_queue_expired_total", "backend" => "embedded", "queue" => self.spec.name.clone())
                .increment(1);
        }
    }
}

impl Broker {
    fn queue(&mut self, name: &str) -> QueueResult<&mut QueueState> {
        self.queues
            .get_mut(name)
            .ok_or_else(|| QueueError::Declaration {
                queue: name.to_string(),
                detail: "not declared".into(),
            })
    }

    /// Settle unacked messages of `consumer` on `queue`: `tag` (and all earlier with `multiple`).
    fn settle(
        &mut self,
        queue: &str,
        consumer: u64,
        tag: u64,
        multiple: bool,
    ) -> QueueResult<Vec<Msg>> {
        let q = self.queue(queue)?;
        let unacked = q.unacked.entry(consumer).or_default();
        let tags: Vec<u64> = if multiple {
            unacked.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        let mut out = Vec::new();
        for t in tags {
            match unacked.remove(&t) {
                Some(m) => out.push(m),
                None if !multiple => {
                    return Err(QueueError::Other(format!(
                        "unknown delivery tag {t} on `{queue}`"
                    )));
                }
                None => {}
            }
        }
        Ok(out)
    }

    fn requeue(&mut self, queue: &str, msgs: Vec<Msg>) {
        if let Ok(q) = self.queue(queue) {
            for mut m in msgs.into_iter().rev() {
                m.redelivered = true;
                q.ready.push_front(m);
            }
        }
    }

    fn dead_letter(&mut self, queue: &str, msgs: Vec<Msg>) {
        let dlq = self
            .queues
            .get(queue)
            .and_then(|q| q.spec.dead_letter.clone());
        match dlq.and_then(|d| self.queues.get_mut(&d)) {
            Some(target) => {
                let now = Instant::now();
                target.ready.extend(msgs.into_iter().map(|m| Msg {
                    body: m.body,
                    enqueued: now,
                    redelivered: false,
                }));
            }
            None => {
                metrics::counter!("mdp_queue_dropped_total", "backend" => "embedded", "queue" => queue.to_string())
                    .increment(msgs.len() as u64);
            }
        }
    }
}

/// How often a broker drops expired messages from queues nobody consumes.
const EXPIRY_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl EmbeddedQueue {
    /// An empty broker. Inside a tokio runtime it also starts a sweeper that
    /// expires messages on time in queues that nothing consumes (memory stays
    /// bounded by publish rate × TTL); the sweeper ends with the broker.
    pub fn new() -> Self {
        let queue = EmbeddedQueue::default();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::downgrade(&queue.inner);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(EXPIRY_SWEEP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = inner.upgrade() else { return };
                    EmbeddedQueue { inner }.expire_all();
                }
            });
        }
        queue
    }

    /// Messages the broker holds in memory in `queue`, ready or unacknowledged,
    /// without expiring any first (what the TTL sweep keeps bounded).
    pub fn held(&self, queue: &str) -> usize {
        let broker = self.broker();
        broker.queues.get(queue).map_or(0, |q| {
            q.ready.len() + q.unacked.values().map(BTreeMap::len).sum::<usize>()
        })
    }

    /// Drop the expired messages of every queue.
    fn expire_all(&self) {
        let now = Instant::now();
        let mut broker = self.broker();
        for q in broker.queues.values_mut() {
            q.expire(now);
        }
    }

    fn broker(&self) -> std::sync::MutexGuard<'_, Broker> {
        self.inner.broker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn declare(&self, spec: &QueueSpec) -> QueueResult<()> {
        let mut broker = self.broker();
        match broker.queues.get(&spec.name) {
            Some(q)
                if q.spec.message_ttl != spec.message_ttl
                    || q.spec.dead_letter != spec.dead_letter =>
            {
                Err(QueueError::Declaration {
                    queue: spec.name.clone(),
                    detail: format!(
                        "already declared with other arguments (ttl {:?}, dead letter {:?})",
                        q.spec.message_ttl, q.spec.dead_letter
                    ),
                })
            }
            Some(_) => Ok(()),
            None => {
                broker.queues.insert(
                    spec.name.clone(),
                    QueueState {
                        spec: spec.clone(),
                        ..QueueState::default()
                    },
                );
                Ok(())
            }
        }
    }

    async fn publish(&self, queue: &str, bodies: &[Bytes]) -> QueueResult<()> {
        {
            let mut broker = self.broker();
            let q = broker.queue(queue)?;
            let now = Instant::now();
            q.expire(now);
            q.ready.extend(bodies.iter().map(|b| Msg {
                body: b.clone(),
                enqueued: now,
                redelivered: false,
            }));
        }
        metrics::counter!("mdp_queue_published_total", "backend" => "embedded", "queue" => queue.to_string())
            .increment(bodies.len() as u64);
        self.inner.notify.notify_waiters();
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> QueueResult<Box<dyn Consumer>> {
        let id = {
            let mut broker = self.broker();
            broker.queue(queue)?;
            broker.next_consumer += 1;
            let id = broker.next_consumer;
            broker.queue(queue)?.unacked.insert(id, BTreeMap::new());
            id
        };
        Ok(Box::new(EmbeddedConsumer {
            acker: Arc::new(EmbeddedAcker {
                queue: self.clone(),
                name: queue.to_string(),
                consumer: id,
            }),
            prefetch: prefetch.max(1) as usize,
            next_tag: 0,
        }))
    }

    async fn depth(&self, queue: &str) -> QueueResult<u64> {
        let mut broker = self.broker();
        let q = broker.queue(queue)?;
        q.expire(Instant::now());
        Ok(q.ready.len() as u64)
    }
}

/// Acknowledges deliveries of one embedded consumer.
struct EmbeddedAcker {
    queue: EmbeddedQueue,
    name: String,
    consumer: u64,
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self, tag: u64, multiple: bool) -> QueueResult<()> {
        let n = self
            .queue
            .broker()
            .settle(&self.name, self.consumer, tag, multiple)?
            .len();
        metrics::counter!("mdp_queue_acked_total", "backend" => "embedded", "queue" => self.name.clone())
            .increment(n as u64);
        self.queue.inner.notify.notify_waiters();
        Ok(())
    }

    async fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> QueueResult<()> {
        {
            let mut broker = self.queue.broker();
            let msgs = broker.settle(&self.name, self.consumer, tag, multiple)?;
            if requeue {
                broker.requeue(&self.name, msgs);
            } else {
                broker.dead_letter(&self.name, msgs);
            }
        }
        self.queue.inner.notify.notify_waiters();
        Ok(())
    }

    async fn reject(&self, tag: u64, requeue: bool) -> QueueResult<()> {
        self.nack(tag, false, requeue).await
    }
}

impl Drop for EmbeddedAcker {
    /// The consumer is gone: its unacknowledged messages go back to the queue.
    fn drop(&mut self) {
        let mut broker = self.queue.broker();
        let msgs: Vec<Msg> = match broker.queues.get_mut(&self.name) {
            Some(q) => q
                .unacked
                .remove(&self.consumer)
                .map(|m| m.into_values().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if !msgs.is_empty() {
            broker.requeue(&self.name, msgs);
            drop(broker);
            self.queue.inner.notify.notify_waiters();
        }
    }
}

struct EmbeddedConsumer {
    acker: Arc<EmbeddedAcker>,
    prefetch: usize,
    next_tag: u64,
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<QueueResult<Delivery>> {
        let queue = self.acker.queue.clone();
        loop {
            let notified = queue.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut broker = queue.broker();
                let q = match broker.queue(&self.acker.name) {
                    Ok(q) => q,
                    Err(_) => return None,
                };
                q.expire(Instant::now());
                let held = q.unacked.get(&self.acker.consumer).map_or(0, BTreeMap::len);
                if held < self.prefetch
                    && let Some(msg) = q.ready.pop_front()
                {
                    self.next_tag += 1;
                    let tag = self.next_tag;
                    let delivery = Delivery {
                        body: msg.body.clone(),
                        tag,
                        redelivered: msg.redelivered,
                    };
                    q.unacked
                        .entry(self.acker.consumer)
                        .or_default()
                        .insert(tag, msg);
                    return Some(Ok(delivery));
                }
            }
            notified.await;
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }
}
