//! One conformance suite for the `Queue` trait, run against the embedded
//! broker and against a real RabbitMQ server (started by scripts/test).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mdp::queue::{Consumer, Delivery, EmbeddedQueue, Queue, QueueError, QueueSpec};

async fn rabbit() -> Arc<dyn Queue> {
    mdp::queue::open(&support::amqp_url())
        .await
        .expect("rabbitmq")
}

fn embedded() -> Arc<dyn Queue> {
    Arc::new(EmbeddedQueue::new())
}

fn spec(name: &str) -> QueueSpec {
    QueueSpec {
        name: name.into(),
        ..QueueSpec::default()
    }
}

fn bodies(range: std::ops::Range<usize>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("{{\"n\":{i}}}")))
        .collect()
}

async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("a delivery")
        .expect("open")
        .expect("ok")
}

async fn nothing_within(c: &mut Box<dyn Consumer>, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), c.next())
        .await
        .is_err()
}

async fn declare_is_idempotent_and_conflicts_are_visible(q: Arc<dyn Queue>, name: &str) {
    let with_ttl = QueueSpec {
        message_ttl: Some(Duration::from_millis(5000)),
        ..spec(name)
    };
    q.declare(&with_ttl).await.unwrap();
    q.declare(&with_ttl).await.unwrap();
    let other = QueueSpec {
        message_ttl: Some(Duration::from_millis(7000)),
        ..spec(name)
    };
    assert!(matches!(
        q.declare(&other).await,
        Err(QueueError::Declaration { .. })
    ));
}

async fn order_prefetch_and_ack(q: Arc<dyn Queue>, name: &str) {
    q.declare(&spec(name)).await.unwrap();
    q.publish(name, &bodies(0..5)).await.unwrap();
    let mut c = q.consume(name, 2).await.unwrap();
    let a = next(&mut c).await;
    let b = next(&mut c).await;
    assert_eq!(
        (&a.body[..], &b.body[..]),
        (&b"{\"n\":0}"[..], &b"{\"n\":1}"[..])
    );
    assert!(
        nothing_within(&mut c, 300).await,
        "prefetch 2 holds back the third"
    );
    c.acker().ack(b.tag, true).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(&d.body[..], b"{\"n\":2}");
    assert!(!d.redelivered);
    // nack with requeue: delivered again, flagged as redelivered; nothing lost.
    c.acker().nack(d.tag, false, true).await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..3 {
        let m = next(&mut c).await;
        c.acker().ack(m.tag, false).await.unwrap();
        rest.push((String::from_utf8(m.body.to_vec()).unwrap(), m.redelivered));
    }
    rest.sort();
    assert_eq!(
        rest,
        vec![
            ("{\"n\":2}".to_string(), true),
            ("{\"n\":3}".to_string(), false),
            ("{\"n\":4}".to_string(), false)
        ]
    );
    assert!(nothing_within(&mut c, 200).await);
}

async fn reject_dead_letters(q: Arc<dyn Queue>, name: &str) {
    let dlq = format!("{name}.dlq");
    q.declare(&spec(&dlq)).await.unwrap();
    q.declare(&QueueSpec {
        dead_letter: Some(dlq.clone()),
        ..spec(name)
    })
    .await
    .unwrap();
    q.publish(name, &[Bytes::from_static(b"not json at all")])
        .await
        .unwrap();
    let mut c = q.consume(name, 10).await.unwrap();
    let m = next(&mut c).await;
    assert_eq!(
        &m.body[..],
        b"not json at all",
        "bodies pass through unchanged"
    );
    c.acker().reject(m.tag, false).await.unwrap();
    let mut d = q.consume(&dlq, 10).await.unwrap();
    assert_eq!(&next(&mut d).await.body[..], b"not json at all");
}

