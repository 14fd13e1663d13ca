//! `mdp up`: every role in one process — simulator (unless a real API key is
//! configured), the Massive listener, one processor per queue with the seed's
//! default analyzers (news-feed on `news` when loaded), the daily-range
//! scanner, and the widget server with the dashboard — on the embedded
//! backends by default, or on RabbitMQ + Redis when their URLs are given.
//! Ctrl-c drains and exits cleanly.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::roles::{AnalyzerHostArgs, shutdown_signal, spawn_processors, spawn_scanner, supervise};
use super::serve::WidgetArgs;
use crate::feed::massive::{MassiveConfig, MassiveListener};
use crate::process::ProcessorConfig;
use crate::scan::ScannerConfig;
use crate::sim::{Profile, SimConfig};
use crate::telemetry::Health;
use crate::widgets::ServeConfig;

/// The seed's default wiring: queue → analyzers in order of preference.
pub const DEFAULT_PROCESSORS: [(&str, &[&str]); 5] = [
    ("aggregate", &["leaderboard", "massive-router"]),
    ("trades", &["top-trades", "massive-router"]),
    ("quotes", &["massive-router"]),
    ("halts", &["massive-router"]),
    ("unknown", &["massive-router"]),
];

/// Message TTL of the `news` queue, ms (the seed's FDL default, 15 minutes).
pub const NEWS_MESSAGE_TTL_MS: u64 = 900_000;

/// `mdp up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Dashboard and widget WebSocket address.
    #[arg(long, env = "MDP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Widget auth, origins and limits, as for `mdp serve`.
    #[command(flatten)]
    pub widgets: WidgetArgs,
    /// Simulated market load when no real feed is configured.
    #[arg(long, value_enum, default_value_t = Profile::Average)]
    pub profile: Profile,
    /// Symbols in the simulated market.
    #[arg(long, default_value_t = 3000)]
    pub symbols: usize,
    /// Massive feed URL (used when an API key is configured).
    #[arg(
        long,
        env = "MASSIVE_FEED_URL",
        default_value = "wss://socket.massive.com"
    )]
    pub feed_url: String,
    /// Message TTL of the market-data queues, ms.
    #[arg(long, env = "MARKET_DATA_MESSAGE_TTL", default_value_t = 5000)]
    pub message_ttl_ms: u64,
    /// Longest wait of the processors and scanners for a batch to fill, ms.
    /// 0 (the default) takes what has already arrived: the feed comes in
    /// frames, and batches grow from what queues up while the previous one
    /// is analyzed, so waiting adds latency without saving work.
    #[arg(long, env = "MDP_LINGER_MS", default_value_t = 0)]
    pub linger_ms: u64,
    /// Start of the simulated market's clock (RFC 3339, or `now` for the
    /// real clock, where a closed market sends nothing), when the simulator
    /// runs; default: now while the regular session is open, otherwise the
    /// same time of day in the most recent session (10:00 New York when
    /// outside the session's hours).
    #[arg(long, env = "MDP_SIM_AT")]
    pub sim_at: Option<String>,
    /// The wall clock that default reads (RFC 3339; for tests).
    #[arg(long, env = "MDP_UP_NOW", hide = true)]
    pub now: Option<String>,
    /// Backends and plugins.
    #[command(flatten)]
    pub host: AnalyzerHostArgs,
}

