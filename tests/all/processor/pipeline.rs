//! The processing pipeline on the embedded and the distributed backends: seed
//! keys, raw bodies, dead letters, one delivery per event across processors,
//! shutdown with a batch in flight.

use super::*;

async fn router_writes_and_publishes_the_seed_keys(b: Backends) {
    let q = format!("{}-quotes", b.prefix);
    declare(&b, &q).await;
    let mut sub = b
        .store
        .subscribe(&[Topic::Pattern(format!("stocks:quotes:{}*", b.prefix))])
        .await
        .unwrap();
    let sym = |i: usize| format!("{}{}", b.prefix, i % 5);
    let bodies: Vec<Bytes> = (0..200).map(|i| Bytes::from(quote(&sym(i), i))).collect();
    // Half as single-event messages, half as one frame-batch array message.
    b.queue.publish(&q, &bodies[..100]).await.unwrap();
    let array = format!(
        "[{}]",
        bodies[100..]
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    );
    b.queue.publish(&q, &[Bytes::from(array)]).await.unwrap();

    let (stop, task) = spawn(&b, &q, None, live("massive-router", &[], &b.store).await);
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received < 200 && Instant::now() < deadline {
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), sub.messages.recv()).await
        {
            received += 1;
        }
    }
    assert_eq!(received, 200, "every event is published once");
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processed, 200);
    // The seed's `published`: one result per routed event (its SET and
    // PUBLISH are one result); the store writes are counted apart.
    assert_eq!((stats.published, stats.store_writes), (200, 400));
    for s in 0..5 {
        let key = format!("stocks:quotes:{}", sym(s));
        let last = 195 + s;
        let value = b.store.get(&key).await.unwrap().expect("cached");
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(v["timestamp"], last as u64, "{key} holds the newest quote");
        let ttl = b.store.ttl(&key).await.unwrap().expect("has a ttl");
        assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    }
    assert_eq!(b.queue.depth(&q).await.unwrap(), 0);
}

/// The seed's listener in raw mode publishes frames as JSON strings on
/// `unknown`; its processors cache them under `unknown:<ts>` (not a decoding
/// error), and so does mdp.
async fn raw_string_bodies_on_unknown_are_cached_not_rejected(b: Backends) {
    let q = format!("{}-unknown", b.prefix);
    declare(&b, &q).await;
    let mut sub = b
        .store
        .subscribe(&[Topic::Channel("unknown".into())])
        .await
        .unwrap();
    let raw = format!(r#""[{{\"ev\":\"XQ\",\"sym\":\"{}\"}}]""#, b.prefix);
    b.queue
        .publish(&q, &[Bytes::from(raw.clone())])
        .await
        .unwrap();
    let (stop, task) = spawn(&b, &q, None, live("massive-router", &[], &b.store).await);
    let message = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.messages.recv())
            .await
            .expect("published on unknown")
            .expect("subscription open");
        if m.payload.contains(&b.prefix) {
            break m;
        }
    };
    assert_eq!(
        &*message.payload,
        raw.as_str(),
        "the JSON string, byte for byte"
    );
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!((stats.processed, stats.decoding_error), (1, 0));
    let cached = b.store.scan_prefix("unknown:").await.unwrap();
    let mut found = false;
    for key in cached {
        found |= b.store.get(&key).await.unwrap().as_deref() == Some(raw.as_str());
    }
    assert!(found, "cached under unknown:<ts>");
}