async fn ttl_expires_messages(q: Arc<dyn Queue>, name: &str) {
    q.declare(&QueueSpec {
        message_ttl: Some(Duration::from_millis(200)),
        ..spec(name)
    })
    .await
    .unwrap();
    q.publish(name, &bodies(0..3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(q.depth(name).await.unwrap(), 0);
    let mut c = q.consume(name, 10).await.unwrap();
    assert!(nothing_within(&mut c, 300).await);
}

async fn competing_consumers_and_redelivery(q: Arc<dyn Queue>, name: &str) {
    q.declare(&spec(name)).await.unwrap();
    // Unacked messages of a consumer that goes away are redelivered.
    q.publish(name, &bodies(0..3)).await.unwrap();
    {
        let mut gone = q.consume(name, 10).await.unwrap();
        for _ in 0..3 {
            next(&mut gone).await;
        }
    }
    let mut seen = std::collections::HashSet::new();
    let (mut a, mut b) = (
        q.consume(name, 1).await.unwrap(),
        q.consume(name, 1).await.unwrap(),
    );
    q.publish(name, &bodies(3..40)).await.unwrap();
    let (mut from_a, mut from_b) = (0, 0);
    while seen.len() < 40 {
        tokio::select! {
            m = a.next() => { let m = m.unwrap().unwrap(); assert!(seen.insert(m.body.clone()), "duplicate"); from_a += 1; a.acker().ack(m.tag, false).await.unwrap(); }
            m = b.next() => { let m = m.unwrap().unwrap(); assert!(seen.insert(m.body.clone()), "duplicate"); from_b += 1; b.acker().ack(m.tag, false).await.unwrap(); }
            _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("only {} of 40 delivered", seen.len()),
        }
    }
    assert!(
        from_a > 0 && from_b > 0,
        "both consumers took work ({from_a}/{from_b})"
    );
    assert_eq!(q.depth(name).await.unwrap(), 0);
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod embedded_backend {
            $(#[tokio::test] async fn $name() { super::$name(super::embedded(), &super::support::unique("cq")).await; })*
        }
        mod rabbitmq_backend {
            $(#[tokio::test] async fn $name() { super::$name(super::rabbit().await, &super::support::unique("cq")).await; })*
        }
    };
}

suite!(
    declare_is_idempotent_and_conflicts_are_visible,
    order_prefetch_and_ack,
    reject_dead_letters,
    ttl_expires_messages,
    competing_consumers_and_redelivery
);

#[test]
fn ttl_is_encoded_like_the_python_seed() {
    use mdp::queue::rabbitmq_ttl_value as v;
    assert_eq!(format!("{:?}", v(5000)), "ShortInt(5000)");
    assert_eq!(format!("{:?}", v(900_000)), "LongInt(900000)");
}

/// Restart a private RabbitMQ under traffic: publishes fail with
/// `Unavailable` while it is down, then publishing and consuming recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restart_is_survived() {
    // A private broker through the same script the test command uses.
    let mut rabbit = support::PrivateRabbit::start();
    let q = mdp::queue::open(&rabbit.url).await.unwrap();
    q.declare(&spec("restart")).await.unwrap();
    q.publish("restart", &bodies(0..10)).await.unwrap();
    // Kill it hard, mid-traffic.
    rabbit.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = q.publish("restart", &bodies(10..11)).await;
    assert!(matches!(down, Err(QueueError::Unavailable(_))), "{down:?}");
    // Same port again; the queue is re-declared by the client on reconnect.
    rabbit.restart();
    let mut recovered = false;
    for _ in 0..60 {
        if q.publish("restart", &bodies(100..101)).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "publishing recovers after the restart");
    let mut c = q.consume("restart", 10).await.unwrap();
    let m = next(&mut c).await;
    assert_eq!(&m.body[..], b"{\"n\":100}");
}

#[tokio::test]
async fn embedded_queue_expires_messages_without_a_consumer() {
    let q = EmbeddedQueue::new();
    q.declare(&QueueSpec {
        message_ttl: Some(Duration::from_millis(300)),
        ..spec("unconsumed")
    })
    .await
    .unwrap();
    // Published for 2 s at ~1,000 messages per 100 ms, nothing consuming and
    // nothing asking for the depth: memory holds at most about TTL × rate
    // plus one sweep interval, not everything ever published.
    let mut most = 0;
    for round in 0..20 {
        q.publish("unconsumed", &bodies(round * 1000..round * 1000 + 1000))
            .await
            .unwrap();
        most = most.max(q.held("unconsumed"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most <= 10_000, "held {most} of 20,000 published");
    // Once publishing stops, the rest expires on time without being touched.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(q.held("unconsumed"), 0);
}
