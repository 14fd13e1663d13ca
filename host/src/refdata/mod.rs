//! Reference data for analyzers: the host's cache-aside layer over the
//! Massive REST API (the seed's MarketDataCache).
//!
//! - Values are cached in the internal store (MDC) under the seed's keys and
//!   TTLs: `mdc:snapshots:{SYM}` 8 h, `mdc:avg_volume:{SYM}` and
//!   `mdc:free_float:{SYM}` 12 h, or 6 h when the answer is "none" (0).
//! - Negative entries are honoured: a cached `0` (or `null` snapshot) is a
//!   hit, so an unknown ticker is not asked for again until the entry
//!   expires. (The seed read a cached 0 as a miss.)
//! - Concurrent requests for the same value in one process share one fetch;
//!   across instances a store lock `mdc:lock:{metric}:{SYM}` (30 s) makes
//!   one instance fetch while the others wait for the cache.
//! - HTTP runs on the async runtime with timeouts and retries on
//!   413/429/499/5xx, honouring `Retry-After`. The API key is sent as a
//!   bearer header and never logged.
//! - Symbols come from plugins: they are checked ([`checked_symbol`]) before
//!   they reach a cache key or a REST path, and percent-encoded there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::plugin::bindings::MarketStatus;
use crate::plugin::{ReferenceData, ReferenceFault, market_status_named};
use crate::store::{Store, Write};

/// TTL of cached ticker snapshots.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(28_800);
/// TTL of cached average volumes and free floats.
pub const METRIC_TTL: Duration = Duration::from_secs(43_200);
/// TTL of cached "no data" answers.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(21_600);
/// Lifetime of the cross-instance fetch lock.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long the market status is reused in process.
pub const MARKET_STATUS_TTL: Duration = Duration::from_secs(30);
/// Longest symbol accepted (option tickers like `O:AAPL251219C00150000` fit).
pub const MAX_SYMBOL_LEN: usize = 32;

/// `symbol` if it is a ticker the REST API can be asked about: 1 to
/// [`MAX_SYMBOL_LEN`] characters of `A-Z 0-9 . - :`; anything else (a
/// path, a query, lower case, spaces) is refused as invalid.
pub fn checked_symbol(symbol: &str) -> Result<&str, ReferenceFault> {
    let ok = !symbol.is_empty()
        && symbol.len() <= MAX_SYMBOL_LEN
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b".-:".contains(&b));
    if ok {
        Ok(symbol)
    } else {
        let shown: String = symbol.chars().take(MAX_SYMBOL_LEN + 8).collect();
        Err(ReferenceFault::Invalid(format!(
            "symbol {shown:?} is not a ticker (1-{MAX_SYMBOL_LEN} of A-Z 0-9 . - :)"
        )))
    }
}

/// `symbol` percent-encoded for a URL path segment or query value.
fn encoded(symbol: &str) -> String {
    url::form_urlencoded::byte_serialize(symbol.as_bytes()).collect()
}

/// Settings of the Massive REST client.
#[derive(Clone)]
pub struct MassiveRestConfig {
    /// Base URL, e.g. `https://api.massive.com` or the simulator's.
    pub base_url: String,
    /// API key (never logged).
    pub api_key: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request (first try included).
    pub attempts: u32,
}

impl std::fmt::Debug for MassiveRestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MassiveRestConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

type Shared = Arc<OnceCell<Result<Option<String>, ReferenceFault>>>;

/// Cache-aside reference data over the Massive REST API.
pub struct MassiveReference {
    http: reqwest::Client,
    config: MassiveRestConfig,
    store: Arc<dyn Store>,
    inflight: Mutex<HashMap<String, Shared>>,
    market: Mutex<Option<(Instant, MarketStatus)>>,
    /// REST calls made (for tests and metrics).
    calls: std::sync::atomic::AtomicU64,
}

/// What a REST call produced.
enum Fetched {
    /// A value to cache with the normal TTL.
    Value(String),
    /// "No data": cached with the negative TTL.
    Nothing,
}

