use super::*;
use mdp_sdk::testing::{Harness, resolve_body, with_host};

// 2026-03-09 14:00 UTC.
const NOW: u64 = 1_773_064_800_000_000;
const SEC: u64 = 1_000_000;

fn trade(sym: &str, price: f64, size: u64, ts: u64) -> Event {
    Event::Trade(Trade {
        symbol: sym.into(),
        price,
        size,
        exchange: 4,
        id: format!("{sym}-{ts}"),
        tape: 3,
        conditions: vec![12],
        timestamp_ms: ts,
        sequence: ts,
    })
}

fn widget(key: &str) -> Option<Value> {
    with_host(|h| h.store.get(key)).map(|t| serde_json::from_str(&t).unwrap())
}

/// Run a second replica on the shared test store, applying its effects.
fn feed(b: &mut TopTrades, batch: &[Event]) -> Vec<Effect> {
    let effects = b.analyze(batch).unwrap();
    with_host(|h| {
        for e in &effects {
            h.store.apply(e, &|body| resolve_body(body, batch));
        }
    });
    effects
}

#[test]
fn stats_match_the_seed_over_the_last_1000_trades() {
    let mut h = Harness::<TopTrades>::new().at_us(NOW);
    h.init(&[]).unwrap();
    // 1,200 trades: the window keeps the last 1,000 (sizes 201..=1200).
    let batch: Vec<Event> = (1..=1200)
        .map(|i| trade("AAPL", 100.0 + i as f64 / 100.0, i, 1_000_000 + i))
        .collect();
    h.analyze(batch).unwrap();
    let all = widget("tta:all_symbols:widget").expect("published on the first batch");
    let s = &all["symbols"]["AAPL"];
    let expected_volume: u64 = (201..=1200).sum();
    assert_eq!(s["total_volume"], expected_volume);
    assert_eq!(s["trade_count"], 1000);
    assert_eq!(s["avg_size"], 700.5);
    assert_eq!(s["max_size"], 1200);
    assert_eq!(s["time_span_ms"], 999);
    assert_eq!(s["latest_price"], 112.0);
    assert_eq!(s["latest_timestamp"], 1_001_200);
    assert_eq!(s["latest_exchange"], 4);
    assert_eq!(all["symbol_count"], 1);
    assert_eq!(all["timestamp"], "2026-03-09T14:00:00+00:00");
    let one = widget("tta:AAPL:widget").unwrap();
    assert_eq!(one["symbol"], "AAPL");
    assert_eq!(one["total_volume"], expected_volume);
    // The store list keeps the seed's normalised trades, newest first, capped.
    let recent = with_host(|h| h.store.lrange("tta:AAPL:recent", 0, -1));
    assert_eq!(recent.len(), 1000);
    let newest: Value = serde_json::from_str(&recent[0]).unwrap();
    assert_eq!(newest["size"], 1200);
    assert_eq!(newest["trf_id"], 0);
    assert_eq!(
        with_host(|h| h.store.expiry_ms("tta:AAPL:recent")),
        Some(NOW / 1000 + 300_000)
    );
}

#[test]
fn widgets_are_written_every_five_seconds_cluster_wide_without_publishing() {
    let mut h = Harness::<TopTrades>::new().at_us(NOW);
    h.init(&[]).unwrap();
    let first = h.analyze(vec![trade("AAPL", 1.0, 10, 1)]).unwrap();
    assert!(
        first
            .iter()
            .any(|e| matches!(e, Effect::Put(p) if p.key == "tta:all_symbols:widget"))
    );
    assert!(!first.iter().any(|e| matches!(e, Effect::Publish(_))));
    h.set_clock_us(NOW + 4 * SEC);
    let quiet = h.analyze(vec![trade("AAPL", 1.0, 10, 2)]).unwrap();
    assert!(
        !quiet
            .iter()
            .any(|e| matches!(e, Effect::Put(p) if p.key.ends_with(":widget")))
    );
    h.set_clock_us(NOW + 5 * SEC);
    let again = h.analyze(vec![trade("AAPL", 1.0, 10, 3)]).unwrap();
    assert!(
        again
            .iter()
            .any(|e| matches!(e, Effect::Put(p) if p.key == "tta:AAPL:widget"))
    );
}

#[test]
fn only_the_top_symbols_by_volume_get_a_widget() {
    let mut h = Harness::<TopTrades>::new().at_us(NOW);
    h.init(&[("top_symbols", "2")]).unwrap();
    h.analyze(vec![
        trade("AAA", 1.0, 10, 1),
        trade("BBB", 1.0, 30, 1),
        trade("CCC", 1.0, 20, 1),
    ])
    .unwrap();
    assert!(widget("tta:BBB:widget").is_some());
    assert!(widget("tta:CCC:widget").is_some());
    assert!(widget("tta:AAA:widget").is_none());
    assert_eq!(widget("tta:all_symbols:widget").unwrap()["symbol_count"], 3);
}

