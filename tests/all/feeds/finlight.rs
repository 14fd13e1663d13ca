//! Finlight end to end: the news stream on both queues, its filter guard, raw
//! stream auth and the connection lifetime limit.

use super::*;

#[tokio::test]
async fn finlight_filter_changes_are_guarded() {
    let sim = sim(quiet()).await;
    let args = |admin| FinlightConfig {
        admin,
        ..finlight_args(&sim, &support::unique("guard"))
    };
    let (open, _stop_open, _t1) =
        finlight(args(AdminAccess::default()), Arc::new(EmbeddedQueue::new()));
    let (l, _stop, _t2) = finlight(
        args(AdminAccess {
            admin_change_interval_ms: 60_000,
            ..admin_access()
        }),
        Arc::new(EmbeddedQueue::new()),
    );
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 1).await);
    let serve = |l: &Arc<FinlightListener>| {
        let router = mdp::feed::finlight::admin_router(l.clone());
        async move {
            let addr = mdp::feed::admin::serve("127.0.0.1:0", router)
                .await
                .unwrap();
            format!("http://{addr}/filter")
        }
    };
    let change = serde_json::json!({"sources": ["www.reuters.com"]});
    let (code, v, _) = post(&serve(&open).await, Some(TOKEN), change.clone()).await;
    assert_eq!(code, 403, "no token configured: {v}");
    let url = serve(&l).await;
    let (code, _, _) = post(&url, Some("wrong"), change.clone()).await;
    assert_eq!(code, 401);
    let (code, v, _) = post(&url, Some(TOKEN), change).await;
    assert_eq!(code, 200, "{v}");
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 2).await);
    let (code, v, _) = post(
        &url,
        Some(TOKEN),
        serde_json::json!({"sources": ["www.ft.com"]}),
    )
    .await;
    assert_eq!(code, 429, "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        l.stats.admits.load(Ordering::Relaxed),
        2,
        "no takeover reconnect"
    );
    assert_eq!(l.filter().sources, ["www.reuters.com"]);
    assert_eq!(open.filter().sources, Vec::<String>::new());
}

fn finlight(
    args: FinlightConfig,
    queue: Arc<dyn Queue>,
) -> (
    Arc<FinlightListener>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Outcome>,
) {
    let listener = Arc::new(FinlightListener::new(args, queue));
    let (stop, rx) = watch::channel(false);
    let l = listener.clone();
    let task = tokio::spawn(async move { l.run(rx).await.expect("finlight listener runs") });
    (listener, stop, task)
}

fn finlight_args(sim: &SimHandle, prefix: &str) -> FinlightConfig {
    FinlightConfig {
        url: sim.finlight_url(),
        api_key: Some("news-key".into()),
        ping_interval_ms: 100,
        pong_timeout_ms: 1_000,
        rate_limit_wait_ms: 200,
        blocked_wait_ms: 200,
        max_backoff_ms: 500,
        queue_prefix: format!("{prefix}."),
        admin: admin_access(),
        ..FinlightConfig::default()
    }
}

async fn finlight_end_to_end(queue: Arc<dyn Queue>) {
    let sim = sim(quiet()).await;
    let fl = sim.finlight();
    let prefix = support::unique("news");
    let (l, stop, task) = finlight(finlight_args(&sim, &prefix), queue.clone());
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 1).await);
    let mut links = Vec::new();
    for _ in 0..5 {
        links.push(fl.publish_article()["link"].as_str().unwrap().to_string());
    }
    assert!(eventually(20, || l.stats.published.load(Ordering::Relaxed) == 5).await);
    // Duplicates (and the latest article re-sent on reconnect) are skipped.
    fl.admin(&serde_json::json!({"action": "duplicate"}))
        .unwrap();
    assert!(eventually(20, || l.stats.duplicates.load(Ordering::Relaxed) == 1).await);
    // admin_kick: close, wait retryAfter, reconnect.
    fl.admin(&serde_json::json!({"action": "kick", "retryAfter": 200}))
        .unwrap();
    assert!(
        eventually(20, || l.stats.kicks.load(Ordering::Relaxed) == 1
            && l.stats.admits.load(Ordering::Relaxed) == 2)
        .await
    );
    assert!(
        eventually(20, || l.stats.duplicates.load(Ordering::Relaxed) == 2).await,
        "latest article re-sent on connect and skipped"
    );
    // error "rate limit": close 4001, wait, reconnect.
    fl.admin(&serde_json::json!({"action": "error", "text": "rate limit exceeded"}))
        .unwrap();
    assert!(
        eventually(20, || l.stats.rate_limited.load(Ordering::Relaxed) == 1
            && l.stats.admits.load(Ordering::Relaxed) == 3)
        .await
    );
    links.push(fl.publish_article()["link"].as_str().unwrap().to_string());
    assert!(eventually(20, || l.stats.published.load(Ordering::Relaxed) == 6).await);
    assert!(
        eventually(20, || l.stats.pongs.load(Ordering::Relaxed) > 0).await,
        "pings answered"
    );
    assert_eq!(l.stats.bad_frames.load(Ordering::Relaxed), 0);
    // The server stops answering pings: the pong watchdog reconnects.
    fl.admin(&serde_json::json!({"action": "mute"})).unwrap();
    assert!(
        eventually(20, || l.stats.pong_timeouts.load(Ordering::Relaxed) == 1
            && l.stats.admits.load(Ordering::Relaxed) == 4)
        .await,
        "{}",
        l.status_json()
    );

    // The queue holds the articles unchanged.
    let mut consumer = queue.consume(&format!("{prefix}.news"), 100).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("article on the queue")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            v["companies"][0]["primaryListing"]["exchangeCode"]
                .as_str()
                .map(|s| s.starts_with('X')),
            Some(true)
        );
        assert!(v["sentiment"].is_string());
        got.push(v["link"].as_str().unwrap().to_string());
    }
    assert_eq!(got, links);

    // Another session of the key takes over: this one is preempted for good.
    let (other, stop2, task2) = finlight(finlight_args(&sim, &prefix), queue.clone());
    let outcome = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Preempted(_)), "{outcome:?}");
    assert_eq!(l.stats.state(), "preempted");
    assert!(eventually(20, || other.stats.admits.load(Ordering::Relaxed) == 1).await);
    // Close 1008 (blocked user): stop for good.
    fl.admin(&serde_json::json!({"action": "close", "code": 1008}))
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), task2)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Blocked(_)), "{outcome:?}");
    let _ = (stop, stop2);
}