impl MassiveReference {
    /// A client of `config.base_url` caching into `store` (the MDC).
    pub fn new(config: MassiveRestConfig, store: Arc<dyn Store>) -> Result<Self, ReferenceFault> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("mdp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ReferenceFault::Unavailable(format!("http client: {e}")))?;
        Ok(MassiveReference {
            http,
            config,
            store,
            inflight: Mutex::new(HashMap::new()),
            market: Mutex::new(None),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// REST calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// GET `path_and_query` with retries; `Ok(None)` on 404.
    async fn get_json(&self, path_and_query: &str) -> Result<Option<Value>, ReferenceFault> {
        let url = format!(
            "{}{}",
            self.config.base_url.trim_end_matches('/'),
            path_and_query
        );
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=self.config.attempts.max(1) {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let started = Instant::now();
            let result = self
                .http
                .get(&url)
                .bearer_auth(&self.config.api_key)
                .send()
                .await;
            metrics::histogram!("mdp_reference_api_seconds")
                .record(started.elapsed().as_secs_f64());
            let last = attempt == self.config.attempts.max(1);
            let response = match result {
                Ok(r) => r,
                Err(e) if !last => {
                    tracing::debug!(path = path_and_query, error = %e, "reference request failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    continue;
                }
                Err(e) => {
                    metrics::counter!("mdp_reference_errors_total", "kind" => "http").increment(1);
                    return Err(ReferenceFault::Unavailable(format!(
                        "{path_and_query}: {}",
                        e.without_url()
                    )));
                }
            };
            let status = response.status().as_u16();
            if status == 404 {
                return Ok(None);
            }
            if matches!(status, 413 | 429 | 499 | 500..=599) && !last {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(delay)
                    .min(Duration::from_secs(10));
                tracing::debug!(
                    path = path_and_query,
                    status,
                    ?wait,
                    "reference API asked to retry"
                );
                tokio::time::sleep(wait).await;
                delay *= 2;
                continue;
            }
            if status != 200 {
                metrics::counter!("mdp_reference_errors_total", "kind" => "status").increment(1);
                return Err(ReferenceFault::Unavailable(format!(
                    "{path_and_query}: HTTP {status}"
                )));
            }
            let body = response.json::<Value>().await.map_err(|e| {
                ReferenceFault::Invalid(format!("{path_and_query}: {}", e.without_url()))
            })?;
            return Ok(Some(body));
        }
        Err(ReferenceFault::Unavailable(format!(
            "{path_and_query}: retries exhausted"
        )))
    }

    /// The cached value of `key`, fetching it with `fetch` on a miss
    /// (coalesced in process, locked across instances).
    async fn cached<F, Fut>(
        &self,
        metric: &str,
        symbol: &str,
        ttl: Duration,
        fetch: F,
    ) -> Result<Option<String>, ReferenceFault>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, ReferenceFault>>,
    {
        let symbol = checked_symbol(symbol)?;
        let key = format!("mdc:{metric}:{symbol}");
        if let Some(hit) = self.read(&key).await? {
            return Ok(hit);
        }
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(key.clone()).or_default().clone()
        };
        let result = cell
            .get_or_init(|| async {
                let lock = format!("mdc:lock:{metric}:{symbol}");
                let token = format!("{}-{:?}", std::process::id(), Instant::now());
                let locked = self
                    .store
                    .set_nx_px(&lock, &token, LOCK_TTL.as_millis() as u64)
                    .await
                    .unwrap_or(true);
                if !locked {
                    // Another instance is fetching: wait for its answer.
                    for _ in 0..40 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if let Ok(Some(hit)) = self.read(&key).await {
                            return Ok(hit);
                        }
                    }
                } else if let Ok(Some(hit)) = self.read(&key).await {
                    let _ = self.store.del_if_eq(&lock, &token).await;
                    return Ok(hit);
                }
                let fetched = fetch().await;
                let out = match fetched {
                    Ok(Fetched::Value(v)) => {
                        self.write(&key, &v, ttl).await;
                        Ok(Some(v))
                    }
                    Ok(Fetched::Nothing) => {
                        self.write(
                            &key,
                            if metric == "snapshots" { "null" } else { "0" },
                            NEGATIVE_TTL,
                        )
                        .await;
                        Ok(None)
                    }
                    Err(e) => Err(e),
                };
                if locked {
                    let _ = self.store.del_if_eq(&lock, &token).await;
                }
                out
            })
            .await
            .clone();
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        result
    }

    /// `Some(Some(v))` hit, `Some(None)` negative hit, `None` miss.
    async fn read(&self, key: &str) -> Result<Option<Option<String>>, ReferenceFault> {
        let value = self
            .store
            .get(key)
            .await
            .map_err(|e| ReferenceFault::Unavailable(e.to_string()))?;
        Ok(value.map(|v| match v.trim() {
            "0" | "0.0" | "null" | "" => None,
            _ => Some(v),
        }))
    }

    async fn write(&self, key: &str, value: &str, ttl: Duration) {
        let write = Write::Set {
            key: key.to_string(),
            value: value.into(),
            ttl: Some(ttl),
        };
        if let Err(e) = self.store.apply(&[write], false).await {
            tracing::warn!(key, error = %e, "cannot cache reference data");
        }
    }

    fn number(value: Option<String>) -> f64 {
        value
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    }
}

fn ny_date(days_ago: i64) -> String {
    let today = chrono::Utc::now().date_naive();
    (today - chrono::Duration::days(days_ago))
        .format("%Y-%m-%d")
        .to_string()
}

#[async_trait]
impl ReferenceData for MassiveReference {
    async fn ticker_snapshot(&self, symbol: &str) -> Result<Option<String>, ReferenceFault> {
        self.cached("snapshots", symbol, SNAPSHOT_TTL, || async {
            let path = format!(
                "/v2/snapshot/locale/us/markets/stocks/tickers/{}",
                encoded(symbol)
            );
            match self.get_json(&path).await? {
                None => Ok(Fetched::Nothing),
                Some(body) => match body.get("ticker") {
                    Some(t) if t.is_object() => Ok(Fetched::Value(t.to_string())),
                    _ => Ok(Fetched::Nothing),
                },
            }
        })
        .await
    }

    async fn avg_volume(&self, symbol: &str) -> Result<f64, ReferenceFault> {
        let v = self
            .cached("avg_volume", symbol, METRIC_TTL, || async {
                let ratios = self
                    .get_json(&format!(
                        "/stocks/financials/v1/ratios?ticker={}",
                        encoded(symbol)
                    ))
                    .await?;
                let rows = ratios
                    .as_ref()
                    .and_then(|b| b.get("results"))
                    .and_then(Value::as_array);
                if let Some(rows) = rows
                    && rows.len() == 1
                    && let Some(avg) = rows[0].get("average_volume").and_then(Value::as_f64)
                    && avg > 0.0
                {
                    return Ok(Fetched::Value(avg.to_string()));
                }
                let path = format!(
                    "/v2/aggs/ticker/{}/range/1/day/{}/{}?adjusted=true&sort=desc",
                    encoded(symbol),
                    ny_date(42),
                    ny_date(0)
                );
                let bars = self.get_json(&path).await?;
                let vols: Vec<f64> = bars
                    .as_ref()
                    .and_then(|b| b.get("results"))
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .take(30)
                            .filter_map(|b| b.get("v").and_then(Value::as_f64))
                            .collect()
                    })
                    .unwrap_or_default();
                let avg = if vols.is_empty() {
                    0.0
                } else {
                    vols.iter().sum::<f64>() / vols.len() as f64
                };
                Ok(if avg > 0.0 {
                    Fetched::Value(avg.to_string())
                } else {
                    Fetched::Nothing
                })
            })
            .await?;
        Ok(Self::number(v))
    }

