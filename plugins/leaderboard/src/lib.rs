//! `leaderboard`: the seed's LeaderboardAnalyzer (seed-inventory §2.3) on the
//! `aggregate` queue.
//!
//! Per aggregate event it computes the 26-field quote (`quote:{SYM}`, put and
//! published, TTL 4 days) and updates three cluster-wide sorted sets
//! (`leaderboard:top_volume|top_gappers|top_gainers`, top 500). At most once
//! per second across all replicas (`cache::try_acquire`) it publishes the
//! boards `scanners:top_volume|top_gappers|top_gainers` (TTL 4 days).
//!
//! Differences from the seed, deliberate (§8.2):
//! - the day boundary is 04:00 America/New_York (DST-correct), not midnight;
//! - every replica resets its own in-memory state at the boundary and at the
//!   09:30 open (the store-side reset happens once, guarded by try-acquire);
//! - reference data is fetched once per symbol per day, not per event.
//!
//! Config: `board_size` (default 500), `publish_every_ms` (default 1000).

use std::collections::HashMap;

use chrono::{TimeZone, Timelike};
use chrono_tz::America::New_York;
use mdp_sdk::prelude::*;
use serde_json::{Map, Value, json};

/// TTL of `quote:{SYM}` and `scanners:*` (4 days).
pub const QUOTE_TTL: u32 = 345_600;
/// TTL of the per-symbol quote kept for building boards (1 h).
pub const SYMBOL_TTL: u32 = 3_600;

/// The three boards: (sorted set, published key, score field).
pub const BOARDS: [(&str, &str, &str); 3] = [
    (
        "leaderboard:top_volume",
        "scanners:top_volume",
        "accumulated_volume",
    ),
    (
        "leaderboard:top_gappers",
        "scanners:top_gappers",
        "pct_change",
    ),
    (
        "leaderboard:top_gainers",
        "scanners:top_gainers",
        "pct_change_since_open",
    ),
];

#[derive(Debug, Clone, Copy, Default)]
struct Reference {
    prev_close: f64,
    prev_open: f64,
    prev_high: f64,
    prev_low: f64,
    prev_volume: f64,
    prev_vwap: f64,
    avg_volume: f64,
    free_float: f64,
}

/// The analyzer.
pub struct Leaderboard {
    board_size: u32,
    publish_every_ms: u32,
    /// 04:00 ET of the current trading day, Unix seconds.
    day_anchor: i64,
    /// Date whose 09:30 reset this replica applied.
    open_reset_done: Option<chrono::NaiveDate>,
    reference: HashMap<String, Reference>,
    open_price: HashMap<String, f64>,
}

/// 04:00 America/New_York of the trading day containing `now_us`, Unix seconds.
pub fn day_anchor(now_us: u64) -> i64 {
    let secs = (now_us / 1_000_000) as i64;
    let Some(ny) = New_York.timestamp_opt(secs, 0).single() else {
        return secs - secs.rem_euclid(86_400);
    };
    let date = if ny.hour() < 4 {
        ny.date_naive().pred_opt().unwrap_or(ny.date_naive())
    } else {
        ny.date_naive()
    };
    date.and_hms_opt(4, 0, 0)
        .and_then(|t| New_York.from_local_datetime(&t).earliest())
        .map(|t| t.timestamp())
        .unwrap_or(secs)
}

fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(json!(0))
}

impl Leaderboard {
    fn reference(&mut self, symbol: &str) -> Reference {
        if let Some(r) = self.reference.get(symbol) {
            return *r;
        }
        let mut r = Reference::default();
        let mut complete = true;
        match reference::ticker_snapshot(symbol) {
            Ok(Some(text)) => {
                if let Ok(snap) = serde_json::from_str::<Value>(&text) {
                    let prev = &snap["prevDay"];
                    let f = |k: &str| prev[k].as_f64().unwrap_or(0.0);
                    r.prev_close = f("c");
                    r.prev_open = f("o");
                    r.prev_high = f("h");
                    r.prev_low = f("l");
                    r.prev_volume = f("v");
                    r.prev_vwap = f("vw");
                }
            }
            Ok(None) => {}
            Err(_) => complete = false,
        }
        match reference::avg_volume(symbol) {
            Ok(v) => r.avg_volume = v,
            Err(_) => complete = false,
        }
        match reference::free_float(symbol) {
            Ok(v) => r.free_float = v,
            Err(_) => complete = false,
        }
        if complete {
            self.reference.insert(symbol.to_string(), r);
        } else {
            host::counter("lba.reference_unavailable", 1);
        }
        r
    }

