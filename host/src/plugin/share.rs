//! What one plugin (by name, across its generations and instances) may hold
//! of the process's shared resources: its share of the instance pool, and
//! the distinct counter names that become Prometheus label values.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Distinct counter names one plugin may create (the rest are dropped and
/// counted in `mdp_plugin_counter_overflow_total`).
pub const MAX_COUNTER_NAMES: usize = 64;
/// Longest counter name, bytes.
pub const MAX_COUNTER_NAME: usize = 64;

/// Whether `name` may be a counter's name: 1 to [`MAX_COUNTER_NAME`] of
/// `a-z`, `0-9`, `_`, `.`, `:`, `-`.
pub fn valid_counter_name(name: &str) -> bool {
    (1..=MAX_COUNTER_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' | b'-'))
}

/// One plugin's share of the process.
#[derive(Debug)]
pub struct PluginShare {
    name: String,
    counters: Mutex<HashSet<String>>,
    overflow_logged: AtomicBool,
    instances: Arc<Semaphore>,
    max_instances: usize,
}

impl PluginShare {
    /// The share of plugin `name`, allowed `max_instances` live instances.
    pub fn new(name: &str, max_instances: usize) -> Self {
        PluginShare {
            name: name.to_string(),
            counters: Mutex::new(HashSet::new()),
            overflow_logged: AtomicBool::new(false),
            instances: Arc::new(Semaphore::new(max_instances)),
            max_instances,
        }
    }

    /// May the plugin count under `name`? An invalid name, or a new one past
    /// [`MAX_COUNTER_NAMES`], is refused: counted in
    /// `mdp_plugin_counter_overflow_total` and logged once per plugin.
    pub fn admit_counter(&self, name: &str) -> bool {
        let why = if !valid_counter_name(name) {
            "invalid counter name (1-64 of a-z 0-9 _ . : -)"
        } else {
            let mut names = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            if names.contains(name) {
                return true;
            }
            if names.len() < MAX_COUNTER_NAMES {
                names.insert(name.to_string());
                return true;
            }
            "too many distinct counter names"
        };
        metrics::counter!("mdp_plugin_counter_overflow_total", "plugin" => self.name.clone())
            .increment(1);
        if !self.overflow_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(plugin = %self.name, counter = %name.chars().take(80).collect::<String>(), limit = MAX_COUNTER_NAMES, "{why}: dropped, as are later ones (counted in mdp_plugin_counter_overflow_total; logged once)");
        }
        false
    }

    /// Take one of the plugin's instance slots, or say why not.
    pub fn acquire_instance(&self) -> Result<OwnedSemaphorePermit, String> {
        self.instances.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("mdp_plugin_instance_share_exhausted_total", "plugin" => self.name.clone())
                .increment(1);
            format!(
                "plugin `{}` already has {} live instances, its share of the instance pool (instances_per_plugin)",
                self.name, self.max_instances
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_validated_and_capped() {
        assert!(valid_counter_name("trades.seen:a-b_1"));
        for bad in ["", "Upper", "space here", "x{y}", &"a".repeat(65)] {
            assert!(!valid_counter_name(bad), "{bad}");
        }
        let share = PluginShare::new("p", 2);
        for i in 0..MAX_COUNTER_NAMES {
            assert!(share.admit_counter(&format!("c{i}")));
        }
        assert!(share.admit_counter("c0"), "known names stay");
        assert!(!share.admit_counter("one_more"));
        assert!(!share.admit_counter("Bad!"));
    }

    #[test]
    fn instances_are_capped_per_plugin() {
        let share = PluginShare::new("p", 2);
        let a = share.acquire_instance().unwrap();
        let _b = share.acquire_instance().unwrap();
        let e = share.acquire_instance().unwrap_err();
        assert!(e.contains("instances_per_plugin"), "{e}");
        drop(a);
        assert!(share.acquire_instance().is_ok());
    }
}
