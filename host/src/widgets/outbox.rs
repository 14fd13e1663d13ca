//! A client's bounded send queue.
//!
//! Everything the server sends a client goes through its [`Outbox`]: pushes
//! from the hub and replies to its requests, in order. The queue is bounded
//! both in frames (`client_queue`) and in bytes (`client_queue_bytes`,
//! counting each payload as if the client owned it, although payloads are
//! shared). A client that reads fast enough never reaches the bound and gets
//! every message. When a push does not fit, the client is *behind* and the
//! [`SlowClientPolicy`] decides:
//!
//! - `disconnect`: the queue is dropped and the client closed with 1013.
//! - `conflate`: the queue is compacted to the newest payload per channel
//!   (replies are kept), and until the client has drained its queue every
//!   push replaces the payload still queued for its channel instead of
//!   adding one; a push for a channel with nothing queued is appended. Only
//!   when even one payload per channel does not fit is the client closed
//!   with 1013 — so memory stays bounded however slow it is.
//!
//! A reply that does not fit closes the client (replies are never dropped or
//! merged). The hub never waits on a client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// What to do with a client whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowClientPolicy {
    /// Close the client's connection (close code 1013).
    Disconnect,
    /// Keep only the newest payload per channel while the client is behind.
    Conflate,
}

/// Result of offering a push to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// Replaced an older payload of the same channel.
    Conflated,
    /// The client was too slow and is being closed.
    Overflow,
    /// The client is gone.
    Closed,
}

/// A frame waiting to be written.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A text frame.
    Text(Utf8Bytes),
    /// A close frame, after which the writer stops.
    Close(u16, &'static str),
}

#[derive(Debug)]
struct Slot {
    /// The channel of a push (conflation key); `None` for replies and closes.
    channel: Option<Arc<str>>,
    frame: Outgoing,
}

impl Slot {
    fn len(&self) -> usize {
        match &self.frame {
            Outgoing::Text(t) => t.len(),
            Outgoing::Close(..) => 0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Slot>,
    /// Sequence number of `queue[0]`.
    head: u64,
    bytes: usize,
    /// Conflating (the client is behind): channel → sequence of its queued push.
    behind: Option<HashMap<Arc<str>, u64>>,
    /// A close is queued or done: accept nothing more.
    closing: bool,
}

impl State {
    fn fits(&self, len: usize, max_frames: usize, max_bytes: usize) -> bool {
        self.queue.len() < max_frames && (self.queue.is_empty() || self.bytes + len <= max_bytes)
    }

    /// Keep the newest push per channel (and every reply); index the rest.
    fn compact(&mut self) -> HashMap<Arc<str>, u64> {
        let mut newest: HashMap<Arc<str>, usize> = HashMap::new();
        for (i, slot) in self.queue.iter().enumerate() {
            if let Some(c) = &slot.channel {
                newest.insert(c.clone(), i);
            }
        }
        let mut i = 0;
        self.queue.retain(|slot| {
            let keep = match &slot.channel {
                Some(c) => newest.get(c) == Some(&i),
                None => true,
            };
            i += 1;
            keep
        });
        self.bytes = self.queue.iter().map(Slot::len).sum();
        let head = self.head;
        self.queue
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.channel.clone().map(|c| (c, head + i as u64)))
            .collect()
    }
}

/// A client's bounded queue, shared by the hub (producer) and the client's
/// writer task (consumer).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    /// Turns true when the client is cut off as too slow.
    killed: tokio::sync::watch::Sender<bool>,
    max_frames: usize,
    max_bytes: usize,
    policy: SlowClientPolicy,
}