    fn quote(&mut self, a: &Aggregate) -> Map<String, Value> {
        let r = self.reference(&a.symbol);
        let prev_close = if r.prev_close > 0.0 {
            r.prev_close
        } else {
            a.close
        };
        let open = *self
            .open_price
            .entry(a.symbol.clone())
            .or_insert(if a.open > 0.0 { a.open } else { a.close });
        let change = if prev_close > 0.0 {
            a.close - prev_close
        } else {
            0.0
        };
        let pct_change = if prev_close > 0.0 {
            change / prev_close * 100.0
        } else {
            0.0
        };
        let change_since_open = if open > 0.0 { a.close - open } else { 0.0 };
        let pct_change_since_open = if open > 0.0 {
            change_since_open / open * 100.0
        } else {
            0.0
        };
        let relative_volume = if r.avg_volume > 0.0 {
            a.accumulated_volume as f64 / r.avg_volume
        } else {
            0.0
        };
        let mut m = Map::new();
        m.insert("symbol".into(), json!(a.symbol));
        m.insert("volume".into(), json!(a.volume));
        m.insert("free_float".into(), num(r.free_float));
        m.insert("accumulated_volume".into(), json!(a.accumulated_volume));
        m.insert("relative_volume".into(), num(relative_volume));
        m.insert("official_open_price".into(), num(a.official_open_price));
        m.insert("vwap".into(), num(a.vwap));
        m.insert("open".into(), num(a.open));
        m.insert("close".into(), num(a.close));
        m.insert("high".into(), num(a.high));
        m.insert("low".into(), num(a.low));
        m.insert("aggregate_vwap".into(), num(a.aggregate_vwap));
        m.insert("average_size".into(), num(a.average_size));
        m.insert("avg_volume".into(), num(r.avg_volume));
        m.insert("prev_day_close".into(), num(prev_close));
        m.insert("prev_day_open".into(), num(r.prev_open));
        m.insert("prev_day_high".into(), num(r.prev_high));
        m.insert("prev_day_low".into(), num(r.prev_low));
        m.insert(
            "prev_day_volume".into(),
            num(if r.prev_volume > 0.0 {
                r.prev_volume
            } else {
                a.volume as f64
            }),
        );
        m.insert(
            "prev_day_vwap".into(),
            num(if r.prev_vwap > 0.0 {
                r.prev_vwap
            } else {
                a.vwap
            }),
        );
        m.insert("change".into(), num(change));
        m.insert("pct_change".into(), num(pct_change));
        m.insert("change_since_open".into(), num(change_since_open));
        m.insert("pct_change_since_open".into(), num(pct_change_since_open));
        m.insert("start_timestamp".into(), json!(a.start_ms));
        m.insert("end_timestamp".into(), json!(a.end_ms));
        m
    }

    /// Day boundary and 09:30 resets; returns the store-side effects of a reset.
    fn resets(&mut self, now_us: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let anchor = day_anchor(now_us);
        if anchor != self.day_anchor {
            // Every replica forgets yesterday; one clears the shared boards.
            let first_time = self.day_anchor == 0;
            self.day_anchor = anchor;
            self.reference.clear();
            self.open_price.clear();
            if !first_time
                && cache::try_acquire(
                    &format!("leaderboard:market:day_reset:{anchor}"),
                    86_400_000,
                )
            {
                effects.push(del(BOARDS.iter().map(|(z, _, _)| z.to_string()).collect()));
            }
        }
        let secs = (now_us / 1_000_000) as i64;
        if let Some(ny) = New_York.timestamp_opt(secs, 0).single()
            && ny.hour() == 9
            && ny.minute() == 30
            && self.open_reset_done != Some(ny.date_naive())
        {
            self.open_reset_done = Some(ny.date_naive());
            self.open_price.clear();
            let key = format!("leaderboard:market:open_reset:{}", ny.date_naive());
            if cache::try_acquire(&key, 3_600_000) {
                effects.push(del(vec![BOARDS[2].0.to_string()]));
            }
        }
        effects
    }

