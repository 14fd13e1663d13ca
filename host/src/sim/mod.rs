//! `mdp simulate`: a local stand-in for the services the pipeline consumes,
//! on loopback: the Massive stocks WebSocket (`/stocks`, protocols.md §1),
//! the Massive REST endpoints the host uses (§2), over one synthetic market
//! ([`market`]) driven by a settable simulated clock and a load profile.

pub mod market;
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use server::{SimHandle, start};

/// Events per second of each load profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// About 200 trades/s.
    Quiet,
    /// About 2,000 trades/s.
    Average,
    /// About 20,000 trades/s (the opening minutes).
    Open,
    /// About 100,000 trades/s.
    Stress,
}

impl Profile {
    /// Trades per second.
    pub fn trades_per_sec(self) -> u64 {
        match self {
            Profile::Quiet => 200,
            Profile::Average => 2_000,
            Profile::Open => 20_000,
            Profile::Stress => 100_000,
        }
    }
}

/// Settings of the simulator.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (WebSocket `/stocks` and REST on one port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Number of symbols.
    #[arg(long, default_value_t = 3000)]
    pub symbols: usize,
    /// Load profile.
    #[arg(long, value_enum, default_value_t = Profile::Average)]
    pub profile: Profile,
    /// Explicit trade rate per second (overrides the profile).
    #[arg(long)]
    pub rate: Option<u64>,
    /// API key clients must present (any key is accepted when unset).
    #[arg(long, env = "MDP_SIM_API_KEY")]
    pub api_key: Option<String>,
    /// Simulated clock start (RFC 3339); default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Random seed (the market is deterministic for a seed).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl Default for SimulateArgs {
    fn default() -> Self {
        SimulateArgs {
            listen: "127.0.0.1:0".into(),
            symbols: 3000,
            profile: Profile::Average,
            rate: None,
            api_key: None,
            at: None,
            speed: 1.0,
            seed: 42,
        }
    }
}

/// The simulated clock: a start instant, a speed, and a settable origin.
#[derive(Debug, Clone)]
pub struct SimClock {
    origin_ms: Arc<AtomicU64>,
    started: Arc<std::sync::Mutex<Instant>>,
    speed: f64,
}

impl SimClock {
    /// A clock reading `origin_ms` now and advancing `speed` times real time.
    pub fn new(origin_ms: u64, speed: f64) -> Self {
        SimClock {
            origin_ms: Arc::new(AtomicU64::new(origin_ms)),
            started: Arc::new(std::sync::Mutex::new(Instant::now())),
            speed: speed.max(0.0),
        }
    }

    /// Simulated now, Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        let elapsed = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        self.origin_ms.load(Ordering::Relaxed)
            + (elapsed.as_secs_f64() * 1000.0 * self.speed) as u64
    }

    /// Jump to `ms` (e.g. to test pre-market, the open, after-hours).
    pub fn set_ms(&self, ms: u64) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.origin_ms.store(ms, Ordering::Relaxed);
    }
}

/// The market session at `ms` in New York: `(market, early_hours, after_hours)`
/// as `/v1/marketstatus/now` reports it (weekends closed).
pub fn session_at(ms: u64) -> (&'static str, bool, bool) {
    use chrono::{Datelike, TimeZone, Timelike};
    let Some(t) = chrono::Utc.timestamp_millis_opt(ms as i64).single() else {
        return ("closed", false, false);
    };
    let ny = t.with_timezone(&chrono_tz::America::New_York);
    if ny.weekday().number_from_monday() > 5 {
        return ("closed", false, false);
    }
    let minutes = ny.hour() * 60 + ny.minute();
    match minutes {
        240..570 => ("extended-hours", true, false),
        570..960 => ("open", false, false),
        960..1200 => ("extended-hours", false, true),
        _ => ("closed", false, false),
    }
}

/// Run `mdp simulate` until ctrl-c.
pub async fn run(args: SimulateArgs) -> anyhow::Result<std::process::ExitCode> {
    let handle = start(args).await?;
    println!(
        "simulator: Massive WebSocket ws://{}/stocks, REST http://{}",
        handle.addr, handle.addr
    );
    let mut shutdown = crate::cli::roles::shutdown_signal();
    let _ = shutdown.changed().await;
    drop(handle);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_follow_new_york_time_across_dst() {
        // 2026-03-09 (after the March DST change): 09:30 EDT = 13:30 UTC.
        assert_eq!(session_at(1_773_063_000_000).0, "open");
        assert_eq!(
            session_at(1_773_063_000_000 - 60_000),
            ("extended-hours", true, false)
        );
        // 2026-01-05 09:30 EST = 14:30 UTC.
        assert_eq!(session_at(1_767_623_400_000).0, "open");
        // Saturday.
        assert_eq!(session_at(1_767_459_600_000).0, "closed");
        // 16:30 EST = after-hours.
        assert_eq!(
            session_at(1_767_648_600_000),
            ("extended-hours", false, true)
        );
    }
}
