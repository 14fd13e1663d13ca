//! `mdp listen massive|finlight`: the listeners' flags, turned into their
//! configs, and the processes that run them until ctrl-c.

use std::process::ExitCode;
use std::sync::Arc;

use crate::feed::admin::{self, AdminAccess};
use crate::feed::finlight::{self, FinlightConfig, FinlightListener, Outcome};
use crate::feed::massive::{
    self, DEFAULT_FEED_URL, DEFAULT_SUBSCRIPTIONS, MassiveConfig, MassiveListener,
};

/// `mdp listen massive` flags (see [`MassiveConfig`] for the listener's own).
#[derive(Debug, Clone, clap::Args)]
pub struct MassiveArgs {
    /// Feed base URL; the market path (`/stocks`) is appended unless the
    /// URL already ends in it.
    #[arg(long, env = "MASSIVE_FEED_URL", default_value = DEFAULT_FEED_URL)]
    pub feed_url: String,
    /// Feed host, the seed's `MASSIVE_FEED` (`socket.massive.com`,
    /// `delayed.massive.com`, or the SDK's names `RealTime` / `Delayed`): the
    /// feed URL becomes `wss://<host>` (`ws://` when --feed-secure false)
    /// unless --feed-url / MASSIVE_FEED_URL names another URL.
    #[arg(long, env = "MASSIVE_FEED")]
    pub feed_host: Option<String>,
    /// With --feed-host: TLS or not (the seed's `MASSIVE_SECURE`).
    #[arg(long, env = "MASSIVE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub feed_secure: bool,
    /// API key (falls back to POLYGON_API_KEY).
    #[arg(long, env = "MASSIVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Subscriptions, comma separated or a JSON array (seed default).
    #[arg(
        long,
        env = "MASSIVE_SUBSCRIPTIONS",
        default_value = DEFAULT_SUBSCRIPTIONS
    )]
    pub subscriptions: String,
    /// Queue broker URL (`amqp://…`; `memory://` only when given explicitly); required.
    #[arg(long, env = "RABBITMQ_URL", default_value_t = String::new(), hide_default_value = true, hide_env_values = true)]
    pub queue_url: String,
    /// Message TTL of the market-data queues, ms.
    #[arg(long, env = "MARKET_DATA_MESSAGE_TTL", default_value_t = 5000)]
    pub message_ttl_ms: u64,
    /// Publish array messages (the frames waiting, per queue, up to 1,000
    /// events each) instead of one message per event. Only mdp's processors
    /// read arrays: the seed's (Python) processors expect one event per
    /// message, so leave this off in a deployment that mixes them.
    #[arg(long)]
    pub batch_frames: bool,
    /// Market (path segment); only `stocks` is implemented.
    #[arg(long, env = "MASSIVE_MARKET", default_value = "stocks")]
    pub market: String,
    /// Massive REST base URL, for market status while the market is closed
    /// (default: Massive's API when a key is set and the feed is Massive's;
    /// without either, the listener always connects).
    #[arg(long, env = "MASSIVE_REST_URL")]
    pub rest_url: Option<String>,
    /// Poll market status while the market is closed instead of connecting,
    /// whenever a REST endpoint is known.
    #[arg(long, env = "MASSIVE_MARKET_AWARE", default_value_t = true, action = clap::ArgAction::Set)]
    pub market_aware: bool,
    /// No data for this long (ms) means the feed stalled: reconnect.
    #[arg(long, env = "MASSIVE_STALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub stall_timeout_ms: u64,
    /// Longest reconnect backoff, ms (starts at 500 ms, doubles, jittered).
    #[arg(long, default_value_t = 30_000)]
    pub max_backoff_ms: u64,
    /// Wait after `auth_failed` or `max_connections`, ms.
    #[arg(long, default_value_t = 60_000)]
    pub refused_wait_ms: u64,
    /// Market-status poll interval while the market is closed, ms.
    #[arg(long, default_value_t = 60_000)]
    pub closed_poll_ms: u64,
    /// Prefix of the queue names (e.g. to share one broker between tests).
    #[arg(long, env = "MDP_QUEUE_PREFIX", default_value = "")]
    pub queue_prefix: String,
    /// Admin API address (`/status`, `/feed`, `/market`, `/subscriptions`); none when unset.
    #[arg(long, env = "MDP_LISTENER_ADMIN")]
    pub admin_listen: Option<String>,
    /// Health, readiness, status and metrics only (`/health`, `/ready`,
    /// `/status`, `/metrics`), apart from the control API: the address for
    /// probes and scrapers; none when unset.
    #[arg(long, env = "MDP_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Connect when started (`false`: wait for `POST /start` on the control API).
    #[arg(long, env = "MDL_AUTO_START_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_start: bool,
    /// Who may change settings through the admin API, and how often.
    #[command(flatten)]
    pub admin: AdminAccessArgs,
    /// Publisher confirms (the seed's `MDQ_PUBLISHER_CONFIRMS`).
    #[command(flatten)]
    pub confirms: PublisherConfirms,
    /// Hosts the admin API may point the feed at (comma separated, any
    /// port); default: the host of `--feed-url`.
    #[arg(long, env = "MASSIVE_FEED_HOSTS", value_delimiter = ',')]
    pub feed_hosts: Vec<String>,
    /// Record every received frame to this JSONL file (replayable by `mdp simulate --replay`).
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
}

