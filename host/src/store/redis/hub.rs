//! The Redis store's pub/sub supervisor: one connection per store, every
//! channel or pattern subscribed once however many subscribers it has,
//! resubscribed after reconnecting, pinged so that a dead connection is
//! noticed even when no message arrives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use super::{Control, PubSubDown, map_err, set_down};
use crate::store::{Message, StoreError, StoreResult, Topic};

type Subscribers = HashMap<Topic, Vec<mpsc::Sender<Message>>>;

/// Subscribe `sink` to one channel or pattern.
async fn subscribe_topic(
    sink: &mut redis::aio::PubSubSink,
    topic: &Topic,
) -> redis::RedisResult<()> {
    match topic {
        Topic::Channel(c) => sink.subscribe(c).await,
        Topic::Pattern(p) => sink.psubscribe(p).await,
    }
}

/// Unsubscribe `sink` from one channel or pattern (errors ignored: the
/// connection is then replaced anyway).
async fn unsubscribe_topic(sink: &mut redis::aio::PubSubSink, topic: &Topic) {
    let _ = match topic {
        Topic::Channel(c) => sink.unsubscribe(c).await,
        Topic::Pattern(p) => sink.punsubscribe(p).await,
    };
}

/// How often the pub/sub connection is checked with a `PING`.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(5);
/// A `PING`, a connect or a (re)subscribe that takes longer than this means
/// the connection is dead (e.g. the server is stopped or the link half-open).
const PUBSUB_TIMEOUT: Duration = Duration::from_secs(5);
/// How often channels whose last subscriber left are unsubscribed.
const PUBSUB_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// First wait before reconnecting; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Own the process's pub/sub connection until the store is dropped:
/// (re)connect and (re)subscribe with a timeout and backoff, ping it,
/// unsubscribe topics nobody listens to any more, and route messages.
pub(super) async fn run(
    client: redis::Client,
    url: String,
    control: mpsc::UnboundedReceiver<Control>,
    down: PubSubDown,
) {
    Hub {
        client,
        url,
        control,
        down,
        subscribers: HashMap::new(),
        delay: FIRST_DELAY,
    }
    .run()
    .await;
}

/// The supervisor's state across connections.
struct Hub {
    client: redis::Client,
    url: String,
    control: mpsc::UnboundedReceiver<Control>,
    down: PubSubDown,
    subscribers: Subscribers,
    /// Wait before the next connection attempt.
    delay: Duration,
}

/// What woke a connected hub.
enum Input {
    /// A message, or `None` when the connection was lost.
    Message(Option<redis::Msg>),
    /// Time to check the connection with a `PING`.
    Ping,
    /// Time to unsubscribe topics nobody listens to.
    Sweep,
    /// A store request, or `None` when the store was dropped.
    Control(Option<Control>),
}

/// Why a connection was left.
enum Ended {
    /// It failed: connect again.
    Reconnect,
    /// The store was dropped: the task ends.
    Stop,
}

