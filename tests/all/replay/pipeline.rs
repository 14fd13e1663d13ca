//! The pipeline under test (the shipped analyzers behind a feed listener and
//! a queue), driven by the recorded stream, and its runs per backend and
//! session, each compared with the independent reference of the parent
//! module.

use super::*;

/// Everything one run needs.
struct Pipeline {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    prefix: String,
    session: Session,
}

/// The plugin's shipped manifest (`plugins/<name>/<name>.toml`: limits,
/// batches in flight, capabilities) with `config` overriding its settings.
fn manifest(name: &str, config: &[(&str, &str)]) -> Manifest {
    let path = support::repo_root().join(format!("plugins/{name}/{name}.toml"));
    let mut m = Manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for (k, v) in config {
        m.config.insert(k.to_string(), v.to_string());
    }
    m
}

async fn worker(runtime: &Runtime, services: &HostServices, manifest: Manifest) -> LiveWorker {
    let bytes = std::fs::read(support::plugin_wasm(&manifest.name)).unwrap();
    let mut options = manifest.load_options();
    // Parity, not speed, is under test: a loaded 2-core machine must not
    // turn a slow batch into a deadline fault.
    options.limits.deadline_base = Duration::from_secs(10);
    let plugin = Plugin::load(runtime, bytes, options, services)
        .await
        .unwrap();
    LiveWorker::new(PluginSlot::fixed(plugin, manifest), services.clone()).unwrap()
}

/// Poll `check` until it returns `Some` (or fail after [`WAIT`] with `what`).
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_json(store: &Arc<dyn Store>, key: &str) -> Option<Value> {
    let text = store.get(key).await.expect("store get")?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{key} is not JSON: {e}")))
}

/// Barrier events: a copy of the last event of each kind with a timestamp
/// no recorded event has (`round` makes each round's distinct).
fn barriers(events: &[Map<String, Value>], round: u64) -> [Map<String, Value>; 3] {
    let last = |kinds: &[&str]| {
        events
            .iter()
            .rev()
            .find(|e| kinds.contains(&e["ev"].as_str().unwrap_or("")))
            .cloned()
            .expect("the stream has this kind")
    };
    let max = |k: &str| events.iter().map(|e| u(e, k)).max().unwrap_or(0);
    let mut q = last(&["Q"]);
    q.insert("t".into(), json!(max("t") + round));
    let mut t = last(&["T"]);
    t.insert("t".into(), json!(max("t") + round));
    // The aggregate repeats its symbol's last bar (same high and low: no
    // alert) with a later end.
    let mut a = last(&["A", "AM"]);
    a.insert("e".into(), json!(max("e") + round));
    [q, t, a]
}

async fn send_barriers(p: &Pipeline, events: &mut Vec<Map<String, Value>>, round: u64) {
    let [q, t, a] = barriers(events, round);
    for (queue, e) in [("quotes", &q), ("trades", &t), ("aggregate", &a)] {
        let body = Value::Object(mdp::event::massive::to_queue_json(e)).to_string();
        p.queue
            .publish(&format!("{}.{queue}", p.prefix), &[Bytes::from(body)])
            .await
            .expect("publish a barrier");
    }
    let store = p.store.clone();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let last = seen.clone();
    let outcome = tokio::time::timeout(
        WAIT - Duration::from_secs(1),
        wait_for(&format!("barrier round {round} processed"), || {
            let store = store.clone();
            let seen = seen.clone();
            let (q, t, a) = (q.clone(), t.clone(), a.clone());
            async move {
                let quote = get_json(&store, &format!("stocks:quotes:{}", sym(&q))).await;
                let trades = store
                    .lrange(&format!("tta:{}:recent", sym(&t)), 0, 0)
                    .await
                    .unwrap_or_default();
                let newest: Option<Value> =
                    trades.first().and_then(|t| serde_json::from_str(t).ok());
                let range = get_json(&store, &format!("daily_range:{}", sym(&a))).await;
                let done = quote.as_ref().is_some_and(|v| v["timestamp"] == q["t"])
                    && newest.as_ref().is_some_and(|v| v["timestamp"] == t["t"])
                    && range.as_ref().is_some_and(|v| v["end_timestamp"] == a["e"]);
                *seen.lock().unwrap() = format!(
                    "quote t {:?} (want {}), newest trade t {:?} (want {}), range end {:?} (want {})",
                    quote.map(|v| v["timestamp"].clone()),
                    q["t"],
                    newest.map(|v| v["timestamp"].clone()),
                    t["t"],
                    range.map(|v| v["end_timestamp"].clone()),
                    a["e"]
                );
                done.then_some(())
            }
        }),
    )
    .await;
    if outcome.is_err() {
        let mut depths = Vec::new();
        for queue in ["quotes", "trades", "aggregate"] {
            let name = format!("{}.{queue}", p.prefix);
            depths.push(format!("{queue}: {:?}", p.queue.depth(&name).await));
        }
        panic!(
            "barrier round {round} not processed: {}; queue depths {}",
            last.lock().unwrap(),
            depths.join(", ")
        );
    }
    events.extend([q, t, a]);
}

