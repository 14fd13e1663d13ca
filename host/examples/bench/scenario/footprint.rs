//! Scenario `footprint` (issue scenario 7): `mdp up`'s resident memory and
//! open file descriptors at the average profile, sampled every 10 s over 10
//! minutes (`MDP_BENCH_FOOTPRINT_SECS` shortens it; smoke: 3 s, every 1 s):
//! RSS at the start of the second half and at the end, growth over the
//! second half (a leak shows as steady growth once warm), the most fds.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::report::{COUNT, MB, PERCENT, Recorder, Sample, Target};
use crate::scenario::Ctx;
use crate::scenario::pipeline::Up;
use crate::scenario::procfs::{open_fds, rss_mb};

/// Observe one `mdp up` for the whole duration.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let secs = if ctx.smoke {
        3
    } else {
        match std::env::var("MDP_BENCH_FOOTPRINT_SECS") {
            Ok(v) => v.parse().context("MDP_BENCH_FOOTPRINT_SECS: seconds")?,
            Err(_) => 600,
        }
    };
    let every = Duration::from_secs(ctx.size(10, 1));
    let up = Up::start(ctx, "average").await?;
    let pid = up.pid();
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    // (seconds since start, RSS MB, open fds)
    let mut samples: Vec<(f64, f64, usize)> = Vec::new();
    loop {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        let rss = rss_mb(pid).context("mdp up exited")?;
        samples.push((t, rss, open_fds(pid)?));
        if t + 0.5 >= secs as f64 {
            break;
        }
    }
    drop(up);
    let half = secs as f64 / 2.0;
    let mid = samples
        .iter()
        .find(|s| s.0 + 0.5 >= half)
        .unwrap_or(&samples[0]);
    let end = samples[samples.len() - 1];
    let growth = (end.1 - mid.1) / mid.1 * 100.0;
    let max_fds = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let max_rss = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let note = format!(
        "{} samples every {}s over {secs}s from ready; average profile, 3,000 symbols, no widget client",
        samples.len(),
        every.as_secs()
    );
    rec.add(Sample::new("mdp up RSS at start", samples[0].1, MB));
    rec.add(Sample::new("mdp up RSS at half time", mid.1, MB));
    rec.add(Sample::new("mdp up RSS at end", end.1, MB).note(note));
    rec.add(Sample::new("mdp up RSS max", max_rss, MB));
    rec.add(
        Sample::new("mdp up RSS growth over the second half", growth, PERCENT)
            .target(Target::AtMost(5.0)),
    );
    rec.add(Sample::new("mdp up open fds max", max_fds as f64, COUNT));
    Ok(())
}
