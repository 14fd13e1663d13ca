//! `massive-router`: the seed's stateless MassiveDataAnalyzer. Every event is
//! cached under a per-symbol key with the seed's TTL and
//! published on a channel of the same name; the cached and published bytes
//! are the input message unchanged.
//!
//! | event | key = channel | TTL |
//! |---|---|---|
//! | `LULD` | `stocks:luld:{SYM}` | 86400 |
//! | `A`/`AM` | `stocks:agg:{SYM}` | 300 |
//! | `T` | `stocks:trades:{SYM}` | 3600 |
//! | `Q` | `stocks:quotes:{SYM}` | 3600 |
//! | other / no symbol | `unknown:{epoch µs}` (channel `unknown`) | 86400 |
//!
//! A trade (or any event) without a symbol goes to `unknown:*` too. The seed
//! routed a `T` without `sym` to `stocks:trades:None` (Python's `None` in an
//! f-string): a key no reader subscribes to and that every such trade
//! overwrites; `unknown:*` keeps each one for a day where an operator looks
//! for malformed input. A JSON-string body (the seed listener's raw mode)
//! arrives as an untyped event of no kind and is routed the same way.
//!
//! The seed names unknown keys after `time.time()` with the dot removed; here
//! the host clock in microseconds (16 digits, the same shape), plus the
//! event's position in the batch so two unknown events of one batch never
//! overwrite each other.

use mdp_sdk::prelude::*;

/// TTL of `stocks:luld:*` and `unknown:*` (1 day).
pub const HALTS_TTL: u32 = 86_400;
/// TTL of `stocks:agg:*` (5 min).
pub const AGGREGATE_TTL: u32 = 300;
/// TTL of `stocks:trades:*` and `stocks:quotes:*` (1 h).
pub const TRADES_TTL: u32 = 3_600;
/// TTL of `stocks:quotes:*` (1 h).
pub const QUOTES_TTL: u32 = 3_600;
/// TTL of `unknown:*` (1 day).
pub const UNKNOWN_TTL: u32 = 86_400;

/// The router. Stateless.
pub struct MassiveRouter;

/// Key prefix and TTL for a Massive event type, `None` for types the seed does not route.
fn route(event_type: &str) -> Option<(&'static str, u32)> {
    match event_type {
        "LULD" => Some(("stocks:luld", HALTS_TTL)),
        "A" | "AM" => Some(("stocks:agg", AGGREGATE_TTL)),
        "T" => Some(("stocks:trades", TRADES_TTL)),
        "Q" => Some(("stocks:quotes", QUOTES_TTL)),
        _ => None,
    }
}

/// For an untyped event: its type and symbol when the JSON names both.
fn kind_and_symbol(raw: &Raw) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(&raw.json).ok()?;
    let kind = value.get("event_type")?.as_str()?.to_string();
    let symbol = value.get("symbol")?.as_str()?.to_string();
    (!symbol.is_empty()).then_some((kind, symbol))
}

impl Analyzer for MassiveRouter {
    fn describe() -> Info {
        mdp_sdk::info(
            "massive-router",
            env!("CARGO_PKG_VERSION"),
            Kinds::TRADE | Kinds::QUOTE | Kinds::AGGREGATE | Kinds::LULD | Kinds::OTHER,
            0,
        )
    }

