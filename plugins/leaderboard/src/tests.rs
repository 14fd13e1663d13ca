use super::*;
use mdp_sdk::testing::{Harness, resolve_body, with_host};
use serde_json::json;

/// Run a second replica on the shared test store, applying its effects.
fn feed(b: &mut Leaderboard, batch: &[Event]) -> Vec<Effect> {
    let effects = b.analyze(batch).unwrap();
    with_host(|h| {
        for e in &effects {
            h.store.apply(e, &|body| resolve_body(body, batch));
        }
    });
    effects
}

fn agg(sym: &str, close: f64, av: u64) -> Event {
    Event::Aggregate(Aggregate {
        window: AggWindow::Second,
        symbol: sym.into(),
        volume: 100,
        accumulated_volume: av,
        official_open_price: 10.0,
        vwap: close,
        open: close,
        close,
        high: close,
        low: close,
        aggregate_vwap: close,
        average_size: 10.0,
        start_ms: 1,
        end_ms: 2,
        otc: false,
    })
}

/// AAA's ticker snapshot: previous close 10, volume 5,000.
const AAA_SNAPSHOT: &str = r#"{"prevDay":{"c":10.0,"v":5000,"vw":9.9,"o":9.5,"h":10.5,"l":9.0}}"#;

// 2026-03-09 14:00 UTC = 10:00 EDT (the day after the DST change).
const MORNING: u64 = 1_773_064_800_000_000;
const SEC: u64 = 1_000_000;

fn published(effects: &[Effect], prefix: &str) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(p) if p.channel.starts_with(prefix) => Some(p.channel.clone()),
            _ => None,
        })
        .collect()
}

fn dels(effects: &[Effect]) -> Vec<Vec<String>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Del(k) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn python_float_text_matches_the_seed() {
    for (v, text) in [
        (11.0, "11.0"),
        (0.5, "0.5"),
        (78.08, "78.08"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (1.5e16, "1.5e+16"),
        (123456789012345.0, "123456789012345.0"),
        (-2.25, "-2.25"),
        (0.0, "0.0"),
    ] {
        assert_eq!(py_float(v), text, "{v}");
    }
    assert_eq!(seed_value("1e-05"), json!("1e-05"));
    assert_eq!(seed_value("12"), json!(12));
    assert_eq!(seed_value("12.5"), json!(12.5));
}

#[test]
fn quotes_use_reference_data_and_boards_publish_once_per_window() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.host(|h| {
        h.reference
            .snapshots
            .insert("AAA".into(), AAA_SNAPSHOT.into());
        h.reference.avg_volumes.insert("AAA".into(), 1000.0);
    });
    h.init(&[]).unwrap();
    let effects = h
        .analyze(vec![agg("AAA", 11.0, 2000), agg("BBB", 5.0, 100)])
        .unwrap();
    let quote: Value =
        serde_json::from_str(&h.host(|h| h.store.get("quote:AAA")).unwrap()).unwrap();
    assert_eq!(quote.as_object().unwrap().len(), 26);
    assert!((quote["pct_change"].as_f64().unwrap() - 10.0).abs() < 1e-9);
    assert_eq!(quote["relative_volume"].as_f64().unwrap(), 2.0);
    assert_eq!(quote["prev_day_close"].as_f64().unwrap(), 10.0);
    // The seed's hash is written with Python's text for numbers.
    let hash = h.host(|h| h.store.hgetall("symbol:AAA:data"));
    assert_eq!(hash.len(), 26);
    assert!(hash.contains(&("close".to_string(), "11.0".to_string())));
    assert!(hash.contains(&("accumulated_volume".to_string(), "2000".to_string())));
    let board: Value =
        serde_json::from_str(&h.host(|h| h.store.get("scanners:top_gappers")).unwrap()).unwrap();
    assert_eq!(board[0]["symbol"], "AAA");
    assert_eq!(board[0]["rank"], 1);
    assert_eq!(
        published(&effects, "scanners:"),
        vec![
            "scanners:top_volume",
            "scanners:top_gappers",
            "scanners:top_gainers"
        ]
    );
    // Within the same second the election is lost: only quotes.
    h.set_clock_us(MORNING + SEC / 2);
    let again = h.analyze(vec![agg("AAA", 12.0, 2100)]).unwrap();
    assert!(published(&again, "scanners:").is_empty());
    assert_eq!(published(&again, "quote:"), vec!["quote:AAA"]);
    // A second later the boards are published again, from the store.
    h.set_clock_us(MORNING + 2 * SEC);
    let later = h.analyze(vec![agg("CCC", 1.0, 1)]).unwrap();
    assert_eq!(published(&later, "scanners:").len(), 3);
    let board: Value =
        serde_json::from_str(&h.host(|h| h.store.get("scanners:top_volume")).unwrap()).unwrap();
    let symbols: Vec<&str> = board
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, vec!["AAA", "BBB", "CCC"]);
    assert_eq!(board[0]["accumulated_volume"], 2100);
}

