//! One conformance suite for the `Store` trait, run against the embedded
//! store, a real Redis server (started by scripts/test) and the SDK's
//! in-memory `MemStore` that native plugin tests use (its cache checks).

use crate::support;

mod mem_store;

use std::sync::Arc;
use std::time::Duration;

use mdp::store::{EmbeddedStore, Store, StoreError, Topic, Write};

async fn redis() -> Arc<dyn Store> {
    mdp::store::open(&support::redis_url())
        .await
        .expect("redis")
}

fn embedded() -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::new())
}

fn set(key: &str, value: &str, ttl: Option<Duration>) -> Write {
    Write::Set {
        key: key.into(),
        value: value.into(),
        ttl,
    }
}

async fn strings_and_expiry(s: Arc<dyn Store>, p: &str) {
    let (a, b) = (format!("{p}:a"), format!("{p}:b"));
    s.apply(
        &[
            set(&a, "1", None),
            set(&b, "2", Some(Duration::from_secs(100))),
        ],
        false,
    )
    .await
    .unwrap();
    assert_eq!(s.get(&a).await.unwrap().as_deref(), Some("1"));
    assert_eq!(
        s.get_many(&[a.clone(), format!("{p}:none"), b.clone()])
            .await
            .unwrap(),
        vec![Some("1".into()), None, Some("2".into())]
    );
    assert_eq!(s.ttl(&a).await.unwrap(), None);
    let ttl = s.ttl(&b).await.unwrap().unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    // SET without TTL clears an earlier one, as Redis does.
    s.apply(&[set(&b, "3", None)], false).await.unwrap();
    assert_eq!(s.ttl(&b).await.unwrap(), None);
    // Expiry.
    s.apply(&[set(&a, "4", Some(Duration::from_secs(1)))], false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(s.get(&a).await.unwrap(), None, "expired");
}

async fn locks_expire_and_release_by_value(s: Arc<dyn Store>, p: &str) {
    // Short expiry through SET NX PX.
    let lock = format!("{p}:lock");
    assert!(s.set_nx_px(&lock, "me", 300).await.unwrap());
    assert!(!s.set_nx_px(&lock, "you", 300).await.unwrap());
    assert!(!s.del_if_eq(&lock, "you").await.unwrap());
    assert!(s.del_if_eq(&lock, "me").await.unwrap());
    assert!(s.set_nx_px(&lock, "you", 200).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.get(&lock).await.unwrap(), None, "expired");
    assert!(s.set_nx_px(&lock, "again", 200).await.unwrap());
}

async fn lists_are_capped_newest_first(s: Arc<dyn Store>, p: &str) {
    let k = format!("{p}:list");
    for i in 0..5 {
        s.apply(
            &[Write::Push {
                key: k.clone(),
                value: i.to_string().into(),
                max_len: 3,
                ttl: Some(Duration::from_secs(50)),
            }],
            false,
        )
        .await
        .unwrap();
    }
    assert_eq!(s.lrange(&k, 0, -1).await.unwrap(), vec!["4", "3", "2"]);
    assert_eq!(s.lrange(&k, 1, 1).await.unwrap(), vec!["3"]);
    assert_eq!(s.lrange(&k, -1, -1).await.unwrap(), vec!["2"]);
    assert_eq!(s.lrange(&k, 5, 9).await.unwrap(), Vec::<String>::new());
    assert!(s.ttl(&k).await.unwrap().is_some());
}

async fn sorted_sets_keep_the_top_with_redis_ties(s: Arc<dyn Store>, p: &str) {
    let k = format!("{p}:z");
    let members = vec![
        ("a".to_string(), 1.0),
        ("b".into(), 5.0),
        ("c".into(), 3.0),
        ("d".into(), 5.0),
        ("e".into(), 0.5),
    ];
    s.apply(
        &[Write::ZAdd {
            key: k.clone(),
            members,
            keep_top: Some(3),
            ttl: None,
        }],
        false,
    )
    .await
    .unwrap();
    // Highest first; equal scores by member descending (ZREVRANGE).
    assert_eq!(
        s.ztop(&k, 10).await.unwrap(),
        vec![
            ("d".to_string(), 5.0),
            ("b".to_string(), 5.0),
            ("c".to_string(), 3.0)
        ]
    );
    s.apply(
        &[Write::ZAdd {
            key: k.clone(),
            members: vec![("c".into(), 9.0)],
            keep_top: Some(3),
            ttl: None,
        }],
        false,
    )
    .await
    .unwrap();
    assert_eq!(s.ztop(&k, 1).await.unwrap(), vec![("c".to_string(), 9.0)]);
    assert_eq!(s.ztop(&k, 0).await.unwrap(), vec![]);
}

async fn hashes_and_delete(s: Arc<dyn Store>, p: &str) {
    let h = format!("{p}:h");
    s.apply(
        &[Write::HSet {
            key: h.clone(),
            fields: vec![("x".into(), "1".into()), ("y".into(), "2".into())],
            ttl: Some(Duration::from_secs(30)),
        }],
        false,
    )
    .await
    .unwrap();
    s.apply(
        &[Write::HSet {
            key: h.clone(),
            fields: vec![("x".into(), "9".into())],
            ttl: None,
        }],
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        s.hgetall(&h).await.unwrap(),
        vec![
            ("x".to_string(), "9".to_string()),
            ("y".to_string(), "2".to_string())
        ]
    );
    assert!(
        s.ttl(&h).await.unwrap().is_some(),
        "an HSET without ttl keeps the expiry"
    );
    s.apply(
        &[Write::Del {
            keys: vec![h.clone()],
        }],
        false,
    )
    .await
    .unwrap();
    assert_eq!(s.hgetall(&h).await.unwrap(), vec![]);
}

async fn scan_finds_keys_by_prefix(s: Arc<dyn Store>, p: &str) {
    let (h, other) = (format!("{p}:h"), format!("{p}x:h"));
    s.apply(&[set(&h, "1", None), set(&other, "2", None)], false)
        .await
        .unwrap();
    let keys = s.scan_prefix(&format!("{p}:")).await.unwrap();
    assert!(keys.contains(&h));
    assert!(keys.iter().all(|k| k.starts_with(&format!("{p}:"))));
}

async fn wrong_types_are_typed_errors(s: Arc<dyn Store>, p: &str) {
    let k = format!("{p}:str");
    s.apply(&[set(&k, "x", None)], false).await.unwrap();
    let e = s
        .apply(
            &[Write::Push {
                key: k.clone(),
                value: "v".into(),
                max_len: 5,
                ttl: None,
            }],
            true,
        )
        .await
        .expect_err("push onto a string");
    assert!(matches!(e, StoreError::WrongType { .. }), "{e}");
    assert!(matches!(
        s.lrange(&k, 0, -1).await,
        Err(StoreError::WrongType { .. })
    ));
    assert!(matches!(
        s.hgetall(&k).await,
        Err(StoreError::WrongType { .. })
    ));
    assert_eq!(
        s.get(&k).await.unwrap().as_deref(),
        Some("x"),
        "nothing changed"
    );
}

async fn recv(sub: &mut mdp::store::Subscription) -> mdp::store::Message {
    tokio::time::timeout(Duration::from_secs(5), sub.messages.recv())
        .await
        .expect("message")
        .expect("open")
}

async fn pubsub_patterns_order_and_fan_out(s: Arc<dyn Store>, p: &str) {
    let mut pat = s
        .subscribe(&[Topic::Pattern(format!("{p}quote:*"))])
        .await
        .unwrap();
    let mut one = s
        .subscribe(&[Topic::Channel(format!("{p}quote:A"))])
        .await
        .unwrap();
    let mut two = s
        .subscribe(&[Topic::Channel(format!("{p}quote:A"))])
        .await
        .unwrap();
    let publish = |c: String, m: String| Write::Publish {
        channel: c,
        message: m.into(),
    };
    let mut writes: Vec<Write> = (0..50)
        .map(|i| publish(format!("{p}quote:A"), i.to_string()))
        .collect();
    writes.push(publish(format!("{p}quotes:x"), "no".into()));
    writes.push(publish(format!("{p}quote:B"), "b".into()));
    s.apply(&writes, false).await.unwrap();
    for i in 0..50 {
        let m = recv(&mut pat).await;
        assert_eq!(
            (m.channel.as_str(), &*m.payload),
            (format!("{p}quote:A").as_str(), i.to_string().as_str())
        );
        assert_eq!(m.topic, Topic::Pattern(format!("{p}quote:*")));
        assert_eq!(&*recv(&mut one).await.payload, i.to_string());
        assert_eq!(&*recv(&mut two).await.payload, i.to_string());
    }
    let b = recv(&mut pat).await;
    assert_eq!(
        b.channel,
        format!("{p}quote:B"),
        "quotes:x must not match quote:*"
    );
    // Dropping a subscription stops its delivery; the others keep theirs.
    drop(two);
    s.apply(&[publish(format!("{p}quote:A"), "after".into())], false)
        .await
        .unwrap();
    assert_eq!(&*recv(&mut one).await.payload, "after");
}

/// One test per backend and check: the `cache` checks (what a plugin sees
/// through its effects and reads) on every store, the SDK's `MemStore`
/// included; the `host` checks (locks, scans, typed errors, pub/sub) on the
/// host's stores.
macro_rules! suite {
    (cache: $($cache:ident),*; host: $($host:ident),*) => {
        mod embedded_backend {
            $(#[tokio::test] async fn $cache() { super::$cache(super::embedded(), &super::support::unique("c")).await; })*
            $(#[tokio::test] async fn $host() { super::$host(super::embedded(), &super::support::unique("c")).await; })*
        }
        mod redis_backend {
            $(#[tokio::test] async fn $cache() { super::$cache(super::redis().await, &super::support::unique("c")).await; })*
            $(#[tokio::test] async fn $host() { super::$host(super::redis().await, &super::support::unique("c")).await; })*
        }
        mod mem_store_backend {
            $(#[tokio::test] async fn $cache() { super::$cache(super::mem_store::open(), &super::support::unique("c")).await; })*
        }
    };
}

suite!(
    cache:
        strings_and_expiry,
        lists_are_capped_newest_first,
        sorted_sets_keep_the_top_with_redis_ties,
        hashes_and_delete;
    host:
        locks_expire_and_release_by_value,
        scan_finds_keys_by_prefix,
        wrong_types_are_typed_errors,
        pubsub_patterns_order_and_fan_out
);

/// Kill the Redis server under traffic, restart it on the same port: commands
/// fail with `Unavailable` meanwhile, then recover; subscriptions resume.
#[tokio::test]
async fn redis_restart_is_survived() {
    let mut redis = support::PrivateRedis::start().await;
    let store = mdp::store::open(&redis.url()).await.unwrap();
    let mut sub = store
        .subscribe(&[Topic::Pattern("r:*".into())])
        .await
        .unwrap();
    store.apply(&[set("k", "1", None)], false).await.unwrap();
    redis.kill();
    let mut failures = 0;
    for _ in 0..3 {
        if let Err(e) = store.apply(&[set("k", "2", None)], false).await {
            assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
            failures += 1;
        }
    }
    assert!(failures > 0, "writes fail while the server is down");
    redis.restart().await;
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.apply(&[set("k", "3", None)], false).await.is_ok() {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "commands recover after the restart");
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some("3"));
    // The pub/sub connection resubscribes by itself.
    let mut delivered = false;
    for _ in 0..50 {
        store
            .apply(
                &[Write::Publish {
                    channel: "r:x".into(),
                    message: "hi".into(),
                }],
                false,
            )
            .await
            .unwrap();
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(100), sub.messages.recv()).await
        {
            assert_eq!(&*m.payload, "hi");
            delivered = true;
            break;
        }
    }
    assert!(delivered, "subscription resumed after the restart");
}

/// Apply a batch of 200 writes (~200 KB) through a proxy that cuts the
/// connection after 50 KB of it; returns the error and how many of the
/// batch's keys the server holds afterwards.
async fn cut_in_the_middle_of_a_batch(atomic: bool) -> (StoreError, usize) {
    let proxy = support::CutProxy::start(support::url_port(&support::redis_url())).await;
    let store = mdp::store::open(&format!("redis://127.0.0.1:{}/", proxy.port))
        .await
        .unwrap();
    let prefix = support::unique("cut");
    let value = "x".repeat(1000);
    let writes: Vec<Write> = (0..200)
        .map(|i| set(&format!("{prefix}:{i}"), &value, None))
        .collect();
    proxy.cut_after(50_000);
    let error = store
        .apply(&writes, atomic)
        .await
        .expect_err("the connection was cut");
    // Let the server finish whatever it received before the cut.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied = redis().await.scan_prefix(&prefix).await.unwrap().len();
    (error, applied)
}

#[tokio::test]
async fn a_connection_cut_mid_batch_leaves_no_half_applied_atomic_batch() {
    // The control: without MULTI/EXEC the cut leaves part of the batch applied.
    let (_, partial) = cut_in_the_middle_of_a_batch(false).await;
    assert!(
        partial > 0 && partial < 200,
        "the proxy cut mid-batch ({partial} of 200 applied)"
    );
    let (error, applied) = cut_in_the_middle_of_a_batch(true).await;
    assert_eq!(applied, 0, "an atomic batch is all or nothing");
    assert!(error.is_transient(), "a cut connection is retried: {error}");
}
