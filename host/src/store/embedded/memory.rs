//! Memory accounting of the embedded store: an estimate of each entry's
//! heap bytes, kept up to date by every write, exported as gauges, and
//! eviction under a budget (like Redis `maxmemory` with `volatile-ttl`).

use std::time::Instant;

use super::keyspace::{Data, Entry, Value, str_cost};

impl Value {
    /// Estimated heap bytes held by the value.
    fn cost(&self) -> usize {
        match self {
            Value::Str(v) => str_cost(v),
            Value::List(l) => 32 + l.iter().map(|v| str_cost(v)).sum::<usize>(),
            Value::ZSet(z) => 48 + z.keys().map(|m| str_cost(m) + 16).sum::<usize>(),
            Value::Hash(h) => {
                48 + h
                    .iter()
                    .map(|(f, v)| str_cost(f) + str_cost(v) + 8)
                    .sum::<usize>()
            }
        }
    }
}

/// Estimated bytes of an entry: its key, the map slot and its value.
fn entry_cost(key: &str, value: &Value) -> usize {
    str_cost(key) + 64 + value.cost()
}

impl Entry {
    /// The entry of `value` at `key`, its cost estimated.
    pub(super) fn new(key: &str, value: Value, expires: Option<Instant>) -> Entry {
        Entry {
            cost: entry_cost(key, &value),
            value,
            expires,
        }
    }
}

impl Data {
    /// Export the size gauges.
    pub(super) fn report(&self) {
        metrics::gauge!("mdp_store_embedded_bytes").set(self.used as f64);
        metrics::gauge!("mdp_store_embedded_keys").set(self.entries.len() as f64);
    }

