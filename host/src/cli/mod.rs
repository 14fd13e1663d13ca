//! Command-line interface: one subcommand per role, plus plugin tooling.
//!
//! User errors end with one clear line on stderr and a non-zero exit, never a
//! panic or a backtrace.

mod plugin;
pub mod roles;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mdp: market-data platform host with WebAssembly analyzers.
#[derive(Debug, Parser)]
#[command(name = "mdp", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format: `human` (default on a terminal) or `json`.
    #[arg(long, global = true, env = "MDP_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
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
}

/// Install the tracing subscriber (`RUST_LOG` filter, default `info`).
pub fn init_logging(format: Option<LogFormat>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(f) => f == LogFormat::Json,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Parse arguments and run the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
