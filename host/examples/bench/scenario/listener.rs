//! Scenario `listener` (2): the highest event rate the Massive listener
//! sustains from the simulator into RabbitMQ with publisher confirms,
//! per-event and frame-batched, against the floor: raw lapin publishing the
//! same kind of messages with confirms.
//!
//! The simulator's rate is raised step by step (a fresh simulator and
//! listener per step, both in this process, so they share its cores); a step
//! is sustained when the listener keeps up over the whole window: broker
//! confirms for at least 95 % of the events sent in it, everything confirmed
//! within 2 s of its end, no slow-consumer disconnect, no reconnect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mdp::feed::massive::{MassiveConfig, MassiveListener};
use mdp::sim::SimConfig;

use super::events::Kind;
use super::floors::RawQueue;
use crate::report::{EVENTS_S, MSG_S, Recorder, Sample, Target};
use crate::scenario::Ctx;

/// The floor's metric name.
const FLOOR: &str = "raw lapin publish, confirms (floor)";

/// What one step at one offered rate saw.
struct Step {
    delivered: f64,
    sustained: bool,
}

/// Run once.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let url = ctx.amqp()?;
    let n = ctx.size(50_000, 500);
    let raw = RawQueue::new(url, "bench-floor-publish").await?;
    let floor = raw.publish_confirmed(&Kind::Trade.messages(n, 1)).await?;
    rec.add(Sample::new(FLOOR, floor, MSG_S).note("1,000 publishes outstanding per confirm wait"));
    let window = Duration::from_secs(ctx.size(4, 1));
    let per_event: &[u64] = ctx.size(&[8_000, 16_000, 24_000, 32_000, 48_000, 64_000], &[2_000]);
    let batched: &[u64] = ctx.size(&[32_000, 64_000, 128_000, 192_000, 256_000], &[4_000]);
    for (label, batch, rates) in [
        ("per-event", false, per_event),
        ("frame-batched", true, batched),
    ] {
        let mut best = 0.0f64;
        for &rate in rates {
            let step = step(url, rate, batch, window).await?;
            println!(
                "    {label}: offered {rate} ev/s, delivered {:.0} ev/s, {}",
                step.delivered,
                if step.sustained {
                    "sustained"
                } else {
                    "not sustained"
                }
            );
            if !step.sustained {
                break;
            }
            best = best.max(step.delivered);
        }
        let sample = Sample::new(
            format!("listener {label}, highest sustained"),
            best,
            EVENTS_S,
        )
        .floor(FLOOR)
        .note("simulator in the same process; rates stepped until one is not sustained");
        rec.add(if batch {
            sample
        } else {
            sample.target(Target::FloorAtLeast(0.9))
        });
    }
    Ok(())
}

/// One simulator and listener at `rate` events/s for `window`.
async fn step(url: &str, rate: u64, batch: bool, window: Duration) -> anyhow::Result<Step> {
    let sim = mdp::sim::start(SimConfig {
        symbols: 3000,
        rate: Some(rate / 2),
        quote_rate: Some(rate / 2),
        at: Some("2026-01-05T15:00:00Z".into()),
        news_per_min: 0.0,
        ..SimConfig::default()
    })
    .await?;
    let queue = mdp::queue::open(url).await?;
    let listener = Arc::new(MassiveListener::new(
        MassiveConfig {
            feed_url: sim.ws_url(),
            api_key: Some("bench".into()),
            subscriptions: "T.*,Q.*,A.*,AM.*".into(),
            batch_frames: batch,
            queue_prefix: format!("bench{}.", std::process::id()),
            ..MassiveConfig::default()
        },
        queue,
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = {
        let l = listener.clone();
        tokio::spawn(async move { l.run(stopped).await })
    };
    let stats = sim.stats();
    let counters = &listener.stats;
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.events.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let (sent0, got0) = (
        stats.sent_total(),
        counters.confirmed.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let sent = stats.sent_total() - sent0;
    let got = counters.confirmed.load(Ordering::Relaxed) - got0;
    // Sustained: it catches up with everything sent within 2 s, without being dropped.
    let target = stats.sent_total();
    let catch_up = Instant::now() + Duration::from_secs(2);
    while counters.confirmed.load(Ordering::Relaxed) < target && Instant::now() < catch_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kept_up =
        counters.confirmed.load(Ordering::Relaxed) >= target && got as f64 >= 0.95 * sent as f64;
    let dropped = stats.slow_consumers.load(Ordering::Relaxed) > 0
        || counters.reconnects.load(Ordering::Relaxed) > 0;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    Ok(Step {
        delivered: got as f64 / elapsed,
        sustained: kept_up && !dropped && sent > 0,
    })
}
