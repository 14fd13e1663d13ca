//! Scenario `cpu` (issue scenario 8): CPU per event of `mdp up` at the
//! average profile, and of each role of the distributed topology over the
//! same window: CPU seconds from `/proc/<pid>/stat` divided by the events the
//! Massive listener queued meanwhile (`mdp_mdq_messages_total`). One widget
//! client (subscribed to `stocks:quotes:*A` and `quote:*`) is connected, so
//! the widget server has work.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::report::{CORES, CPU_S_PER_1K, Recorder, Sample, Target, US_EVENT};
use crate::scenario::Ctx;
use crate::scenario::pipeline::{Up, clock_offset};
use crate::scenario::probe::Probe;
use crate::scenario::procfs::cpu_seconds;
use crate::scenario::topology::{Topology, WIDGET_KEY};

/// Measure `mdp up`, then the distributed roles.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let warm = Duration::from_secs(ctx.size(5, 1));
    let window = Duration::from_secs(ctx.size(30, 2));
    let http = reqwest::Client::new();
    let up = Up::start(ctx, "average").await?;
    let offset = clock_offset(&http, &up.sim_url).await?;
    let _client = Probe::connect(up.port, None, offset).await?;
    tokio::time::sleep(warm).await;
    let procs = vec![("mdp up".to_string(), up.pid())];
    let (used, events, secs) = measure(&procs, window, || up.events(&http)).await?;
    let (cpu, n) = (used[0].1, events);
    let note = format!(
        "{n:.0} events in {secs:.1}s ({:.0}/s); the simulator runs in the same process",
        n / secs
    );
    rec.add(Sample::new("mdp up CPU per 1k events", cpu / n * 1000.0, CPU_S_PER_1K).note(note));
    rec.add(Sample::new("mdp up cores", cpu / secs, CORES).target(Target::AtMost(0.5)));
    rec.add(
        Sample::new("mdp up CPU per event", cpu / n * 1e6, US_EVENT).target(Target::AtMost(35.0)),
    );
    drop(up);

    let top = Topology::start(ctx, "average").await?;
    let offset = clock_offset(&http, &top.sim_url).await?;
    let _client = Probe::connect(top.widget_port, Some(WIDGET_KEY), offset).await?;
    tokio::time::sleep(warm).await;
    let (used, n, secs) = measure(&top.pids(), window, || top.events(&http)).await?;
    let total: f64 = used.iter().map(|(_, c)| c).sum();
    for (name, cpu) in &used {
        let s = Sample::new(
            format!("distributed {name} CPU per 1k events"),
            cpu / n * 1000.0,
            CPU_S_PER_1K,
        );
        rec.add(s);
    }
    let note = format!(
        "{n:.0} events in {secs:.1}s ({:.0}/s), all roles and the simulator",
        n / secs
    );
    rec.add(
        Sample::new(
            "distributed total CPU per 1k events",
            total / n * 1000.0,
            CPU_S_PER_1K,
        )
        .note(note),
    );
    rec.add(Sample::new("distributed total cores", total / secs, CORES));
    Ok(())
}

/// CPU seconds each process used over `window`, the events counted meanwhile
/// (by `events`) and the window's length in seconds.
async fn measure<F, Fut>(
    procs: &[(String, u32)],
    window: Duration,
    events: F,
) -> anyhow::Result<(Vec<(String, f64)>, f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let cpu = |name: &str, pid: u32| {
        cpu_seconds(pid).with_context(|| format!("{name} (pid {pid}) is gone"))
    };
    let before: Vec<f64> = procs
        .iter()
        .map(|(n, p)| cpu(n, *p))
        .collect::<Result<_, _>>()?;
    let (e0, t0) = (events().await?, Instant::now());
    tokio::time::sleep(window).await;
    let e1 = events().await?;
    let secs = t0.elapsed().as_secs_f64();
    let mut used = Vec::new();
    for ((name, pid), b) in procs.iter().zip(before) {
        used.push((name.clone(), cpu(name, *pid)? - b));
    }
    let n = e1 - e0;
    anyhow::ensure!(n > 0.0, "no events were queued in {window:?}");
    Ok((used, n, secs))
}
