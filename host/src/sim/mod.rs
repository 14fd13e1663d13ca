//! `mdp simulate`: a local stand-in for the services the pipeline consumes,
//! on loopback: the Massive stocks WebSocket (`/stocks`),
//! the Massive REST endpoints the host uses, over one synthetic market
//! ([`market`]) driven by a settable simulated clock and a load profile.

pub mod finlight;
pub mod market;
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mdp_sdk::calendar::{self, Session};

pub use server::{SimHandle, SimStats, start};

/// Load profiles (events/s on one `T.*,Q.*,A.*,AM.*` connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Pre/after hours: 200 trades + 800 quotes per second.
    Quiet,
    /// A normal session: 3,000 trades + 10,000 quotes per second (plus bars).
    Average,
    /// The opening minutes: 5× average.
    Open,
    /// Average with 2 s spikes of 120,000 trades + 400,000 quotes every 10 s
    /// (a test of slow-consumer handling, not of throughput).
    Stress,
}

impl Profile {
    /// Every profile, in the order `--help` lists them.
    pub const ALL: [Profile; 4] = [
        Profile::Quiet,
        Profile::Average,
        Profile::Open,
        Profile::Stress,
    ];

    /// The profile's name (`quiet`, `average`, `open`, `stress`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quiet => "quiet",
            Profile::Average => "average",
            Profile::Open => "open",
            Profile::Stress => "stress",
        }
    }

    /// The profile named `name` (any case).
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Trades per second (baseline).
    pub fn trades_per_sec(self) -> u64 {
        match self {
            Profile::Quiet => 200,
            Profile::Average | Profile::Stress => 3_000,
            Profile::Open => 15_000,
        }
    }

    /// Quotes per second (baseline).
    pub fn quotes_per_sec(self) -> u64 {
        match self {
            Profile::Quiet => 800,
            Profile::Average | Profile::Stress => 10_000,
            Profile::Open => 50_000,
        }
    }
}

/// A scripted fault, armed by `--fault` or `POST /admin/fault`; each one
/// fires once, on one session (auth failure: at the next `auth`; the others:
/// on the next streaming session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer the next `auth` with `auth_failed` and close.
    AuthFailure,
    /// Evict a session with `max_connections` and close 1008 (as when another client connects).
    MaxConnections,
    /// Send `slow_consumer` and close 1011.
    SlowConsumer,
    /// Send `force_disconnect` and close 1000.
    ForceDisconnect,
    /// Drop the TCP connection without a close frame.
    Reset,
    /// Send a truncated frame, a non-JSON text frame and a binary frame.
    Garbage,
    /// Send a valid frame larger than 1 MB.
    Oversize,
    /// Stop sending data on the session (pings still answered).
    Stall,
    /// Answer the next REST market-status call with a body that lies
    /// (`market` of the wrong type, fields missing).
    RestLie,
}

impl Fault {
    /// Every fault, in the order `--help` lists them.
    pub const ALL: [Fault; 9] = [
        Fault::AuthFailure,
        Fault::MaxConnections,
        Fault::SlowConsumer,
        Fault::ForceDisconnect,
        Fault::Reset,
        Fault::Garbage,
        Fault::Oversize,
        Fault::Stall,
        Fault::RestLie,
    ];

    /// The fault's name (`auth-failure`, `max-connections`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Fault::AuthFailure => "auth-failure",
            Fault::MaxConnections => "max-connections",
            Fault::SlowConsumer => "slow-consumer",
            Fault::ForceDisconnect => "force-disconnect",
            Fault::Reset => "reset",
            Fault::Garbage => "garbage",
            Fault::Oversize => "oversize",
            Fault::Stall => "stall",
            Fault::RestLie => "rest-lie",
        }
    }

    /// The fault named `name` (any case; `_` taken as `-`).
    pub fn from_name(name: &str) -> Option<Fault> {
        let name = name.replace('_', "-");
        Fault::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(&name))
    }
}