#[test]
fn symbol_hashes_are_refreshed_once_per_second_and_never_left_stale() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.init(&[]).unwrap();
    let hset_keys = |e: &[Effect]| -> Vec<String> {
        e.iter()
            .filter_map(|e| match e {
                Effect::Hset(h) => Some(h.key.clone()),
                _ => None,
            })
            .collect()
    };
    let hash_volume = || {
        with_host(|h| h.store.hgetall("symbol:AAA:data"))
            .into_iter()
            .find(|(k, _)| k == "accumulated_volume")
            .map(|(_, v)| v)
    };
    let first = h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    assert_eq!(hset_keys(&first), vec!["symbol:AAA:data"]);
    // Half a second later: the quote goes out, the hash waits.
    h.set_clock_us(MORNING + SEC / 2);
    let second = h.analyze(vec![agg("AAA", 12.0, 2100)]).unwrap();
    assert_eq!(published(&second, "quote:"), vec!["quote:AAA"]);
    assert!(hset_keys(&second).is_empty());
    assert_eq!(hash_volume().as_deref(), Some("2000"));
    // The next batch after the second is up writes it, even without AAA.
    h.set_clock_us(MORNING + 1_100_000);
    let third = h.analyze(vec![agg("BBB", 5.0, 10)]).unwrap();
    assert_eq!(
        hset_keys(&third),
        vec!["symbol:AAA:data", "symbol:BBB:data"]
    );
    assert_eq!(hash_volume().as_deref(), Some("2100"));
}

#[test]
fn bad_events_are_rejected_not_trapped() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.init(&[]).unwrap();
    let effects = h
        .analyze(vec![
            agg("AAA", 0.0, 1),
            Event::Other(Raw {
                kind: "A".into(),
                json: "{}".into(),
            }),
            agg("BBB", f64::NAN, 1),
        ])
        .unwrap();
    let rejects: Vec<u32> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reject(r) => Some(r.index),
            _ => None,
        })
        .collect();
    assert_eq!(rejects, vec![0, 1, 2]);
    assert!(published(&effects, "").is_empty());
}

#[test]
fn unavailable_reference_data_falls_back_and_is_retried_later() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.host(|h| h.reference.unavailable = Some("REST down".into()));
    h.init(&[]).unwrap();
    let effects = h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    assert_eq!(published(&effects, "quote:"), vec!["quote:AAA"]);
    let quote: Value =
        serde_json::from_str(&h.host(|h| h.store.get("quote:AAA")).unwrap()).unwrap();
    assert_eq!(quote["prev_day_close"].as_f64(), Some(11.0));
    assert_eq!(quote["pct_change"].as_f64(), Some(0.0));
    assert_eq!(h.host(|h| h.counters["lba.reference_unavailable"]), 1);
    // The API recovers; within 30 s the symbol is not asked again...
    h.host(|h| {
        h.reference.unavailable = None;
        h.reference
            .snapshots
            .insert("AAA".into(), r#"{"prevDay":{"c":10.0}}"#.into());
    });
    h.set_clock_us(MORNING + 10 * SEC);
    h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    let quote: Value =
        serde_json::from_str(&h.host(|h| h.store.get("quote:AAA")).unwrap()).unwrap();
    assert_eq!(quote["prev_day_close"].as_f64(), Some(11.0));
    // ...after that it is.
    h.set_clock_us(MORNING + 31 * SEC);
    h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    let quote: Value =
        serde_json::from_str(&h.host(|h| h.store.get("quote:AAA")).unwrap()).unwrap();
    assert_eq!(quote["prev_day_close"].as_f64(), Some(10.0));
}

