//! What a Massive listener is configured with and what its admin API may
//! change: the feed, market and subscriptions, validated; the API key as the
//! seed finds it; the URLs of the feed and of REST market status.

use crate::feed::admin::AdminAccess;

/// Where the seed looks for the Massive key file when neither
/// `MASSIVE_API_KEY` nor `POLYGON_API_KEY` is set.
pub const MASSIVE_KEY_FILE: &str = "/app/massive_api_key.txt";

/// The Massive API key as the seed finds it: the flag or `MASSIVE_API_KEY`
/// (`given`), then `POLYGON_API_KEY`, then the contents of
/// [`MASSIVE_KEY_FILE`] (or `MASSIVE_API_KEY_FILE`), trimmed; blank counts as
/// none.
pub fn massive_api_key(given: Option<&str>) -> Option<String> {
    api_key_from(
        given,
        || std::env::var("POLYGON_API_KEY").ok(),
        || {
            let file = std::env::var("MASSIVE_API_KEY_FILE")
                .unwrap_or_else(|_| MASSIVE_KEY_FILE.to_string());
            std::fs::read_to_string(file).ok()
        },
    )
}

/// The first non-blank key (trimmed) of `given`, `polygon`, `file`, in that
/// order; later sources are not consulted. Like the seed's `a or b or c`, a
/// blank value falls through to the next source.
fn api_key_from(
    given: Option<&str>,
    polygon: impl FnOnce() -> Option<String>,
    file: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let nonblank = |k: Option<String>| k.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
    nonblank(given.map(str::to_string))
        .or_else(|| nonblank(polygon()))
        .or_else(|| nonblank(file()))
}

/// Topic codes a subscription may use (stocks).
pub const TOPICS: [&str; 6] = ["T", "Q", "A", "AM", "LULD", "NOI"];

/// Settings of the Massive listener (the `mdp listen massive` flags, less
/// those of the process around it: broker URL, admin addresses, confirms).
#[derive(Debug, Clone)]
pub struct MassiveConfig {
    /// Feed base URL; the market path (`/stocks`) is appended unless the
    /// URL already ends in it.
    pub feed_url: String,
    /// API key (falls back to `POLYGON_API_KEY` and the key file; see [`massive_api_key`]).
    pub api_key: Option<String>,
    /// Subscriptions, comma separated or a JSON array.
    pub subscriptions: String,
    /// Message TTL of the market-data queues, ms.
    pub message_ttl_ms: u64,
    /// Publish array messages (the frames waiting, per queue, up to 1,000
    /// events each) instead of one message per event.
    pub batch_frames: bool,
    /// Market (path segment); only `stocks` is implemented.
    pub market: String,
    /// Massive REST base URL, for market status while the market is closed.
    pub rest_url: Option<String>,
    /// Poll market status while the market is closed instead of connecting,
    /// whenever a REST endpoint is known.
    pub market_aware: bool,
    /// No data for this long (ms) means the feed stalled: reconnect.
    pub stall_timeout_ms: u64,
    /// Longest reconnect backoff, ms (starts at 500 ms, doubles, jittered).
    pub max_backoff_ms: u64,
    /// Wait after `auth_failed` or `max_connections`, ms.
    pub refused_wait_ms: u64,
    /// Market-status poll interval while the market is closed, ms.
    pub closed_poll_ms: u64,
    /// Prefix of the queue names (e.g. to share one broker between tests).
    pub queue_prefix: String,
    /// Connect when started (`false`: wait for `POST /start` on the control API).
    pub auto_start: bool,
    /// Who may change settings through the admin API, and how often.
    pub admin: AdminAccess,
    /// Hosts the admin API may point the feed at; default: the host of `feed_url`.
    pub feed_hosts: Vec<String>,
    /// Record every received frame to this JSONL file (replayable by `mdp simulate --replay`).
    pub record: Option<std::path::PathBuf>,
}

impl Default for MassiveConfig {
    fn default() -> Self {
        MassiveConfig {
            feed_url: DEFAULT_FEED_URL.into(),
            api_key: None,
            subscriptions: DEFAULT_SUBSCRIPTIONS.into(),
            message_ttl_ms: 5000,
            batch_frames: false,
            market: "stocks".into(),
            rest_url: None,
            market_aware: true,
            stall_timeout_ms: 30_000,
            max_backoff_ms: 30_000,
            refused_wait_ms: 60_000,
            closed_poll_ms: 60_000,
            queue_prefix: String::new(),
            auto_start: true,
            admin: Default::default(),
            feed_hosts: Vec::new(),
            record: None,
        }
    }
}

/// The subscriptions of a listener given none (the seed's).
pub const DEFAULT_SUBSCRIPTIONS: &str = "A.*,T.*,Q.*,LULD.*";

/// Massive's real-time feed.
pub const DEFAULT_FEED_URL: &str = "wss://socket.massive.com";

