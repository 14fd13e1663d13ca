//! Companions: a second analyzer on a processor's queue sees every event of
//! every batch once, beside the primary, on both backends; a companion that
//! traps on everything costs the primary nothing.

use super::*;
use mdp::process::Companion;

/// A trade with an `id` (which the `tagger` fixture records).
fn trade(sym: &str, id: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"event_type":"T","symbol":"{sym}","price":1.5,"size":10,"id":"{id}","timestamp":{id}}}"#
    ))
}

/// The ids the companion tagged onto its list `tag`.
async fn tagged(b: &Backends, tag: &str) -> Vec<usize> {
    support::tagged_ids(&b.store.lrange(tag, 0, -1).await.unwrap())
}

/// Run the router with a tagger companion (`trap`: every call traps) over
/// 120 trades, half single-event messages and half in frame arrays of 10.
async fn run_with_companion(b: &Backends, tag: &str, trap: bool) -> ProcessorStats {
    let q = format!("{}-trades", b.prefix);
    declare(b, &q).await;
    let sym = format!("{}S", b.prefix);
    let singles: Vec<Bytes> = (0..60).map(|i| trade(&sym, i)).collect();
    b.queue.publish(&q, &singles).await.unwrap();
    let frames: Vec<Bytes> = (60..120)
        .collect::<Vec<usize>>()
        .chunks(10)
        .map(|c| {
            let parts: Vec<String> = c
                .iter()
                .map(|i| String::from_utf8_lossy(&trade(&sym, *i)).into_owned())
                .collect();
            Bytes::from(format!("[{}]", parts.join(",")))
        })
        .collect();
    b.queue.publish(&q, &frames).await.unwrap();

    let trap = trap.to_string();
    let config = [("list", tag), ("generation", "companion"), ("trap", &trap)];
    let companion = live("tagger", &config, &b.store).await;
    let config = ProcessorConfig {
        queue: q.clone(),
        batch_size: 16,
        linger: Duration::from_millis(3),
        ..ProcessorConfig::default()
    };
    let primary = live("massive-router", &[], &b.store).await;
    let mut p = Processor::new(config, b.queue.clone(), b.store.clone(), primary)
        .with_companions(vec![Companion::new(companion, b.store.clone())]);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { p.run(rx).await.expect("processor runs") });
    eventually("the queue drained", || async {
        b.queue.depth(&q).await.unwrap() == 0
    })
    .await;
    if !trap.parse::<bool>().unwrap() {
        eventually("the companion's writes", || async {
            tagged(b, tag).await.len() >= 120
        })
        .await;
    }
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    let key = format!("stocks:trades:{sym}");
    let last: serde_json::Value =
        serde_json::from_str(&b.store.get(&key).await.unwrap().expect("router wrote")).unwrap();
    assert_eq!(
        last["id"], "119",
        "the primary's writes hold the newest trade"
    );
    stats
}

async fn a_companion_sees_every_event_once(b: Backends) {
    let tag = support::unique("companion");
    let stats = run_with_companion(&b, &tag, false).await;
    assert_eq!(stats.processed, 120);
    assert_eq!(tagged(&b, &tag).await, (0..120).collect::<Vec<_>>());
}

#[tokio::test]
async fn embedded_a_companion_sees_every_event_once() {
    a_companion_sees_every_event_once(embedded()).await;
}

#[tokio::test]
async fn distributed_a_companion_sees_every_event_once() {
    a_companion_sees_every_event_once(distributed().await).await;
}

#[tokio::test]
async fn a_companion_that_traps_costs_the_primary_nothing() {
    let b = embedded();
    let tag = support::unique("broken");
    let stats = run_with_companion(&b, &tag, true).await;
    assert_eq!(stats.processed, 120, "every event reached the primary");
    assert_eq!((stats.dead_lettered, stats.processing_error), (0, 0));
    assert_eq!(tagged(&b, &tag).await, Vec::<usize>::new());
}
