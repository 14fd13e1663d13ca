//! Reference data offered to plugins (ticker snapshot, average volume, free
//! float, market status). The processor role plugs in the cache-aside layer
//! over the Massive REST API; [`StoreReference`] serves whatever the store
//! already holds (offline mode for `mdp plugin test` and tests).

use std::sync::Arc;

use async_trait::async_trait;
use mdp_sdk::calendar::{self, Session};

use super::Clock;
use super::bindings::{Market, MarketStatus};
use crate::store::Store;

/// Why reference data could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReferenceFault {
    /// The API or its cache is not reachable.
    #[error("reference data unavailable: {0}")]
    Unavailable(String),
    /// The API answered with something unusable.
    #[error("reference data invalid: {0}")]
    Invalid(String),
}

/// A kind of per-symbol reference data, as named in manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceKind {
    /// `reference.ticker-snapshot`.
    TickerSnapshot,
    /// `reference.avg-volume`.
    AvgVolume,
    /// `reference.free-float`.
    FreeFloat,
}

impl ReferenceKind {
    /// Fetch this kind for `symbol` (result discarded: the provider caches it).
    pub async fn warm(
        self,
        reference: &dyn ReferenceData,
        symbol: &str,
    ) -> Result<(), ReferenceFault> {
        match self {
            ReferenceKind::TickerSnapshot => reference.ticker_snapshot(symbol).await.map(drop),
            ReferenceKind::AvgVolume => reference.avg_volume(symbol).await.map(drop),
            ReferenceKind::FreeFloat => reference.free_float(symbol).await.map(drop),
        }
    }
}

/// A provider of reference data.
#[async_trait]
pub trait ReferenceData: Send + Sync + 'static {
    /// The ticker snapshot as camelCase JSON; `None` for an unknown ticker.
    async fn ticker_snapshot(&self, symbol: &str) -> Result<Option<String>, ReferenceFault>;
    /// The 30-day average daily volume (0 when there is no history).
    async fn avg_volume(&self, symbol: &str) -> Result<f64, ReferenceFault>;
    /// The free float (0 when unknown).
    async fn free_float(&self, symbol: &str) -> Result<f64, ReferenceFault>;
    /// The market status now.
    async fn market_now(&self) -> Result<MarketStatus, ReferenceFault>;
}

/// Reference data read from the store only, under the seed's MDC keys
/// (`mdc:snapshots:{SYM}`, `mdc:avg_volume:{SYM}`, `mdc:free_float:{SYM}`)
/// plus `mdc:market_status` (`open`, `closed`, `pre-market`, `after-hours`).
/// Missing entries read as unknown (`None` / 0); nothing is fetched. A
/// missing market status reads as open ([`StoreReference::new`], for golden
/// files and `mdp plugin test`) or as the New York schedule at a clock
/// ([`StoreReference::scheduled`], for roles running without a Massive key).
pub struct StoreReference {
    store: Arc<dyn Store>,
    schedule: Option<Arc<dyn Clock>>,
}

impl StoreReference {
    /// Serve reference data from `store`; no market status stored is `open`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreReference {
            store,
            schedule: None,
        }
    }

    /// Serve reference data from `store`; no market status stored is the
    /// session the New York weekday schedule gives at `clock`'s now.
    pub fn scheduled(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        StoreReference {
            store,
            schedule: Some(clock),
        }
    }

    async fn read(&self, key: String) -> Result<Option<String>, ReferenceFault> {
        self.store
            .get(&key)
            .await
            .map_err(|e| ReferenceFault::Unavailable(e.to_string()))
    }

    async fn number(&self, key: String) -> Result<f64, ReferenceFault> {
        match self.read(key.clone()).await? {
            None => Ok(0.0),
            Some(text) => text.trim().parse::<f64>().map_err(|_| {
                ReferenceFault::Invalid(format!("{key} holds `{text}`, not a number"))
            }),
        }
    }
}

/// The market status a name stands for: `open`, `closed`, `pre-market`
/// (or the API's `early-hours`), `after-hours` ([`mdp_sdk::calendar::session_named`]).
pub fn market_status_named(name: &str) -> MarketStatus {
    market_status(calendar::session_named(name))
}

