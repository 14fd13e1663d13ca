//! Exponential backoff with a cap, for retries after infrastructure faults
//! and feed reconnects; optionally jittered so that clients knocked off
//! together do not come back together.

use std::time::Duration;

/// Delays starting at `base`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    /// Exact delays: `base`, `2·base`, … up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            next: base,
            jitter: false,
        }
    }

    /// "Equal jitter": each delay is drawn uniformly from `[d/2, d]` of the
    /// nominal delay `d`.
    pub fn jittered(base: Duration, max: Duration) -> Self {
        Backoff {
            jitter: true,
            ..Backoff::new(base, max)
        }
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        if !self.jitter {
            return d;
        }
        let half = d / 2;
        let spread = (d - half).as_millis() as u64;
        half + Duration::from_millis(rand::random::<u64>() % (spread + 1))
    }

    /// Back to the base delay after a success.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let seq: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jittered_delays_stay_within_half_and_the_nominal_delay() {
        let mut b = Backoff::jittered(Duration::from_millis(100), Duration::from_millis(1000));
        for i in 0..8 {
            let nominal = Duration::from_millis((100u64 << i).min(1000));
            let w = b.next_delay();
            assert!(
                w >= nominal / 2 && w <= nominal,
                "wait {i} = {w:?}, nominal {nominal:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