/// Settings of the simulator (the `mdp simulate` flags).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on (Massive WebSocket `/stocks`, REST and `/admin/*` on one port).
    pub listen: String,
    /// Address of the Finlight WebSocket (`/` enhanced, `/raw`).
    pub finlight_listen: String,
    /// Number of symbols.
    pub symbols: usize,
    /// Load profile.
    pub profile: Profile,
    /// Explicit trade rate per second (overrides the profile; quotes as many unless `quote_rate`).
    pub rate: Option<u64>,
    /// Explicit quote rate per second.
    pub quote_rate: Option<u64>,
    /// API key clients must present (any key is accepted when unset).
    pub api_key: Option<String>,
    /// Simulated clock start (RFC 3339 or Unix ms); default: now.
    pub at: Option<String>,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Random seed (the market is deterministic for a seed).
    pub seed: u64,
    /// Scripted faults to arm at start.
    pub fault: Vec<Fault>,
    /// Massive connections allowed per key; a newcomer evicts the oldest with `max_connections`.
    pub max_connections: usize,
    /// Close a Massive connection that has not authenticated within this many ms (`auth_timeout`).
    pub auth_timeout_ms: u64,
    /// Finlight articles per minute (0 = only on demand via `POST /admin/finlight`).
    pub news_per_min: f64,
    /// Finlight connections allowed per key (takeover displaces, otherwise HTTP 429).
    pub finlight_max_connections: usize,
    /// Finlight: close sessions that sent nothing (no ping) for this many ms.
    pub finlight_idle_timeout_ms: u64,
    /// Finlight: maximum connection lifetime, ms (the real service: 2 h).
    pub finlight_max_lifetime_ms: u64,
    /// Frames buffered per Massive connection before it is dropped as a slow consumer.
    pub send_buffer_frames: usize,
    /// Record every Massive frame sent to this JSONL file.
    pub record: Option<std::path::PathBuf>,
    /// Replay a recorded JSONL stream instead of generating a market; starts
    /// when the first client subscribes.
    pub replay: Option<std::path::PathBuf>,
    /// Replay speed (1 = as recorded, 10 = ten times faster, 0 = as fast as possible).
    pub replay_speed: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: "127.0.0.1:0".into(),
            finlight_listen: "127.0.0.1:0".into(),
            symbols: 3000,
            profile: Profile::Average,
            rate: None,
            quote_rate: None,
            api_key: None,
            at: None,
            speed: 1.0,
            seed: 42,
            fault: Vec::new(),
            max_connections: 1,
            auth_timeout_ms: 10_000,
            send_buffer_frames: 4096,
            news_per_min: 6.0,
            finlight_max_connections: 1,
            finlight_idle_timeout_ms: 600_000,
            finlight_max_lifetime_ms: 7_200_000,
            record: None,
            replay: None,
            replay_speed: 1.0,
        }
    }
}

/// The simulated clock: a start instant, a speed, and a settable origin.
#[derive(Debug, Clone)]
pub struct SimClock {
    origin_ms: Arc<AtomicU64>,
    started: Arc<std::sync::Mutex<Instant>>,
    speed_bits: Arc<AtomicU64>,
}

impl SimClock {
    /// A clock reading `origin_ms` now and advancing `speed` times real time.
    pub fn new(origin_ms: u64, speed: f64) -> Self {
        SimClock {
            origin_ms: Arc::new(AtomicU64::new(origin_ms)),
            started: Arc::new(std::sync::Mutex::new(Instant::now())),
            speed_bits: Arc::new(AtomicU64::new(speed.max(0.0).to_bits())),
        }
    }

    /// Simulated seconds per real second.
    pub fn speed(&self) -> f64 {
        f64::from_bits(self.speed_bits.load(Ordering::Relaxed))
    }

    /// Simulated now, Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        let elapsed = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        self.origin_ms.load(Ordering::Relaxed)
            + (elapsed.as_secs_f64() * 1000.0 * self.speed()) as u64
    }

    /// Jump to `ms` (e.g. to test pre-market, the open, after-hours).
    pub fn set_ms(&self, ms: u64) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.origin_ms.store(ms, Ordering::Relaxed);
    }

    /// Change the speed from now on (negative values are taken as 0).
    pub fn set_speed(&self, speed: f64) {
        let now = self.now_ms();
        self.speed_bits
            .store(speed.max(0.0).to_bits(), Ordering::Relaxed);
        self.set_ms(now);
    }

    /// Jump forward to the next minute whose session is `session` (`pre`,
    /// `regular`, `after` or `closed`); returns the new time, or `None` if
    /// the name is unknown.
    pub fn jump_to_session(&self, session: &str) -> Option<u64> {
        let now = self.now_ms() / 60_000 * 60_000 + 60_000;
        let want = |ms: u64| {
            let (market, early, after) = session_at(ms);
            match session {
                "pre" | "pre-market" => early,
                "regular" | "open" => market == "open",
                "after" | "after-hours" => after,
                "closed" => market == "closed",
                _ => false,
            }
        };
        if !matches!(
            session,
            "pre" | "pre-market" | "regular" | "open" | "after" | "after-hours" | "closed"
        ) {
            return None;
        }
        let target = (0..8 * 24 * 60)
            .map(|i| now + i * 60_000)
            .find(|ms| want(*ms))?;
        self.set_ms(target);
        Some(target)
    }
}

