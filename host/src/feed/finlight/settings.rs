//! What a Finlight listener is configured with and the filter its admin
//! API may change.

use crate::feed::admin::AdminAccess;

/// The enhanced stream of Finlight's service.
pub const DEFAULT_URL: &str = "wss://wss.finlight.me";

/// Settings of the Finlight listener (the `mdp listen finlight` flags, less
/// those of the process around it: broker URL, admin addresses, confirms).
#[derive(Debug, Clone)]
pub struct FinlightConfig {
    /// WebSocket URL of the enhanced stream (`/raw` is appended for `raw`).
    pub url: String,
    /// API key, sent as the `x-api-key` header.
    pub api_key: Option<String>,
    /// The raw stream (no AI enrichment, no initial article).
    pub raw: bool,
    /// Advanced query, e.g. `ticker:AAPL OR ticker:NVDA`.
    pub query: Option<String>,
    /// Tickers (comma separated or a JSON array; enhanced only).
    pub tickers: Vec<String>,
    /// Source domains (comma separated or a JSON array).
    pub sources: Vec<String>,
    /// Language (ISO 639-1).
    pub language: String,
    /// Include company entities (enhanced only).
    pub include_entities: bool,
    /// Displace other sessions of the key (`x-takeover: true`, as the seed).
    pub takeover: bool,
    /// Message TTL of the `news` queue, ms.
    pub message_ttl_ms: u64,
    /// Application ping interval, ms.
    pub ping_interval_ms: u64,
    /// No pong for this long: reconnect, ms.
    pub pong_timeout_ms: u64,
    /// Wait after a rate-limit answer (HTTP 429, `error` "limit", 1013/4001), ms.
    pub rate_limit_wait_ms: u64,
    /// Wait after a `blocked` answer (4002), ms.
    pub blocked_wait_ms: u64,
    /// Longest reconnect backoff, ms.
    pub max_backoff_ms: u64,
    /// Prefix of the queue name.
    pub queue_prefix: String,
    /// Connect when started (`false`: wait for `POST /start` on the control API).
    pub auto_start: bool,
    /// Who may change the filter through the admin API, and how often.
    pub admin: AdminAccess,
}

impl Default for FinlightConfig {
    fn default() -> Self {
        FinlightConfig {
            url: DEFAULT_URL.into(),
            api_key: None,
            raw: false,
            query: None,
            tickers: Vec::new(),
            sources: Vec::new(),
            language: "en".into(),
            include_entities: true,
            takeover: true,
            message_ttl_ms: 900_000,
            ping_interval_ms: 25_000,
            pong_timeout_ms: 60_000,
            rate_limit_wait_ms: 60_000,
            blocked_wait_ms: 3_600_000,
            max_backoff_ms: 10_000,
            queue_prefix: String::new(),
            auto_start: true,
            admin: Default::default(),
        }
    }
}

/// The subscription filter (runtime-changeable; a change reconnects, as
/// Finlight has no unsubscribe).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FinlightFilter {
    /// Advanced query.
    pub query: Option<String>,
    /// Tickers.
    pub tickers: Vec<String>,
    /// Source domains.
    pub sources: Vec<String>,
    /// Language.
    pub language: String,
}

impl FinlightFilter {
    /// Validate: language ISO 639-1, tickers upper case, sources domain-like, query non-empty.
    pub fn validate(self) -> Result<Self, String> {
        if self.language.len() != 2 || !self.language.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "language `{}` is not an ISO 639-1 code like `en`",
                self.language
            ));
        }
        for t in &self.tickers {
            if t == "*" || !crate::feed::admin::valid_symbol(t) {
                return Err(format!("bad ticker `{t}`"));
            }
        }
        for s in &self.sources {
            if s.is_empty() || !s.contains('.') || s.contains(['/', ' ', ':']) || !s.is_ascii() {
                return Err(format!(
                    "source `{s}` is not a domain like `www.reuters.com`"
                ));
            }
        }
        if self.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
            return Err("query is empty (omit it instead)".into());
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        let ok = FinlightFilter {
            query: Some("ticker:AAPL".into()),
            tickers: vec!["AAPL".into()],
            sources: vec!["www.reuters.com".into()],
            language: "en".into(),
        };
        assert!(ok.clone().validate().is_ok());
        let bad_lang = FinlightFilter {
            language: "english".into(),
            ..ok.clone()
        };
        assert!(bad_lang.validate().unwrap_err().contains("ISO 639-1"));
        let bad_ticker = FinlightFilter {
            tickers: vec!["aapl".into()],
            ..ok.clone()
        };
        assert!(bad_ticker.validate().is_err());
        let bad_source = FinlightFilter {
            sources: vec!["https://x.com/".into()],
            ..ok
        };
        assert!(bad_source.validate().is_err());
    }
}
