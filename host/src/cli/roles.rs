//! `mdp process` and `mdp scan`: processor and scanner roles over a plugin
//! directory that is watched for hot reloads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::plugin::{HostServices, LiveWorker, Registry, Runtime, RuntimeConfig, SystemClock};
use crate::process::{Companion, Processor, ProcessorConfig};
use crate::queue::{Queue, QueueSpec};
use crate::refdata::{MassiveReference, MassiveRestConfig};
use crate::scan::{Scanner, ScannerConfig};
use crate::store::{Store, Topic};
use crate::telemetry::Health;

/// Backends and plugin settings shared by the roles that run analyzers.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzerHostArgs {
    /// Queue broker: `amqp://…` (RabbitMQ), or `memory://` (embedded) when
    /// given explicitly; required by `mdp process`.
    #[arg(long, env = "RABBITMQ_URL", default_value_t = String::new(), hide_default_value = true, hide_env_values = true)]
    pub queue_url: String,
    /// Result store (WDC) effects are written to and plugins read:
    /// `redis://…`, or `memory://` when given explicitly; required.
    #[arg(long, env = "WDC_REDIS_URL", default_value_t = String::new(), hide_default_value = true, hide_env_values = true)]
    pub store_url: String,
    /// Internal store (MDC) for reference data; defaults to the result store.
    #[arg(long, env = "MDC_REDIS_URL", hide_env_values = true)]
    pub mdc_url: Option<String>,
    /// Directory of `<name>.wasm` + `<name>.toml` plugins (watched for changes).
    #[arg(long, env = "MDP_PLUGIN_DIR", default_value = "target/plugins")]
    pub plugin_dir: PathBuf,
    /// Compiled-artifact cache, outside the plugin directory (default:
    /// `$XDG_CACHE_HOME/mdp/artifacts` or `~/.cache/mdp/artifacts`). Its
    /// artifacts are authenticated with `MDP_PLUGIN_CACHE_KEY` or the key file
    /// `$XDG_CONFIG_HOME/mdp/artifact-cache.key` (`~/.config/mdp/…`).
    #[arg(long, env = "MDP_PLUGIN_CACHE")]
    pub plugin_cache: Option<PathBuf>,
    /// Massive REST base URL for reference data.
    #[arg(
        long,
        env = "MASSIVE_REST_URL",
        default_value = "https://api.massive.com"
    )]
    pub massive_rest_url: String,
    /// Massive API key (falls back to POLYGON_API_KEY); without one,
    /// reference data comes only from the store.
    #[arg(long, env = "MASSIVE_API_KEY", hide_env_values = true)]
    pub massive_api_key: Option<String>,
    /// Address for `/health`, `/ready` and `/metrics` (none when unset).
    #[arg(long, env = "MDP_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
}

/// Open backends, the runtime and the plugin registry; start watching.
pub struct AnalyzerHost {
    /// Queue broker (none for roles that consume no queue).
    pub queue: Option<Arc<dyn Queue>>,
    /// Result store.
    pub store: Arc<dyn Store>,
    /// Services handed to plugins.
    pub services: HostServices,
    /// The market-data cache (MDC): reference data and, where a manifest
    /// places them, analyzer state; the result store itself when no
    /// separate `MDC_REDIS_URL` is given.
    pub mdc: Arc<dyn Store>,
    /// The plugin registry.
    pub registry: Arc<Registry>,
    _watch: crate::plugin::WatchHandle,
}

impl AnalyzerHostArgs {
    /// The API key from the flag, `MASSIVE_API_KEY`, `POLYGON_API_KEY` or the key file.
    pub fn api_key(&self) -> Option<String> {
        crate::feed::massive::massive_api_key(self.massive_api_key.as_deref())
    }

    /// Connect the store (and the queue broker when `with_queue`), load the
    /// plugins and start watching. A missing URL is refused, naming its
    /// variable.
    pub async fn open(&self, with_queue: bool) -> anyhow::Result<AnalyzerHost> {
        let store = crate::store::open(&self.store_url).await?;
        let queue = match with_queue {
            true => Some(crate::queue::open(&self.queue_url).await?),
            false => None,
        };
        self.open_with(queue, store).await
    }