/// The market session at `ms` in New York: `(market, early_hours, after_hours)`
/// as `/v1/marketstatus/now` reports it (by the weekday schedule of
/// [`mdp_sdk::calendar`]).
pub fn session_at(ms: u64) -> (&'static str, bool, bool) {
    match calendar::scheduled_session(ms.saturating_mul(1000)) {
        Some(Session::Regular) => ("open", false, false),
        Some(Session::PreMarket) => ("extended-hours", true, false),
        Some(Session::AfterHours) => ("extended-hours", false, true),
        None => ("closed", false, false),
    }
}

/// Where a first run simulates the market when the regular session is not
/// open at `now_ms`: the same time of day (to the minute) in the most recent
/// regular session, or 10:00 New York of the last trading day when the time
/// of day is outside the session. `None` while the session is open.
pub fn last_session_moment(now_ms: u64) -> Option<u64> {
    use chrono::{Days, NaiveTime, TimeZone, Timelike};
    if session_at(now_ms).0 == "open" {
        return None;
    }
    let ny = chrono::Utc
        .timestamp_millis_opt(now_ms as i64)
        .single()?
        .with_timezone(&chrono_tz::America::New_York);
    let minutes = ny.hour() * 60 + ny.minute();
    let time = if Session::Regular.minutes().contains(&minutes) {
        NaiveTime::from_hms_opt(ny.hour(), ny.minute(), 0)?
    } else {
        NaiveTime::from_hms_opt(10, 0, 0)?
    };
    (0..14).find_map(|back| {
        let day = ny.date_naive().checked_sub_days(Days::new(back))?;
        let at = chrono_tz::America::New_York
            .from_local_datetime(&day.and_time(time))
            .earliest()?;
        let ms = u64::try_from(at.timestamp_millis()).ok()?;
        (ms <= now_ms && session_at(ms).0 == "open").then_some(ms)
    })
}

/// `ms` as New York wall-clock time: `Friday 2026-12-04 10:00 New York`.
pub fn new_york_label(ms: u64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(ms as i64)
        .single()
        .map(|t| {
            t.with_timezone(&chrono_tz::America::New_York)
                .format("%A %Y-%m-%d %H:%M New York")
                .to_string()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Send a close frame with `code` and `reason` (best effort: the client may be gone).
async fn send_close(socket: &mut axum::extract::ws::WebSocket, code: u16, reason: &str) {
    use axum::extract::ws::{CloseFrame, Message};
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of an RFC 3339 time.
    fn ms(rfc3339: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis() as u64
    }

    #[test]
    fn a_closed_market_is_simulated_at_the_last_session() {
        let label = |now: &str| last_session_moment(ms(now)).map(new_york_label);
        // Saturday noon: Friday noon.
        assert_eq!(
            label("2026-12-05T12:00:30-05:00").as_deref(),
            Some("Friday 2026-12-04 12:00 New York")
        );
        // Sunday 03:00 (outside the session): 10:00 of the last trading day.
        assert_eq!(
            label("2026-12-06T03:00:00-05:00").as_deref(),
            Some("Friday 2026-12-04 10:00 New York")
        );
        // Monday pre-market: today's session has not begun, so Friday's.
        assert_eq!(
            label("2026-12-07T08:00:00-05:00").as_deref(),
            Some("Friday 2026-12-04 10:00 New York")
        );
        // Tuesday evening: that day's 10:00.
        assert_eq!(
            label("2026-12-08T21:00:00-05:00").as_deref(),
            Some("Tuesday 2026-12-08 10:00 New York")
        );
        // Across the March DST change: Monday 08:00 EDT → Friday 10:00 EST.
        assert_eq!(
            last_session_moment(ms("2026-03-09T08:00:00-04:00")),
            Some(ms("2026-03-06T10:00:00-05:00"))
        );
        // The session is open: the real clock.
        assert_eq!(last_session_moment(ms("2026-12-07T10:00:00-05:00")), None);
    }

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
