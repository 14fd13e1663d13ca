//! The long-running roles built on the backends and the plugin runtime:
//! [`processor`] (queue → analyzer → store) and [`scanner`] (pub/sub →
//! analyzer → store).

pub mod processor;
pub mod scanner;

use std::time::Duration;

/// Exponential backoff with a cap, for retries after infrastructure faults.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Start at `base`, double up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            next: base,
            base,
            max,
        }
    }
    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    /// Back to the base delay after a success.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

/// Events a role's analyzer saw, as one batch: the plugin events and the
/// exact texts `Body::Input` refers to.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// Events for the plugin.
    pub events: Vec<crate::plugin::bindings::Event>,
    /// The JSON text of each event.
    pub texts: Vec<String>,
}

impl EventBatch {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let seq: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