#[test]
fn two_replicas_merge_their_windows() {
    let mut a = Harness::<TopTrades>::new().at_us(NOW);
    a.init(&[]).unwrap();
    let mut b = TopTrades::init(Config::default(), None).unwrap();
    // a wins the first election; b's trades reach the store as a partial.
    a.analyze(vec![trade("AAPL", 10.0, 100, 1_000)]).unwrap();
    feed(
        &mut b,
        &[
            trade("AAPL", 11.0, 300, 2_000),
            trade("MSFT", 5.0, 7, 1_500),
        ],
    );
    assert!(!a.snapshot().is_empty());
    assert_ne!(b.state.replica, None);
    assert_ne!(b.state.replica, Some(0), "replica ids are distinct");
    // 5 s later a is elected again and sees b's trades.
    a.set_clock_us(NOW + 5 * SEC);
    a.analyze(vec![trade("AAPL", 10.5, 50, 3_000)]).unwrap();
    let all = widget("tta:all_symbols:widget").unwrap();
    assert_eq!(all["symbols"]["AAPL"]["total_volume"], 450);
    assert_eq!(all["symbols"]["AAPL"]["trade_count"], 3);
    assert_eq!(all["symbols"]["AAPL"]["max_size"], 300);
    assert_eq!(all["symbols"]["AAPL"]["time_span_ms"], 2_000);
    assert_eq!(all["symbols"]["AAPL"]["latest_price"], 10.5);
    assert_eq!(all["symbols"]["MSFT"]["total_volume"], 7);
    // A replica that stops writing partials drops out after 10 s.
    a.set_clock_us(NOW + 16 * SEC);
    a.analyze(vec![trade("AAPL", 10.5, 50, 4_000)]).unwrap();
    let all = widget("tta:all_symbols:widget").unwrap();
    assert!(all["symbols"].get("MSFT").is_none());
}

#[test]
fn bad_events_are_rejected_and_zero_timestamps_use_the_clock() {
    let mut h = Harness::<TopTrades>::new().at_us(NOW);
    h.init(&[]).unwrap();
    let effects = h
        .analyze(vec![
            Event::Other(Raw {
                kind: "T".into(),
                json: r#"{"event_type":"T","symbol":"X"}"#.into(),
            }),
            trade("AAPL", 0.0, 0, 0),
        ])
        .unwrap();
    assert!(matches!(&effects[0], Effect::Reject(r) if r.index == 0));
    let recent = with_host(|h| h.store.lrange("tta:AAPL:recent", 0, 0));
    let stored: Value = serde_json::from_str(&recent[0]).unwrap();
    assert_eq!(stored["timestamp"], NOW / 1000);
}

#[test]
fn windows_expire_with_their_store_list_and_survive_a_hot_reload() {
    let mut h = Harness::<TopTrades>::new().at_us(NOW);
    h.init(&[]).unwrap();
    h.analyze(vec![trade("AAPL", 1.0, 10, 1)]).unwrap();
    let next = TopTrades::init(Config::default(), Some(h.snapshot())).unwrap();
    assert_eq!(next.state.windows["AAPL"].trades.len(), 1);
    assert_eq!(next.state.replica, Some(0));
    h.set_clock_us(NOW + 301 * SEC);
    h.analyze(vec![trade("MSFT", 1.0, 10, 2)]).unwrap();
    let all = widget("tta:all_symbols:widget").unwrap();
    assert!(all["symbols"].get("AAPL").is_none());
    assert_eq!(all["symbol_count"], 1);
}

