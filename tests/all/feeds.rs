//! Feeds end to end: simulator → listener → queues (embedded and real
//! RabbitMQ), every event counted by type; each scripted fault and the
//! documented client reaction; market-closed polling; the admin API and
//! its guard (token, feed host allow-list, change rate limit);
//! Finlight end to end; record and replay. (The seeded fuzz run of the
//! Massive frame parser is in the fuzz module.)

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mdp::feed::admin::AdminAccess;
use mdp::feed::finlight::{FinlightConfig, FinlightListener, Outcome};
use mdp::feed::massive::{MassiveConfig, MassiveListener, parse_frame};
use mdp::queue::{EmbeddedQueue, Queue};
use mdp::sim::{Fault, Profile, SimConfig, SimHandle};
use serde_json::Value;
use tokio::sync::watch;

/// Monday 2026-01-05 09:59:57 EST: the regular session, three seconds before a minute ends.
const OPEN_AT: &str = "2026-01-05T14:59:57Z";
/// Saturday 2026-01-03 noon EST.
const SATURDAY: &str = "2026-01-03T17:00:00Z";

async fn sim(args: SimConfig) -> SimHandle {
    mdp::sim::start(SimConfig {
        at: args.at.clone().or(Some(OPEN_AT.into())),
        ..args
    })
    .await
    .expect("simulator starts")
}

fn quiet() -> SimConfig {
    SimConfig {
        symbols: 200,
        profile: Profile::Quiet,
        news_per_min: 0.0,
        ..SimConfig::default()
    }
}

/// The admin token of the listeners under test.
const TOKEN: &str = "test-admin-token";

/// Admin writes allowed with [`TOKEN`], not rate limited.
fn admin_access() -> AdminAccess {
    AdminAccess {
        admin_token: Some(TOKEN.into()),
        admin_change_interval_ms: 0,
    }
}

/// Wait (up to `secs`) until `cond` holds; false on timeout.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

struct Running<L> {
    listener: Arc<L>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl<L> Running<L> {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

fn massive(args: MassiveConfig, queue: Arc<dyn Queue>) -> Running<MassiveListener> {
    let listener = Arc::new(MassiveListener::new(args, queue));
    let (stop, rx) = watch::channel(false);
    let l = listener.clone();
    let task = tokio::spawn(async move {
        l.run(rx).await.expect("listener runs");
    });
    Running {
        listener,
        stop,
        task,
    }
}

fn massive_args(sim: &SimHandle, prefix: &str) -> MassiveConfig {
    MassiveConfig {
        feed_url: sim.ws_url(),
        api_key: Some("test-key".into()),
        subscriptions: "T.*,Q.*,A.*,AM.*,LULD.*,NOI.*".into(),
        message_ttl_ms: 600_000,
        queue_prefix: format!("{prefix}."),
        stall_timeout_ms: 5_000,
        max_backoff_ms: 1_000,
        refused_wait_ms: 1_000,
        admin: admin_access(),
        ..MassiveConfig::default()
    }
}

/// Consume `queue` until `expected` events arrived (or nothing more comes
/// for 5 s); events counted by type (`event_type`, or `ev` for pass-through).
async fn drain(q: &Arc<dyn Queue>, queue: &str, expected: u64) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut total = 0u64;
    if expected == 0 {
        return counts;
    }
    let mut consumer = q.consume(queue, 1000).await.expect("consume");
    let acker = consumer.acker();
    while total < expected {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        else {
            break;
        };
        for e in mdp::event::split_body(&d.body, 1 << 24).expect("queue bodies are events") {
            let kind = e.value["event_type"]
                .as_str()
                .or(e.value["ev"].as_str())
                .unwrap_or("?")
                .to_string();
            *counts.entry(kind).or_default() += 1;
            total += 1;
        }
        acker.ack(d.tag, false).await.expect("ack");
    }
    counts
}

/// Start a quiet simulator and a streaming listener.
async fn streaming(
    extra: impl FnOnce(MassiveConfig) -> MassiveConfig,
) -> (SimHandle, Running<MassiveListener>) {
    let sim = sim(quiet()).await;
    let args = extra(massive_args(&sim, &support::unique("fault")));
    let running = massive(args, Arc::new(EmbeddedQueue::new()));
    let l = running.listener.clone();
    assert!(
        eventually(20, || l.stats.events.load(Ordering::Relaxed) > 0).await,
        "listener streams: {}",
        l.status_json()
    );
    (sim, running)
}

/// POST `body` to `url` with `token` (none: no `Authorization`); status and JSON body.
async fn post(
    url: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = reqwest::Client::new().post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let (code, headers) = (r.status().as_u16(), r.headers().clone());
    (code, r.json().await.unwrap_or(Value::Null), headers)
}

mod admin;
mod connect;
mod finlight;
mod massive;
