//! The scenarios `scripts/bench` runs, and what they share: sizes (full or
//! smoke), the servers, the plugin directory and child `mdp` processes.

mod cpu;
mod events;
pub mod fanout;
mod floors;
mod footprint;
mod latency;
mod listener;
mod pipeline;
mod probe;
mod processor;
mod reload;
mod topology;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::report::Recorder;

/// One benchmark scenario (the numbering in brackets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// (1) `mdp process` events/s per shipped analyzer vs a raw consume+ack loop.
    Processor,
    /// (2) Massive listener publish rate with confirms vs raw lapin publish.
    Listener,
    /// (3) ns/event through the runtime vs the native build, batch 1…1000.
    Wasm,
    /// (4) Simulator print → widget client receipt, `mdp up` and distributed.
    Latency,
    /// (5) Widget fan-out to many clients vs bare blocking writes.
    Fanout,
    /// (6) Leaderboard replaced 10 times under load: swap time, losses.
    Reload,
    /// (7) `mdp up` RSS and open file descriptors over time.
    Footprint,
    /// (8) CPU per event of `mdp up` and of each distributed role.
    Cpu,
}

impl Scenario {
    /// Every scenario, in the order.
    pub fn all() -> Vec<Scenario> {
        use clap::ValueEnum;
        Scenario::value_variants().to_vec()
    }

    /// The name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Processor => "processor",
            Scenario::Listener => "listener",
            Scenario::Wasm => "wasm",
            Scenario::Latency => "latency",
            Scenario::Fanout => "fanout",
            Scenario::Reload => "reload",
            Scenario::Footprint => "footprint",
            Scenario::Cpu => "cpu",
        }
    }

    /// Whether the scenario is repeated `--runs` times (a long observation is run once).
    pub fn repeats(self) -> bool {
        !matches!(self, Scenario::Footprint)
    }

    /// Run once, recording samples.
    pub async fn run(self, ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
        match self {
            Scenario::Processor => processor::run(ctx, rec).await,
            Scenario::Listener => listener::run(ctx, rec).await,
            Scenario::Wasm => wasm::run(ctx, rec).await,
            Scenario::Latency => latency::run(ctx, rec).await,
            Scenario::Fanout => fanout::run(ctx, rec).await,
            Scenario::Reload => reload::run(ctx, rec).await,
            Scenario::Footprint => footprint::run(ctx, rec).await,
            Scenario::Cpu => cpu::run(ctx, rec).await,
        }
    }
}

/// What every scenario may use.
pub struct Ctx {
    /// Tiny sizes: the scenario must run, its numbers do not matter.
    pub smoke: bool,
    amqp: Option<String>,
    redis: Option<String>,
    plugins: PathBuf,
    bin_dir: PathBuf,
}

impl Ctx {
    /// From the command line; `bin_dir` is the profile directory this example was built in.
    pub fn new(
        smoke: bool,
        amqp: Option<String>,
        redis: Option<String>,
        plugins: PathBuf,
    ) -> anyhow::Result<Ctx> {
        let exe = std::env::current_exe().context("locating the bench executable")?;
        let bin_dir = exe
            .parent()
            .and_then(Path::parent)
            .context("the bench executable is not in <profile>/examples")?
            .to_path_buf();
        Ok(Ctx {
            smoke,
            amqp,
            redis,
            plugins,
            bin_dir,
        })
    }

    /// `full`, or `smoke` in a smoke run.
    pub fn size<T>(&self, full: T, smoke: T) -> T {
        if self.smoke { smoke } else { full }
    }

    /// RabbitMQ's URL (`MDP_TEST_AMQP_URL`), or an error naming the variable.
    pub fn amqp(&self) -> anyhow::Result<&str> {
        self.amqp.as_deref().context(
            "MDP_TEST_AMQP_URL is not set: run through scripts/bench, which starts RabbitMQ",
        )
    }

    /// Redis's URL (`MDP_TEST_REDIS_URL`), or an error naming the variable.
    pub fn redis(&self) -> anyhow::Result<&str> {
        self.redis
            .as_deref()
            .context("MDP_TEST_REDIS_URL is not set: run through scripts/bench, which starts Redis")
    }

    /// A compiled plugin of the plugin directory, e.g. `massive-router`.
    pub fn plugin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.plugins.join(format!("{name}.wasm"));
        if !path.is_file() {
            bail!("{} is missing: run scripts/build-plugins", path.display());
        }
        Ok(path)
    }

    /// A compiled plugin of the plugin directory or, for the Python and
    /// JavaScript ones, of its sibling `polyglot-plugins`.
    pub fn any_plugin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let polyglot = self
            .plugins
            .parent()
            .map(|p| p.join("polyglot-plugins").join(format!("{name}.wasm")));
        match polyglot {
            Some(path) if path.is_file() => Ok(path),
            _ => self.plugin(name),
        }
    }

    /// The plugin directory (`target/plugins`).
    pub fn plugin_dir(&self) -> &Path {
        &self.plugins
    }

    /// The `mdp` binary of the same profile as this benchmark.
    pub fn mdp(&self) -> anyhow::Result<PathBuf> {
        let path = self.bin_dir.join("mdp");
        if !path.is_file() {
            bail!(
                "{} is missing: build it with this profile (cargo build [--release] -p mdp --bin mdp)",
                path.display()
            );
        }
        Ok(path)
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Kill(pub Child);

impl Kill {
    /// Start `cmd`, with a readable error.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Kill> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(Kill(child))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Call `check` every `every` until it gives a value or `within` has
/// passed (`None`): the one waiting loop of the scenarios.
pub async fn poll_until<T>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > until {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Wait until `127.0.0.1:port` accepts connections.
pub async fn wait_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let listening = async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    };
    poll_until(within, Duration::from_millis(50), listening)
        .await
        .with_context(|| format!("nothing listens on 127.0.0.1:{port} after {within:?}"))
}

/// Whether a GET of `url` answers 2xx (within 2 s).
pub async fn http_ok(http: &reqwest::Client, url: &str) -> bool {
    let sent = http.get(url).timeout(Duration::from_secs(2)).send().await;
    sent.is_ok_and(|r| r.status().is_success())
}

/// A process's resource use from `/proc/<pid>`.
pub mod procfs {
    /// CPU seconds (user + system) the process has used so far.
    pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / hz)
    }

    /// Resident set size in MB.
    pub fn rss_mb(pid: u32) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
        Ok(kb / 1024.0)
    }

    /// Open file descriptors.
    pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }
}
