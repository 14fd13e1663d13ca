//! Store faults and large messages: an outage requeues without applying
//! twice, pipelined batches keep their write order, permanent errors are
//! dead-lettered, an oversized message is split across calls.

use super::*;

/// The store goes away under a running processor: nothing is acked while it
/// is down, messages are requeued and processed once it is back, and each
/// event's effects land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_requeues_and_nothing_is_applied_twice() {
    store_outage(1).await;
}

/// The same with four batches in flight: the batches analyzed after the one
/// that failed are requeued unapplied too, so order and exactly-once hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_store_outage_requeues_and_nothing_is_applied_twice() {
    store_outage(4).await;
}

async fn store_outage(in_flight: usize) {
    let mut redis = support::PrivateRedis::start().await;
    let store = mdp::store::open(&redis.url()).await.unwrap();
    let b = Backends {
        queue: Arc::new(EmbeddedQueue::new()),
        store: store.clone(),
        prefix: support::unique("o"),
    };
    let q = format!("{}-outage", b.prefix);
    declare(&b, &q).await;
    let (stop, task) = spawn(
        &b,
        &q,
        None,
        live_with("tagger", &[("generation", "x")], &b.store, in_flight).await,
    );
    redis.kill();
    let bodies: Vec<Bytes> = (0..100)
        .map(|i| {
            Bytes::from(format!(
                r#"{{"event_type":"T","symbol":"S","id":"{i}","price":1,"size":1,"timestamp":1}}"#
            ))
        })
        .collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.restart().await;
    let store2 = store.clone();
    eventually("all events applied after the store came back", || {
        let store = store2.clone();
        async move {
            store
                .lrange("tagged", 0, -1)
                .await
                .map(|l| l.len() >= 100)
                .unwrap_or(false)
        }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    let ids = support::tagged_ids(&store.lrange("tagged", 0, -1).await.unwrap());
    assert_eq!(
        ids,
        (0..100).collect::<Vec<_>>(),
        "each event's effects exactly once"
    );
    assert!(stats.error > 0, "the outage was seen and counted");
    assert_eq!(stats.acked, 100);
}

/// With several batches in flight (small batches, four in flight), every
/// event is processed once and the store ends with each symbol's newest
/// quote: writes were applied in analysis order.
async fn pipelined_batches_keep_the_order_of_writes(b: Backends) {
    let q = format!("{}-pipelined", b.prefix);
    declare(&b, &q).await;
    const N: usize = 3000;
    let sym = |i: usize| format!("{}P{}", b.prefix, i % 7);
    for chunk in 0..N / 500 {
        let bodies: Vec<Bytes> = (chunk * 500..(chunk + 1) * 500)
            .map(|i| Bytes::from(quote(&sym(i), i)))
            .collect();
        b.queue.publish(&q, &bodies).await.unwrap();
    }
    let config = ProcessorConfig {
        queue: q.clone(),
        batch_size: 16,
        linger: Duration::from_millis(1),
        prefetch: 512,
        ..ProcessorConfig::default()
    };
    let worker = live_with("massive-router", &[], &b.store, 4).await;
    let mut p = Processor::new(config, b.queue.clone(), b.store.clone(), worker);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { p.run(rx).await.expect("processor runs") });
    let queue = b.queue.clone();
    let q2 = q.clone();
    let newest = sym(N - 1);
    let store = b.store.clone();
    eventually("the queue drained and the newest quote written", || {
        let (queue, q, store, key) = (
            queue.clone(),
            q2.clone(),
            store.clone(),
            format!("stocks:quotes:{newest}"),
        );
        async move {
            queue.depth(&q).await.unwrap() == 0
                && store
                    .get(&key)
                    .await
                    .unwrap()
                    .is_some_and(|v| v.contains(&format!("\"timestamp\":{}", N - 1)))
        }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processed, N as u64, "each event analyzed once");
    assert_eq!(stats.acked, N as u64);
    for s in 0..7 {
        let last = (0..N).rev().find(|i| i % 7 == s).unwrap();
        let value = b
            .store
            .get(&format!("stocks:quotes:{}", sym(s)))
            .await
            .unwrap()
            .expect("cached");
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(
            v["timestamp"],
            last as u64,
            "{} holds its newest quote",
            sym(s)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_pipelined_batches_keep_the_order_of_writes() {
    pipelined_batches_keep_the_order_of_writes(embedded()).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_pipelined_batches_keep_the_order_of_writes() {
    pipelined_batches_keep_the_order_of_writes(distributed().await).await;
}

fn tagged_trade(i: usize) -> String {
    format!(r#"{{"event_type":"T","symbol":"S","id":"{i}","price":1,"size":1,"timestamp":1}}"#)
}

/// A store error that retrying cannot fix (the plugin pushes onto a key that
/// holds a string) dead-letters the batch: no requeue loop, nothing acked.
async fn permanent_store_errors_are_dead_lettered(b: Backends) {
    let q = format!("{}-wrongtype", b.prefix);
    let dlq = format!("{q}.dlq");
    declare(&b, &dlq).await;
    b.queue
        .declare(&QueueSpec {
            name: q.clone(),
            dead_letter: Some(dlq.clone()),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    b.store
        .apply(
            &[mdp::store::Write::Set {
                key: "tagged".into(),
                value: "not a list".into(),
                ttl: None,
            }],
            true,
        )
        .await
        .unwrap();
    let bodies: Vec<Bytes> = (0..5).map(|i| Bytes::from(tagged_trade(i))).collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    let (stop, task) = spawn(
        &b,
        &q,
        Some(dlq.clone()),
        live("tagger", &[], &b.store).await,
    );
    let queue = b.queue.clone();
    eventually("the batch dead-lettered", || {
        let queue = queue.clone();
        let dlq = dlq.clone();
        async move { queue.depth(&dlq).await.unwrap() == 5 }
    })
    .await;
    // Give a requeue loop, if there were one, time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.dead_lettered, 5, "{stats:?}");
    assert_eq!(stats.error, 0, "never requeued: {stats:?}");
    assert_eq!(stats.acked, 0, "{stats:?}");
    assert_eq!(b.queue.depth(&q).await.unwrap(), 0);
}

#[tokio::test]
async fn embedded_permanent_store_errors_are_dead_lettered() {
    permanent_store_errors_are_dead_lettered(embedded()).await;
}

#[tokio::test]
async fn distributed_permanent_store_errors_are_dead_lettered() {
    let redis = support::PrivateRedis::start().await;
    let b = Backends {
        store: mdp::store::open(&redis.url()).await.unwrap(),
        ..distributed().await
    };
    permanent_store_errors_are_dead_lettered(b).await;
}

/// One message carrying more events than the plugin's `max_batch` (what
/// `mdp up`'s frame-batched listener publishes) is analyzed in calls of at
/// most `max_batch` events and acknowledged once.
#[tokio::test]
async fn a_message_over_max_batch_is_split_across_calls_and_acked_once() {
    let b = embedded();
    let q = format!("{}-frames", b.prefix);
    declare(&b, &q).await;
    let mut options = LoadOptions::default();
    options.limits.max_batch = 100;
    let worker = live_loaded("tagger", &[], &b.store, options).await;
    let body = format!(
        "[{}]",
        (0..250).map(tagged_trade).collect::<Vec<_>>().join(",")
    );
    b.queue.publish(&q, &[Bytes::from(body)]).await.unwrap();
    let (stop, task) = spawn(&b, &q, None, worker);
    let store = b.store.clone();
    eventually("all 250 events tagged", || {
        let store = store.clone();
        async move { store.lrange("tagged", 0, -1).await.unwrap().len() >= 250 }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    let ids = support::tagged_ids(&b.store.lrange("tagged", 0, -1).await.unwrap());
    assert_eq!(ids, (0..250).collect::<Vec<_>>());
    assert_eq!((stats.acked, stats.processed, stats.error), (1, 250, 0));
}
