//! The Massive listener's publishing side: frames read are merged, per
//! queue, with those waiting, and each queue is published with confirms.

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::stats::Count;
use super::{MassiveListener, Routed};
use crate::event::MARKET_QUEUES;

/// Most events merged into one publish per queue.
const MAX_BATCH_EVENTS: usize = 2000;

/// Most events in one array message (`--batch-frames`).
const BATCH_MESSAGE_EVENTS: usize = 1000;

impl MassiveListener {
    /// Publish frames as they come, merging those waiting (up to
    /// [`MAX_BATCH_EVENTS`] per queue) and publishing the queues concurrently.
    pub(super) async fn publish_loop(&self, mut rx: mpsc::Receiver<Routed>) {
        while let Some(first) = rx.recv().await {
            let mut merged: [Vec<Value>; 5] = Default::default();
            let add = |merged: &mut [Vec<Value>; 5], routed: Routed| {
                for (queue, events) in routed {
                    merged[queue_index(queue)].extend(events);
                }
            };
            add(&mut merged, first);
            while merged.iter().map(Vec::len).max().unwrap_or(0) < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(routed) => add(&mut merged, routed),
                    Err(_) => break,
                }
            }
            let publishes = merged
                .into_iter()
                .enumerate()
                .filter(|(_, events)| !events.is_empty())
                .map(|(i, events)| self.publish_queue(i, events));
            futures_util::future::join_all(publishes).await;
        }
    }

    /// Publish the events of the `i`th queue: one message each, or arrays.
    async fn publish_queue(&self, i: usize, events: Vec<Value>) {
        let queue = MARKET_QUEUES[i];
        let n = events.len() as u64;
        let bodies: Vec<Bytes> = if self.config.batch_frames {
            // Array messages of at most BATCH_MESSAGE_EVENTS events stay well
            // under the processors' 1 MB body limit.
            events
                .chunks(BATCH_MESSAGE_EVENTS)
                .map(|c| Bytes::from(serde_json::to_string(c).unwrap_or_default()))
                .collect()
        } else {
            events
                .into_iter()
                .map(|e| Bytes::from(e.to_string()))
                .collect()
        };
        let published = crate::feed::publish(
            &*self.queue,
            &self.queues[i],
            &bodies,
            n,
            "massive",
            crate::feed::PUBLISH_TIMEOUT,
        )
        .await;
        match published {
            Ok(()) => {
                self.stats.add(Count::Published, bodies.len() as u64);
                self.stats.add(Count::Confirmed(queue), n);
            }
            Err(_) => self.stats.add(Count::PublishError, 1),
        }
    }
}

/// The index of `queue` in [`MARKET_QUEUES`] (`unknown` for any other name).
pub(super) fn queue_index(queue: &str) -> usize {
    MARKET_QUEUES
        .iter()
        .position(|q| *q == queue)
        .unwrap_or(MARKET_QUEUES.len() - 1)
}