#[test]
fn a_known_zero_is_kept_not_asked_again() {
    // Seed bug: a cached 0 (no average volume) read as a miss, so the
    // API was asked on every event. Here 0 is an answer, kept for the day.
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.init(&[]).unwrap();
    h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    h.host(|h| {
        h.reference.avg_volumes.insert("AAA".into(), 1000.0);
    });
    h.set_clock_us(MORNING + 60 * SEC);
    h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    let quote: Value =
        serde_json::from_str(&h.host(|h| h.store.get("quote:AAA")).unwrap()).unwrap();
    assert_eq!(quote["avg_volume"].as_f64(), Some(0.0));
    assert_eq!(quote["relative_volume"].as_f64(), Some(0.0));
    assert!(!h.host(|h| h.counters.contains_key("lba.reference_unavailable")));
}

#[test]
fn every_replica_resets_at_the_day_boundary_but_the_store_once() {
    let mut a = Harness::<Leaderboard>::new().at_us(MORNING);
    a.init(&[]).unwrap();
    a.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    // Replica b shares the same (thread-local) store.
    let mut b = Leaderboard::init(Config::default(), None).unwrap();
    feed(&mut b, &[agg("BBB", 11.0, 2000)]);
    assert!(b.state.open_price.contains_key("BBB"));
    // 2026-03-10 04:00:01 EDT: a new trading day for both.
    let next_day = 1_773_129_601 * SEC;
    a.set_clock_us(next_day);
    let ea = a.analyze(vec![agg("CCC", 11.0, 10)]).unwrap();
    let eb = feed(&mut b, &[agg("DDD", 11.0, 10)]);
    assert_eq!(
        dels(&ea).len() + dels(&eb).len(),
        1,
        "the shared boards are cleared once"
    );
    assert_eq!(
        b.state.open_price.keys().collect::<Vec<_>>(),
        vec!["DDD"],
        "replica b forgot yesterday too"
    );
    assert_eq!(
        with_host(|h| h.store.get(DAY_KEY)),
        Some("1773129600".to_string())
    );
}

#[test]
fn the_seed_midnight_reset_does_not_fire_before_4am() {
    // Seed bug: the anchor used today's date, so 00:30 ET started a new day.
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.init(&[]).unwrap();
    h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    // 2026-03-10 00:30 EDT = 04:30 UTC.
    h.set_clock_us(1_773_117_000 * SEC);
    let effects = h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    assert!(dels(&effects).is_empty(), "no reset at midnight");
    // 03:59:59 EDT: still none; 04:00:00 EDT: the reset.
    h.set_clock_us(1_773_129_599 * SEC);
    assert!(dels(&h.analyze(vec![agg("AAA", 11.0, 1)]).unwrap()).is_empty());
    h.set_clock_us(1_773_129_600 * SEC);
    assert_eq!(
        dels(&h.analyze(vec![agg("AAA", 11.0, 1)]).unwrap()).len(),
        1
    );
}

#[test]
fn open_baselines_reset_at_0930_on_every_replica() {
    // 2026-03-09 09:00 EDT = 13:00 UTC: pre-market.
    let pre = 1_773_061_200 * SEC;
    let mut a = Harness::<Leaderboard>::new().at_us(pre);
    a.init(&[]).unwrap();
    let mut b = Leaderboard::init(Config::default(), None).unwrap();
    let e = a.analyze(vec![agg("AAA", 10.0, 1)]).unwrap();
    // The pre-market baseline expires at 09:30 (30 minutes).
    assert!(e.iter().any(|e| matches!(e, Effect::Put(p)
        if p.key == "symbol:AAA:open_price" && p.ttl_secs == Some(1800))));
    // Replica b reads a's baseline from the store.
    feed(&mut b, &[agg("AAA", 11.0, 2)]);
    assert_eq!(b.state.open_price.get("AAA"), Some(&10.0));
    // 09:31: both start over from their next bar; gainers cleared once.
    let open = 1_773_063_060 * SEC;
    a.set_clock_us(open);
    let ea = a.analyze(vec![agg("AAA", 20.0, 3)]).unwrap();
    let eb = feed(&mut b, &[agg("AAA", 22.0, 4)]);
    let gainers_cleared = |e: &[Effect]| {
        dels(e)
            .iter()
            .filter(|k| k == &&vec!["leaderboard:top_gainers".to_string()])
            .count()
    };
    assert_eq!(gainers_cleared(&ea) + gainers_cleared(&eb), 1);
    assert!(!a.snapshot().is_empty());
    // b reads the baseline a set after the open (20.0), not its own stale 10.0.
    assert_eq!(b.state.open_price.get("AAA"), Some(&20.0));
    let quote: Value =
        serde_json::from_str(&with_host(|h| h.store.get("quote:AAA")).unwrap()).unwrap();
    assert!((quote["pct_change_since_open"].as_f64().unwrap() - 10.0).abs() < 1e-9);
}

