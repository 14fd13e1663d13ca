//! The embedded store's pub/sub: glob-matched subscriptions with bounded
//! buffers; a message that does not fit is dropped for that subscriber and
//! counted, so publishers never block.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::EmbeddedStore;
use crate::store::{Message, Subscription, Topic, glob};

/// Messages a subscription buffers before dropping.
pub const SUBSCRIPTION_BUFFER: usize = 65_536;

/// One subscription: its topics and the channel its messages go to.
pub(super) struct Subscriber {
    topics: Vec<Topic>,
    tx: mpsc::Sender<Message>,
}

fn topic_matches(topic: &Topic, channel: &str) -> bool {
    match topic {
        Topic::Channel(c) => c == channel,
        Topic::Pattern(p) => glob::matches(p, channel),
    }
}

impl EmbeddedStore {
    fn subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Deliver `payload` to every subscription with a topic matching `channel`.
    pub(super) fn publish(&self, channel: &str, payload: Arc<str>) {
        let mut subs = self.subscribers();
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

    /// A new subscription to `topics`.
    pub(super) fn add_subscriber(&self, topics: &[Topic]) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        self.subscribers().push(Subscriber {
            topics: topics.to_vec(),
            tx,
        });
        Subscription { messages: rx }
    }
}
