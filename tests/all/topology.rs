//! The distributed topology as deployed: every role its own `mdp` process,
//! configured by the environment variables of `deploy/compose.yaml`, on a
//! private RabbitMQ and Redis, while things break.
//!
//! Faults, in order: `kill -9` one replica of each replicated processor (the
//! other keeps serving) and restart it; `kill -9` RabbitMQ and restart it on
//! the same port; `kill -9` Redis and restart it; `SIGSTOP` Redis for longer
//! than every timeout, then `SIGCONT`; a new `leaderboard.wasm` dropped into
//! the plugin directory (every process picks it up without restarting); a
//! corrupt `leaderboard.wasm` (refused, the loaded version keeps serving).
//!
//! After each fault the test waits for the pipeline to recover (the listener
//! confirms again, processors process again, the widget client receives
//! data again) and prints the time it took; each role's `/ready` must have
//! failed while its dependency was down and pass again after. At the end the
//! market is paused, the pipeline drains, and every queue is empty with
//! nothing dead-lettered and nothing lost by the listener: every message the
//! broker held when it was not killed was acknowledged after processing; and
//! every symbol's `quote:{SYM}` is its last bar in what the feed sent.
//! (A RabbitMQ crash loses the non-persistent messages it held, as in the
//! seed; the table shows confirmed vs processed events.)

use crate::support;

use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{PrivateRabbit, PrivateRedis, free_port, metric_sum};
use tokio_tungstenite::tungstenite::Message;

/// One `mdp` role process.
struct Role {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The port of its health/metrics (or admin) endpoint.
    port: u16,
    /// Its readiness route (`/ready`; the widget server's is `/health`).
    ready_path: &'static str,
    log: PathBuf,
    child: Option<Child>,
    /// Metrics of earlier incarnations (killed), folded into totals.
    past: String,
}