    /// Build the host over already-open backends (for `mdp up`, whose roles
    /// share one embedded queue and store).
    pub async fn open_with(
        &self,
        queue: Option<Arc<dyn Queue>>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<AnalyzerHost> {
        let mdc = match &self.mdc_url {
            Some(url) if url != &self.store_url => crate::store::open(url).await?,
            _ => store.clone(),
        };
        let clock: Arc<dyn crate::plugin::Clock> = Arc::new(SystemClock);
        let reference: Arc<dyn crate::plugin::ReferenceData> = match self.api_key() {
            Some(api_key) => Arc::new(MassiveReference::new(
                MassiveRestConfig {
                    base_url: self.massive_rest_url.clone(),
                    api_key,
                    timeout: Duration::from_secs(10),
                    attempts: 3,
                },
                mdc.clone(),
            )?),
            None => {
                tracing::info!(
                    "no Massive API key: reference data comes from the store only, the market status from mdc:market_status or else the New York schedule"
                );
                Arc::new(crate::plugin::StoreReference::scheduled(
                    mdc.clone(),
                    clock.clone(),
                ))
            }
        };
        let services = HostServices {
            store: store.clone(),
            reference,
            clock,
        };
        if !self.plugin_dir.is_dir() {
            bail!(
                "plugin directory {} does not exist: build the plugins with scripts/build-plugins or pass --plugin-dir",
                self.plugin_dir.display()
            );
        }
        let cache_dir = self
            .plugin_cache
            .clone()
            .or_else(crate::plugin::artifact_cache::default_dir);
        if let Some(dir) = &cache_dir {
            crate::plugin::artifact_cache::refuse_inside(dir, &self.plugin_dir)?;
        } else {
            tracing::warn!(
                "no HOME or XDG_CACHE_HOME: compiled plugins are not cached (set --plugin-cache)"
            );
        }
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir,
            ..RuntimeConfig::default()
        })?;
        let registry = Registry::open(runtime, services.clone(), &self.plugin_dir)
            .await
            .with_context(|| format!("plugin directory {}", self.plugin_dir.display()))?;
        let watch = registry.watch().map_err(anyhow::Error::msg)?;
        Ok(AnalyzerHost {
            queue,
            store,
            services,
            mdc,
            registry,
            _watch: watch,
        })
    }
}

impl AnalyzerHost {
    /// A live worker for plugin `name` and the store its role applies to
    /// (keys placed in the MDC or the WDC as its manifest says, read when the
    /// role starts), or a clear error naming what is loaded.
    pub fn worker(&self, name: &str) -> anyhow::Result<(LiveWorker, Arc<dyn Store>)> {
        let slot = self
            .registry
            .slot(name)
            .filter(|s| s.current().is_some())
            .with_context(|| {
                format!(
                    "plugin `{name}` is not loaded (loaded: {})",
                    self.registry.names().join(", ")
                )
            })?;
        let cache_keys = slot
            .current()
            .map(|g| g.manifest.placement.cache_keys.clone())
            .unwrap_or_default();
        let store =
            crate::store::PlacedStore::wrap(self.store.clone(), self.mdc.clone(), &cache_keys);
        let services = HostServices {
            store: store.clone(),
            ..self.services.clone()
        };
        Ok((LiveWorker::new(slot, services)?, store))
    }
}

/// `mdp process`.
#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
    /// Queue to consume (repeat with --plugin for several pairs).
    #[arg(long = "queue", required = true)]
    pub queues: Vec<String>,
    /// Plugin to run on the queue at the same position; `a,b` runs `b` as a
    /// companion of `a` on every batch (`a` decides the messages' fate).
    #[arg(long = "plugin", required = true)]
    pub plugins: Vec<String>,
    /// Most events per analyzer call.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Longest wait for a batch to fill, milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Prefetch window.
    #[arg(long, env = "PREFETCH_COUNT", default_value_t = 1024)]
    pub prefetch: u16,
    /// Message TTL of the declared queue, milliseconds (the seed's default).
    #[arg(long, env = "MARKET_DATA_MESSAGE_TTL", default_value_t = 5000)]
    pub message_ttl_ms: u64,
    /// Dead-letter queue for rejected events.
    #[arg(long)]
    pub dead_letter: Option<String>,
    /// Redeliveries of one message (not requeued by this process) before it
    /// is dead-lettered; 0 for no limit.
    #[arg(long, env = "MDP_MAX_REDELIVERIES", default_value_t = 10)]
    pub max_redeliveries: u32,
    /// Backends and plugins.
    #[command(flatten)]
    pub host: AnalyzerHostArgs,
}

/// `mdp scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Channel or pattern (`quote:*`) to subscribe to (repeatable).
    #[arg(long = "subscribe", required = true)]
    pub topics: Vec<String>,
    /// Plugin to run.
    #[arg(long)]
    pub plugin: String,
    /// Most messages per analyzer call.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Longest wait for a batch to fill, milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Backends and plugins.
    #[command(flatten)]
    pub host: AnalyzerHostArgs,
}

/// A watch that turns true on SIGTERM or ctrl-c.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing batches in flight");
        let _ = tx.send(true);
    });
    rx
}

