//! Keys placed where the seed keeps them: analyzer state in the market-data
//! cache (MDC, `MDC_REDIS_URL`, Redis db 0 in the seed's deployments) and
//! everything clients read in the widget cache (WDC, `WDC_REDIS_URL`, db 1).
//!
//! A plugin's manifest names its MDC keys as Redis globs
//! (`[placement] cache_keys = ["leaderboard:*", "symbol:*"]`); every other
//! key, and every channel, is the WDC's. [`PlacedStore`] routes each write,
//! read and lock to the store its key belongs to, so a role sharing Redis
//! with the seed's services sees and leaves the same keys in the same
//! databases. With one store for both (as in `mdp up`) no wrapper is made.
//!
//! A batch that spans both stores is applied to the MDC first, then to the
//! WDC, each part atomic on its own when asked; a failure between the two
//! requeues the batch, so its MDC part may be applied twice (at-least-once,
//! as every batch is).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Store, StoreResult, Subscription, Topic, Write, glob_matches};

/// A store that sends the keys matching `cache_keys` to `cache` (MDC) and
/// the rest, with all pub/sub, to `widgets` (WDC).
pub struct PlacedStore {
    widgets: Arc<dyn Store>,
    cache: Arc<dyn Store>,
    cache_keys: Vec<String>,
}

impl PlacedStore {
    /// `widgets` itself when there is nothing to place apart (no patterns,
    /// or one store for both), else a store placing keys by `cache_keys`.
    pub fn wrap(
        widgets: Arc<dyn Store>,
        cache: Arc<dyn Store>,
        cache_keys: &[String],
    ) -> Arc<dyn Store> {
        if cache_keys.is_empty() || Arc::ptr_eq(&widgets, &cache) {
            return widgets;
        }
        Arc::new(PlacedStore {
            widgets,
            cache,
            cache_keys: cache_keys.to_vec(),
        })
    }

    /// Whether `key` lives in the MDC.
    fn in_cache(&self, key: &str) -> bool {
        self.cache_keys.iter().any(|p| glob_matches(p, key))
    }

    /// The store `key` lives in.
    fn for_key(&self, key: &str) -> &dyn Store {
        if self.in_cache(key) {
            &*self.cache
        } else {
            &*self.widgets
        }
    }

    /// `writes` split into the MDC's part and the WDC's, each in order.
    fn split(&self, writes: &[Write]) -> (Vec<Write>, Vec<Write>) {
        let (mut cache, mut widgets) = (Vec::new(), Vec::new());
        for write in writes {
            let key = match write {
                Write::Set { key, .. }
                | Write::Push { key, .. }
                | Write::ZAdd { key, .. }
                | Write::HSet { key, .. } => key,
                Write::Publish { .. } => {
                    widgets.push(write.clone());
                    continue;
                }
                Write::Del { keys } => {
                    let (here, there): (Vec<String>, Vec<String>) =
                        keys.iter().cloned().partition(|k| self.in_cache(k));
                    if !here.is_empty() {
                        cache.push(Write::Del { keys: here });
                    }
                    if !there.is_empty() {
                        widgets.push(Write::Del { keys: there });
                    }
                    continue;
                }
            };
            if self.in_cache(key) {
                cache.push(write.clone());
            } else {
                widgets.push(write.clone());
            }
        }
        (cache, widgets)
    }
}

