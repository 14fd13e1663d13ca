//! Reference data offered to plugins (ticker snapshot, average volume, free
//! float, market status). The processor role plugs in the cache-aside layer
//! over the Massive REST API; [`StoreReference`] serves whatever the store
//! already holds (offline mode for `mdp plugin test` and tests).

use std::sync::Arc;

use async_trait::async_trait;

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
/// Missing entries read as unknown (`None` / 0); nothing is fetched.
pub struct StoreReference {
    store: Arc<dyn Store>,
}

impl StoreReference {
    /// Serve reference data from `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreReference { store }
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

/// The market status a name stands for: `open`, `closed`, `pre-market`, `after-hours`.
pub fn market_status_named(name: &str) -> MarketStatus {
    let (market, early_hours, after_hours) = match name {
        "open" => (Market::Open, false, false),
        "pre-market" | "early-hours" => (Market::ExtendedHours, true, false),
        "after-hours" => (Market::ExtendedHours, false, true),
        _ => (Market::Closed, false, false),
    };
    MarketStatus {
        market,
        early_hours,
        after_hours,
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
        let name = self.read("mdc:market_status".to_string()).await?;
        Ok(market_status_named(
            name.as_deref()
                .map(|s| s.trim_matches('"'))
                .unwrap_or("open"),
        ))
    }
}