impl MassiveArgs {
    /// The listener's config: the seed's `MASSIVE_FEED` host applied to the feed URL.
    pub fn config(&self) -> MassiveConfig {
        MassiveConfig {
            feed_url: massive::feed_url_with_host(
                &self.feed_url,
                self.feed_host.as_deref(),
                self.feed_secure,
            ),
            api_key: self.api_key.clone(),
            subscriptions: self.subscriptions.clone(),
            message_ttl_ms: self.message_ttl_ms,
            batch_frames: self.batch_frames,
            market: self.market.clone(),
            rest_url: self.rest_url.clone(),
            market_aware: self.market_aware,
            stall_timeout_ms: self.stall_timeout_ms,
            max_backoff_ms: self.max_backoff_ms,
            refused_wait_ms: self.refused_wait_ms,
            closed_poll_ms: self.closed_poll_ms,
            queue_prefix: self.queue_prefix.clone(),
            auto_start: self.auto_start,
            admin: self.admin.access(),
            feed_hosts: self.feed_hosts.clone(),
            record: self.record.clone(),
        }
    }
}

/// `mdp listen finlight` flags (see [`FinlightConfig`] for the listener's own).
#[derive(Debug, Clone, clap::Args)]
pub struct FinlightArgs {
    /// WebSocket URL of the enhanced stream (`/raw` is appended for `--raw`).
    #[arg(long, env = "FINLIGHT_WS_URL", default_value = finlight::DEFAULT_URL)]
    pub url: String,
    /// API key, sent as the `x-api-key` header.
    #[arg(long, env = "FINLIGHT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The raw stream (no AI enrichment, no initial article).
    #[arg(long, env = "FINLIGHT_RAW")]
    pub raw: bool,
    /// Advanced query, e.g. `ticker:AAPL OR ticker:NVDA`.
    #[arg(long, env = "FINLIGHT_QUERY")]
    pub query: Option<String>,
    /// Tickers (comma separated or a JSON array; enhanced only).
    #[arg(long, env = "FINLIGHT_TICKERS", value_delimiter = ',')]
    pub tickers: Vec<String>,
    /// Source domains (comma separated or a JSON array).
    #[arg(long, env = "FINLIGHT_SOURCES", value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Language (ISO 639-1).
    #[arg(long, env = "FINLIGHT_LANGUAGE", default_value = "en")]
    pub language: String,
    /// Include company entities (enhanced only).
    #[arg(long, env = "FINLIGHT_INCLUDE_ENTITIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub include_entities: bool,
    /// Displace other sessions of the key (`x-takeover: true`, as the seed).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub takeover: bool,
    /// Queue broker URL (`amqp://…`; `memory://` only when given explicitly); required.
    #[arg(long, env = "RABBITMQ_URL", default_value_t = String::new(), hide_default_value = true, hide_env_values = true)]
    pub queue_url: String,
    /// Message TTL of the `news` queue, ms.
    #[arg(long, env = "NEWS_MESSAGE_TTL", default_value_t = 900_000)]
    pub message_ttl_ms: u64,
    /// Application ping interval, ms.
    #[arg(long, default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// No pong for this long: reconnect, ms.
    #[arg(long, default_value_t = 60_000)]
    pub pong_timeout_ms: u64,
    /// Wait after a rate-limit answer (HTTP 429, `error` "limit", 1013/4001), ms.
    #[arg(long, default_value_t = 60_000)]
    pub rate_limit_wait_ms: u64,
    /// Wait after a `blocked` answer (4002), ms.
    #[arg(long, default_value_t = 3_600_000)]
    pub blocked_wait_ms: u64,
    /// Longest reconnect backoff, ms.
    #[arg(long, default_value_t = 10_000)]
    pub max_backoff_ms: u64,
    /// Prefix of the queue name.
    #[arg(long, env = "MDP_QUEUE_PREFIX", default_value = "")]
    pub queue_prefix: String,
    /// Admin API address (`/status`, `/filter`); none when unset.
    #[arg(long, env = "MDP_LISTENER_ADMIN")]
    pub admin_listen: Option<String>,
    /// Health, readiness, status and metrics only (`/health`, `/ready`,
    /// `/status`, `/metrics`), apart from the control API: the address for
    /// probes and scrapers; none when unset.
    #[arg(long, env = "MDP_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Connect when started (`false`: wait for `POST /start` on the control API).
    #[arg(long, env = "FDL_AUTO_START_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_start: bool,
    /// Who may change the filter through the admin API, and how often.
    #[command(flatten)]
    pub admin: AdminAccessArgs,
    /// Publisher confirms (the seed's `MDQ_PUBLISHER_CONFIRMS`).
    #[command(flatten)]
    pub confirms: PublisherConfirms,
}