/// Whether `url` points at Massive's own servers (`massive.com`, `polygon.io`).
pub fn is_massive_host(url: &str) -> bool {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    ["massive.com", "polygon.io"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Massive's REST API.
pub const DEFAULT_REST_URL: &str = "https://api.massive.com";

impl MassiveConfig {
    /// Where the listener asks for market status: `--rest-url`, else
    /// Massive's API when a key is set and the feed is Massive's own; `None`
    /// when market-aware reconnect is off or no endpoint is known.
    pub fn market_status_url(&self) -> Option<String> {
        if !self.market_aware {
            return None;
        }
        if let Some(url) = &self.rest_url {
            return Some(url.clone());
        }
        let keyed = massive_api_key(self.api_key.as_deref()).is_some();
        (keyed && is_massive_host(&self.feed_url)).then(|| DEFAULT_REST_URL.to_string())
    }
}

/// The feed URL once the seed's `MASSIVE_FEED` host is applied: a `host`
/// given while `feed_url` is the default replaces it (`RealTime` and
/// `Delayed`, the names the seed documents, stand for Massive's hosts;
/// `secure` picks `wss` or `ws`).
pub fn feed_url_with_host(feed_url: &str, host: Option<&str>, secure: bool) -> String {
    let Some(host) = host.map(str::trim) else {
        return feed_url.to_string();
    };
    if host.is_empty() || feed_url != DEFAULT_FEED_URL {
        return feed_url.to_string();
    }
    let host = match host {
        "RealTime" => "socket.massive.com",
        "Delayed" => "delayed.massive.com",
        other => other,
    };
    let scheme = if secure { "wss" } else { "ws" };
    format!("{scheme}://{host}")
}

/// What the admin API may change at runtime.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MassiveSettings {
    /// Feed base URL.
    pub feed_url: String,
    /// Market path segment.
    pub market: String,
    /// Subscribed topics.
    pub subscriptions: Vec<String>,
}

/// Validate a feed base URL.
pub fn validate_feed(url: &str) -> Result<String, String> {
    crate::feed::admin::valid_ws_url(url)?;
    Ok(url.trim_end_matches('/').to_string())
}

/// The WebSocket URL of `market` on the feed at `feed_url`: the market path
/// is appended unless the URL's path already ends in it (`mdp simulate`
/// prints its feed as `ws://127.0.0.1:8090/stocks`).
pub fn market_url(feed_url: &str, market: &str) -> String {
    let base = feed_url.trim_end_matches('/');
    let ends_in_market = url::Url::parse(base)
        .ok()
        .and_then(|u| u.path_segments()?.next_back().map(|s| s == market))
        .unwrap_or(false);
    if ends_in_market {
        base.to_string()
    } else {
        format!("{base}/{market}")
    }
}

/// The flag to fix when the feed answers the WebSocket upgrade with
/// `status`: `--feed-url` for 404 (no such path), `--api-key` for 401/403;
/// none for other statuses (worth retrying).
pub(super) fn misconfigured_flag(status: u16) -> Option<&'static str> {
    match status {
        404 => Some("--feed-url (MASSIVE_FEED_URL)"),
        401 | 403 => Some("--api-key (MASSIVE_API_KEY)"),
        _ => None,
    }
}

/// The host of `url`, lower case (none when it does not parse or has none).
pub(super) fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(str::to_ascii_lowercase)
}

/// The hosts the feed may be changed to: `given` (trimmed, lower case), or
/// else the host of the configured `feed_url`.
pub(super) fn allowed_feed_hosts(given: &[String], feed_url: &str) -> Vec<String> {
    let given: Vec<String> = crate::feed::list_setting(given)
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if given.is_empty() {
        host_of(feed_url).into_iter().collect()
    } else {
        given
    }
}

/// Validate a market (only `stocks` is implemented).
pub fn validate_market(market: &str) -> Result<String, String> {
    match market {
        "stocks" => Ok(market.to_string()),
        "options" | "forex" | "crypto" | "indices" | "futures" => Err(format!(
            "market `{market}` is not supported by this listener (only `stocks`)"
        )),
        _ => Err(format!("unknown market `{market}` (only `stocks`)")),
    }
}

