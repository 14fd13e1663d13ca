//! [`Redeliveries`]: how often a message came back redelivered without this
//! process having requeued it, so that a poison message is dead-lettered
//! instead of being analyzed for ever.

use std::collections::{HashMap, HashSet};

use crate::queue::Delivery;

/// Messages remembered by the redelivery count before it starts over.
const REDELIVERIES_MAX: usize = 100_000;

/// How often each message came back redelivered without this process having
/// requeued it, keyed by a hash of its body.
#[derive(Default)]
pub(super) struct Redeliveries {
    /// Redelivered sightings per message.
    seen: HashMap<u64, u32>,
    /// Messages this process requeued itself (their redelivery is expected).
    requeued: HashSet<u64>,
}

impl Redeliveries {
    fn key(body: &[u8]) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(body)
    }

    /// Count a delivery; true when it came back more than `cap` times.
    pub(super) fn over_cap(&mut self, delivery: &Delivery, cap: u32) -> bool {
        if !delivery.redelivered || cap == 0 {
            return false;
        }
        let key = Self::key(&delivery.body);
        if self.requeued.remove(&key) {
            return false;
        }
        if self.seen.len() > REDELIVERIES_MAX {
            self.seen.clear();
        }
        let n = self.seen.entry(key).or_insert(0);
        *n += 1;
        *n > cap
    }

    /// Remember that this process put `deliveries` back on the queue.
    pub(super) fn requeued(&mut self, deliveries: &[Delivery]) {
        if self.requeued.len() > REDELIVERIES_MAX {
            self.requeued.clear();
        }
        for d in deliveries {
            self.requeued.insert(Self::key(&d.body));
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn delivery(body: &'static str, redelivered: bool) -> Delivery {
        Delivery {
            body: Bytes::from_static(body.as_bytes()),
            tag: 1,
            redelivered,
        }
    }

    #[test]
    fn redeliveries_past_the_cap_are_caught_but_own_requeues_are_not_counted() {
        let mut r = Redeliveries::default();
        // First deliveries never count.
        assert!(!r.over_cap(&delivery("a", false), 2));
        // Given back by someone else: counted, over the cap on the third.
        assert!(!r.over_cap(&delivery("a", true), 2));
        assert!(!r.over_cap(&delivery("a", true), 2));
        assert!(r.over_cap(&delivery("a", true), 2));
        // What this process requeued itself comes back without counting.
        r.requeued(&[delivery("b", false)]);
        for _ in 0..5 {
            assert!(!r.over_cap(&delivery("b", true), 2));
            r.requeued(&[delivery("b", true)]);
        }
        // No limit when the cap is 0.
        assert!(!r.over_cap(&delivery("a", true), 0));
    }
}
