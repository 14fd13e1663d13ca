//! Fan-out: one store subscription per feed (channel or pattern) per
//! process, however many clients want it. Each published payload is turned
//! into a WebSocket text payload once (sharing the store's buffer, no copy)
//! and handed to every client by reference count; clients are never
//! re-serialized to. A feed's task resubscribes with backoff if its store
//! subscription ends.
//!
//! Back-pressure is the clients' [`Outbox`]es' business: offering a payload
//! never waits, so a slow client cannot delay the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;

use super::outbox::{Offer, Outbox};
use crate::store::{Store, Topic};

pub use super::outbox::SlowClientPolicy;

/// A snapshot of a feed's clients, so the pump fans out without the lock.
type Clients = Arc<Vec<Arc<Outbox>>>;

struct Feed {
    clients: HashMap<u64, Arc<Outbox>>,
    /// Rebuilt by the pump after (un)subscriptions; `None` = stale.
    snapshot: Option<Clients>,
    task: tokio::task::JoinHandle<()>,
}

/// The fan-out hub of one server.
pub struct Hub {
    store: Arc<dyn Store>,
    feeds: Mutex<HashMap<String, Feed>>,
}

/// Owner of a shared store payload, so `Bytes` can borrow it without copying.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The payload as a WebSocket text payload, sharing its buffer.
pub fn shared_text(payload: &Arc<str>) -> Utf8Bytes {
    let bytes = Bytes::from_owner(SharedText(payload.clone()));
    // A `str` is valid UTF-8, so this cannot fail; fall back to a copy anyway.
    Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from(payload.as_ref()))
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Arc<dyn Store>) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            feeds: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Feed>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds with at least one client.
    pub fn feeds(&self) -> usize {
        self.lock().len()
    }

    /// Add `client` (its outbox) to `feed`; subscribes the store on first use.
    pub fn subscribe(self: &Arc<Self>, feed: &str, client: u64, outbox: Arc<Outbox>) {
        let mut feeds = self.lock();
        if let Some(f) = feeds.get_mut(feed) {
            f.clients.insert(client, outbox);
            f.snapshot = None;
            return;
        }
        metrics::gauge!("mdp_wds_feeds").increment(1.0);
        let task = tokio::spawn(self.clone().pump(feed.to_string()));
        feeds.insert(
            feed.to_string(),
            Feed {
                clients: HashMap::from([(client, outbox)]),
                snapshot: None,
                task,
            },
        );
    }

    /// Remove `client` from `feed`; true if it was there. The last client's
    /// departure unsubscribes the store.
    pub fn unsubscribe(&self, feed: &str, client: u64) -> bool {
        let mut feeds = self.lock();
        let Some(f) = feeds.get_mut(feed) else {
            return false;
        };
        let had = f.clients.remove(&client).is_some();
        if had {
            f.snapshot = None;
        }
        if f.clients.is_empty()
            && let Some(f) = feeds.remove(feed)
        {
            f.task.abort();
            metrics::gauge!("mdp_wds_feeds").decrement(1.0);
        }
        had
    }

    fn clients(&self, feed: &str) -> Option<Clients> {
        let mut feeds = self.lock();
        let f = feeds.get_mut(feed)?;
        Some(
            f.snapshot
                .get_or_insert_with(|| Arc::new(f.clients.values().cloned().collect()))
                .clone(),
        )
    }

    /// Deliver store messages of `feed` to its clients, resubscribing as needed.
    async fn pump(self: Arc<Self>, feed: String) {
        let mut delay = Duration::from_millis(100);
        loop {
            let mut sub = match self.store.subscribe(&[Topic::parse(&feed)]).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%feed, error = %e, ?delay, "cannot subscribe; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            delay = Duration::from_millis(100);
            while let Some(msg) = sub.messages.recv().await {
                let Some(clients) = self.clients(&feed) else {
                    return;
                };
                let started = std::time::Instant::now();
                let payload = shared_text(&msg.payload);
                let channel: Arc<str> = Arc::from(msg.channel.as_str());
                let (mut sent, mut conflated, mut slow) = (0u64, 0u64, 0u64);
                for outbox in clients.iter() {
                    match outbox.push(&channel, &payload) {
                        Offer::Queued => sent += 1,
                        Offer::Conflated => conflated += 1,
                        Offer::Overflow => slow += 1,
                        Offer::Closed => {}
                    }
                }
                metrics::histogram!("mdp_wds_fanout_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("mdp_wds_messages_received_total").increment(1);
                metrics::counter!("mdp_wds_messages_sent_total").increment(sent);
                if conflated > 0 {
                    metrics::counter!("mdp_wds_conflated_total").increment(conflated);
                }
                if slow > 0 {
                    metrics::counter!("mdp_wds_slow_client_total").increment(slow);
                    tracing::info!(%feed, clients = slow, "closing clients that cannot keep up");
                }
            }
            tracing::warn!(%feed, "store subscription ended; resubscribing");
            metrics::counter!("mdp_wds_resubscribes_total").increment(1);
        }
    }
}