/// An interval whose missed ticks are delayed, not bunched.
fn every(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

impl Hub {
    async fn run(mut self) {
        loop {
            let (mut sink, stream) = match self.connect().await {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, delay = ?self.delay, "pub/sub connection failed; retrying");
                    set_down(&self.down, Some(format!("connection failed: {error}")));
                    if !self.back_off().await {
                        return;
                    }
                    continue;
                }
            };
            if !self.resubscribe(&mut sink).await {
                if !self.back_off().await {
                    return;
                }
                continue;
            }
            set_down(&self.down, None);
            self.delay = FIRST_DELAY;
            if let Ended::Stop = self.serve(&mut sink, stream).await {
                return;
            }
            set_down(&self.down, Some("reconnecting".into()));
        }
    }

    /// Open a pub/sub connection within [`PUBSUB_TIMEOUT`].
    async fn connect(&self) -> Result<(PubSubSink, PubSubStream), String> {
        match tokio::time::timeout(PUBSUB_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub.split()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PUBSUB_TIMEOUT:?}")),
        }
    }

    /// Wait before the next attempt, refusing subscriptions meanwhile, and
    /// double the wait; false when the store was dropped.
    async fn back_off(&mut self) -> bool {
        if !refuse_while_disconnected(&mut self.control, &self.url, self.delay).await {
            return false;
        }
        self.delay = (self.delay * 2).min(MAX_DELAY);
        true
    }

    /// Subscribe a new connection to every topic that still has subscribers;
    /// false when one failed or timed out.
    async fn resubscribe(&mut self, sink: &mut PubSubSink) -> bool {
        let url = &self.url;
        self.subscribers.retain(|_, senders| {
            senders.retain(|tx| !tx.is_closed());
            !senders.is_empty()
        });
        for topic in self.subscribers.keys() {
            match tokio::time::timeout(PUBSUB_TIMEOUT, subscribe_topic(sink, topic)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%url, error = %e, "resubscribe failed");
                    return false;
                }
                Err(_) => {
                    tracing::warn!(%url, "resubscribe timed out");
                    return false;
                }
            }
        }
        if !self.subscribers.is_empty() {
            tracing::info!(%url, topics = self.subscribers.len(), "pub/sub resubscribed");
            metrics::counter!("mdp_store_pubsub_resubscribes_total", "backend" => "redis")
                .increment(1);
        }
        true
    }

    /// Route messages, ping, sweep and take subscriptions on one connection
    /// until it fails or the store is dropped.
    async fn serve(&mut self, sink: &mut PubSubSink, mut stream: PubSubStream) -> Ended {
        let mut ping = every(PUBSUB_PING_EVERY);
        let mut sweep = every(PUBSUB_SWEEP_EVERY);
        loop {
            let input = tokio::select! {
                msg = stream.next() => Input::Message(msg),
                _ = ping.tick() => Input::Ping,
                _ = sweep.tick() => Input::Sweep,
                c = self.control.recv() => Input::Control(c),
            };
            match input {
                Input::Message(Some(msg)) => route(&mut self.subscribers, &msg),
                Input::Message(None) => {
                    tracing::warn!(url = %self.url, "pub/sub connection lost; reconnecting");
                    return Ended::Reconnect;
                }
                Input::Ping => {
                    if !self.ping(sink).await {
                        return Ended::Reconnect;
                    }
                }
                Input::Sweep => self.sweep(sink).await,
                Input::Control(None) => return Ended::Stop,
                Input::Control(Some(Control::Subscribe { topics, tx, done })) => {
                    let result = self.subscribe(sink, topics, tx).await;
                    let failed = result.is_err();
                    let _ = done.send(result);
                    if failed {
                        // The subscriber was told; reconnect and resubscribe everyone.
                        return Ended::Reconnect;
                    }
                }
            }
        }
    }

    /// Check the connection with a `PING`; false when it did not answer in time.
    async fn ping(&self, sink: &mut PubSubSink) -> bool {
        let answer = tokio::time::timeout(PUBSUB_TIMEOUT, sink.ping::<redis::Value>()).await;
        if matches!(answer, Ok(Ok(_))) {
            return true;
        }
        tracing::warn!(url = %self.url, timeout = ?PUBSUB_TIMEOUT, "pub/sub connection does not answer PING; reconnecting");
        metrics::counter!("mdp_store_pubsub_ping_failures_total", "backend" => "redis")
            .increment(1);
        false
    }

    /// Unsubscribe the topics whose last subscriber left.
    async fn sweep(&mut self, sink: &mut PubSubSink) {
        let mut gone = Vec::new();
        self.subscribers.retain(|topic, senders| {
            senders.retain(|tx| !tx.is_closed());
            if senders.is_empty() {
                gone.push(topic.clone());
            }
            !senders.is_empty()
        });
        for topic in gone {
            unsubscribe_topic(sink, &topic).await;
        }
    }

    /// Add a subscriber of `topics`, subscribing the connection to those it
    /// is not subscribed to yet.
    async fn subscribe(
        &mut self,
        sink: &mut PubSubSink,
        topics: Vec<Topic>,
        tx: mpsc::Sender<Message>,
    ) -> StoreResult<()> {
        let url = &self.url;
        let mut result = Ok(());
        for topic in topics {
            let senders = self.subscribers.entry(topic.clone()).or_default();
            senders.retain(|t| !t.is_closed());
            if senders.is_empty() {
                match tokio::time::timeout(PUBSUB_TIMEOUT, subscribe_topic(sink, &topic)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => result = Err(map_err(url, e)),
                    Err(_) => {
                        result = Err(StoreError::Unavailable(format!(
                            "{url}: subscribe timed out"
                        )))
                    }
                }
            }
            senders.push(tx.clone());
        }
        result
    }
}

/// Route one pub/sub message to the subscribers of its topic.
fn route(subscribers: &mut Subscribers, msg: &redis::Msg) {
    let channel = msg.get_channel_name().to_string();
    let topic = if msg.from_pattern() {
        match msg.get_pattern::<String>() {
            Ok(p) => Topic::Pattern(p),
            Err(_) => return,
        }
    } else {
        Topic::Channel(channel.clone())
    };
    let payload: Arc<str> = Arc::from(String::from_utf8_lossy(msg.get_payload_bytes()).as_ref());
    if let Some(senders) = subscribers.get_mut(&topic) {
        senders.retain(|tx| !tx.is_closed());
        for tx in senders.iter() {
            let message = Message {
                channel: channel.clone(),
                topic: topic.clone(),
                payload: payload.clone(),
            };
            if tx.try_send(message).is_err() {
                metrics::counter!("mdp_store_pubsub_dropped_total", "backend" => "redis")
                    .increment(1);
            }
        }
    }
}

/// Wait `delay` before reconnecting, answering new subscribers with an
/// error meanwhile so they can retry; false when the store was dropped.
async fn refuse_while_disconnected(
    control: &mut mpsc::UnboundedReceiver<Control>,
    url: &str,
    delay: Duration,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            c = control.recv() => match c {
                Some(Control::Subscribe { done, .. }) => {
                    let _ = done.send(Err(StoreError::Unavailable(format!("{url}: pub/sub reconnecting"))));
                }
                None => return false,
            },
        }
    }
}