/// A named role task, as [`supervise`] watches it.
pub type RoleTask = (String, tokio::task::JoinHandle<anyhow::Result<()>>);

/// Start one processor per (queue, plugin) pair, reporting to `health`;
/// returns their tasks.
pub async fn spawn_processors(
    host: &AnalyzerHost,
    pairs: &[(String, String)],
    config: &ProcessorConfig,
    message_ttl: Option<Duration>,
    shutdown: &watch::Receiver<bool>,
    health: &Health,
) -> anyhow::Result<Vec<RoleTask>> {
    let broker = host
        .queue
        .clone()
        .context("processors need a queue broker (RABBITMQ_URL)")?;
    let mut tasks = Vec::new();
    for (queue, plugin) in pairs {
        broker
            .declare(&QueueSpec {
                name: queue.clone(),
                message_ttl,
                dead_letter: config.dead_letter.clone(),
            })
            .await
            .with_context(|| format!("declare queue `{queue}`"))?;
        if let Some(dlq) = &config.dead_letter {
            broker
                .declare(&QueueSpec {
                    name: dlq.clone(),
                    ..QueueSpec::default()
                })
                .await?;
        }
        let mut names = plugin.split(',').map(str::trim);
        let primary = names.next().unwrap_or_default();
        let (worker, store) = started_worker(host, primary).await?;
        let mut companions = Vec::new();
        for name in names {
            let (worker, store) = started_worker(host, name).await?;
            companions.push(Companion::new(worker, store));
        }
        let config = ProcessorConfig {
            queue: queue.clone(),
            ..config.clone()
        };
        let mut processor = Processor::new(config, broker.clone(), store, worker)
            .with_companions(companions)
            .with_health(health.clone());
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            let stats = processor.run(shutdown).await?;
            tracing::info!(?stats, "processor stopped");
            Ok(())
        });
        tasks.push((format!("process {queue}"), task));
    }
    Ok(tasks)
}

/// `plugin`'s worker, `init`ed, and the store its writes go to.
async fn started_worker(
    host: &AnalyzerHost,
    plugin: &str,
) -> anyhow::Result<(LiveWorker, Arc<dyn Store>)> {
    let (mut worker, store) = host.worker(plugin)?;
    worker
        .start()
        .await
        .with_context(|| format!("plugin `{plugin}`: init"))?;
    Ok((worker, store))
}

/// Start a scanner, reporting to `health`.
pub async fn spawn_scanner(
    host: &AnalyzerHost,
    topics: &[String],
    plugin: &str,
    config: ScannerConfig,
    shutdown: &watch::Receiver<bool>,
    health: &Health,
) -> anyhow::Result<RoleTask> {
    let (worker, store) = started_worker(host, plugin).await?;
    let config = ScannerConfig {
        topics: topics.iter().map(|t| Topic::parse(t)).collect(),
        ..config
    };
    let mut scanner = Scanner::new(config, store, worker).with_health(health.clone());
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let stats = scanner.run(shutdown).await?;
        tracing::info!(?stats, "scanner stopped");
        Ok(())
    });
    Ok((format!("scan {plugin}"), task))
}

/// Wait for the role tasks. A task that ends before shutdown was asked for —
/// with an error, a panic, or of its own accord — is reported (log line,
/// `/health` turns 503) and the role exits non-zero at once, so that its
/// supervisor restarts it; it never runs on with a part missing. At
/// shutdown, every task is awaited to finish its batches in flight.
pub async fn supervise(
    tasks: Vec<RoleTask>,
    health: &Health,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<ExitCode> {
    let stop_flag = shutdown.clone();
    let mut shutdown = shutdown.clone();
    let (names, handles): (Vec<String>, Vec<_>) = tasks.into_iter().unzip();
    let mut running: futures_util::stream::FuturesUnordered<_> = handles
        .into_iter()
        .zip(names)
        .map(|(handle, name)| async move { (name, handle.await) })
        .collect();
    use futures_util::StreamExt;
    let stop_asked = async {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop_asked);
    let first = tokio::select! {
        biased;
        _ = &mut stop_asked => None,
        Some(ended) = running.next() => Some(ended),
        else => None,
    };
    // A task that ends because shutdown was asked is part of the drain.
    let mut ended: Vec<_> = first.into_iter().collect();
    if let Some((name, outcome)) = ended.first()
        && !*stop_flag.borrow()
    {
        let how = match outcome {
            Ok(Ok(())) => "ended on its own".to_string(),
            Ok(Err(e)) => format!("failed: {e:#}"),
            Err(e) => format!("panicked: {e}"),
        };
        health.ended(name, how.clone());
        tracing::error!(task = %name, %how, "role task ended; exiting so the role is restarted");
        return Ok(ExitCode::FAILURE);
    }
    health.stopping();
    while let Some(next) = running.next().await {
        ended.push(next);
    }
    let mut result = Ok(ExitCode::SUCCESS);
    for (name, outcome) in ended {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e.context(name)),
            Err(e) => result = Err(anyhow::anyhow!("{name} panicked: {e}")),
        }
    }
    result
}