/// The market status of a session (closed for `None`): the calendar's
/// answer in the host's binding type.
pub fn market_status(session: Option<Session>) -> MarketStatus {
    let status = calendar::market_status(session);
    MarketStatus {
        market: match status.market {
            mdp_sdk::Market::Open => Market::Open,
            mdp_sdk::Market::ExtendedHours => Market::ExtendedHours,
            mdp_sdk::Market::Closed => Market::Closed,
        },
        early_hours: status.early_hours,
        after_hours: status.after_hours,
    }
}

#[async_trait]
impl ReferenceData for StoreReference {
    async fn ticker_snapshot(&self, symbol: &str) -> Result<Option<String>, ReferenceFault> {
        self.read(format!("mdc:snapshots:{symbol}")).await
    }
    async fn avg_volume(&self, symbol: &str) -> Result<f64, ReferenceFault> {
        self.number(format!("mdc:avg_volume:{symbol}")).await
    }
    async fn free_float(&self, symbol: &str) -> Result<f64, ReferenceFault> {
        self.number(format!("mdc:free_float:{symbol}")).await
    }
    async fn market_now(&self) -> Result<MarketStatus, ReferenceFault> {
        let stored = self.read("mdc:market_status".to_string()).await?;
        Ok(match (stored, &self.schedule) {
            (Some(name), _) => market_status_named(name.trim_matches('"')),
            (None, Some(clock)) => market_status(calendar::scheduled_session(clock.now_us())),
            (None, None) => market_status(Some(Session::Regular)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::FixedClock;
    use crate::store::EmbeddedStore;

    /// Unix µs of 2026-03-09 (a Monday, EDT) at `hh:mm` New York time.
    fn monday(hh: u64, mm: u64) -> u64 {
        (1_773_028_800 + hh * 3600 + mm * 60) * 1_000_000
    }

    async fn market_at(reference: &StoreReference, clock: &FixedClock, now_us: u64) -> String {
        clock.set(now_us);
        let status = reference.market_now().await.unwrap();
        let name = match (status.market, status.early_hours, status.after_hours) {
            (Market::Open, _, _) => "open",
            (Market::ExtendedHours, true, _) => "pre-market",
            (Market::ExtendedHours, _, true) => "after-hours",
            _ => "closed",
        };
        name.to_string()
    }

    #[tokio::test]
    async fn without_a_stored_status_roles_follow_the_new_york_schedule_not_open_forever() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        let clock = FixedClock::new(0);
        let reference = StoreReference::scheduled(store.clone(), Arc::new(clock.clone()));
        let day = 86_400_000_000;
        assert_eq!(market_at(&reference, &clock, monday(3, 0)).await, "closed");
        assert_eq!(
            market_at(&reference, &clock, monday(5, 0)).await,
            "pre-market"
        );
        assert_eq!(market_at(&reference, &clock, monday(10, 0)).await, "open");
        assert_eq!(
            market_at(&reference, &clock, monday(17, 0)).await,
            "after-hours"
        );
        assert_eq!(market_at(&reference, &clock, monday(21, 0)).await, "closed");
        // Saturday and Sunday at 10:00 New York.
        assert_eq!(
            market_at(&reference, &clock, monday(10, 0) - 2 * day).await,
            "closed"
        );
        assert_eq!(
            market_at(&reference, &clock, monday(10, 0) - day).await,
            "closed"
        );
        // A stored status wins over the schedule.
        store
            .set_nx_px("mdc:market_status", "\"closed\"", 60_000)
            .await
            .unwrap();
        assert_eq!(market_at(&reference, &clock, monday(10, 0)).await, "closed");
        // The offline reference of golden files still reads a missing status as open.
        let offline = StoreReference::new(Arc::new(EmbeddedStore::new()));
        assert_eq!(offline.market_now().await.unwrap().market, Market::Open);
    }

    #[test]
    fn early_hours_names_the_pre_market_as_the_api_does() {
        let status = market_status_named("early-hours");
        assert_eq!(status.market, Market::ExtendedHours);
        assert!(status.early_hours && !status.after_hours);
    }
}