    async fn free_float(&self, symbol: &str) -> Result<f64, ReferenceFault> {
        let v = self
            .cached("free_float", symbol, METRIC_TTL, || async {
                let body = self
                    .get_json(&format!("/stocks/vX/float?ticker={}", encoded(symbol)))
                    .await?;
                let ff = body
                    .as_ref()
                    .and_then(|b| b.get("results"))
                    .and_then(Value::as_array)
                    .and_then(|r| r.first())
                    .and_then(|r| r.get("free_float"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                Ok(if ff > 0.0 {
                    Fetched::Value(ff.to_string())
                } else {
                    Fetched::Nothing
                })
            })
            .await?;
        Ok(Self::number(v))
    }

    async fn market_now(&self) -> Result<MarketStatus, ReferenceFault> {
        if let Some((at, status)) = *self.market.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < MARKET_STATUS_TTL
        {
            return Ok(status);
        }
        let body = self
            .get_json("/v1/marketstatus/now")
            .await?
            .ok_or_else(|| ReferenceFault::Invalid("market status: 404".into()))?;
        let market = body
            .get("market")
            .and_then(Value::as_str)
            .ok_or_else(|| ReferenceFault::Invalid("market status without `market`".into()))?;
        let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
        let name = match market {
            "open" => "open",
            "extended-hours" if flag("earlyHours") => "pre-market",
            "extended-hours" if flag("afterHours") => "after-hours",
            "extended-hours" => "pre-market",
            _ => "closed",
        };
        let status = market_status_named(name);
        *self.market.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), status));
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_api() -> MassiveReference {
        let config = MassiveRestConfig {
            base_url: "http://127.0.0.1:9".into(),
            api_key: "k".into(),
            timeout: Duration::from_millis(200),
            attempts: 1,
        };
        MassiveReference::new(config, Arc::new(crate::store::EmbeddedStore::new())).unwrap()
    }

    #[test]
    fn symbols_are_checked() {
        for good in ["AAPL", "BRK.A", "BF-B", "O:AAPL251219C00150000", "X:BTCUSD"] {
            assert_eq!(checked_symbol(good).unwrap(), good);
        }
        for bad in [
            "",
            "aapl",
            "AAPL/../../v1/marketstatus/now",
            "AAPL?apiKey=x",
            "A B",
            "A%2F",
            "ÄPPL",
            &"A".repeat(MAX_SYMBOL_LEN + 1),
        ] {
            assert!(
                matches!(checked_symbol(bad), Err(ReferenceFault::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(encoded("X:BTCUSD"), "X%3ABTCUSD");
        assert_eq!(encoded("BRK.A"), "BRK.A");
    }

    #[tokio::test]
    async fn bad_symbols_never_reach_the_api_or_the_cache() {
        let r = unreachable_api();
        for bad in ["../v1/marketstatus/now", "AAPL&ticker=MSFT", "*"] {
            let e = r.ticker_snapshot(bad).await.unwrap_err();
            assert!(e.to_string().contains("is not a ticker"), "{e}");
            assert!(matches!(
                r.avg_volume(bad).await,
                Err(ReferenceFault::Invalid(_))
            ));
            assert!(matches!(
                r.free_float(bad).await,
                Err(ReferenceFault::Invalid(_))
            ));
        }
        assert_eq!(r.calls(), 0, "no request was made");
    }
}