impl FinlightArgs {
    /// The listener's config.
    pub fn config(&self) -> FinlightConfig {
        FinlightConfig {
            url: self.url.clone(),
            api_key: self.api_key.clone(),
            raw: self.raw,
            query: self.query.clone(),
            tickers: self.tickers.clone(),
            sources: self.sources.clone(),
            language: self.language.clone(),
            include_entities: self.include_entities,
            takeover: self.takeover,
            message_ttl_ms: self.message_ttl_ms,
            ping_interval_ms: self.ping_interval_ms,
            pong_timeout_ms: self.pong_timeout_ms,
            rate_limit_wait_ms: self.rate_limit_wait_ms,
            blocked_wait_ms: self.blocked_wait_ms,
            max_backoff_ms: self.max_backoff_ms,
            queue_prefix: self.queue_prefix.clone(),
            auto_start: self.auto_start,
            admin: self.admin.access(),
        }
    }
}

/// Who may change a listener's settings through its admin API, and how often.
#[derive(Clone, clap::Args)]
pub struct AdminAccessArgs {
    /// Bearer token the admin API's write routes require; without one they are refused.
    #[arg(long, env = "MDP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Least time between two accepted settings changes, ms (sooner: 429).
    #[arg(long, env = "MDP_ADMIN_CHANGE_INTERVAL_MS", default_value_t = 10_000)]
    pub admin_change_interval_ms: u64,
}

impl AdminAccessArgs {
    /// The admin API's access rules.
    pub fn access(&self) -> AdminAccess {
        AdminAccess {
            admin_token: self.admin_token.clone(),
            admin_change_interval_ms: self.admin_change_interval_ms,
        }
    }
}

impl std::fmt::Debug for AdminAccessArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.access().fmt(f)
    }
}