/// Validate subscription topics (`T.*`, `AM.AAPL`, ...; trimmed, deduplicated, order kept).
pub fn validate_subscriptions<S: AsRef<str>>(topics: &[S]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for raw in topics {
        let topic = raw.as_ref().trim();
        let Some((kind, sym)) = topic.split_once('.') else {
            return Err(format!("`{topic}` is not TOPIC.TICKER"));
        };
        if !TOPICS.contains(&kind) {
            return Err(format!(
                "unknown topic `{kind}` in `{topic}` (one of {})",
                TOPICS.join(", ")
            ));
        }
        if !crate::feed::admin::valid_symbol(sym) {
            return Err(format!("bad ticker `{sym}` in `{topic}`"));
        }
        if !out.iter().any(|t| t == topic) {
            out.push(topic.to_string());
        }
    }
    if out.is_empty() {
        return Err("no subscriptions given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_aware_reconnect_is_on_whenever_a_rest_endpoint_is_known() {
        let with = |key: Option<&str>, feed: &str, rest: Option<&str>, aware: bool| {
            MassiveConfig {
                api_key: key.map(String::from),
                feed_url: feed.into(),
                rest_url: rest.map(String::from),
                market_aware: aware,
                ..MassiveConfig::default()
            }
            .market_status_url()
        };
        // A key on Massive's feed: Massive's REST API, without a flag.
        assert_eq!(
            with(Some("k"), DEFAULT_FEED_URL, None, true).as_deref(),
            Some(DEFAULT_REST_URL)
        );
        // A simulator's REST URL given (as `mdp up` does).
        assert_eq!(
            with(None, "ws://127.0.0.1:1", Some("http://127.0.0.1:1"), true).as_deref(),
            Some("http://127.0.0.1:1")
        );
        // Another feed without a REST URL: nothing to ask. Off: never.
        assert_eq!(with(Some("k"), "ws://127.0.0.1:1", None, true), None);
        assert_eq!(with(Some("k"), DEFAULT_FEED_URL, None, false), None);
        assert!(is_massive_host("wss://delayed.massive.com"));
        assert!(is_massive_host("wss://socket.polygon.io/stocks"));
        assert!(!is_massive_host("wss://massive.com.evil.example"));
    }

    #[test]
    fn the_seeds_massive_feed_host_sets_the_feed_url() {
        let resolved =
            |host: Option<&str>, secure: bool, url: &str| feed_url_with_host(url, host, secure);
        assert_eq!(
            resolved(Some("delayed.massive.com"), true, DEFAULT_FEED_URL),
            "wss://delayed.massive.com"
        );
        assert_eq!(
            resolved(Some("Delayed"), true, DEFAULT_FEED_URL),
            "wss://delayed.massive.com"
        );
        assert_eq!(
            resolved(Some("RealTime"), true, DEFAULT_FEED_URL),
            "wss://socket.massive.com"
        );
        assert_eq!(
            resolved(Some("127.0.0.1:9000"), false, DEFAULT_FEED_URL),
            "ws://127.0.0.1:9000"
        );
        // MASSIVE_FEED_URL, when it names another URL, wins; no host, no change.
        assert_eq!(
            resolved(Some("delayed.massive.com"), true, "ws://sim:1/stocks"),
            "ws://sim:1/stocks"
        );
        assert_eq!(resolved(None, true, DEFAULT_FEED_URL), DEFAULT_FEED_URL);
    }

    #[test]
    fn api_key_sources_in_the_seeds_order_blank_values_fall_through() {
        let key = |a: Option<&str>, b: Option<&str>, c: Option<&str>| {
            api_key_from(a, || b.map(str::to_string), || c.map(str::to_string))
        };
        assert_eq!(
            key(Some("flag"), Some("polygon"), Some("file")).as_deref(),
            Some("flag")
        );
        assert_eq!(
            key(None, Some("polygon"), Some("file")).as_deref(),
            Some("polygon")
        );
        assert_eq!(
            key(None, None, Some(" file-key\n")).as_deref(),
            Some("file-key"),
            "file trimmed"
        );
        assert_eq!(
            key(Some("  "), Some("polygon"), None).as_deref(),
            Some("polygon"),
            "blank falls through"
        );
        assert_eq!(key(None, Some(""), Some("\n")), None, "all blank: no key");
        assert_eq!(key(None, None, None), None);
        let mut read = false;
        let found = api_key_from(
            Some("flag"),
            || None,
            || {
                read = true;
                None
            },
        );
        assert_eq!(found.as_deref(), Some("flag"));
        assert!(
            !read,
            "later sources (the key file) are not read once a key is found"
        );
    }

    #[test]
    fn the_market_path_is_appended_once() {
        let url = |feed| market_url(feed, "stocks");
        assert_eq!(
            url("wss://socket.massive.com"),
            "wss://socket.massive.com/stocks"
        );
        assert_eq!(
            url("ws://127.0.0.1:8090/stocks"),
            "ws://127.0.0.1:8090/stocks"
        );
        assert_eq!(
            url("ws://127.0.0.1:8090/stocks/"),
            "ws://127.0.0.1:8090/stocks"
        );
        assert_eq!(
            url("ws://stocks:80"),
            "ws://stocks:80/stocks",
            "a host named like the market"
        );
        assert_eq!(url("ws://h/v2/stocks"), "ws://h/v2/stocks");
        assert_eq!(url("ws://h/stocksx"), "ws://h/stocksx/stocks");
        assert_eq!(
            misconfigured_flag(404),
            Some("--feed-url (MASSIVE_FEED_URL)")
        );
        assert_eq!(misconfigured_flag(401), Some("--api-key (MASSIVE_API_KEY)"));
        assert_eq!(misconfigured_flag(503), None, "server trouble is retried");
    }
}
