//! `mdp serve` and `mdp widget-token`: the widget server's flags, turned
//! into its config, and the processes that run them.

use std::process::ExitCode;

use clap::builder::PossibleValue;

use crate::widgets::{ServeConfig, SlowClientPolicy, WidgetConfig};

/// `mdp serve` flags (see [`ServeConfig`] for the server's own).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MDP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Widget store (WDC): `redis://…`, or `memory://` when given explicitly; required.
    #[arg(long, env = "WDC_REDIS_URL", default_value_t = String::new(), hide_default_value = true, hide_env_values = true)]
    pub store_url: String,
    /// Who may connect and what each client may do (shared with `mdp up`).
    #[command(flatten)]
    pub widgets: WidgetArgs,
}

impl ServeArgs {
    /// The widget server's config.
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            listen: self.listen.clone(),
            widgets: self.widgets.config(),
        }
    }
}

/// Authentication, origins and limits of the widget endpoint: the same flags
/// for `mdp serve` and `mdp up`.
#[derive(Debug, Clone, clap::Args)]
pub struct WidgetArgs {
    /// Require the first frame to be `auth` with the shared key.
    #[arg(long, env = "AUTH_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_enabled: bool,
    /// The shared key clients authenticate with.
    #[arg(long, env = "AUTH_API_KEY", hide_env_values = true)]
    pub auth_api_key: Option<String>,
    /// Secret of HS256 widget tokens (JWT); turns auth on.
    #[arg(long, env = "MDP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Ed25519 public key (PEM file) of EdDSA widget tokens (JWT); turns auth on.
    #[arg(long, env = "MDP_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// The `iss` a widget token must carry (unchecked when unset).
    #[arg(long, env = "MDP_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` a widget token must carry (unchecked when unset).
    #[arg(long, env = "MDP_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Seconds a client has to send its `auth` frame when auth is on.
    #[arg(long, default_value_t = 10)]
    pub auth_timeout_secs: u64,
    /// Allowed `Origin` values (any when empty).
    #[arg(long = "allow-origin")]
    pub allow_origins: Vec<String>,
    /// WebSocket clients connected at once, in all (more are refused with 503).
    #[arg(long, env = "MDP_MAX_CLIENTS", default_value_t = 20_000)]
    pub max_clients: usize,
    /// WebSocket clients connected at once from one IP address (more are
    /// refused with 429).
    #[arg(long, env = "MDP_MAX_CLIENTS_PER_IP", default_value_t = 500)]
    pub max_clients_per_ip: usize,
    /// Bearer token `/metrics` requires (open when unset).
    #[arg(long, env = "MDP_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Frames a client may have queued before the slow-client policy applies.
    #[arg(long, default_value_t = 4096)]
    pub client_queue: usize,
    /// Payload bytes a client may have queued before the slow-client policy applies.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub client_queue_bytes: usize,
    /// What to do with a client that cannot keep up: `disconnect` (close
    /// 1013) or `conflate` (newest payload per channel while behind).
    #[arg(long, value_enum, default_value_t = SlowClientPolicy::Disconnect)]
    pub slow_client: SlowClientPolicy,
    /// Subscriptions one client may hold.
    #[arg(long, default_value_t = 256)]
    pub max_subscriptions: usize,
    /// Client frames per second allowed.
    #[arg(long, default_value_t = 50)]
    pub max_rate: u32,
    /// Largest client frame, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_frame: usize,
}

impl WidgetArgs {
    /// The widget endpoint's config.
    pub fn config(&self) -> WidgetConfig {
        WidgetConfig {
            auth_enabled: self.auth_enabled,
            auth_api_key: self.auth_api_key.clone(),
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            auth_timeout_secs: self.auth_timeout_secs,
            allow_origins: self.allow_origins.clone(),
            max_clients: self.max_clients,
            max_clients_per_ip: self.max_clients_per_ip,
            metrics_token: self.metrics_token.clone(),
            client_queue: self.client_queue,
            client_queue_bytes: self.client_queue_bytes,
            slow_client: self.slow_client,
            max_subscriptions: self.max_subscriptions,
            max_rate: self.max_rate,
            max_frame: self.max_frame,
        }
    }
}

impl clap::ValueEnum for SlowClientPolicy {
    fn value_variants<'a>() -> &'a [Self] {
        &[SlowClientPolicy::Disconnect, SlowClientPolicy::Conflate]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            SlowClientPolicy::Disconnect => PossibleValue::new("disconnect")
                .help("Close the client's connection (close code 1013)"),
            SlowClientPolicy::Conflate => PossibleValue::new("conflate")
                .help("Keep only the newest payload per channel while the client is behind"),
        })
    }
}

/// Run `mdp serve` until ctrl-c.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(&args.store_url).await?;
    let shutdown = super::roles::shutdown_signal();
    let handle = crate::widgets::serve(store, args.config(), shutdown).await?;
    println!("dashboard: http://{}/", handle.addr);
    handle.task.await?;
    Ok(ExitCode::SUCCESS)
}

/// `mdp widget-token`: sign an HS256 widget token.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The HS256 secret (the server's `--jwt-secret`).
    #[arg(long, env = "MDP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// A feed pattern the token allows (repeatable; none = every feed).
    #[arg(long = "feed")]
    pub feeds: Vec<String>,
    /// Validity, seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Who the token is for.
    #[arg(long)]
    pub sub: Option<String>,
}

/// Print a token for `args`.
pub fn token(args: TokenArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.jwt_secret.is_empty() {
        anyhow::bail!("the JWT secret is empty");
    }
    let feeds = (!args.feeds.is_empty()).then_some(args.feeds);
    let token = crate::widgets::auth::mint_hs256(
        &args.jwt_secret,
        args.sub.as_deref(),
        feeds,
        std::time::Duration::from_secs(args.ttl),
    )?;
    println!("{token}");
    Ok(std::process::ExitCode::SUCCESS)
}