async fn replay_matches_independent_reference(p: Pipeline) {
    let mut events = recorded_events();
    assert!(
        events.len() > 2000,
        "a stream of a few thousand events: {}",
        events.len()
    );
    for kind in ["T", "Q", "A", "AM"] {
        assert!(
            events.iter().any(|e| e["ev"] == kind),
            "the fixture has {kind} events"
        );
    }

    // The replaying simulator: the same market (reference data over REST)
    // as the recording, its clock in the regular session.
    let sim = mdp::sim::start(SimConfig {
        symbols: SYMBOLS,
        seed: SEED,
        at: Some(p.session.sim_at.into()),
        replay: Some(fixture()),
        replay_speed: 0.0,
        news_per_min: 0.0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");

    let services = HostServices {
        store: p.store.clone(),
        reference: Arc::new(
            MassiveReference::new(
                MassiveRestConfig {
                    base_url: sim.rest_url(),
                    api_key: "sim".into(),
                    timeout: Duration::from_secs(10),
                    attempts: 3,
                },
                p.store.clone(),
            )
            .unwrap(),
        ),
        clock: Arc::new(FixedClock::new(p.session.host_now_us)),
    };
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let (stop, stop_rx) = watch::channel(false);

    // Scanner first, and wait until its subscription is live: a probe
    // payload on `quote:*` must come back as `daily_range:{probe}`.
    let daily_range = worker(
        &runtime,
        &services,
        manifest("daily-range", &[("dra_cache_list_max", "100000")]),
    )
    .await;
    let mut scanner = Scanner::new(
        ScannerConfig {
            topics: vec![Topic::Pattern("quote:*".into())],
            ..ScannerConfig::default()
        },
        p.store.clone(),
        daily_range,
    );
    let rx = stop_rx.clone();
    let scanner_task = tokio::spawn(async move { scanner.run(rx).await.expect("scanner runs") });
    let probe = format!("PRB{}", std::process::id() % 1000);
    {
        let store = p.store.clone();
        let probe = probe.clone();
        wait_for("the scanner subscribed", || {
            let store = store.clone();
            let probe = probe.clone();
            async move {
                store
                    .apply(
                        &[mdp::store::Write::Publish {
                            channel: format!("quote:{probe}"),
                            message: json!({"symbol": probe}).to_string().into(),
                        }],
                        false,
                    )
                    .await
                    .ok()?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                store
                    .get(&format!("daily_range:{probe}"))
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ())
            }
        })
        .await;
    }

    // The listener declares its queues (with their TTL); then the processors.
    let listener = Arc::new(MassiveListener::new(
        MassiveConfig {
            feed_url: sim.ws_url(),
            api_key: Some("sim".into()),
            subscriptions: "T.*,Q.*,A.*,AM.*".into(),
            message_ttl_ms: 600_000,
            queue_prefix: format!("{}.", p.prefix),
            stall_timeout_ms: 30_000,
            max_backoff_ms: 1_000,
            ..MassiveConfig::default()
        },
        p.queue.clone(),
    ));
    listener.declare_queues().await.expect("declare queues");
    let mut processors = Vec::new();
    for (queue, plugin, config) in [
        ("quotes", "massive-router", &[][..]),
        ("aggregate", "leaderboard", &[][..]),
        // The shipped 5 s widget throttle, shortened: the test waits for it.
        ("trades", "top-trades", &[("publish_every_ms", "1000")][..]),
    ] {
        let w = worker(&runtime, &services, manifest(plugin, config)).await;
        let mut processor = Processor::new(
            ProcessorConfig {
                queue: format!("{}.{queue}", p.prefix),
                ..ProcessorConfig::default()
            },
            p.queue.clone(),
            p.store.clone(),
            w,
        );
        let rx = stop_rx.clone();
        processors.push(tokio::spawn(async move {
            processor.run(rx).await.expect("processor runs")
        }));
    }
    let l = listener.clone();
    let rx = stop_rx.clone();
    let listener_task = tokio::spawn(async move { l.run(rx).await.expect("listener runs") });

    // Every recorded event reaches the queues.
    let total = events.len() as u64;
    let stats = sim.stats();
    wait_for("the replay reached the queues", || {
        // Confirmed by the broker: the barriers below must queue behind them.
        let done = stats.replay_done.load(Ordering::Relaxed)
            && listener.stats.events.load(Ordering::Relaxed) >= total
            && listener.stats.confirmed.load(Ordering::Relaxed) >= total;
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(listener.stats.events.load(Ordering::Relaxed), total);
    assert_eq!(listener.stats.confirmed.load(Ordering::Relaxed), total);
    assert_eq!(listener.stats.bad_frames.load(Ordering::Relaxed), 0);
    assert_eq!(listener.stats.publish_errors.load(Ordering::Relaxed), 0);
    assert_eq!(
        listener.stats.sessions.load(Ordering::Relaxed),
        1,
        "no reconnects"
    );

    // Drain (round 1), then let the throttles expire and publish the final
    // boards and widgets (round 2).
    send_barriers(&p, &mut events, 1).await;
    {
        let store = p.store.clone();
        wait_for("the publish throttles expired", || {
            let store = store.clone();
            async move {
                let lb = store.get("leaderboard:last_publish").await.ok()?;
                let tt = store.get("tta:last_publish").await.ok()?;
                (lb.is_none() && tt.is_none()).then_some(())
            }
        })
        .await;
    }
    send_barriers(&p, &mut events, 2).await;
    for queue in ["quotes", "trades", "aggregate"] {
        assert_eq!(
            p.queue
                .depth(&format!("{}.{queue}", p.prefix))
                .await
                .unwrap(),
            0,
            "{queue} drained"
        );
    }

    // The expected results, from the events and the simulator's REST data.
    let symbols: BTreeSet<String> = events.iter().map(sym).collect();
    let refs = reference_data(&sim, &symbols).await;
    let x = expected(&events, &refs);
    for e in events
        .iter()
        .filter(|e| matches!(e["ev"].as_str(), Some("A" | "AM")))
    {
        assert_eq!(
            f(e, "op"),
            refs[&sym(e)].day_open,
            "the fixture was recorded from the market of seed {SEED} with {SYMBOLS} symbols"
        );
    }
    let store = &p.store;

    // massive-router: the last quote per symbol, unchanged.
    for (s, q) in &x.last_quote {
        let got = get_json(store, &format!("stocks:quotes:{s}"))
            .await
            .unwrap_or_else(|| panic!("stocks:quotes:{s} missing"));
        let want = mdp::event::massive::to_queue_json(q);
        assert!(
            same(&got, &Value::Object(want.clone())),
            "stocks:quotes:{s}: {got} vs {want:?}"
        );
        assert_eq!(got["bid_price"], q["bp"]);
        assert_eq!(got["ask_price"], q["ap"]);
    }

    // leaderboard: every symbol's quote.
    for (s, q) in &x.quote {
        let got = get_json(store, &format!("quote:{s}"))
            .await
            .unwrap_or_else(|| panic!("quote:{s} missing"));
        assert_eq!(got.as_object().unwrap().len(), 26, "quote:{s}: {got}");
        assert_fields(&format!("quote:{s}"), &got, q, false);
    }
    let quoted: BTreeSet<&String> = x.quote.keys().collect();
    for s in &symbols {
        if !quoted.contains(s) {
            assert!(store.get(&format!("quote:{s}")).await.unwrap().is_none());
        }
    }

    // leaderboard: the three boards, rank by rank.
    for (key, field, rows) in &x.boards {
        let got = get_json(store, key)
            .await
            .unwrap_or_else(|| panic!("{key} missing"));
        let got = got.as_array().unwrap();
        let got_order: Vec<&str> = got.iter().map(|r| r["symbol"].as_str().unwrap()).collect();
        let want_order: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(got_order, want_order, "{key} order");
        for (rank, (row, (s, score))) in got.iter().zip(rows).enumerate() {
            assert_eq!(row["rank"], json!(rank + 1), "{key} rank");
            assert_eq!(row[*field].as_f64(), Some(*score), "{key} {s} {field}");
            assert_fields(&format!("{key} row {}", rank + 1), row, &x.quote[s], true);
        }
    }

    // leaderboard: the sorted sets behind the boards hold the same scores.
    for (key, _, rows) in &x.boards {
        let zset = key.replace("scanners:", "leaderboard:");
        let mut got = store.ztop(&zset, 500).await.unwrap();
        got.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        assert_eq!(&got, rows, "{zset}");
    }

    // daily-range: the session's ranges per symbol, no other session.
    let (high_field, low_field) = p.session.fields;
    for (s, (high, low)) in &x.range {
        let got = get_json(store, &format!("daily_range:{s}"))
            .await
            .unwrap_or_else(|| panic!("daily_range:{s} missing"));
        assert_eq!(got[high_field].as_f64(), Some(*high), "{s}: {got}");
        assert_eq!(got[low_field].as_f64(), Some(*low), "{s}: {got}");
        for k in [
            "pre_market_high",
            "pre_market_low",
            "regular_session_high",
            "regular_session_low",
            "after_hours_high",
            "after_hours_low",
        ] {
            if k != high_field && k != low_field {
                assert!(got[k].is_null(), "{s}: {k} outside the session: {got}");
            }
        }
        assert_fields(&format!("daily_range:{s}"), &got, &x.quote[s], false);
    }

    // daily-range: the alerts, in order (the lists are newest first).
    for (key, direction, want) in [
        ("daily_range_hod_alert", "high", &x.hod),
        ("daily_range_lod_alert", "low", &x.lod),
    ] {
        let mut got = store.lrange(key, 0, -1).await.unwrap();
        got.reverse();
        let got: Vec<Value> = got
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let got_keys: Vec<(String, f64, f64)> = got
            .iter()
            .map(|a| {
                (
                    a["symbol"].as_str().unwrap().to_string(),
                    a["price"].as_f64().unwrap(),
                    a["previous"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(&got_keys, want, "{key}");
        for a in &got {
            assert_eq!(a["session"], p.session.name, "{a}");
            assert_eq!(a["direction"], direction, "{a}");
            assert_eq!(a["note"], "", "no earlier session's range to break: {a}");
        }
    }
    assert!(
        !x.hod.is_empty() && !x.lod.is_empty(),
        "the stream makes new highs and lows"
    );

    // top-trades: the stats of every symbol, and the per-symbol widgets.
    let widget = get_json(store, "tta:all_symbols:widget")
        .await
        .expect("tta:all_symbols:widget");
    assert_eq!(widget["symbol_count"], json!(x.trade_stats.len()));
    let got_stats = widget["symbols"].as_object().unwrap();
    assert_eq!(
        got_stats.keys().collect::<Vec<_>>(),
        x.trade_stats.keys().collect::<Vec<_>>()
    );
    for (s, want) in &x.trade_stats {
        assert!(
            same(&got_stats[s], want),
            "tta stats {s}: got {}, want {want}",
            got_stats[s]
        );
        let w = get_json(store, &format!("tta:{s}:widget"))
            .await
            .unwrap_or_else(|| panic!("tta:{s}:widget missing"));
        assert_eq!(w["symbol"], json!(s));
        assert_fields(
            &format!("tta:{s}:widget"),
            &w,
            want.as_object().unwrap(),
            false,
        );
    }
    // top-trades: each symbol's recent list holds its trades, newest first,
    // with the TRF id and time of off-exchange prints (`null` otherwise).
    type Stored = (f64, u64, u64, u64, Value, Value);
    for s in x.trade_stats.keys() {
        let trf = |e: &Map<String, Value>, k: &str| e.get(k).cloned().unwrap_or(Value::Null);
        let mut want: Vec<Stored> = events
            .iter()
            .filter(|e| e["ev"] == "T" && sym(e) == *s)
            .map(|e| {
                let t = (f(e, "p"), u(e, "s"), u(e, "t"), u(e, "x"));
                (t.0, t.1, t.2, t.3, trf(e, "trfi"), trf(e, "trft"))
            })
            .collect();
        want.reverse();
        want.truncate(TRADE_WINDOW);
        let got: Vec<Stored> = store
            .lrange(&format!("tta:{s}:recent"), 0, -1)
            .await
            .unwrap()
            .iter()
            .map(|t| {
                let v: Map<String, Value> = serde_json::from_str(t).unwrap();
                assert_eq!(v["symbol"], json!(s));
                (
                    f(&v, "price"),
                    u(&v, "size"),
                    u(&v, "timestamp"),
                    u(&v, "exchange"),
                    v["trf_id"].clone(),
                    v["trf_timestamp"].clone(),
                )
            })
            .collect();
        assert_eq!(got, want, "tta:{s}:recent");
    }

    // leaderboard: each symbol's open baseline is its first bar's open.
    for s in x.quote.keys() {
        let first = events
            .iter()
            .find(|e| matches!(e["ev"].as_str(), Some("A" | "AM")) && sym(e) == *s)
            .unwrap();
        let got = store
            .get(&format!("symbol:{s}:open_price"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("symbol:{s}:open_price missing"));
        assert_eq!(
            got.trim_matches('"').parse::<f64>().ok(),
            Some(f(first, "o")),
            "{s}"
        );
    }

    eprintln!(
        "replayed {total} events: {} quotes, {} boards of {} symbols, {} ranges, {} + {} alerts, {} trade stats",
        x.last_quote.len(),
        x.boards.len(),
        x.quote.len(),
        x.range.len(),
        x.hod.len(),
        x.lod.len(),
        x.trade_stats.len()
    );

    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), listener_task).await;
    for t in processors {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("processor stops")
            .unwrap();
    }
    let scanner_stats = tokio::time::timeout(Duration::from_secs(20), scanner_task)
        .await
        .expect("scanner stops")
        .unwrap();
    assert_eq!(scanner_stats.errors, 0);
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_embedded_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: Arc::new(EmbeddedQueue::new()),
        store: Arc::new(EmbeddedStore::new()),
        prefix: support::unique("replay"),
        session: REGULAR,
    })
    .await;
}

/// The same stream as pre-market trading: the ranges and alerts are the
/// pre-market session's; the leaderboard has not had its 09:30 reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_pre_market_embedded_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: Arc::new(EmbeddedQueue::new()),
        store: Arc::new(EmbeddedStore::new()),
        prefix: support::unique("replay"),
        session: PRE_MARKET,
    })
    .await;
}

/// The same stream as after-hours trading (no earlier session of the day
/// was seen, so no breach notes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_hours_embedded_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: Arc::new(EmbeddedQueue::new()),
        store: Arc::new(EmbeddedStore::new()),
        prefix: support::unique("replay"),
        session: AFTER_HOURS,
    })
    .await;
}

/// A Redis database of its own (the plugins' keys have no prefix), emptied first.
async fn private_redis_db() -> Arc<dyn Store> {
    let base = support::redis_url();
    let base = base.trim_end_matches('/');
    let base = match base.rsplit_once('/') {
        Some((head, db)) if db.parse::<u32>().is_ok() => head.to_string(),
        _ => base.to_string(),
    };
    let url = format!("{base}/11");
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut conn)
        .await
        .expect("FLUSHDB");
    mdp::store::open(&url).await.expect("redis store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rabbitmq_redis_matches_reference() {
    replay_matches_independent_reference(Pipeline {
        queue: mdp::queue::open(&support::amqp_url())
            .await
            .expect("rabbitmq"),
        store: private_redis_db().await,
        prefix: support::unique("replay"),
        session: REGULAR,
    })
    .await;
}
