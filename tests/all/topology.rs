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

/// `bytes` with a custom section appended: a valid component with another
/// fingerprint (a "new version" of the same plugin).
fn new_version(bytes: &[u8]) -> Vec<u8> {
    let name = b"mdp-test";
    let payload = b"v2";
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

/// Write `bytes` to `dir/name` atomically (temp name + rename), as an
/// operator's deploy step would.
fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_topology_survives_faults_and_loses_nothing_it_confirmed() {
    let shipped = support::plugin_wasm("leaderboard")
        .parent()
        .unwrap()
        .to_path_buf();
    let work = tempfile::tempdir().unwrap();
    // A plugin directory of our own (with the golden files the host checks
    // new versions against), where the test drops new files.
    let plugins = work.path().join("plugins");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&shipped)
            .arg(&plugins)
            .status()
            .unwrap()
            .success()
    );
    let mut redis = PrivateRedis::start().await;
    let mut rabbit = PrivateRabbit::start();

    let (sim_port, finlight_port) = (free_port(), free_port());
    let redis_base = redis.url();
    let widget_key = "topology-widget-key";
    // The compose file's hosts, here.
    let rewrite = |key: &str, value: &str| match key {
        "RABBITMQ_URL" => rabbit.url.clone(),
        "MDC_REDIS_URL" | "WDC_REDIS_URL" => value.replace("redis://redis:6379/", &redis_base),
        _ => value.to_string(),
    };
    // What the operator supplies or the image sets, for this machine.
    let local: Vec<(&str, String)> = vec![
        ("MDP_PLUGIN_DIR", plugins.display().to_string()),
        (
            "MDP_PLUGIN_CACHE",
            work.path().join("cache").display().to_string(),
        ),
        ("MASSIVE_FEED_URL", format!("ws://127.0.0.1:{sim_port}")),
        ("MASSIVE_REST_URL", format!("http://127.0.0.1:{sim_port}")),
        ("FINLIGHT_WS_URL", format!("ws://127.0.0.1:{finlight_port}")),
        ("FINLIGHT_API_KEY", "simulated".into()),
        // Long enough that nothing expires during the test: every message
        // is accounted for by processing, not by the TTL.
        ("MARKET_DATA_MESSAGE_TTL", "600000".into()),
    ];

    // Every mdp service of deploy/compose.yaml, each replica its own process,
    // with the service's command and environment; each address it binds
    // moved to a free loopback port.
    let recording = work.path().join("feed.jsonl");
    let mut roles = Vec::new();
    let mut widget_port = None;
    for service in support::deploy::compose_services(widget_key) {
        for replica in 0..service.replicas {
            let name = match service.replicas {
                1 => service.name.clone(),
                _ => format!("{}-{}", service.name, (b'a' + replica as u8) as char),
            };
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut env: BTreeMap<String, String> = service
                .env
                .iter()
                .map(|(k, v)| (k.clone(), rewrite(k, v)))
                .collect();
            env.extend(local.iter().map(|(k, v)| (k.to_string(), v.clone())));
            if let Some(health) = env.get_mut("MDP_HEALTH_LISTEN") {
                *health = addr.clone();
            }
            let serve = service.command[0] == "serve";
            let mut args: Vec<String> = service
                .command
                .iter()
                .map(|a| {
                    if serve && a.contains(":8080") {
                        addr.clone()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            if args == ["listen", "massive"] {
                // What the feed sent, to check the final state against.
                args.extend(["--record".to_string(), recording.display().to_string()]);
            }
            if serve {
                widget_port = Some(port);
            }
            roles.push(Role {
                name,
                args,
                env: env.into_iter().collect(),
                port,
                ready_path: if serve { "/health" } else { "/ready" },
                log: work.path().join(format!("{}-{replica}.log", service.name)),
                child: None,
                past: String::new(),
            });
        }
    }
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    for role in [
        "listen-massive",
        "listen-finlight",
        "process-aggregate-a",
        "process-aggregate-b",
        "process-trades-a",
        "process-trades-b",
        "process-quotes",
        "process-news",
        "scan-daily-range",
        "serve",
    ] {
        assert!(names.contains(&role), "compose runs no {role}: {names:?}");
    }
    let widget_port = widget_port.unwrap();

    // The market: a Monday morning, a moderate rate (2 cores run all of it).
    let mut sim = Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args([
            "simulate",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--finlight-listen",
            &format!("127.0.0.1:{finlight_port}"),
            "--symbols",
            "40",
            "--rate",
            "400",
            "--at",
            "2026-03-09T10:00:00-04:00",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop<'a>(&'a mut Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _sim = KillOnDrop(&mut sim);

    let received = Arc::new(Mutex::new(Vec::new()));
    let mut top = Topology {
        roles,
        http: reqwest::Client::new(),
        received: received.clone(),
    };
    for r in &mut top.roles {
        r.spawn();
    }
    top.all_ready(Duration::from_secs(120)).await;
    widget_client(widget_port, widget_key, received);
    let started = Instant::now();
    let first = top.recovery(started, Duration::from_secs(60)).await;
    eprintln!("pipeline flowing {first:?} after every role was ready");

    // Events the listener could not publish (after its retry), after each fault.
    let mut results = Results {
        losts: vec![top.lost().await],
        table: Vec::new(),
    };

    // 1. kill -9 one replica of each replicated processor; the other keeps serving.
    for name in ["process-aggregate-a", "process-trades-a"] {
        let last = top.metrics(name).await;
        top.role(name).kill9(last);
    }
    let killed = Instant::now();
    let during = top.recovery(killed, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["process-aggregate-a", "process-trades-a"] {
        top.role(name).spawn();
    }
    let healed = Instant::now();
    top.all_ready(Duration::from_secs(60)).await;
    let back = top.recovery(healed, Duration::from_secs(30)).await;
    results
        .add(
            &top,
            "kill -9 a processor replica",
            back,
            format!("kept serving meanwhile (data after {during:?})"),
        )
        .await;

    // 2. kill -9 RabbitMQ, restart it on the same port.
    let queue_roles = [
        "listen-massive",
        "process-aggregate-a",
        "process-aggregate-b",
        "process-trades-a",
        "process-trades-b",
        "process-quotes",
        "process-news",
    ];
    let ((), unready) = top
        .unready_during(&queue_roles, async {
            rabbit.kill();
            tokio::time::sleep(Duration::from_secs(4)).await;
        })
        .await;
    rabbit.restart();
    let back = top
        .recovered(unready, Instant::now(), "RabbitMQ was down")
        .await;
    results
        .add(
            &top,
            "kill -9 RabbitMQ, restart",
            back,
            "consumers unready while down".into(),
        )
        .await;

    // 3. kill -9 Redis, restart it.
    let store_roles = [
        "process-aggregate-a",
        "process-aggregate-b",
        "process-trades-a",
        "process-trades-b",
        "process-quotes",
        "process-news",
        "scan-daily-range",
        "serve",
    ];
    let ((), unready) = top
        .unready_during(&store_roles, async {
            redis.kill();
            tokio::time::sleep(Duration::from_secs(4)).await;
        })
        .await;
    redis.restart().await;
    let back = top
        .recovered(unready, Instant::now(), "Redis was down")
        .await;
    results
        .add(
            &top,
            "kill -9 Redis, restart",
            back,
            "store users unready while down".into(),
        )
        .await;

    // 4. SIGSTOP Redis longer than every timeout (a half-open server), SIGCONT.
    let pid = redis.pid().unwrap().to_string();
    let ((), unready) = top
        .unready_during(&store_roles, async {
            Command::new("kill").args(["-STOP", &pid]).status().unwrap();
            tokio::time::sleep(Duration::from_secs(15)).await;
        })
        .await;
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let back = top.recovered(unready, Instant::now(), "Redis hung").await;
    results
        .add(
            &top,
            "SIGSTOP Redis 15 s, SIGCONT",
            back,
            "store users unready while hung".into(),
        )
        .await;

    // 5. A new leaderboard version: every aggregate process loads it in place.
    let before = top.generations("process-aggregate").await;
    assert_eq!(before.len(), 2, "{before:?}");
    let wasm = std::fs::read(plugins.join("leaderboard.wasm")).unwrap();
    let pids: Vec<u32> = top
        .roles
        .iter()
        .map(|r| r.child.as_ref().unwrap().id())
        .collect();
    drop_in(&plugins, "leaderboard.wasm", &new_version(&wasm));
    let dropped = Instant::now();
    let after = loop {
        let now = top.generations("process-aggregate").await;
        if now.len() == 2 && now.iter().all(|g| !before.contains(g)) {
            break now;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(60),
            "new version not loaded by every process: {now:?} (before {before:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after[0], after[1], "both replicas run the same version");
    let loaded = dropped.elapsed();
    let back = top.recovery(dropped, Duration::from_secs(30)).await;
    let now_pids: Vec<u32> = top
        .roles
        .iter()
        .map(|r| r.child.as_ref().unwrap().id())
        .collect();
    assert_eq!(pids, now_pids, "no process restarted for the new version");
    results
        .add(
            &top,
            "new leaderboard.wasm dropped in",
            back,
            format!("loaded by both replicas in {loaded:?}"),
        )
        .await;

    // 6. A corrupt leaderboard.wasm: refused, the loaded version keeps serving.
    drop_in(
        &plugins,
        "leaderboard.wasm",
        b"\0asm garbage, not a component",
    );
    let dropped = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = top.recovery(dropped, Duration::from_secs(30)).await;
    assert_eq!(
        top.generations("process-aggregate").await,
        after,
        "the loaded version keeps serving"
    );
    top.all_ready(Duration::from_secs(10)).await;
    let refused = ["process-aggregate-a", "process-aggregate-b"]
        .iter()
        .all(|n| {
            std::fs::read_to_string(&top.role(n).log)
                .unwrap_or_default()
                .contains("leaderboard.wasm")
        });
    assert!(refused, "each aggregate process logged the refused file");
    results
        .add(
            &top,
            "corrupt leaderboard.wasm dropped in",
            back,
            "refused; loaded version kept serving".into(),
        )
        .await;

    // Drain: pause the market, wait until the counts stop moving.
    let paused = top
        .http
        .post(format!("http://127.0.0.1:{sim_port}/admin/profile"))
        .json(&serde_json::json!({"rate": 0, "quote_rate": 0}))
        .send()
        .await
        .unwrap();
    assert!(paused.status().is_success());
    let mut last = (-1.0, -1.0);
    let drained = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = (top.confirmed().await, top.processed().await);
        if now == last {
            break;
        }
        last = now;
        assert!(
            drained.elapsed() < Duration::from_secs(90),
            "the pipeline did not drain"
        );
    }
    // The last bar of every symbol is what quote:{SYM} shows (the last
    // phase had no faults, so none of them was lost).
    let mut last_bar: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for line in std::fs::read_to_string(&recording).unwrap().lines() {
        let rec: mdp::feed::RecordedFrame = serde_json::from_str(line).unwrap();
        let Ok(serde_json::Value::Array(events)) = serde_json::from_str(&rec.frame) else {
            continue;
        };
        for e in events.into_iter().filter(|e| e["ev"] == "A") {
            let sym = e["sym"].as_str().unwrap().to_string();
            let newer = last_bar
                .get(&sym)
                .is_none_or(|b| b["e"].as_u64() <= e["e"].as_u64());
            if newer {
                last_bar.insert(sym, e);
            }
        }
    }
    assert!(
        last_bar.len() >= 30,
        "bars of {} symbols recorded",
        last_bar.len()
    );
    let widgets = mdp::store::open(&format!("{redis_base}1")).await.unwrap();
    for (sym, bar) in &last_bar {
        let quote = widgets.get(&format!("quote:{sym}")).await.unwrap();
        let quote: serde_json::Value = serde_json::from_str(&quote.unwrap()).unwrap();
        assert_eq!(
            (
                &quote["end_timestamp"],
                &quote["close"],
                &quote["accumulated_volume"]
            ),
            (&bar["e"], &bar["c"], &bar["av"]),
            "quote:{sym} is not its last bar"
        );
    }
    let queue = mdp::queue::open(&rabbit.url).await.unwrap();
    let mut depths = Vec::new();
    for q in ["aggregate", "trades", "quotes", "halts", "news"] {
        depths.push((q, queue.depth(q).await.unwrap()));
    }
    let dead = top.total("process", "mdp_dead_lettered_total", &[]).await;
    let lost = top.lost().await;
    let (confirmed, processed) = last;

    let Results { losts, table } = results;
    eprintln!(
        "\n| fault | recovery | events the listener could not publish | note |\n|---|---|---|---|"
    );
    for (i, (fault, took, note)) in table.iter().enumerate() {
        let lost = losts[i + 1] - losts[i];
        eprintln!(
            "| {fault} | {:.1} s | {lost} | {note} |",
            took.as_secs_f64()
        );
    }
    eprintln!(
        "\nevents confirmed by the listener: {confirmed}; processed (counting redeliveries): {processed}; \
         dead-lettered: {dead}; not published by the listener: {lost}; queue depths after drain: {depths:?}"
    );
    assert!(
        depths.iter().all(|(_, d)| *d == 0),
        "every confirmed message left its queue: {depths:?}"
    );
    assert_eq!(dead, 0.0, "nothing dead-lettered");
    // Only while the broker was down could the listener not publish (it
    // counts those events as lost; the feed does not wait).
    for (i, (fault, _, _)) in table.iter().enumerate() {
        if !fault.contains("RabbitMQ") {
            assert_eq!(losts[i + 1], losts[i], "nothing lost during: {fault}");
        }
    }
    assert_eq!(lost, losts[table.len()], "nothing lost after the faults");
    assert!(processed > 0.0 && confirmed > 0.0);
}
