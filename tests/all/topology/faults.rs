//! The distributed topology under faults: broker and cache restarts, role
//! crashes and plugin upgrades while confirmed events are counted end to end.

use super::*;

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
    drop_in(
        &plugins,
        "leaderboard.wasm",
        &mdp_test_artifacts::variant(&wasm, "v2"),
    );
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