/// Run everything until ctrl-c / SIGTERM.
pub async fn run(mut args: UpArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    // Simulated market unless real credentials are configured.
    let sim = if args.host.api_key().is_none() {
        Some(start_simulator(&mut args).await?)
    } else {
        None
    };
    // `mdp up` is the one role that runs on the embedded backends by default.
    for url in [&mut args.host.queue_url, &mut args.host.store_url] {
        if url.trim().is_empty() {
            *url = "memory://".into();
        }
    }
    let queue = crate::queue::open(&args.host.queue_url).await?;
    let store = crate::store::open(&args.host.store_url).await?;
    let host = args
        .host
        .open_with(Some(queue.clone()), store.clone())
        .await?;
    if host.registry.names().is_empty() {
        anyhow::bail!(
            "no plugins in {}: build them with scripts/build-plugins (or pass --plugin-dir)",
            args.host.plugin_dir.display()
        );
    }
    let listener = MassiveListener::new(
        MassiveConfig {
            feed_url: args.feed_url.clone(),
            api_key: args.host.massive_api_key.clone(),
            subscriptions: "A.*,AM.*,T.*,Q.*,LULD.*".into(),
            message_ttl_ms: args.message_ttl_ms,
            batch_frames: true,
            // With the simulator, the listener asks it for the session (a
            // closed simulated market is not a stalled feed).
            rest_url: sim.as_ref().map(|s| s.handle.rest_url()),
            ..MassiveConfig::default()
        },
        queue.clone(),
    );
    listener.declare_queues().await?;
    let health = Health::new("up");
    super::roles::admin(&args.host, &health).await?;
    let (mut tasks, pairs) = spawn_analyzers(&host, &store, &args, &shutdown, &health).await?;
    let serve = crate::widgets::serve(
        store.clone(),
        ServeConfig {
            listen: args.listen.clone(),
            widgets: args.widgets.config(),
        },
        shutdown.clone(),
    )
    .await?;
    let feed = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { listener.run(shutdown).await })
    };
    tasks.push(("listen massive".into(), feed));
    if let Some(sim) = &sim {
        tasks.push((
            "listen finlight".into(),
            simulated_news(sim, &queue, &shutdown),
        ));
    }
    println!(
        "mdp is up: dashboard at http://{}/  (ctrl-c to stop)",
        serve.addr
    );
    if let Some(banner) = sim.as_ref().and_then(|s| s.closed_banner.as_deref()) {
        println!("{banner}");
    }
    let wiring: Vec<String> = pairs.iter().map(|(q, p)| format!("{q}→{p}")).collect();
    println!("analyzers: {}", wiring.join(", "));
    health.started();
    let code = supervise(tasks, &health, &shutdown).await?;
    if code != ExitCode::SUCCESS {
        // A role died: say so and exit non-zero rather than run on without it.
        eprintln!("mdp up: a role stopped unexpectedly (see the log above); exiting");
        return Ok(code);
    }
    let _ = serve.task.await;
    println!("mdp stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The simulated market `mdp up` runs without a real API key.
struct Simulated {
    handle: crate::sim::SimHandle,
    /// The line saying a closed market made it replay the last session.
    closed_banner: Option<String>,
}

/// Start the simulator and point the feed, REST and key settings at it.
async fn start_simulator(args: &mut UpArgs) -> anyhow::Result<Simulated> {
    let now_ms = match &args.now {
        Some(now) => crate::time::parse_at_ms(now).context("--now")?,
        None => chrono::Utc::now().timestamp_millis() as u64,
    };
    let (at, closed_banner) = sim_start(args.sim_at.as_deref(), now_ms)?;
    let handle = crate::sim::start(SimConfig {
        listen: "127.0.0.1:0".into(),
        symbols: args.symbols,
        profile: args.profile,
        at: Some(at.to_string()),
        ..SimConfig::default()
    })
    .await
    .context("start the simulator")?;
    args.feed_url = handle.ws_url();
    args.host.massive_rest_url = handle.rest_url();
    args.host.massive_api_key = Some("simulated".into());
    tracing::info!(feed = %args.feed_url, "no Massive API key: using the simulated market");
    Ok(Simulated {
        handle,
        closed_banner,
    })
}

/// News from the simulated Finlight service onto the `news` queue.
fn simulated_news(
    sim: &Simulated,
    queue: &std::sync::Arc<dyn crate::queue::Queue>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let news = crate::feed::finlight::FinlightListener::new(
        crate::feed::finlight::FinlightConfig {
            url: sim.handle.finlight_url(),
            api_key: Some("simulated".into()),
            ..Default::default()
        },
        queue.clone(),
    );
    let shutdown = shutdown.clone();
    tokio::spawn(async move { news.run(shutdown).await.map(|_| ()) })
}

/// The seed's default analyzers for what is loaded: one processor per queue
/// (news-feed on `news` when loaded), the daily-range scanner, and the
/// drop-in scanners. Returns the tasks and the queue → analyzer pairs.
async fn spawn_analyzers(
    host: &super::roles::AnalyzerHost,
    store: &std::sync::Arc<dyn crate::store::Store>,
    args: &UpArgs,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    health: &Health,
) -> anyhow::Result<(Vec<super::roles::RoleTask>, Vec<(String, String)>)> {
    let loaded = host.registry.names();
    let mut pairs = default_pairs(&loaded);
    add_companions(&mut pairs, &host.registry);
    let ttl = Some(Duration::from_millis(args.message_ttl_ms));
    let linger = Duration::from_millis(args.linger_ms);
    let config = ProcessorConfig {
        linger,
        ..ProcessorConfig::default()
    };
    let mut tasks = spawn_processors(host, &pairs, &config, ttl, shutdown, health).await?;
    if loaded.iter().any(|l| l == "news-feed") {
        // The seed's news queue keeps messages 15 minutes (FDL default).
        let news = [("news".to_string(), "news-feed".to_string())];
        let ttl = Some(Duration::from_millis(NEWS_MESSAGE_TTL_MS));
        tasks.extend(spawn_processors(host, &news, &config, ttl, shutdown, health).await?);
        pairs.extend(news);
    }
    if loaded.iter().any(|l| l == "daily-range") {
        let channels = ["quote:*".to_string()];
        let scanner = ScannerConfig {
            linger,
            ..ScannerConfig::default()
        };
        let task = spawn_scanner(host, &channels, "daily-range", scanner, shutdown, health);
        tasks.push(task.await?);
    }
    // Plugins dropped into the plugin directory (now or later) that consume store channels.
    let mut assigned: std::collections::BTreeSet<String> = pairs
        .iter()
        .flat_map(|(_, p)| p.split(','))
        .map(String::from)
        .collect();
    assigned.insert("daily-range".into());
    let dropins = super::dropin::spawn(
        host.registry.clone(),
        host.services.clone(),
        store.clone(),
        assigned,
        shutdown.clone(),
    );
    tasks.push(("drop-in scanners".into(), dropins));
    Ok((tasks, pairs))
}

/// [`DEFAULT_PROCESSORS`] narrowed to the `loaded` plugins: each queue gets
/// its first loaded candidate (a queue with none is skipped, with a warning).
fn default_pairs(loaded: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (queue_name, candidates) in DEFAULT_PROCESSORS {
        match candidates.iter().find(|c| loaded.iter().any(|l| l == *c)) {
            Some(plugin) => pairs.push((queue_name.to_string(), plugin.to_string())),
            None => {
                tracing::warn!(queue = queue_name, wanted = ?candidates, "no analyzer for this queue")
            }
        }
    }
    pairs
}

/// Plugins loaded at start that no built-in role runs and whose manifest
/// consumes a queue the processors consume run as companions of that queue's
/// analyzer (`leaderboard,minute-bars`): a queue's messages reach one consumer.
fn add_companions(pairs: &mut [(String, String)], registry: &crate::plugin::Registry) {
    let builtin = |name: &str| {
        ["news-feed", "daily-range"].contains(&name)
            || DEFAULT_PROCESSORS.iter().any(|(_, c)| c.contains(&name))
    };
    for name in registry.names().into_iter().filter(|n| !builtin(n)) {
        let Some(generation) = registry.slot(&name).and_then(|s| s.current()) else {
            continue;
        };
        for (queue, plugin) in pairs.iter_mut() {
            if generation.manifest.consumes.iter().any(|c| c == queue) {
                tracing::info!(%queue, primary = %plugin, companion = %name, "companion analyzer");
                plugin.push(',');
                plugin.push_str(&name);
            }
        }
    }
}

/// The simulator's start (Unix ms) for `--sim-at` (`now`, a time, or unset)
/// at wall-clock `now_ms`, and the one-line banner when a closed market made
/// it simulate the last session instead.
pub fn sim_start(sim_at: Option<&str>, now_ms: u64) -> anyhow::Result<(u64, Option<String>)> {
    match sim_at.map(str::trim) {
        Some("now") => Ok((now_ms, None)),
        Some(at) => Ok((crate::time::parse_at_ms(at).context("--sim-at")?, None)),
        None => Ok(match crate::sim::last_session_moment(now_ms) {
            Some(at) => (
                at,
                Some(format!(
                    "market closed now; simulating {} — `--sim-at now` for the real clock",
                    crate::sim::new_york_label(at)
                )),
            ),
            None => (now_ms, None),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_market_simulates_the_last_session_unless_told_now() {
        // Saturday 2026-12-05 12:00 New York.
        let saturday = 1_796_490_000_000;
        let (at, banner) = sim_start(None, saturday).unwrap();
        assert_eq!(at, saturday - 86_400_000, "Friday, same time of day");
        assert_eq!(
            banner.as_deref(),
            Some(
                "market closed now; simulating Friday 2026-12-04 12:00 New York — `--sim-at now` for the real clock"
            )
        );
        assert_eq!(sim_start(Some("now"), saturday).unwrap(), (saturday, None));
        let given = sim_start(Some("2026-03-09T10:00:00-04:00"), saturday).unwrap();
        assert_eq!(given, (1_773_064_800_000, None));
    }
}