fn quote_of(sym: &str) -> Value {
    serde_json::from_str(&with_host(|h| h.store.get(&format!("quote:{sym}"))).unwrap()).unwrap()
}

fn hash_field(sym: &str, field: &str) -> Option<String> {
    with_host(|h| h.store.hgetall(&format!("symbol:{sym}:data")))
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
}

/// A snapshot whose previous-day bar is empty (a new listing:
/// Massive sends zeros) gives the seed `prev_day_close`, `prev_day_volume`
/// and `prev_day_vwap` of 0; only a snapshot without a `prevDay` (or no
/// snapshot) falls back to the event's close, volume and vwap.
#[test]
fn a_snapshot_without_a_previous_day_writes_zeros_as_the_seed() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.host(|h| {
        h.reference.snapshots.insert(
            "NEW".into(),
            r#"{"ticker":"NEW","prevDay":{"o":0,"h":0,"l":0,"c":0,"v":0,"vw":0}}"#.into(),
        );
        h.reference
            .snapshots
            .insert("BARE".into(), r#"{"ticker":"BARE"}"#.into());
    });
    h.init(&[]).unwrap();
    h.analyze(vec![
        agg("NEW", 11.0, 2000),
        agg("BARE", 12.0, 2000),
        agg("NONE", 13.0, 2000),
    ])
    .unwrap();
    let q = quote_of("NEW");
    for k in ["prev_day_close", "prev_day_vwap", "change", "pct_change"] {
        assert_eq!(q[k].as_f64(), Some(0.0), "{k}: {q}");
    }
    assert_eq!(q["prev_day_volume"], json!(0), "{q}");
    assert_eq!(hash_field("NEW", "prev_day_volume").as_deref(), Some("0"));
    assert_eq!(hash_field("NEW", "prev_day_close").as_deref(), Some("0.0"));
    // No previous-day bar at all: the seed's fallbacks (the event's values).
    for (sym, close) in [("BARE", 12.0), ("NONE", 13.0)] {
        let q = quote_of(sym);
        assert_eq!(q["prev_day_close"].as_f64(), Some(close), "{q}");
        assert_eq!(q["prev_day_volume"], json!(100), "{q}");
        assert_eq!(q["prev_day_vwap"].as_f64(), Some(close), "{q}");
    }
}

/// The seed receives share counts as JSON integers and writes
/// them as integers (`6878801595`, not `6878801595.0`), in the quote, the
/// hash and so the board rows.
#[test]
fn counts_are_written_as_integers_as_the_seed() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.host(|h| {
        h.reference
            .snapshots
            .insert("AAA".into(), AAA_SNAPSHOT.into());
        h.reference
            .free_floats
            .insert("AAA".into(), 6_878_801_595.0);
    });
    h.init(&[]).unwrap();
    h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    let q = quote_of("AAA");
    for (k, v) in [
        ("free_float", json!(6_878_801_595u64)),
        ("average_size", json!(10)),
        ("prev_day_volume", json!(5000)),
        ("volume", json!(100)),
    ] {
        assert_eq!(q[k], v, "quote {k}");
        assert!(q[k].is_u64(), "quote {k} is an integer: {}", q[k]);
        assert_eq!(hash_field("AAA", k), Some(v.to_string()), "hash {k}");
    }
    let board: Value =
        serde_json::from_str(&h.host(|h| h.store.get("scanners:top_volume")).unwrap()).unwrap();
    assert!(board[0]["free_float"].is_u64(), "{}", board[0]);
    // A fractional average size stays a float.
    let Event::Aggregate(mut a) = agg("BBB", 5.0, 10) else {
        unreachable!()
    };
    a.average_size = 10.5;
    h.analyze(vec![Event::Aggregate(a)]).unwrap();
    assert_eq!(quote_of("BBB")["average_size"], json!(10.5));
}

