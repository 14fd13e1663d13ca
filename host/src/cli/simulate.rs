//! `mdp simulate`: the simulator's flags, turned into its config, and the
//! process that runs it until ctrl-c.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValue;

use crate::sim::{Fault, Profile, SimConfig};

/// `mdp simulate` flags (see [`SimConfig`]).
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (Massive WebSocket `/stocks`, REST and `/admin/*` on one port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Address of the Finlight WebSocket (`/` enhanced, `/raw`).
    #[arg(long, default_value = "127.0.0.1:8091")]
    pub finlight_listen: String,
    /// Number of symbols.
    #[arg(long, default_value_t = 3000)]
    pub symbols: usize,
    /// Load profile.
    #[arg(long, value_enum, default_value_t = Profile::Average)]
    pub profile: Profile,
    /// Explicit trade rate per second (overrides the profile; quotes as many unless `--quote-rate`).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Explicit quote rate per second.
    #[arg(long)]
    pub quote_rate: Option<u64>,
    /// API key clients must present (any key is accepted when unset).
    #[arg(long, env = "MDP_SIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Simulated clock start (RFC 3339 or Unix ms); default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Random seed (the market is deterministic for a seed).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Scripted faults to arm at start (repeatable).
    #[arg(long, value_enum)]
    pub fault: Vec<Fault>,
    /// Massive connections allowed per key; a newcomer evicts the oldest with `max_connections`.
    #[arg(long, default_value_t = 1)]
    pub max_connections: usize,
    /// Close a Massive connection that has not authenticated within this many ms (`auth_timeout`).
    #[arg(long, default_value_t = 10_000)]
    pub auth_timeout_ms: u64,
    /// Finlight articles per minute (0 = only on demand via `POST /admin/finlight`).
    #[arg(long, default_value_t = 6.0)]
    pub news_per_min: f64,
    /// Finlight connections allowed per key (takeover displaces, otherwise HTTP 429).
    #[arg(long, default_value_t = 1)]
    pub finlight_max_connections: usize,
    /// Finlight: close sessions that sent nothing (no ping) for this many ms.
    #[arg(long, default_value_t = 600_000)]
    pub finlight_idle_timeout_ms: u64,
    /// Finlight: maximum connection lifetime, ms (the real service: 2 h).
    #[arg(long, default_value_t = 7_200_000)]
    pub finlight_max_lifetime_ms: u64,
    /// Frames buffered per Massive connection before it is dropped as a slow consumer.
    #[arg(long, default_value_t = 4096)]
    pub send_buffer_frames: usize,
    /// Record every Massive frame sent to this JSONL file.
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
    /// Replay a recorded JSONL stream (from `--record` here or on a listener)
    /// instead of generating a market; starts when the first client subscribes.
    #[arg(long)]
    pub replay: Option<std::path::PathBuf>,
    /// Replay speed (1 = as recorded, 10 = ten times faster, 0 = as fast as possible).
    #[arg(long, default_value_t = 1.0)]
    pub replay_speed: f64,
}

impl SimulateArgs {
    /// The simulator's config.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            listen: self.listen.clone(),
            finlight_listen: self.finlight_listen.clone(),
            symbols: self.symbols,
            profile: self.profile,
            rate: self.rate,
            quote_rate: self.quote_rate,
            api_key: self.api_key.clone(),
            at: self.at.clone(),
            speed: self.speed,
            seed: self.seed,
            fault: self.fault.clone(),
            max_connections: self.max_connections,
            auth_timeout_ms: self.auth_timeout_ms,
            news_per_min: self.news_per_min,
            finlight_max_connections: self.finlight_max_connections,
            finlight_idle_timeout_ms: self.finlight_idle_timeout_ms,
            finlight_max_lifetime_ms: self.finlight_max_lifetime_ms,
            send_buffer_frames: self.send_buffer_frames,
            record: self.record.clone(),
            replay: self.replay.clone(),
            replay_speed: self.replay_speed,
        }
    }
}

/// Run `mdp simulate` until ctrl-c.
pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let handle = crate::sim::start(args.config()).await?;
    println!(
        "simulator: Massive WebSocket ws://{}/stocks, REST http://{}, admin http://{}/admin, Finlight WebSocket ws://{}/ (raw: /raw)",
        handle.addr, handle.addr, handle.addr, handle.finlight_addr
    );
    let mut shutdown = super::roles::shutdown_signal();
    let _ = shutdown.changed().await;
    drop(handle);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(ExitCode::SUCCESS)
}

impl clap::ValueEnum for Profile {
    fn value_variants<'a>() -> &'a [Self] {
        &Profile::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Profile::Quiet => "Pre/after hours: 200 trades + 800 quotes per second",
            Profile::Average => {
                "A normal session: 3,000 trades + 10,000 quotes per second (plus bars)"
            }
            Profile::Open => "The opening minutes: 5× average",
            Profile::Stress => {
                "Average with 2 s spikes of 120,000 trades + 400,000 quotes every 10 s (a test of slow-consumer handling, not of throughput)"
            }
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}

impl clap::ValueEnum for Fault {
    fn value_variants<'a>() -> &'a [Self] {
        &Fault::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Fault::AuthFailure => "Answer the next `auth` with `auth_failed` and close",
            Fault::MaxConnections => {
                "Evict a session with `max_connections` and close 1008 (as when another client connects)"
            }
            Fault::SlowConsumer => "Send `slow_consumer` and close 1011",
            Fault::ForceDisconnect => "Send `force_disconnect` and close 1000",
            Fault::Reset => "Drop the TCP connection without a close frame",
            Fault::Garbage => "Send a truncated frame, a non-JSON text frame and a binary frame",
            Fault::Oversize => "Send a valid frame larger than 1 MB",
            Fault::Stall => "Stop sending data on the session (pings still answered)",
            Fault::RestLie => {
                "Answer the next REST market-status call with a body that lies (`market` of the wrong type, fields missing)"
            }
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}