#[tokio::test]
async fn finlight_end_to_end_embedded() {
    finlight_end_to_end(Arc::new(EmbeddedQueue::new())).await;
}

#[tokio::test]
async fn finlight_end_to_end_rabbitmq() {
    finlight_end_to_end(mdp::queue::open(&support::amqp_url()).await.unwrap()).await;
}

#[tokio::test]
async fn finlight_raw_stream_filters_and_auth() {
    let sim = sim(SimConfig {
        api_key: Some("news-key".into()),
        ..quiet()
    })
    .await;
    let fl = sim.finlight();
    // A wrong key is refused at the upgrade and retried with backoff.
    let (bad, bad_stop, _t) = finlight(
        FinlightConfig {
            api_key: Some("wrong".into()),
            ..finlight_args(&sim, &support::unique("bad"))
        },
        Arc::new(EmbeddedQueue::new()),
    );
    assert!(eventually(20, || bad.stats.reconnects.load(Ordering::Relaxed) >= 2).await);
    assert_eq!(bad.stats.admits.load(Ordering::Relaxed), 0);
    let _ = bad_stop.send(true);
    // Seed some articles; the raw stream sends no initial article and no enrichment.
    // Follow the ticker most written about (activity is Zipf-like).
    let mut seen = BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        let a = fl.publish_article();
        *seen
            .entry(a["companies"][0]["ticker"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let wanted = seen
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t)
        .unwrap();
    let q: Arc<dyn Queue> = Arc::new(EmbeddedQueue::new());
    let prefix = support::unique("raw");
    let (l, _stop, _task) = finlight(
        FinlightConfig {
            raw: true,
            query: Some(format!("ticker:{wanted}")),
            ..finlight_args(&sim, &prefix)
        },
        q.clone(),
    );
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        l.stats.articles.load(Ordering::Relaxed),
        0,
        "no initial article on raw"
    );
    let mut expected = 0;
    for _ in 0..200 {
        let a = fl.publish_article();
        if a["companies"][0]["ticker"] == wanted.as_str() {
            expected += 1;
        }
    }
    assert!(expected > 0);
    assert!(
        eventually(20, || l.stats.published.load(Ordering::Relaxed) == expected).await,
        "{}",
        l.status_json()
    );
    let mut c = q.consume(&format!("{prefix}.news"), 10).await.unwrap();
    let d = c.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    assert!(
        v.get("sentiment").is_none() && v.get("companies").is_none(),
        "{v}"
    );
    // A filter change through the admin API is validated, then reconnects.
    let addr = mdp::feed::admin::serve("127.0.0.1:0", mdp::feed::finlight::admin_router(l.clone()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/filter"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"language": "english"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("http://{addr}/filter"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"sources": ["www.reuters.com"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(eventually(20, || l.stats.admits.load(Ordering::Relaxed) == 2).await);
    assert_eq!(l.filter().sources, vec!["www.reuters.com".to_string()]);
}

#[tokio::test]
async fn finlight_connection_lifetime_limit_is_survived() {
    let sim = sim(SimConfig {
        finlight_max_lifetime_ms: 300,
        ..quiet()
    })
    .await;
    let q: Arc<dyn Queue> = Arc::new(EmbeddedQueue::new());
    let prefix = support::unique("life");
    let (l, _stop, _task) = finlight(finlight_args(&sim, &prefix), q);
    assert!(
        eventually(30, || l.stats.admits.load(Ordering::Relaxed) >= 3).await,
        "reconnects after each server-side close: {}",
        l.status_json()
    );
    let fl = sim.finlight();
    fl.publish_article();
    assert!(eventually(20, || l.stats.articles.load(Ordering::Relaxed) >= 1).await);
}