/// Start the health/metrics endpoint when configured.
pub(super) async fn admin(args: &AnalyzerHostArgs, health: &Health) -> anyhow::Result<()> {
    if let Some(addr) = &args.health_listen {
        let bound = crate::telemetry::serve_admin(addr, health.clone()).await?;
        tracing::info!(%bound, "health and metrics endpoint");
    }
    Ok(())
}

/// Run `mdp process`.
pub async fn process(args: ProcessArgs) -> anyhow::Result<ExitCode> {
    if args.queues.len() != args.plugins.len() {
        bail!(
            "give one --plugin per --queue ({} queues, {} plugins)",
            args.queues.len(),
            args.plugins.len()
        );
    }
    let health = Health::new("process");
    admin(&args.host, &health).await?;
    let host = args.host.open(true).await?;
    let shutdown = shutdown_signal();
    let pairs: Vec<(String, String)> = args
        .queues
        .iter()
        .cloned()
        .zip(args.plugins.iter().cloned())
        .collect();
    let config = ProcessorConfig {
        prefetch: args.prefetch,
        batch_size: args.batch_size.max(1),
        linger: Duration::from_millis(args.linger_ms),
        dead_letter: args.dead_letter.clone(),
        max_redeliveries: args.max_redeliveries,
        ..ProcessorConfig::default()
    };
    let ttl = Some(Duration::from_millis(args.message_ttl_ms));
    let tasks = spawn_processors(&host, &pairs, &config, ttl, &shutdown, &health).await?;
    health.started();
    supervise(tasks, &health, &shutdown).await
}

/// Run `mdp scan`.
pub async fn scan(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let health = Health::new("scan");
    admin(&args.host, &health).await?;
    let host = args.host.open(false).await?;
    let shutdown = shutdown_signal();
    let config = ScannerConfig {
        batch_size: args.batch_size.max(1),
        linger: Duration::from_millis(args.linger_ms),
        ..ScannerConfig::default()
    };
    let task = spawn_scanner(
        &host,
        &args.topics,
        &args.plugin,
        config,
        &shutdown,
        &health,
    )
    .await?;
    health.started();
    supervise(vec![task], &health, &shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever() -> tokio::task::JoinHandle<anyhow::Result<()>> {
        tokio::spawn(async {
            std::future::pending::<()>().await;
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_task_that_dies_makes_the_role_exit_non_zero_and_fail_liveness() {
        let health = Health::new("test");
        let (_stop, shutdown) = watch::channel(false);
        let dies = tokio::spawn(async { Err(anyhow::anyhow!("consumer gone")) });
        let tasks = vec![
            ("process a".to_string(), forever()),
            ("process b".into(), dies),
        ];
        let code = supervise(tasks, &health, &shutdown).await.unwrap();
        assert_eq!(code, ExitCode::FAILURE);
        let (alive, body) = health.liveness();
        assert!(!alive, "{body}");
        assert!(
            body["ended"]["process b"]
                .as_str()
                .unwrap()
                .contains("consumer gone")
        );
    }

    #[tokio::test]
    async fn a_task_that_panics_is_reported_as_such() {
        let health = Health::new("test");
        let (_stop, shutdown) = watch::channel(false);
        let panics = tokio::spawn(async { panic!("boom") });
        let tasks = vec![("scan".to_string(), panics), ("serve".into(), forever())];
        assert_eq!(
            supervise(tasks, &health, &shutdown).await.unwrap(),
            ExitCode::FAILURE
        );
        assert!(
            health.liveness().1["ended"]["scan"]
                .as_str()
                .unwrap()
                .contains("panicked")
        );
    }

    #[tokio::test]
    async fn tasks_that_end_at_shutdown_are_the_drain_not_a_failure() {
        let health = Health::new("test");
        let (stop, shutdown) = watch::channel(false);
        let drains = |mut rx: watch::Receiver<bool>| {
            tokio::spawn(async move {
                let _ = rx.wait_for(|s| *s).await;
                Ok(())
            })
        };
        let tasks = vec![
            ("a".to_string(), drains(shutdown.clone())),
            ("b".to_string(), drains(shutdown.clone())),
        ];
        stop.send(true).unwrap();
        assert_eq!(
            supervise(tasks, &health, &shutdown).await.unwrap(),
            ExitCode::SUCCESS
        );
        assert!(health.liveness().0);
    }
}