impl Role {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mdp"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("MASSIVE_API_KEY")
            .env_remove("POLYGON_API_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// `kill -9`, keeping what it had counted as of its last scrape.
    fn kill9(&mut self, last_metrics: String) {
        self.signal("-KILL");
        self.child.take().unwrap().wait().unwrap();
        self.past.push_str(&last_metrics);
        self.past.push('\n');
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The running topology.
struct Topology {
    roles: Vec<Role>,
    http: reqwest::Client,
    /// When the widget client received each message.
    received: Arc<Mutex<Vec<Instant>>>,
}

impl Topology {
    fn role(&mut self, name: &str) -> &mut Role {
        self.roles.iter_mut().find(|r| r.name == name).unwrap()
    }

    async fn get(&self, url: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    async fn ready(&self, name: &str) -> bool {
        let role = self.roles.iter().find(|r| r.name == name).unwrap();
        matches!(self.get(&role.url(role.ready_path)).await, Some((200, _)))
    }

    async fn metrics(&self, name: &str) -> String {
        let role = self.roles.iter().find(|r| r.name == name).unwrap();
        self.get(&role.url("/metrics"))
            .await
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    /// A metric summed over every role named `prefix*`, including killed
    /// incarnations (as of their last scrape).
    async fn total(&self, prefix: &str, name: &str, labels: &[&str]) -> f64 {
        let mut sum = 0.0;
        for r in self.roles.iter().filter(|r| r.name.starts_with(prefix)) {
            let live = self.metrics(&r.name).await;
            sum += metric_sum(&live, name, labels) + metric_sum(&r.past, name, labels);
        }
        sum
    }

    async fn confirmed(&self) -> f64 {
        self.total("listen", "mdp_mdq_messages_total", &[]).await
    }

    async fn lost(&self) -> f64 {
        self.total("listen", "mdp_listener_lost_events_total", &[])
            .await
    }

    async fn processed(&self) -> f64 {
        self.total("process", "mdp_processed_total", &[]).await
    }

    /// Wait until every role answers `/ready` with 200 (panics naming the
    /// ones that do not within `limit`, with their last log lines).
    async fn all_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut waiting = Vec::new();
            for r in &self.roles {
                if !self.ready(&r.name).await {
                    waiting.push(r.name.clone());
                }
            }
            if waiting.is_empty() {
                return;
            }
            for r in &mut self.roles {
                if let Some(status) = r.exited() {
                    panic!("{} exited ({status}):\n{}", r.name, tail(&r.log));
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .roles
                    .iter()
                    .filter(|r| waiting.contains(&r.name))
                    .map(|r| format!("--- {}\n{}", r.name, tail(&r.log)))
                    .collect();
                panic!("not ready: {waiting:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After `healed`: how long until the listener confirms, the processors
    /// process and the widget client receives again (the slowest of the three).
    async fn recovery(&self, healed: Instant, limit: Duration) -> Duration {
        let (c0, p0) = (self.confirmed().await, self.processed().await);
        let deadline = healed + limit;
        let (mut confirmed, mut processed, mut widget) = (None, None, None);
        while confirmed.is_none() || processed.is_none() || widget.is_none() {
            assert!(
                Instant::now() < deadline,
                "no recovery within {limit:?}: confirmed {confirmed:?}, processed {processed:?}, widget {widget:?}"
            );
            let now = Instant::now();
            if confirmed.is_none() && self.confirmed().await > c0 {
                confirmed = Some(now - healed);
            }
            if processed.is_none() && self.processed().await > p0 {
                processed = Some(now - healed);
            }
            if widget.is_none() {
                widget = self
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|t| **t > healed)
                    .map(|t| *t - healed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        [confirmed, processed, widget]
            .into_iter()
            .flatten()
            .max()
            .unwrap()
    }

    /// Poll `/ready` of `names` while `during` runs; true for each role that
    /// answered anything but 200 at least once.
    async fn unready_during<F: std::future::Future>(
        &self,
        names: &[&str],
        during: F,
    ) -> (F::Output, BTreeMap<String, bool>) {
        let seen: Mutex<BTreeMap<String, bool>> =
            Mutex::new(names.iter().map(|n| (n.to_string(), false)).collect());
        let poll = async {
            loop {
                for n in names {
                    if !self.ready(n).await {
                        seen.lock().unwrap().insert(n.to_string(), true);
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        };
        let out = tokio::select! {
            out = during => out,
            _ = poll => unreachable!("polls forever"),
        };
        (out, seen.into_inner().unwrap())
    }

    /// After an outage healed at `healed`: every watched role must have
    /// turned unready while `what`; wait until all are ready and data flows
    /// again, and return how long that took.
    async fn recovered(
        &mut self,
        unready: BTreeMap<String, bool>,
        healed: Instant,
        what: &str,
    ) -> Duration {
        assert!(
            unready.values().all(|u| *u),
            "every watched role's /ready failed while {what}: {unready:?}"
        );
        self.all_ready(Duration::from_secs(60)).await;
        self.recovery(healed, Duration::from_secs(60)).await
    }

    async fn generations(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.roles.iter().filter(|r| r.name.starts_with(prefix)) {
            let (_, body) = self.get(&r.url("/status")).await.unwrap_or_default();
            let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            for w in status["workers"].as_object().into_iter().flatten() {
                if let Some(g) = w.1["generation"].as_str() {
                    out.push(g.to_string());
                }
            }
        }
        out
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A widget client that reconnects and records when each message arrives.
fn widget_client(port: u16, key: &'static str, received: Arc<Mutex<Vec<Instant>>>) {
    tokio::spawn(async move {
        loop {
            if let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await
            {
                let auth = serde_json::json!({"action": "auth", "api_key": key});
                let _ = ws.send(Message::Text(auth.to_string().into())).await;
                for feed in ["scanners:top_volume", "quote:*", "daily_range:*", "news:*"] {
                    let sub = serde_json::json!({"action": "subscribe", "feed": feed});
                    let _ = ws.send(Message::Text(sub.to_string().into())).await;
                }
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, Message::Text(_)) {
                        received.lock().unwrap().push(Instant::now());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Each fault's row of the result table, and the listener's lost-event
/// count after each (the first entry: before any fault).
struct Results {
    losts: Vec<f64>,
    table: Vec<(String, Duration, String)>,
}

impl Results {
    async fn add(&mut self, top: &Topology, fault: &str, back: Duration, note: String) {
        self.losts.push(top.lost().await);
        self.table.push((fault.to_string(), back, note));
    }
}

/// Write `bytes` to `dir/name` atomically (temp name + rename), as an
/// operator's deploy step would.
fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

mod faults;
