//! A client's bounded send queue.
//!
//! Everything the server sends a client goes through its [`Outbox`]: pushes
//! from the hub and replies to its requests, in order. The queue is bounded
//! both in frames (`client_queue`) and in bytes (`client_queue_bytes`,
//! counting each payload as if the client owned it, although payloads are
//! shared). When a push does not fit, the [`SlowClientPolicy`] decides:
//!
//! - `disconnect`: the client is closed with 1013 ("too slow").
//! - `conflate`: while the client is behind, a push replaces the payload
//!   still queued for the same channel (the client gets only the newest value
//!   per channel, in first-queued order); a push for a channel with nothing
//!   queued is appended. Only when the queue is full of distinct channels is
//!   the client closed, so memory stays bounded however slow it is.
//!
//! A reply that does not fit always closes the client (replies are never
//! dropped or merged). The hub never waits on a client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// What to do with a client whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    /// The channel of a push (conflation key); `None` for replies.
    channel: Option<Arc<str>>,
    /// The frame; `None` when a newer payload was moved to the map.
    frame: Outgoing,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Slot>,
    /// Conflate policy: channels with a push still queued → newest payload.
    latest: HashMap<Arc<str>, Utf8Bytes>,
    bytes: usize,
    /// A close is queued or done: accept nothing more.
    closing: bool,
}

/// A client's bounded queue, shared by the hub (producer) and the client's
/// writer task (consumer).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
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
        if self.policy == SlowClientPolicy::Conflate
            && let Some(old) = s.latest.get_mut(channel)
        {
            let (old_len, new_len) = (old.len(), payload.len());
            *old = payload.clone();
            s.bytes = s.bytes - old_len + new_len;
            return Offer::Conflated;
        }
        if s.queue.len() >= self.max_frames
            || (s.bytes + payload.len() > self.max_bytes && !s.queue.is_empty())
        {
            self.overflow(&mut s);
            return Offer::Overflow;
        }
        s.bytes += payload.len();
        if self.policy == SlowClientPolicy::Conflate {
            s.latest.insert(channel.clone(), payload.clone());
            s.queue.push_back(Slot {
                channel: Some(channel.clone()),
                frame: Outgoing::Close(0, ""),
            });
        } else {
            s.queue.push_back(Slot {
                channel: None,
                frame: Outgoing::Text(payload.clone()),
            });
        }
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
        if s.queue.len() >= self.max_frames
            || (s.bytes + text.len() > self.max_bytes && !s.queue.is_empty())
        {
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

    /// Too slow: drop everything queued and close with 1013 right away.
    fn overflow(&self, s: &mut State) {
        s.queue.clear();
        s.latest.clear();
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
                    let frame = match slot.channel {
                        Some(channel) => match s.latest.remove(&channel) {
                            Some(p) => Outgoing::Text(p),
                            None => continue,
                        },
                        None => slot.frame,
                    };
                    if let Outgoing::Text(t) = &frame {
                        s.bytes = s.bytes.saturating_sub(t.len());
                    }
                    out.push(frame);
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

    #[tokio::test]
    async fn conflation_keeps_the_newest_per_channel_in_first_queued_order() {
        let ob = Outbox::new(3, 1 << 20, SlowClientPolicy::Conflate);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert_eq!(ob.push(&a, &"a1".into()), Offer::Queued);
        assert_eq!(ob.push(&b, &"b1".into()), Offer::Queued);
        assert!(ob.reply("r".into()));
        for i in 2..100 {
            assert_eq!(ob.push(&a, &format!("a{i}").into()), Offer::Conflated);
        }
        assert_eq!(ob.len(), (3, 6), "a99 + b1 + r");
        assert_eq!(ob.push(&"c".into(), &"c1".into()), Offer::Overflow);
        let mut out = Vec::new();
        ob.take(&mut out, 10).await;
        assert_eq!(texts(&out), ["close 1013"], "overflow drops the queue");
    }

    #[tokio::test]
    async fn conflated_frames_come_out_newest() {
        let ob = Outbox::new(8, 1 << 20, SlowClientPolicy::Conflate);
        let a: Arc<str> = "a".into();
        ob.push(&a, &"1".into());
        ob.push(&a, &"2".into());
        ob.push(&"b".into(), &"x".into());
        let mut out = Vec::new();
        ob.take(&mut out, 10).await;
        assert_eq!(texts(&out), ["2", "x"]);
        assert_eq!(ob.len(), (0, 0));
        assert_eq!(
            ob.push(&a, &"3".into()),
            Offer::Queued,
            "caught up: queued again"
        );
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
