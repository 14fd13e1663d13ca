//! Fan-out: one store subscription per feed (channel or pattern) per
//! process, however many clients want it; each payload is shared (`Arc<str>`)
//! and never re-serialized per client. A feed's task resubscribes with
//! backoff when the store connection goes away.
//!
//! Back-pressure: every client has a bounded queue. When it is full the
//! configured [`SlowClientPolicy`] applies: `disconnect` closes that client
//! (1013, "too slow"); `drop` discards the message for that client and
//! counts it. Memory stays bounded either way and other clients are never
//! delayed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{Store, Topic};

/// What to do with a client whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowClientPolicy {
    /// Close the client's connection.
    Disconnect,
    /// Drop the message for that client.
    Drop,
}

/// A client as the hub sees it: its bounded queue and a signal to close it.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    /// Payloads to push.
    pub tx: mpsc::Sender<Arc<str>>,
    /// Notified when the client is too slow and must be closed.
    pub too_slow: Arc<tokio::sync::Notify>,
}

struct Feed {
    clients: HashMap<u64, ClientHandle>,
    task: tokio::task::JoinHandle<()>,
}

/// The fan-out hub of one server.
pub struct Hub {
    store: Arc<dyn Store>,
    feeds: Mutex<HashMap<String, Feed>>,
    policy: SlowClientPolicy,
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Arc<dyn Store>, policy: SlowClientPolicy) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            feeds: Mutex::new(HashMap::new()),
            policy,
        })
    }

    /// Feeds with at least one client.
    pub fn feeds(&self) -> usize {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Add `client` (its queue `tx`) to `feed`; subscribes the store on first use.
    pub fn subscribe(self: &Arc<Self>, feed: &str, client: u64, tx: ClientHandle) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = feeds.get_mut(feed) {
            f.clients.insert(client, tx);
            return;
        }
        metrics::gauge!("mdp_wds_feeds").increment(1.0);
        let task = tokio::spawn(self.clone().pump(feed.to_string()));
        feeds.insert(
            feed.to_string(),
            Feed {
                clients: HashMap::from([(client, tx)]),
                task,
            },
        );
    }

    /// Remove `client` from `feed`; true if it was there. The last client's
    /// departure unsubscribes the store.
    pub fn unsubscribe(&self, feed: &str, client: u64) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = feeds.get_mut(feed) else {
            return false;
        };
        let had = f.clients.remove(&client).is_some();
        if f.clients.is_empty()
            && let Some(f) = feeds.remove(feed)
        {
            f.task.abort();
            metrics::gauge!("mdp_wds_feeds").decrement(1.0);
        }
        had
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
                metrics::counter!("mdp_wds_messages_received_total").increment(1);
                let targets: Vec<(u64, ClientHandle)> = {
                    let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
                    match feeds.get(&feed) {
                        Some(f) => f.clients.iter().map(|(id, tx)| (*id, tx.clone())).collect(),
                        None => return,
                    }
                };
                let mut sent = 0u64;
                for (id, client) in targets {
                    match client.tx.try_send(msg.payload.clone()) {
                        Ok(()) => sent += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            metrics::counter!("mdp_wds_slow_client_total").increment(1);
                            if self.policy == SlowClientPolicy::Disconnect {
                                self.unsubscribe(&feed, id);
                                client.too_slow.notify_one();
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.unsubscribe(&feed, id);
                        }
                    }
                }
                metrics::counter!("mdp_wds_messages_sent_total").increment(sent);
            }
            tracing::warn!(%feed, "store subscription ended; resubscribing");
            metrics::counter!("mdp_wds_resubscribes_total").increment(1);
        }
    }
}