/// The reason sent with 1013.
pub const TOO_SLOW: &str = "too slow: client queue full";

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` payload bytes.
    pub fn new(max_frames: usize, max_bytes: usize, policy: SlowClientPolicy) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            killed: tokio::sync::watch::Sender::new(false),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
            policy,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offer a published payload of `channel`.
    pub fn push(&self, channel: &Arc<str>, payload: &Utf8Bytes) -> Offer {
        let mut s = self.lock();
        if s.closing {
            return Offer::Closed;
        }
        if s.behind.is_none() && !s.fits(payload.len(), self.max_frames, self.max_bytes) {
            if self.policy == SlowClientPolicy::Disconnect {
                self.overflow(&mut s);
                return Offer::Overflow;
            }
            let index = s.compact();
            s.behind = Some(index);
        }
        let head = s.head;
        if let Some(queued) = s
            .behind
            .as_ref()
            .and_then(|b| b.get(channel))
            .copied()
            .filter(|q| *q >= head)
        {
            let slot = &mut s.queue[(queued - head) as usize];
            let old = slot.len();
            slot.frame = Outgoing::Text(payload.clone());
            s.bytes = s.bytes - old + payload.len();
            return Offer::Conflated;
        }
        if !s.fits(payload.len(), self.max_frames, self.max_bytes) {
            self.overflow(&mut s);
            return Offer::Overflow;
        }
        s.bytes += payload.len();
        let seq = s.head + s.queue.len() as u64;
        if let Some(b) = s.behind.as_mut() {
            b.insert(channel.clone(), seq);
        }
        s.queue.push_back(Slot {
            channel: Some(channel.clone()),
            frame: Outgoing::Text(payload.clone()),
        });
        drop(s);
        self.ready.notify_one();
        Offer::Queued
    }

    /// Queue a reply; false (and the client is closed) when it does not fit.
    pub fn reply(&self, text: Utf8Bytes) -> bool {
        let mut s = self.lock();
        if s.closing {
            return false;
        }
        if !s.fits(text.len(), self.max_frames, self.max_bytes) {
            self.overflow(&mut s);
            return false;
        }
        s.bytes += text.len();
        s.queue.push_back(Slot {
            channel: None,
            frame: Outgoing::Text(text),
        });
        drop(s);
        self.ready.notify_one();
        true
    }

    /// Queue a close frame after what is queued; nothing is accepted after it.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut s = self.lock();
        if s.closing {
            return;
        }
        s.closing = true;
        s.queue.push_back(Slot {
            channel: None,
            frame: Outgoing::Close(code, reason),
        });
        drop(s);
        self.ready.notify_one();
    }

    /// Turns true when the client has been cut off as too slow.
    pub fn killed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.killed.subscribe()
    }

    /// Too slow: drop everything queued and close with 1013 right away.
    fn overflow(&self, s: &mut State) {
        self.killed.send_replace(true);
        s.head += s.queue.len() as u64;
        s.queue.clear();
        s.behind = None;
        s.bytes = 0;
        s.closing = true;
        s.queue.push_back(Slot {
            channel: None,
            frame: Outgoing::Close(1013, TOO_SLOW),
        });
        self.ready.notify_one();
    }

    /// Frames and bytes queued now.
    pub fn len(&self) -> (usize, usize) {
        let s = self.lock();
        (s.queue.len(), s.bytes)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Move up to `max` queued frames into `out`, waiting until there is at
    /// least one.
    pub async fn take(&self, out: &mut Vec<Outgoing>, max: usize) {
        loop {
            {
                let mut s = self.lock();
                while out.len() < max {
                    let Some(slot) = s.queue.pop_front() else {
                        break;
                    };
                    s.head += 1;
                    s.bytes -= slot.len();
                    out.push(slot.frame);
                }
                if s.queue.is_empty() {
                    // Caught up: deliver everything again.
                    s.behind = None;
                }
                if !out.is_empty() {
                    return;
                }
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(out: &[Outgoing]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Outgoing::Text(t) => t.to_string(),
                Outgoing::Close(c, _) => format!("close {c}"),
            })
            .collect()
    }

    async fn drain(ob: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        ob.take(&mut out, 1000).await;
        texts(&out)
    }

    #[tokio::test]
    async fn below_the_bound_everything_is_delivered_in_order() {
        let ob = Outbox::new(4, 1 << 20, SlowClientPolicy::Conflate);
        let a: Arc<str> = "a".into();
        for i in 0..4 {
            assert_eq!(ob.push(&a, &format!("a{i}").into()), Offer::Queued);
        }
        assert_eq!(drain(&ob).await, ["a0", "a1", "a2", "a3"]);
    }

    #[tokio::test]
    async fn behind_clients_get_the_newest_per_channel_and_catch_up() {
        let ob = Outbox::new(4, 1 << 20, SlowClientPolicy::Conflate);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        ob.push(&a, &"a0".into());
        ob.push(&b, &"b0".into());
        assert!(ob.reply("r".into()));
        ob.push(&a, &"a1".into());
        // Full: compacts to b0, r, a1, then conflates into a1's slot.
        for i in 2..100 {
            assert_eq!(ob.push(&a, &format!("a{i}").into()), Offer::Conflated);
        }
        assert_eq!(ob.push(&"c".into(), &"c0".into()), Offer::Queued);
        assert_eq!(ob.len(), (4, 2 + 1 + 3 + 2));
        assert_eq!(ob.push(&"d".into(), &"d0".into()), Offer::Overflow);
        assert_eq!(drain(&ob).await, ["close 1013"], "overflow drops the queue");
        assert_eq!(ob.push(&a, &"x".into()), Offer::Closed);
    }

    #[tokio::test]
    async fn conflation_ends_when_the_client_has_drained() {
        let ob = Outbox::new(2, 1 << 20, SlowClientPolicy::Conflate);
        let a: Arc<str> = "a".into();
        ob.push(&a, &"1".into());
        ob.push(&a, &"2".into());
        assert_eq!(
            ob.push(&a, &"3".into()),
            Offer::Conflated,
            "compacted to 2, replaced by 3"
        );
        assert_eq!(ob.push(&a, &"4".into()), Offer::Conflated);
        let mut out = Vec::new();
        ob.take(&mut out, 1).await;
        assert_eq!(texts(&out), ["4"]);
        assert_eq!(
            ob.push(&a, &"5".into()),
            Offer::Queued,
            "drained: caught up"
        );
        assert_eq!(ob.push(&a, &"5b".into()), Offer::Queued);
        assert_eq!(ob.push(&a, &"5c".into()), Offer::Conflated, "behind again");
        assert_eq!(drain(&ob).await, ["5c"]);
        assert_eq!(ob.push(&a, &"6".into()), Offer::Queued);
        assert_eq!(
            ob.push(&a, &"7".into()),
            Offer::Queued,
            "caught up: no merging"
        );
        assert_eq!(drain(&ob).await, ["6", "7"]);
    }

    #[tokio::test]
    async fn disconnect_policy_and_byte_bound() {
        let ob = Outbox::new(100, 10, SlowClientPolicy::Disconnect);
        let a: Arc<str> = "a".into();
        assert_eq!(ob.push(&a, &"123456".into()), Offer::Queued);
        assert_eq!(ob.push(&a, &"123456".into()), Offer::Overflow, "byte bound");
        assert_eq!(ob.push(&a, &"1".into()), Offer::Closed);
        assert!(!ob.reply("r".into()));
    }
}
