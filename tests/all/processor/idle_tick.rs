//! The idle tick: a plugin whose limits set `idle_tick` is called once with
//! an empty batch when its queue goes idle after a batch, and that call's
//! effects are applied. The leaderboard with `boards_on_idle` writes its
//! hashes and boards only then (the fixed clock never makes them overdue),
//! so they appear with the tick and never without it. (The boards are
//! checked on the embedded store only: on the shared Redis, other tests'
//! leaderboards take part in the once-a-second board election.)

use super::*;

/// Publish three bars, and wait until they are processed; the hashes (and,
/// on a `private` store, the board) are there afterwards exactly when `tick`
/// is set.
async fn boards_follow_the_idle_tick(b: Backends, private: bool, tick: Option<Duration>) {
    let q = format!("{}-aggregate", b.prefix);
    declare(&b, &q).await;
    let mut options = LoadOptions::default();
    options.limits.batches_in_flight = 2;
    options.limits.idle_tick = tick;
    let worker = live_loaded(
        "leaderboard",
        &[("boards_on_idle", "true")],
        &b.store,
        options,
    )
    .await;
    let syms: Vec<String> = (0..3).map(|i| format!("{}T{i}", b.prefix)).collect();
    let bodies: Vec<Bytes> = syms
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Bytes::from(bar(
                s,
                10.0 + i as f64,
                1000 * (i as u64 + 1),
                1767225599000,
            ))
        })
        .collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    let (stop, task) = spawn(&b, &q, None, worker);
    let store = b.store.clone();
    let last = format!("quote:{}", syms[2]);
    eventually("the bars' quotes", || {
        let store = store.clone();
        let last = last.clone();
        async move { store.get(&last).await.unwrap().is_some() }
    })
    .await;
    // Ten idle ticks' worth of quiet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let board = b.store.get("scanners:top_volume").await.unwrap();
    let hash = b
        .store
        .hgetall(&format!("symbol:{}:data", syms[0]))
        .await
        .unwrap();
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processed, 3);
    match tick {
        None => {
            assert_eq!(board, None, "no tick, no board");
            assert!(hash.is_empty(), "no tick, no hash: {hash:?}");
        }
        Some(_) => {
            assert_eq!(hash.len(), 26, "the tick flushed the hashes");
        }
    }
    if tick.is_some() && private {
        let board: serde_json::Value =
            serde_json::from_str(&board.expect("the tick published the board")).unwrap();
        let ranked: Vec<&str> = board
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["symbol"].as_str())
            .filter(|s| s.starts_with(&b.prefix))
            .collect();
        assert_eq!(ranked, [&syms[2], &syms[1], &syms[0]]);
    }
}

#[tokio::test]
async fn embedded_idle_tick_runs_the_deferred_work() {
    boards_follow_the_idle_tick(embedded(), true, Some(Duration::from_millis(10))).await;
}
#[tokio::test]
async fn distributed_idle_tick_runs_the_deferred_work() {
    boards_follow_the_idle_tick(distributed().await, false, Some(Duration::from_millis(10))).await;
}
#[tokio::test]
async fn without_an_idle_tick_deferred_work_waits() {
    boards_follow_the_idle_tick(embedded(), true, None).await;
}