    fn init(_config: Config, _state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        Ok(MassiveRouter)
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let mut effects = Vec::with_capacity(batch.len() * 2);
        let mut now_us = None;
        let (mut luld, mut agg, mut trade, mut quote, mut unknown) = (0, 0, 0, 0, 0);
        for (i, event) in batch.iter().enumerate() {
            let body = Body::Input(i as u32);
            let routed = match event {
                Event::Trade(t) => Some(("T".to_string(), t.symbol.clone())),
                Event::Quote(q) => Some(("Q".to_string(), q.symbol.clone())),
                Event::Aggregate(a) => Some(("A".to_string(), a.symbol.clone())),
                Event::Luld(l) => Some(("LULD".to_string(), l.symbol.clone())),
                Event::Other(raw) => kind_and_symbol(raw),
            };
            match routed.and_then(|(kind, sym)| route(&kind).map(|r| (r, sym))) {
                Some(((prefix, ttl), symbol)) => {
                    match prefix {
                        "stocks:luld" => luld += 1,
                        "stocks:agg" => agg += 1,
                        "stocks:trades" => trade += 1,
                        _ => quote += 1,
                    }
                    let key = format!("{prefix}:{symbol}");
                    effects.extend(put_and_publish(&key, body, Some(ttl)));
                }
                None => {
                    unknown += 1;
                    let now = *now_us.get_or_insert_with(host::now_us);
                    let key = format!("unknown:{}", now + i as u64);
                    effects.push(put(key, body.clone(), Some(UNKNOWN_TTL)));
                    effects.push(publish("unknown", body));
                }
            }
        }
        for (name, n) in [
            ("mda.luld", luld),
            ("mda.agg", agg),
            ("mda.trade", trade),
            ("mda.quote", quote),
            ("mda.unknown", unknown),
        ] {
            if n > 0 {
                host::counter(name, n);
            }
        }
        host::counter("mda.processed", batch.len() as u64);
        Ok(effects)
    }
}

export_analyzer!(MassiveRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_sdk::testing::Harness;
    use mdp_sdk::{Publish, Put};

    fn trade(sym: &str) -> Event {
        Event::Trade(mdp_sdk::Trade {
            symbol: sym.into(),
            price: 10.5,
            size: 100,
            exchange: 4,
            id: "1".into(),
            tape: 3,
            conditions: vec![],
            timestamp_ms: 1,
            sequence: 2,
        })
    }

    fn other(json: &str) -> Event {
        Event::Other(Raw {
            kind: String::new(),
            json: json.into(),
        })
    }

    fn keys(effects: &[Effect]) -> Vec<(String, Option<u32>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Put(Put { key, ttl_secs, .. }) => Some((key.clone(), *ttl_secs)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn routes_typed_events_with_seed_keys_and_ttls() {
        let mut h = Harness::<MassiveRouter>::new().at_us(1_700_000_000_123_456);
        h.init(&[]).unwrap();
        let effects = h.analyze(vec![trade("AAPL")]).unwrap();
        assert_eq!(
            keys(&effects),
            vec![("stocks:trades:AAPL".into(), Some(3600))]
        );
        assert!(
            matches!(&effects[1], Effect::Publish(Publish { channel, value: Body::Input(0) }) if channel == "stocks:trades:AAPL")
        );
        assert!(
            h.host(|h| h.store.get("stocks:trades:AAPL"))
                .unwrap()
                .contains("\"price\":10.5")
        );
        assert_eq!(h.host(|h| h.counters["mda.trade"]), 1);
    }

    #[test]
    fn untyped_event_with_known_type_and_symbol_is_routed() {
        let mut h = Harness::<MassiveRouter>::new();
        h.init(&[]).unwrap();
        let effects = h
            .analyze(vec![other(r#"{"event_type":"AM","symbol":"X","extra":1}"#)])
            .unwrap();
        assert_eq!(keys(&effects), vec![("stocks:agg:X".into(), Some(300))]);
        assert_eq!(
            h.host(|h| h.store.get("stocks:agg:X")).as_deref(),
            Some(r#"{"event_type":"AM","symbol":"X","extra":1}"#)
        );
    }

    #[test]
    fn unknown_and_symbol_less_events_go_to_unknown_with_distinct_keys() {
        let mut h = Harness::<MassiveRouter>::new().at_us(1_700_000_000_123_456);
        h.init(&[]).unwrap();
        let effects = h
            .analyze(vec![
                other(r#"{"event_type":"NOI","symbol":"X"}"#),
                other(r#"{"event_type":"T"}"#),
            ])
            .unwrap();
        assert_eq!(
            keys(&effects),
            vec![
                ("unknown:1700000000123456".into(), Some(86400)),
                ("unknown:1700000000123457".into(), Some(86400)),
            ]
        );
        assert!(matches!(&effects[1], Effect::Publish(p) if p.channel == "unknown"));
        assert_eq!(h.host(|h| h.counters["mda.unknown"]), 2);
    }
}

#[cfg(test)]
mod golden {
    #[test]
    fn seed_routes_golden_file() {
        mdp_sdk::testing::run_golden::<super::MassiveRouter>(include_str!(
            "../golden/seed-routes.json"
        ));
    }
}