    /// The boards from the shared sorted sets, with this batch's quotes
    /// (`latest`, not yet written) merged in.
    fn boards(&self, latest: &HashMap<String, Map<String, Value>>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let score =
            |q: &Map<String, Value>, f: &str| q.get(f).and_then(Value::as_f64).unwrap_or(0.0);
        let tops: Vec<Vec<(String, f64)>> = BOARDS
            .iter()
            .map(|(z, _, field)| {
                let mut top: HashMap<String, f64> =
                    cache::ztop(z, self.board_size).into_iter().collect();
                for (s, q) in latest {
                    top.insert(s.clone(), score(q, field));
                }
                let mut top: Vec<(String, f64)> = top.into_iter().collect();
                top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
                top.truncate(self.board_size as usize);
                top
            })
            .collect();
        let mut symbols: Vec<String> = tops.iter().flatten().map(|(s, _)| s.clone()).collect();
        symbols.sort();
        symbols.dedup();
        let keys: Vec<String> = symbols
            .iter()
            .map(|s| format!("leaderboard:symbol:{s}"))
            .collect();
        let mut quotes: HashMap<&str, Map<String, Value>> = symbols
            .iter()
            .zip(cache::get_many(&keys))
            .filter_map(|(s, q)| Some((s.as_str(), serde_json::from_str(&q?).ok()?)))
            .collect();
        for (s, q) in latest {
            quotes.insert(s.as_str(), q.clone());
        }
        for ((_, key, field), top) in BOARDS.iter().zip(tops) {
            let mut board = Vec::with_capacity(top.len());
            for (rank, (symbol, score)) in top.iter().enumerate() {
                let Some(q) = quotes.get(symbol.as_str()) else {
                    continue;
                };
                let mut entry = Map::new();
                entry.insert("rank".into(), json!(rank + 1));
                entry.insert("symbol".into(), json!(symbol));
                entry.insert(field.to_string(), num(*score));
                for (k, v) in q {
                    entry.insert(k.clone(), v.clone());
                }
                board.push(Value::Object(entry));
            }
            if !board.is_empty() {
                effects.extend(put_and_publish(key, json(&board), Some(QUOTE_TTL)));
            }
        }
        effects
    }
}

impl Analyzer for Leaderboard {
    fn describe() -> Info {
        mdp_sdk::info(
            "leaderboard",
            env!("CARGO_PKG_VERSION"),
            Kinds::AGGREGATE | Kinds::OTHER,
            1,
        )
    }

    fn init(config: Config, _state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        Ok(Leaderboard {
            board_size: config.parse_or("board_size", 500)?,
            publish_every_ms: config.parse_or("publish_every_ms", 1000)?,
            day_anchor: 0,
            open_reset_done: None,
            reference: HashMap::new(),
            open_price: HashMap::new(),
        })
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let now_us = host::now_us();
        let mut effects = self.resets(now_us);
        // Latest quote per symbol in this batch for the boards; every event's quote is published.
        let mut latest: HashMap<String, Map<String, Value>> = HashMap::new();
        for (i, event) in batch.iter().enumerate() {
            let Event::Aggregate(a) = event else {
                effects.push(reject(
                    i,
                    "not an aggregate event (or missing required fields)",
                ));
                continue;
            };
            if a.close.is_nan() || a.close <= 0.0 {
                effects.push(reject(
                    i,
                    format!("{}: aggregate without a positive close", a.symbol),
                ));
                continue;
            }
            let q = self.quote(a);
            let body = json(&q);
            effects.extend(put_and_publish(
                &format!("quote:{}", a.symbol),
                body,
                Some(QUOTE_TTL),
            ));
            latest.insert(a.symbol.clone(), q);
        }
        if !latest.is_empty() {
            let score =
                |q: &Map<String, Value>, f: &str| q.get(f).and_then(Value::as_f64).unwrap_or(0.0);
            for (zset, _, field) in BOARDS {
                let members = latest
                    .iter()
                    .map(|(s, q)| (s.clone(), score(q, field)))
                    .collect();
                effects.push(zadd(zset, members, Some(self.board_size), None));
            }
            for (s, q) in &latest {
                effects.push(put(
                    format!("leaderboard:symbol:{s}"),
                    json(q),
                    Some(SYMBOL_TTL),
                ));
            }
            if cache::try_acquire("leaderboard:last_publish", self.publish_every_ms) {
                effects.extend(self.boards(&latest));
            }
        }
        host::counter("lba.processed", batch.len() as u64);
        Ok(effects)
    }
}