    /// Over budget: evict keys with an expiry, soonest first, to 90 % of it.
    /// The caller reports the size afterwards, so a scrape never sees the
    /// transient over-budget size between a write and its eviction.
    pub(super) fn evict(&mut self, now: Instant) {
        let Some(max) = self.max else {
            return;
        };
        if self.used <= max {
            return;
        }
        self.purge(now);
        let target = max / 10 * 9;
        let mut victims: Vec<(Instant, String)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| e.expires.map(|t| (t, k.clone())))
            .collect();
        victims.sort_unstable_by_key(|(t, _)| *t);
        let mut evicted = 0u64;
        for (_, key) in victims {
            if self.used <= target {
                break;
            }
            self.remove(&key);
            evicted += 1;
        }
        metrics::counter!("mdp_store_evicted_total").increment(evicted);
        if self.used > max {
            tracing::warn!(
                used = self.used,
                max,
                "embedded store over its memory budget with nothing left to evict (keys without expiry)"
            );
        }
    }

    /// Re-estimate `key`'s cost after an in-place change.
    pub(super) fn recost(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            let cost = entry_cost(key, &e.value);
            self.used = self.used - e.cost + cost;
            e.cost = cost;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{Store, Write};

    /// The store's running estimate, recomputed from scratch.
    fn recounted(store: &EmbeddedStore) -> usize {
        store
            .data()
            .entries
            .iter()
            .map(|(k, e)| entry_cost(k, &e.value))
            .sum()
    }

    fn del(keys: &[&str]) -> Write {
        Write::Del {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn push(key: &str, value: &str, ttl_s: u64) -> Write {
        Write::Push {
            key: key.into(),
            value: value.into(),
            max_len: 10,
            ttl: Some(Duration::from_secs(ttl_s)),
        }
    }

    #[tokio::test]
    async fn the_size_estimate_follows_every_kind_of_write() {
        let store = EmbeddedStore::new();
        let writes = vec![
            Write::Set {
                key: "s".into(),
                value: "x".repeat(100).into(),
                ttl: None,
            },
            Write::Set {
                key: "s".into(),
                value: "y".repeat(10).into(),
                ttl: None,
            },
            push("l", &"a".repeat(50), 60),
            Write::ZAdd {
                key: "z".into(),
                members: (0..20).map(|i| (format!("m{i}"), f64::from(i))).collect(),
                keep_top: Some(5),
                ttl: None,
            },
            Write::HSet {
                key: "h".into(),
                fields: vec![("f".into(), "v".into()), ("g".into(), "w".repeat(30))],
                ttl: None,
            },
        ];
        store.apply(&writes, false).await.unwrap();
        for i in 0..25 {
            store
                .apply(&[push("l", &"b".repeat(i), 60)], false)
                .await
                .unwrap();
        }
        assert_eq!(store.used_memory(), recounted(&store));
        assert!(store.set_nx_px("lock", "me", 10_000).await.unwrap());
        assert!(store.del_if_eq("lock", "me").await.unwrap());
        store.apply(&[del(&["h", "s"])], false).await.unwrap();
        assert_eq!(store.used_memory(), recounted(&store));
        store.apply(&[del(&["l", "z"])], false).await.unwrap();
        assert_eq!(store.used_memory(), 0);
    }

    /// Records the largest value ever set on `mdp_store_embedded_bytes`.
    #[derive(Default)]
    struct PeakBytes(std::sync::Mutex<f64>);

    impl metrics::GaugeFn for PeakBytes {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            let mut peak = self.0.lock().unwrap();
            *peak = peak.max(value);
        }
    }

    /// A recorder that hands out [`PeakBytes`] for the size gauge only.
    #[derive(Default)]
    struct PeakRecorder(Arc<PeakBytes>);

    impl metrics::Recorder for PeakRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            if key.name() == "mdp_store_embedded_bytes" {
                metrics::Gauge::from_arc(self.0.clone())
            } else {
                metrics::Gauge::noop()
            }
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn the_exported_size_never_shows_a_transient_over_budget_value() {
        // Regression: the size was exported before eviction, so a scrape
        // between a write and its eviction read more than the budget.
        let budget = 100_000;
        let recorder = PeakRecorder::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let store = EmbeddedStore::with_max_memory(budget);
                let item = "i".repeat(200);
                for i in 0..2_000u64 {
                    let writes: Vec<Write> = (0..10)
                        .map(|_| push(&format!("list:{i}"), &item, 1000 + i))
                        .collect();
                    store.apply(&writes, false).await.unwrap();
                }
            })
        });
        let peak = *recorder.0.0.lock().unwrap();
        assert!(peak > 0.0, "the size was exported");
        assert!(peak <= budget as f64, "exported {peak} > budget {budget}");
    }

    #[tokio::test]
    async fn a_memory_budget_evicts_the_soonest_expiring_keys_and_never_keys_without_expiry() {
        let budget = 200_000;
        let store = EmbeddedStore::with_max_memory(budget);
        let keep = "k".repeat(1000);
        store
            .apply(
                &[Write::Set {
                    key: "keep".into(),
                    value: keep.as_str().into(),
                    ttl: None,
                }],
                false,
            )
            .await
            .unwrap();
        // 500 lists of 10 × 200 bytes (~2.4 KB each, ~1.2 MB in all), list i
        // expiring after 1000 + i seconds: far more than the budget.
        let item = "i".repeat(200);
        for i in 0..500u64 {
            let writes: Vec<Write> = (0..10)
                .map(|_| push(&format!("list:{i}"), &item, 1000 + i))
                .collect();
            store.apply(&writes, false).await.unwrap();
            assert!(store.used_memory() <= budget, "over budget after list {i}");
        }
        assert_eq!(store.used_memory(), recounted(&store));
        assert!(
            store.used_memory() > budget / 2,
            "evicts to 90 %, not to nothing"
        );
        assert_eq!(
            store.get("keep").await.unwrap(),
            Some(keep),
            "no expiry: never evicted"
        );
        assert!(
            store.lrange("list:0", 0, -1).await.unwrap().is_empty(),
            "soonest expiry went first"
        );
        assert_eq!(
            store.lrange("list:499", 0, -1).await.unwrap().len(),
            10,
            "latest expiry kept"
        );
        let survivors = (0..500)
            .filter(|i| store.data().entries.contains_key(&format!("list:{i}")))
            .collect::<Vec<_>>();
        assert!(
            survivors.windows(2).all(|w| w[1] == w[0] + 1),
            "the survivors are the latest-expiring lists: {survivors:?}"
        );
    }
}