#[async_trait]
impl Store for PlacedStore {
    async fn apply(&self, writes: &[Write], atomic: bool) -> StoreResult<()> {
        let (cache, widgets) = self.split(writes);
        if !cache.is_empty() {
            self.cache.apply(&cache, atomic).await?;
        }
        if !widgets.is_empty() {
            self.widgets.apply(&widgets, atomic).await?;
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        self.for_key(key).get(key).await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        let (cache, widgets): (Vec<(usize, String)>, Vec<(usize, String)>) = keys
            .iter()
            .cloned()
            .enumerate()
            .partition(|(_, k)| self.in_cache(k));
        let mut out = vec![None; keys.len()];
        for (store, part) in [(&self.cache, cache), (&self.widgets, widgets)] {
            if part.is_empty() {
                continue;
            }
            let names: Vec<String> = part.iter().map(|(_, k)| k.clone()).collect();
            for ((i, _), value) in part.into_iter().zip(store.get_many(&names).await?) {
                out[i] = value;
            }
        }
        Ok(out)
    }

    async fn ztop(&self, key: &str, n: u32) -> StoreResult<Vec<(String, f64)>> {
        self.for_key(key).ztop(key, n).await
    }

    async fn hgetall(&self, key: &str) -> StoreResult<Vec<(String, String)>> {
        self.for_key(key).hgetall(key).await
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> StoreResult<Vec<String>> {
        self.for_key(key).lrange(key, start, stop).await
    }

    async fn set_nx_px(&self, key: &str, value: &str, ttl_ms: u64) -> StoreResult<bool> {
        self.for_key(key).set_nx_px(key, value, ttl_ms).await
    }

    async fn del_if_eq(&self, key: &str, value: &str) -> StoreResult<bool> {
        self.for_key(key).del_if_eq(key, value).await
    }

    /// The keys with `prefix` that each store holds for this plugin: the
    /// MDC's that match `cache_keys`, the WDC's that do not.
    async fn scan_prefix(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let mut keys: Vec<String> = self
            .cache
            .scan_prefix(prefix)
            .await?
            .into_iter()
            .filter(|k| self.in_cache(k))
            .collect();
        let seen: HashSet<String> = keys.iter().cloned().collect();
        keys.extend(
            self.widgets
                .scan_prefix(prefix)
                .await?
                .into_iter()
                .filter(|k| !self.in_cache(k) && !seen.contains(k)),
        );
        Ok(keys)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<u64>> {
        self.for_key(key).ttl(key).await
    }

    async fn subscribe(&self, topics: &[Topic]) -> StoreResult<Subscription> {
        self.widgets.subscribe(topics).await
    }

    fn pubsub_status(&self) -> Result<(), String> {
        self.widgets.pubsub_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn set(key: &str) -> Write {
        Write::Set {
            key: key.into(),
            value: "1".into(),
            ttl: None,
        }
    }

    #[tokio::test]
    async fn keys_go_where_the_patterns_say_and_channels_to_the_widget_cache() {
        let widgets: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        let cache: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        let placed = PlacedStore::wrap(
            widgets.clone(),
            cache.clone(),
            &["symbol:*".into(), "tta:*:recent".into()],
        );
        placed
            .apply(
                &[
                    set("symbol:A:data"),
                    set("quote:A"),
                    set("tta:A:recent"),
                    set("tta:A:widget"),
                    Write::Del {
                        keys: vec!["symbol:B:data".into(), "quote:B".into()],
                    },
                ],
                true,
            )
            .await
            .unwrap();
        for (key, in_cache) in [
            ("symbol:A:data", true),
            ("tta:A:recent", true),
            ("quote:A", false),
            ("tta:A:widget", false),
        ] {
            let (here, there) = if in_cache {
                (&cache, &widgets)
            } else {
                (&widgets, &cache)
            };
            assert!(here.get(key).await.unwrap().is_some(), "{key}");
            assert!(there.get(key).await.unwrap().is_none(), "{key}");
            assert!(placed.get(key).await.unwrap().is_some(), "{key} reads back");
        }
        let many = placed
            .get_many(&["quote:A".into(), "symbol:A:data".into(), "x".into()])
            .await
            .unwrap();
        assert_eq!(many, vec![Some("1".into()), Some("1".into()), None]);
        let mut tta = placed.scan_prefix("tta:").await.unwrap();
        tta.sort();
        assert_eq!(tta, vec!["tta:A:recent", "tta:A:widget"]);
        assert!(placed.set_nx_px("symbol:lock", "x", 1000).await.unwrap());
        assert!(cache.get("symbol:lock").await.unwrap().is_some());
    }

    #[test]
    fn one_store_for_both_needs_no_wrapper() {
        let one: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        let same = PlacedStore::wrap(one.clone(), one.clone(), &["symbol:*".into()]);
        assert!(Arc::ptr_eq(&same, &one));
    }
}
