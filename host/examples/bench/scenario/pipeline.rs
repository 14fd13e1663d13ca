//! `mdp up` as a child process for the latency, CPU and footprint scenarios:
//! the whole pipeline in one process on the embedded backends, its simulated
//! market pinned to a regular-session time, plus what the scenarios read
//! from it (Prometheus counters, the simulator's clock, its log).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::{Ctx, Kill, free_port, http_ok, poll_until};

/// The simulated session time every scenario pins the market to: Monday
/// 2026-01-05 10:00 New York, hours before the close, so a long run stays in
/// the regular session.
pub const SIM_AT: &str = "2026-01-05T15:00:00Z";

/// A running `mdp up`.
pub struct Up {
    /// The process (killed on drop).
    pub child: Kill,
    /// Port of the widget server (`/ws`, `/health`, `/metrics`).
    pub port: u16,
    /// Base URL of the embedded simulator (`/admin/stats` has its clock).
    pub sim_url: String,
}

impl Up {
    /// Start `mdp up --profile <profile>` and wait until it serves and its
    /// simulator has said where it listens.
    pub async fn start(ctx: &Ctx, profile: &str) -> anyhow::Result<Up> {
        let port = free_port()?;
        let log = log_path(&format!("up-{profile}"));
        let mut cmd = Command::new(ctx.mdp()?);
        cmd.args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--profile", profile, "--sim-at", SIM_AT])
            .arg("--plugin-dir")
            .arg(ctx.plugin_dir());
        quiet_env(&mut cmd);
        for var in [
            "RABBITMQ_URL",
            "MDC_REDIS_URL",
            "WDC_REDIS_URL",
            "MDP_SIM_AT",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let child = Kill::spawn(&mut cmd)?;
        let http = reqwest::Client::new();
        let health = format!("http://127.0.0.1:{port}/health");
        wait_http(&http, &health, Duration::from_secs(90), &log).await?;
        let sim_addr =
            wait_log_field(&log, "simulator running", "addr", Duration::from_secs(10)).await?;
        Ok(Up {
            child,
            port,
            sim_url: format!("http://{sim_addr}"),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Events the listener has queued so far (`mdp_mdq_messages_total`).
    pub async fn events(&self, http: &reqwest::Client) -> anyhow::Result<f64> {
        let text = get_text(http, &format!("http://127.0.0.1:{}/metrics", self.port)).await?;
        Ok(metric_sum(&text, "mdp_mdq_messages_total"))
    }
}

/// Environment common to every child `mdp`: no real credentials, JSON logs at `info`.
pub fn quiet_env(cmd: &mut Command) {
    for var in [
        "MASSIVE_API_KEY",
        "POLYGON_API_KEY",
        "FINLIGHT_API_KEY",
        "MDP_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("MDP_LOG_FORMAT", "json").env("RUST_LOG", "info");
}

/// A log file for a child under the temp directory (one per bench process and name).
pub fn log_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mdp-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("{name}.log"))
}

/// The last lines of a log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// `what`, then the log's path and its last lines.
fn with_log(what: String, log: &Path) -> String {
    format!("{what}; log {}:\n{}", log.display(), tail(log))
}

/// Wait until `url` answers 2xx.
pub async fn wait_http(
    http: &reqwest::Client,
    url: &str,
    within: Duration,
    log: &Path,
) -> anyhow::Result<()> {
    let ready = async || http_ok(http, url).await.then_some(());
    poll_until(within, Duration::from_millis(100), ready)
        .await
        .with_context(|| with_log(format!("{url} not ready after {within:?}"), log))
}

/// Wait for a JSON log line whose message contains `message` and return its field `field`.
async fn wait_log_field(
    log: &Path,
    message: &str,
    field: &str,
    within: Duration,
) -> anyhow::Result<String> {
    let found = async || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(message))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| {
                let value = v["fields"][field].as_str().or_else(|| v[field].as_str());
                value.map(str::to_string)
            })
    };
    poll_until(within, Duration::from_millis(100), found)
        .await
        .with_context(|| with_log(format!("no `{message}` with {field}"), log))
}

/// The body of a GET.
pub async fn get_text(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let r = http.get(url).timeout(Duration::from_secs(5)).send().await;
    let r = r.with_context(|| format!("GET {url}"))?;
    Ok(r.text().await?)
}

/// The sum of every series of the Prometheus counter `name` in `text`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wall-clock now, Unix milliseconds (µs resolution).
pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Wall clock minus the simulator's clock, ms: read `/admin/stats` a few
/// times and keep the reading with the shortest round trip (its midpoint).
pub async fn clock_offset(http: &reqwest::Client, sim_url: &str) -> anyhow::Result<f64> {
    let url = format!("{sim_url}/admin/stats");
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..10 {
        let before = wall_ms();
        let body = get_text(http, &url).await?;
        let after = wall_ms();
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let sim = v["clock"]["now_ms"]
            .as_f64()
            .with_context(|| format!("no clock.now_ms in {body}"))?;
        let rtt = after - before;
        // The clock and the events' `t` are both truncated to whole ms: the
        // truncations cancel on average.
        let offset = (before + after) / 2.0 - sim;
        if best.is_none_or(|(r, _)| rtt < r) {
            best = Some((rtt, offset));
        }
    }
    Ok(best.map_or(0.0, |(_, o)| o))
}
