//! Command-line interface: one subcommand per role, plus plugin tooling.
//!
//! User errors end with one clear line on stderr and a non-zero exit, never a
//! panic or a backtrace.

pub mod author;
pub mod config;
mod dropin;
pub mod listen;
mod plugin;
pub mod roles;
pub mod serve;
pub mod simulate;
pub mod up;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mdp: market-data platform host with WebAssembly analyzers.
#[derive(Debug, Parser)]
#[command(name = "mdp", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML, one table per subcommand); the environment
    /// and flags override it.
    #[arg(long, global = true, env = "MDP_CONFIG")]
    pub config_file: Option<std::path::PathBuf>,
    /// Log format: `human` (default on a terminal) or `json`.
    #[arg(long, global = true, env = "MDP_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// A PEM CA file trusted for `amqps://` and `rediss://` brokers, besides
    /// the system's roots (for Redis, instead of them).
    #[arg(long, global = true, env = "MDP_TLS_CA_FILE")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Author tools: run, inspect and scaffold analyzer plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Consume queues and run analyzers on them (seed MDP/FDP).
    Process(roles::ProcessArgs),
    /// Run an analyzer on store pub/sub channels (seed MDS).
    Scan(roles::ScanArgs),
    /// Listen to an upstream feed and put its events on the queues.
    #[command(subcommand)]
    Listen(ListenCommand),
    /// Run the whole pipeline in one process (simulated market, embedded backends by default).
    Up(up::UpArgs),
    /// Serve the widget WebSocket protocol and the dashboard (seed WDS).
    Serve(serve::ServeArgs),
    /// Serve a simulated Massive market (WebSocket + REST) on loopback.
    Simulate(simulate::SimulateArgs),
    /// Sign an HS256 widget token (JWT) for `mdp serve --jwt-secret`.
    WidgetToken(serve::TokenArgs),
    /// Print the effective configuration of a subcommand (secrets redacted):
    /// `mdp config process --queue quotes --plugin massive-router`.
    #[command(name = "config")]
    ShowConfig {
        /// The subcommand and its flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

/// `mdp listen ...`.
#[derive(Debug, Subcommand)]
pub enum ListenCommand {
    /// The Massive stocks WebSocket (seed MDL + MDQ).
    Massive(listen::MassiveArgs),
    /// The Finlight news WebSocket (seed FDL + FDQ).
    Finlight(listen::FinlightArgs),
}

/// Keeps trace export alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops trace export"]
pub struct LoggingGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for LoggingGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("OpenTelemetry export: could not flush spans: {e}");
        }
    }
}

/// Install the tracing subscriber (`RUST_LOG` filter, default `info`) and,
/// with the `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, span export.
pub fn init_logging(format: Option<LogFormat>) -> LoggingGuard {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(f) => f == LogFormat::Json,
        None => !std::io::stderr().is_terminal(),
    };
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    {
        let (layer, provider) = otel::layer().unzip();
        let _ = registry.with(layer).try_init();
        LoggingGuard { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        LoggingGuard {}
    }
}

/// OpenTelemetry trace export (cargo feature `otel`): when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are batched to it over OTLP/HTTP.
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;

    /// The export layer and its provider (to flush at exit), or none when
    /// no endpoint is configured.
    pub fn layer<S>() -> Option<(
        impl tracing_subscriber::Layer<S>,
        opentelemetry_sdk::trace::SdkTracerProvider,
    )>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("OpenTelemetry export disabled: {e}");
                return None;
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("mdp")
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("mdp");
        opentelemetry::global::set_tracer_provider(provider.clone());
        Some((tracing_opentelemetry::layer().with_tracer(tracer), provider))
    }
}

/// The config file named by `--config-file` / `MDP_CONFIG`, before clap parses.
fn config_file_arg(args: &[String]) -> Option<std::path::PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config-file" {
            return it.next().map(Into::into);
        }
        if let Some(v) = a.strip_prefix("--config-file=") {
            return Some(v.into());
        }
    }
    std::env::var_os("MDP_CONFIG").map(Into::into)
}

/// The clap command with the config file's values as defaults.
fn command_with_file(args: &[String]) -> anyhow::Result<(clap::Command, config::FileValues)> {
    let command = Cli::command();
    let values = match config_file_arg(args) {
        Some(path) => config::load_file(&path, &command)?,
        None => config::FileValues::new(),
    };
    Ok((config::apply_file(command, &values), values))
}

/// `mdp config <subcommand> [flags]`.
fn show_config(args: &[String], tail: &[String]) -> anyhow::Result<ExitCode> {
    let (command, values) = command_with_file(args)?;
    let sub = tail.first().cloned().unwrap_or_default();
    let mut argv = vec!["mdp".to_string()];
    argv.extend(tail.iter().cloned());
    let matches = command.clone().try_get_matches_from(argv)?;
    let Some((name, mut sub_matches)) = matches.subcommand() else {
        anyhow::bail!("name a subcommand, e.g. `mdp config process`");
    };
    let mut sub_command = command
        .find_subcommand(name)
        .ok_or_else(|| anyhow::anyhow!("unknown subcommand `{sub}`"))?;
    // Down to the innermost subcommand named: `listen massive` → [listen.massive].
    let mut path = name.to_string();
    while let Some((inner, inner_matches)) = sub_matches.subcommand() {
        let Some(inner_command) = sub_command.find_subcommand(inner) else {
            break;
        };
        path = format!("{path}.{inner}");
        (sub_command, sub_matches) = (inner_command, inner_matches);
    }
    print!(
        "[{path}]\n{}",
        config::describe(sub_matches, sub_command, &values, &path)
    );
    if let Some(dir) = sub_matches
        .try_get_raw("plugin_dir")
        .ok()
        .flatten()
        .and_then(|mut v| v.next())
    {
        print!("{}", config::plugin_configs(std::path::Path::new(dir)));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parse arguments and run the chosen subcommand.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = command_with_file(&args).and_then(|(command, _)| {
        let matches = command.try_get_matches_from(&args)?;
        Ok(Cli::from_arg_matches(&matches)?)
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => {
                eprintln!("mdp: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let _logging = init_logging(cli.log_format);
    crate::tls::set_ca_file(cli.tls_ca_file.clone());
    if let Command::ShowConfig { args: tail } = &cli.command {
        return match show_config(&args, tail) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("mdp: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mdp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Plugin(cmd) => plugin::run(cmd).await,
            Command::Process(args) => roles::process(args).await,
            Command::Scan(args) => roles::scan(args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Listen(ListenCommand::Massive(args)) => listen::massive(args).await,
            Command::Listen(ListenCommand::Finlight(args)) => listen::finlight(args).await,
            Command::ShowConfig { .. } => Ok(ExitCode::SUCCESS),
            Command::WidgetToken(args) => serve::token(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mdp: {e:#}");
            ExitCode::FAILURE
        }
    }
}
