//! `scripts/bench [scenario…]`: every benchmark of the project behind one
//! command. Each scenario runs for a bounded time, `--runs` times, and
//! records its metrics next to a *floor* measured in the same run on the same
//! servers (the least any implementation must do for the same work: a raw
//! lapin consume+ack loop, raw lapin publish with confirms, a raw Redis
//! pipeline, bare blocking WebSocket writes, the native build of the same
//! analyzer). The end of the run prints one table (median, range, ratio to
//! the floor, the issue's target) and writes it as JSON under `target/bench/`;
//! `scripts/bench --readme` turns the last full run into the README's table.
//!
//! ```text
//! scripts/bench                      # every scenario, release build, servers started
//! scripts/bench processor wasm       # some of them
//! scripts/bench --smoke              # tiny sizes, one run: checks that each scenario runs
//! scripts/bench --readme             # regenerate the README table from target/bench/bench-latest.json
//! ```
//!
//! Run directly (`target/release/examples/bench`), it needs the servers
//! `scripts/test-servers.sh` starts (`MDP_TEST_AMQP_URL`, `MDP_TEST_REDIS_URL`)
//! and the plugin directory `scripts/build-plugins` fills (`target/plugins`).

mod report;
mod scenario;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use report::{Recorder, Report};
use scenario::{Ctx, Scenario};

/// Benchmarks with floors measured in the same run.
#[derive(Parser)]
#[command(name = "bench")]
struct Args {
    /// Scenarios to run (all when none are named).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Runs per scenario (the table gives their median and range).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tiny sizes, one run: checks that every scenario runs, not its speed.
    #[arg(long)]
    smoke: bool,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Regenerate the README's measurement table from this JSON (no benchmark runs).
    #[arg(long, value_name = "JSON", num_args = 0..=1, default_missing_value = "target/bench/bench-latest.json")]
    readme: Option<PathBuf>,
    /// RabbitMQ for the distributed scenarios.
    #[arg(long, env = "MDP_TEST_AMQP_URL")]
    amqp: Option<String>,
    /// Redis for the distributed scenarios.
    #[arg(long, env = "MDP_TEST_REDIS_URL")]
    redis: Option<String>,
    /// The compiled plugin directory (`scripts/build-plugins`).
    #[arg(long, default_value = "target/plugins")]
    plugins: PathBuf,
    /// Internal: run as the fanout scenario's floor server for this many channels.
    #[arg(long, hide = true, value_name = "CHANNELS")]
    floor_server: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(channels) = args.floor_server {
        return scenario::fanout::floor_server(channels);
    }
    if let Some(json) = &args.readme {
        let report = Report::read(json)?;
        report::update_readme(std::path::Path::new("README.md"), &report)?;
        println!("README.md: table regenerated from {}", json.display());
        return Ok(());
    }
    let scenarios = if args.scenarios.is_empty() {
        Scenario::all()
    } else {
        args.scenarios.clone()
    };
    let runs = if args.smoke { 1 } else { args.runs.max(1) };
    let ctx = Ctx::new(
        args.smoke,
        args.amqp.clone(),
        args.redis.clone(),
        args.plugins.clone(),
    )?;
    let load_before = loadavg();
    let mut rec = Recorder::default();
    for s in &scenarios {
        rec.scenario(s.name());
        let repeat = if s.repeats() { runs } else { 1 };
        for run in 1..=repeat {
            println!("== {} (run {run}/{repeat})", s.name());
            s.run(&ctx, &mut rec)
                .await
                .with_context(|| format!("scenario {}", s.name()))?;
        }
    }
    let report = Report {
        date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        machine: machine(),
        load_before,
        load_after: loadavg(),
        git: git_rev(),
        runs,
        smoke: args.smoke,
        metrics: rec.finish(),
    };
    println!();
    print!("{}", report.table());
    report.write(&args.out)
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU model, core count and memory of this machine.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1_048_576.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({model}), {mem_gb:.0} GiB")
}

/// The commit this was built from (with `+changes` when the tree is dirty).
fn git_rev() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = run(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match run(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{rev}+changes"),
        _ => rev,
    }
}