async fn poison_events_are_dead_lettered_and_the_rest_applied(b: Backends) {
    let q = format!("{}-trades", b.prefix);
    let dlq = format!("{q}.dlq");
    b.queue
        .declare(&QueueSpec {
            name: dlq.clone(),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    b.queue
        .declare(&QueueSpec {
            name: q.clone(),
            dead_letter: Some(dlq.clone()),
            ..QueueSpec::default()
        })
        .await
        .unwrap();
    let trade = |s: &str| {
        Bytes::from(format!(
            r#"{{"event_type":"T","symbol":"{s}","price":1,"size":1,"timestamp":1}}"#
        ))
    };
    let good = format!("{}G", b.prefix);
    b.queue
        .publish(
            &q,
            &[
                trade(&good),
                trade("POISON"),
                Bytes::from_static(b"not json"),
                trade(&format!("{good}2")),
            ],
        )
        .await
        .unwrap();
    let (stop, task) = spawn(
        &b,
        &q,
        Some(dlq.clone()),
        live("hostile", &[("mode", "trap")], &b.store).await,
    );
    let store = b.store.clone();
    let key = format!("echo:{good}2");
    eventually("good events applied", || {
        let store = store.clone();
        let key = key.clone();
        async move { store.get(&key).await.unwrap().is_some() }
    })
    .await;
    let queue = b.queue.clone();
    let dlq2 = dlq.clone();
    eventually("poison and undecodable messages dead-lettered", || {
        let queue = queue.clone();
        let dlq = dlq2.clone();
        async move { queue.depth(&dlq).await.unwrap() == 2 }
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.processing_error, 1);
    assert_eq!(stats.decoding_error, 1);
    assert!(
        b.store
            .get(&format!("echo:{good}"))
            .await
            .unwrap()
            .is_some()
    );
}

async fn two_processors_share_a_queue_each_event_once(b: Backends) {
    let q = format!("{}-shared", b.prefix);
    declare(&b, &q).await;
    let (s1, t1) = spawn(
        &b,
        &q,
        None,
        live("tagger", &[("generation", "a")], &b.store).await,
    );
    let (s2, t2) = spawn(
        &b,
        &q,
        None,
        live("tagger", &[("generation", "b")], &b.store).await,
    );
    const N: usize = 2000;
    for chunk in 0..N / 100 {
        let bodies: Vec<Bytes> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| Bytes::from(format!(r#"{{"event_type":"T","symbol":"S","id":"{i}","price":1,"size":1,"timestamp":1}}"#)))
            .collect();
        b.queue.publish(&q, &bodies).await.unwrap();
    }
    let store = b.store.clone();
    eventually("all events tagged", || {
        let store = store.clone();
        async move { store.lrange("tagged", 0, -1).await.unwrap().len() >= N }
    })
    .await;
    s1.send(true).unwrap();
    s2.send(true).unwrap();
    let (a, bb) = (t1.await.unwrap(), t2.await.unwrap());
    let ids = support::tagged_ids(&b.store.lrange("tagged", 0, -1).await.unwrap());
    assert_eq!(ids, (0..N).collect::<Vec<_>>(), "each event exactly once");
    assert_eq!(a.processed + bb.processed, N as u64);
    assert!(
        a.processed > 0 && bb.processed > 0,
        "both instances took work: {} / {}",
        a.processed,
        bb.processed
    );
    b.store
        .apply(
            &[mdp::store::Write::Del {
                keys: vec!["tagged".into(), "tagger:seen".into()],
            }],
            false,
        )
        .await
        .unwrap();
}

async fn shutdown_finishes_the_batch_in_flight(b: Backends) {
    let q = format!("{}-drain", b.prefix);
    declare(&b, &q).await;
    let bodies: Vec<Bytes> = (0..500)
        .map(|i| Bytes::from(quote(&format!("{}D", b.prefix), i)))
        .collect();
    b.queue.publish(&q, &bodies).await.unwrap();
    let (stop, task) = spawn(&b, &q, None, live("massive-router", &[], &b.store).await);
    tokio::time::sleep(Duration::from_millis(30)).await;
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops promptly")
        .unwrap();
    // Whatever was processed was acked; the rest is queued again, nothing lost.
    let queue = b.queue.clone();
    eventually("unprocessed messages back in the queue", || {
        let queue = queue.clone();
        let q = q.clone();
        async move { stats.processed + queue.depth(&q).await.unwrap() == 500 }
    })
    .await;
}

#[tokio::test]
async fn embedded_router_writes_and_publishes_the_seed_keys() {
    router_writes_and_publishes_the_seed_keys(embedded()).await;
}
#[tokio::test]
async fn distributed_router_writes_and_publishes_the_seed_keys() {
    router_writes_and_publishes_the_seed_keys(distributed().await).await;
}
#[tokio::test]
async fn embedded_raw_string_bodies_on_unknown_are_cached() {
    raw_string_bodies_on_unknown_are_cached_not_rejected(embedded()).await;
}
#[tokio::test]
async fn distributed_raw_string_bodies_on_unknown_are_cached() {
    raw_string_bodies_on_unknown_are_cached_not_rejected(distributed().await).await;
}

#[tokio::test]
async fn embedded_poison_events_are_dead_lettered() {
    poison_events_are_dead_lettered_and_the_rest_applied(embedded()).await;
}
#[tokio::test]
async fn distributed_poison_events_are_dead_lettered() {
    poison_events_are_dead_lettered_and_the_rest_applied(distributed().await).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_two_processors_share_a_queue_each_event_once() {
    two_processors_share_a_queue_each_event_once(embedded()).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_two_processors_share_a_queue_each_event_once() {
    two_processors_share_a_queue_each_event_once(distributed().await).await;
}
#[tokio::test]
async fn embedded_shutdown_finishes_the_batch_in_flight() {
    shutdown_finishes_the_batch_in_flight(embedded()).await;
}
#[tokio::test]
async fn distributed_shutdown_finishes_the_batch_in_flight() {
    shutdown_finishes_the_batch_in_flight(distributed().await).await;
}