/// The seed's `open` is the day's baseline (the cached
/// `symbol:{SYM}:open_price`), not the bar's own open, in the quote, the
/// hash and the board rows.
#[test]
fn open_is_the_days_baseline_not_the_bars_open() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.init(&[]).unwrap();
    let bar = |open: f64, close: f64| {
        let Event::Aggregate(mut a) = agg("AAA", close, 1000) else {
            unreachable!()
        };
        a.open = open;
        Event::Aggregate(a)
    };
    h.analyze(vec![bar(10.0, 10.5)]).unwrap();
    h.set_clock_us(MORNING + 2 * SEC);
    h.analyze(vec![bar(12.0, 12.5)]).unwrap();
    let q = quote_of("AAA");
    assert_eq!(q["open"].as_f64(), Some(10.0), "{q}");
    assert_eq!(q["change_since_open"].as_f64(), Some(2.5));
    assert_eq!(hash_field("AAA", "open").as_deref(), Some("10.0"));
    for board in ["scanners:top_volume", "scanners:top_gainers"] {
        let rows: Value = serde_json::from_str(&h.host(|h| h.store.get(board)).unwrap()).unwrap();
        assert_eq!(rows[0]["open"].as_f64(), Some(10.0), "{board}: {rows}");
    }
}

#[test]
fn a_snapshot_carries_the_state_to_the_next_generation() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.init(&[]).unwrap();
    h.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
    let next = Leaderboard::init(Config::default(), Some(h.snapshot())).unwrap();
    assert_eq!(next.state.open_price.get("AAA"), Some(&11.0));
    assert_eq!(next.state.anchor, mdp_sdk::calendar::day_anchor(MORNING));
}

#[test]
fn golden_files_pass_natively() {
    mdp_sdk::testing::check_golden_dir::<Leaderboard>(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/golden"
    ));
}

#[test]
fn boards_on_idle_wait_for_the_tick_or_two_silent_periods() {
    let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
    h.init(&[("boards_on_idle", "true")]).unwrap();
    let hset_count = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Hset(_)))
            .count()
    };
    // A batch of the burst: quotes and sorted sets only.
    let burst = h
        .analyze(vec![agg("AAA", 11.0, 2000), agg("BBB", 5.0, 100)])
        .unwrap();
    assert_eq!(published(&burst, "quote:"), vec!["quote:AAA", "quote:BBB"]);
    assert!(published(&burst, "scanners:").is_empty());
    assert_eq!(hset_count(&burst), 0);
    // The idle tick after it: the boards (with both symbols, though the
    // sorted-set writes could still be in flight) and the hashes.
    h.set_clock_us(MORNING + SEC / 100);
    let tick = h.analyze(vec![]).unwrap();
    assert_eq!(published(&tick, "scanners:").len(), 3);
    assert_eq!(hset_count(&tick), 2);
    let board: Value =
        serde_json::from_str(&h.host(|h| h.store.get("scanners:top_volume")).unwrap()).unwrap();
    assert_eq!(board.as_array().unwrap().len(), 2);
    // A tick with nothing new does nothing.
    h.set_clock_us(MORNING + SEC / 50);
    assert!(h.analyze(vec![]).unwrap().is_empty());
    // The next burst and tick a second later: boards again, although the
    // tick came a little early for the one-second election.
    h.set_clock_us(MORNING + SEC);
    h.analyze(vec![agg("CCC", 1.0, 1)]).unwrap();
    let tick = h.analyze(vec![]).unwrap();
    assert_eq!(published(&tick, "scanners:").len(), 3);
    assert_eq!(hset_count(&tick), 1);
    // Without ticks, a batch two periods after the last work does it.
    h.set_clock_us(MORNING + 2 * SEC);
    let quiet = h.analyze(vec![agg("AAA", 12.0, 2100)]).unwrap();
    assert!(published(&quiet, "scanners:").is_empty());
    h.set_clock_us(MORNING + 3 * SEC);
    let overdue = h.analyze(vec![agg("BBB", 6.0, 200)]).unwrap();
    assert_eq!(published(&overdue, "scanners:").len(), 3);
    assert_eq!(hset_count(&overdue), 2);
}
