//! Benchmark (not a test): the highest sustained event rate from the
//! simulator through the Massive listener into RabbitMQ with publisher
//! confirms, per-event messages and frame-batched messages.
//!
//! For each mode the simulator's rate is raised step by step (a fresh
//! simulator and listener per step, both in this process); a step is
//! sustained when the listener keeps up over the whole window — broker
//! confirms for at least 95 % of the events sent in the window, everything
//! confirmed within 2 s of its end, no slow-consumer disconnect, no reconnect.
//!
//! `cargo run --release -p mdp --example feed_bench -- amqp://guest:guest@127.0.0.1:5672/%2f [window-secs]`

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mdp::feed::massive::{MassiveConfig, MassiveListener};
use mdp::sim::SimConfig;

struct Step {
    offered: f64,
    delivered: f64,
    sustained: bool,
    messages: u64,
}

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
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = {
        let l = listener.clone();
        tokio::spawn(async move { l.run(rx).await })
    };
    let stats = sim.stats();
    let deadline = Instant::now() + Duration::from_secs(10);
    while listener.stats.events.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let (sent0, got0, msgs0) = (
        stats.sent_total(),
        listener.stats.confirmed.load(Ordering::Relaxed),
        listener.stats.published.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let sent = stats.sent_total() - sent0;
    let got = listener.stats.confirmed.load(Ordering::Relaxed) - got0;
    let msgs = listener.stats.published.load(Ordering::Relaxed) - msgs0;
    // Sustained: it catches up with everything sent within 2 s, without being dropped.
    let target = stats.sent_total();
    let catch_up = Instant::now() + Duration::from_secs(2);
    while listener.stats.confirmed.load(Ordering::Relaxed) < target && Instant::now() < catch_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kept_up = listener.stats.confirmed.load(Ordering::Relaxed) >= target
        && got as f64 >= 0.95 * sent as f64;
    let dropped = stats.slow_consumers.load(Ordering::Relaxed) > 0
        || listener.stats.reconnects.load(Ordering::Relaxed) > 0;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    Ok(Step {
        offered: sent as f64 / elapsed,
        delivered: got as f64 / elapsed,
        sustained: kept_up && !dropped,
        messages: msgs,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .or_else(|| std::env::var("MDP_TEST_AMQP_URL").ok())
        .ok_or_else(|| anyhow::anyhow!("usage: feed_bench AMQP_URL [window-secs]"))?;
    let window = Duration::from_secs(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(6));
    for (name, batch, rates) in [
        (
            "per-event",
            false,
            &[
                4_000u64, 8_000, 12_000, 16_000, 24_000, 32_000, 48_000, 64_000,
            ][..],
        ),
        (
            "frame-batched",
            true,
            &[16_000, 32_000, 64_000, 96_000, 128_000, 192_000, 256_000][..],
        ),
    ] {
        let mut best = 0.0f64;
        for &rate in rates {
            let s = step(&url, rate, batch, window).await?;
            println!(
                "{name:>13}: offered {:>9.0} ev/s  delivered {:>9.0} ev/s  messages/s {:>9.0}  {}",
                s.offered,
                s.delivered,
                s.messages as f64 / window.as_secs_f64(),
                if s.sustained {
                    "sustained"
                } else {
                    "NOT sustained"
                }
            );
            if !s.sustained {
                break;
            }
            best = best.max(s.delivered);
        }
        println!("{name:>13}: highest sustained ≈ {best:.0} events/s into RabbitMQ with confirms");
    }
    Ok(())
}