/// The seed stores each trade's `conditions`, `trf_id` and
/// `trf_timestamp` as its message has them (`.get(key, default)` on a
/// message that has the keys): `null` stays `null`, a TRF print keeps its
/// TRF id and time, and the defaults (`[]`, 0) apply only to missing keys.
#[test]
fn stored_trades_keep_the_messages_conditions_and_trf_fields() {
    let mut h = Harness::<TopTrades>::new().at_us(NOW);
    h.init(&[]).unwrap();
    let message = |seq: u64, rest: &str| {
        format!(
            r#"{{"event_type":"T","symbol":"AAPL","exchange":4,"id":"{seq}","tape":3,"price":1.5,"size":10,"timestamp":{seq},"sequence_number":{seq}{rest}}}"#
        )
    };
    let messages = vec![
        message(
            1,
            r#","conditions":[12, 37],"trf_id":201,"trf_timestamp":1773064799999"#,
        ),
        message(
            2,
            r#","conditions":null,"trf_id":null,"trf_timestamp":null"#,
        ),
        message(3, r#","conditions":[]"#),
    ];
    h.analyze_json(&messages).unwrap();
    let recent = with_host(|h| h.store.lrange("tta:AAPL:recent", 0, -1));
    let stored: Vec<Value> = recent
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let fields = |v: &Value| {
        (
            v["conditions"].clone(),
            v["trf_id"].clone(),
            v["trf_timestamp"].clone(),
        )
    };
    // Newest first.
    assert_eq!(
        fields(&stored[2]),
        (json!([12, 37]), json!(201), json!(1773064799999u64))
    );
    assert_eq!(fields(&stored[1]), (Value::Null, Value::Null, Value::Null));
    assert_eq!(fields(&stored[0]), (json!([]), json!(0), json!(0)));
    assert_eq!(stored[2]["price"], 1.5);
}

/// Without the message text (a host that does not serve it), a trade
/// without conditions is stored with `null` conditions and 0 TRF fields.
#[test]
fn without_the_message_empty_conditions_are_null_and_trf_fields_zero() {
    let Event::Trade(mut bare) = trade("AAPL", 1.0, 10, 1) else {
        unreachable!()
    };
    bare.conditions.clear();
    let v: Value = serde_json::from_str(&stored_trade(&bare, 1.0, 1, None)).unwrap();
    assert!(v["conditions"].is_null(), "{v}");
    assert_eq!(
        (v["trf_id"].clone(), v["trf_timestamp"].clone()),
        (json!(0), json!(0))
    );
}

/// `avg_size` is Python's `round(x, 2)`, which rounds an exact
/// tie to the even digit: 801 shares over 8 trades = 100.125 → 100.12.
#[test]
fn avg_size_rounds_half_to_even_as_python() {
    let mut h = Harness::<TopTrades>::new().at_us(NOW);
    h.init(&[]).unwrap();
    let batch: Vec<Event> = (0..8)
        .map(|i| trade("AAPL", 1.0, if i == 0 { 101 } else { 100 }, 1 + i))
        .collect();
    h.analyze(batch).unwrap();
    let all = widget("tta:all_symbols:widget").unwrap();
    assert_eq!(all["symbols"]["AAPL"]["total_volume"], 801);
    assert_eq!(all["symbols"]["AAPL"]["avg_size"], 100.12);
    assert_eq!(widget("tta:AAPL:widget").unwrap()["avg_size"], 100.12);
    // Python: round(2.675, 2) == 2.67 (the double is below the tie), and
    // round(1234.565, 2) == 1234.57 (above it).
    assert_eq!(round2(2.675), 2.67);
    assert_eq!(round2(1234.565), 1234.57);
    assert_eq!(round2(700.5), 700.5);
}

#[test]
fn iso_timestamps_match_python() {
    assert_eq!(iso_utc(NOW), "2026-03-09T14:00:00+00:00");
    assert_eq!(iso_utc(NOW + 1_500), "2026-03-09T14:00:00.001500+00:00");
}

#[test]
fn golden_files_pass_natively() {
    mdp_sdk::testing::check_golden_dir::<TopTrades>(concat!(env!("CARGO_MANIFEST_DIR"), "/golden"));
}

#[test]
fn full_windows_of_a_large_universe_snapshot_compactly_and_round_trip() {
    let mut state = State::default();
    for s in 0..3000u64 {
        let mut w = Window {
            latest_price: 100.0 + s as f64,
            latest_exchange: 4,
            last_push_us: NOW,
            ..Window::default()
        };
        w.trades = (0..1000u64)
            .map(|i| Tick {
                timestamp: 1_773_064_800_000 + i * 37 + s,
                size: (i * 13 + s) as u32 % 5000,
            })
            .collect();
        state.windows.insert(format!("S{s}"), w);
    }
    let before = Stats::of(&state.windows["S42"]).unwrap();
    let tt = TopTrades {
        window: 1000,
        publish_every_ms: 5000,
        top_symbols: 100,
        state,
    };
    let bytes = tt.snapshot();
    // The plugin's memory limit is 128 MiB and the windows themselves take
    // ~48 MB: the snapshot must fit beside them (JSON took ~200 MB).
    assert!(bytes.len() < 40 << 20, "snapshot of {} bytes", bytes.len());
    let next = TopTrades::init(Config::default(), Some(bytes)).unwrap();
    assert_eq!(next.state.windows.len(), 3000);
    assert_eq!(Stats::of(&next.state.windows["S42"]).unwrap(), before);
}