export_analyzer!(Leaderboard);

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_sdk::testing::Harness;

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

    // 2026-03-09 14:00 UTC = 10:00 EDT (after the DST change).
    const MORNING: u64 = 1_773_064_800_000_000;

    #[test]
    fn day_anchor_is_4am_new_york_across_dst() {
        // 10:00 EDT → anchor 04:00 EDT = 08:00 UTC.
        assert_eq!(day_anchor(MORNING), 1_773_043_200);
        // 03:59 EDT still belongs to the previous day (04:00 EDT on 03-08 = 08:00 UTC).
        assert_eq!(day_anchor(1_773_043_140_000_000), 1_772_956_800);
        // The seed reset at midnight; 00:30 is still yesterday's session here.
        assert_eq!(day_anchor(1_773_030_600_000_000), 1_772_956_800);
        // Winter: 2026-01-05 10:00 EST → 04:00 EST = 09:00 UTC.
        assert_eq!(day_anchor(1_767_625_200_000_000), 1_767_603_600);
    }

    #[test]
    fn quotes_use_reference_data_and_boards_publish_once_per_window() {
        let mut h = Harness::<Leaderboard>::new().at_us(MORNING);
        h.host(|h| {
            h.reference.snapshots.insert(
                "AAA".into(),
                r#"{"prevDay":{"c":10.0,"v":5000,"vw":9.9,"o":9.5,"h":10.5,"l":9.0}}"#.into(),
            );
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
        let board: Value =
            serde_json::from_str(&h.host(|h| h.store.get("scanners:top_gappers")).unwrap())
                .unwrap();
        assert_eq!(board[0]["symbol"], "AAA");
        assert_eq!(board[0]["rank"], 1);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Publish(p) if p.channel == "scanners:top_volume"))
        );
        // Within the same second the election is lost: only quotes.
        let again = h.analyze(vec![agg("AAA", 12.0, 2100)]).unwrap();
        assert!(
            !again
                .iter()
                .any(|e| matches!(e, Effect::Publish(p) if p.channel.starts_with("scanners:")))
        );
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
            ])
            .unwrap();
        let rejects: Vec<u32> = effects
            .iter()
            .filter_map(|e| {
                if let Effect::Reject(r) = e {
                    Some(r.index)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(rejects, vec![0, 1]);
    }

    #[test]
    fn every_replica_resets_at_the_day_boundary_but_the_store_once() {
        let mut a = Harness::<Leaderboard>::new().at_us(MORNING);
        a.init(&[]).unwrap();
        a.analyze(vec![agg("AAA", 11.0, 2000)]).unwrap();
        let mut b = Leaderboard::init(Config::default(), None).unwrap();
        // Replica b shares the same (thread-local) store.
        b.analyze(&[agg("BBB", 11.0, 2000)]).unwrap();
        let next_day = MORNING + 86_400_000_000;
        a.set_clock_us(next_day);
        let ea = a.analyze(vec![agg("CCC", 11.0, 10)]).unwrap();
        let eb = b.analyze(&[agg("DDD", 11.0, 10)]).unwrap();
        let dels = |e: &[Effect]| e.iter().filter(|e| matches!(e, Effect::Del(_))).count();
        assert_eq!(
            dels(&ea) + dels(&eb),
            1,
            "the shared boards are cleared once"
        );
        assert!(
            b.open_price.len() == 1 && b.open_price.contains_key("DDD"),
            "replica b forgot yesterday too"
        );
    }
}
