//! Scenario `latency` (issue scenario 4): simulator print → widget client
//! receipt, p50/p99/p999 in ms, for a quote through the router
//! (`stocks:quotes:{SYM}`) and a second bar through the leaderboard
//! (`quote:{SYM}`); in `mdp up` (average and open profiles) and in the
//! distributed topology (average). The market is pinned to a regular
//! session ([`SIM_AT`]); event times are converted to this machine's clock
//! with the simulator clock's offset, read from its `/admin/stats`.

use std::time::Duration;

use crate::report::{COUNT, MS, Recorder, Sample, Target};
use crate::scenario::Ctx;
use crate::scenario::pipeline::{SIM_AT, Up, clock_offset};
use crate::scenario::probe::{Latencies, Probe, ROUTER_FEED, quantile};
use crate::scenario::topology::{Topology, WIDGET_KEY};

/// Measure every configuration.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let warm = Duration::from_secs(ctx.size(5, 2));
    let window = Duration::from_secs(ctx.size(20, 2));
    let http = reqwest::Client::new();
    for profile in ctx.size(&["average", "open"][..], &["average"][..]) {
        let up = Up::start(ctx, profile).await?;
        let offset = clock_offset(&http, &up.sim_url).await?;
        let probe = Probe::connect(up.port, None, offset).await?;
        let lat = observe(&probe, warm, window).await;
        record(
            rec,
            &format!("mdp up {profile}"),
            lat,
            *profile == "average",
            window,
        )?;
    }
    for profile in ["average"] {
        let top = Topology::start(ctx, profile).await?;
        let offset = clock_offset(&http, &top.sim_url).await?;
        let probe = Probe::connect(top.widget_port, Some(WIDGET_KEY), offset).await?;
        let lat = observe(&probe, warm, window).await;
        record(rec, &format!("distributed {profile}"), lat, false, window)?;
    }
    Ok(())
}

/// Warm up, forget, then collect for `window`.
async fn observe(probe: &Probe, warm: Duration, window: Duration) -> Latencies {
    tokio::time::sleep(warm).await;
    probe.reset();
    tokio::time::sleep(window).await;
    probe.take()
}

/// p50/p99/p999 and the sample count of both paths of one configuration.
fn record(
    rec: &mut Recorder,
    config: &str,
    mut lat: Latencies,
    targets: bool,
    window: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !lat.router.is_empty(),
        "{config}: the widget client received no router quote in {window:?}"
    );
    let paths = [
        ("router", &mut lat.router, 15.0),
        ("leaderboard", &mut lat.leaderboard, 30.0),
    ];
    for (path, v, target) in paths {
        let n = v.len();
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let note = format!(
            "{n} samples in {}s, min {min:.1} ms; market at {SIM_AT}, 3,000 symbols; one client on {ROUTER_FEED} and quote:*",
            window.as_secs()
        );
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            let mut s = Sample::new(format!("{config} {path} {label}"), quantile(v, q), MS);
            if label == "p99" {
                s = s.note(note.clone());
                if targets {
                    s = s.target(Target::AtMost(target));
                }
            }
            rec.add(s);
        }
        rec.add(Sample::new(
            format!("{config} {path} samples"),
            n as f64,
            COUNT,
        ));
    }
    Ok(())
}