/// The seed's `MDQ_PUBLISHER_CONFIRMS`. mdp's listeners always publish with
/// confirms (their at-least-once delivery rests on them), so `true` is
/// accepted and `false` refused rather than silently ignored.
#[derive(Debug, Clone, clap::Args)]
pub struct PublisherConfirms {
    /// Publisher confirms: always on; `false` is refused (seed `MDQ_PUBLISHER_CONFIRMS`).
    #[arg(long, env = "MDQ_PUBLISHER_CONFIRMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub publisher_confirms: bool,
}

/// A listener asked to publish without confirms.
#[derive(Debug, thiserror::Error)]
#[error(
    "MDQ_PUBLISHER_CONFIRMS=false (--publisher-confirms false): mdp's listeners always wait for publisher confirms, which their delivery guarantee rests on; unset it or set it to true"
)]
pub struct ConfirmsRequired;

impl PublisherConfirms {
    /// Refuse a setting mdp does not honour.
    pub fn require(&self) -> Result<(), ConfirmsRequired> {
        if self.publisher_confirms {
            Ok(())
        } else {
            Err(ConfirmsRequired)
        }
    }
}

/// Refuse to dial Massive's own servers without an API key: the listener
/// would only be refused, over and over. A feed URL elsewhere (a simulator)
/// needs no key.
fn refuse_real_feed_without_key(config: &MassiveConfig) -> anyhow::Result<()> {
    if massive::massive_api_key(config.api_key.as_deref()).is_some() {
        return Ok(());
    }
    if massive::is_massive_host(&config.feed_url) {
        anyhow::bail!(
            "no Massive API key: set MASSIVE_API_KEY (or POLYGON_API_KEY), or point MASSIVE_FEED_URL \
             (--feed-url) at a simulator such as `mdp simulate`"
        );
    }
    Ok(())
}

/// Serve a listener's admin API on `admin_addr` and its read-only routes
/// on `health_addr`, each when given.
async fn serve_admin<T: admin::ListenerStatus>(
    listener: &Arc<T>,
    admin_router: impl FnOnce(Arc<T>) -> axum::Router,
    admin_addr: Option<&str>,
    health_addr: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(addr) = admin_addr {
        admin::serve(addr, admin_router(listener.clone())).await?;
    }
    if let Some(addr) = health_addr {
        admin::serve(addr, admin::read_router(listener.clone())).await?;
    }
    Ok(())
}

/// Run `mdp listen massive` until ctrl-c.
pub async fn massive(args: MassiveArgs) -> anyhow::Result<ExitCode> {
    args.confirms.require()?;
    let config = args.config();
    refuse_real_feed_without_key(&config)?;
    let queue = crate::queue::open(&args.queue_url).await?;
    let listener = Arc::new(MassiveListener::new(config, queue));
    let (admin_addr, health_addr) = (args.admin_listen.as_deref(), args.health_listen.as_deref());
    serve_admin(&listener, massive::admin_router, admin_addr, health_addr).await?;
    listener.run(super::roles::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Run `mdp listen finlight` until ctrl-c, or until preempted/blocked (exit code 3).
pub async fn finlight(args: FinlightArgs) -> anyhow::Result<ExitCode> {
    args.confirms.require()?;
    if args.api_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
        anyhow::bail!("no Finlight API key: set FINLIGHT_API_KEY or pass --api-key");
    }
    let queue = crate::queue::open(&args.queue_url).await?;
    let listener = Arc::new(FinlightListener::new(args.config(), queue));
    let (admin_addr, health_addr) = (args.admin_listen.as_deref(), args.health_listen.as_deref());
    serve_admin(&listener, finlight::admin_router, admin_addr, health_addr).await?;
    match listener.run(super::roles::shutdown_signal()).await? {
        Outcome::Shutdown => Ok(ExitCode::SUCCESS),
        Outcome::Preempted(reason) => {
            eprintln!("mdp: finlight session preempted by another connection: {reason}");
            Ok(ExitCode::from(3))
        }
        Outcome::Blocked(reason) => {
            eprintln!("mdp: finlight blocked this key: {reason}");
            Ok(ExitCode::from(3))
        }
    }
}
