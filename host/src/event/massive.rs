//! Massive WebSocket stocks events (short keys) to the
//! seed's queue JSON: `sym`→`symbol`, `p`→`price`, ...
//! Fields the seed drops (`ds`, `dv`, `dav`, quote `trfi`/`trft`) are dropped;
//! unknown event types are passed through unchanged (they go to `unknown`).

use serde_json::{Map, Value};

/// Short key → queue JSON field, per event type.
fn mapping(ev: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match ev {
        "A" | "AM" => &[
            ("ev", "event_type"),
            ("sym", "symbol"),
            ("v", "volume"),
            ("av", "accumulated_volume"),
            ("op", "official_open_price"),
            ("vw", "vwap"),
            ("o", "open"),
            ("c", "close"),
            ("h", "high"),
            ("l", "low"),
            ("a", "aggregate_vwap"),
            ("z", "average_size"),
            ("s", "start_timestamp"),
            ("e", "end_timestamp"),
            ("otc", "otc"),
        ],
        "T" => &[
            ("ev", "event_type"),
            ("sym", "symbol"),
            ("x", "exchange"),
            ("i", "id"),
            ("z", "tape"),
            ("p", "price"),
            ("s", "size"),
            ("c", "conditions"),
            ("t", "timestamp"),
            ("q", "sequence_number"),
            ("trfi", "trf_id"),
            ("trft", "trf_timestamp"),
        ],
        "Q" => &[
            ("ev", "event_type"),
            ("sym", "symbol"),
            ("bx", "bid_exchange_id"),
            ("bp", "bid_price"),
            ("bs", "bid_size"),
            ("ax", "ask_exchange_id"),
            ("ap", "ask_price"),
            ("as", "ask_size"),
            ("c", "condition"),
            ("i", "indicators"),
            ("t", "timestamp"),
            ("q", "sequence_number"),
            ("z", "tape"),
        ],
        "LULD" => &[
            ("ev", "event_type"),
            ("T", "symbol"),
            ("h", "high_price"),
            ("l", "low_price"),
            ("i", "indicators"),
            ("z", "tape"),
            ("t", "timestamp"),
            ("q", "sequence_number"),
        ],
        _ => return None,
    })
}

/// Convert one Massive event object to the seed's queue JSON. Every field of
/// the seed's model is present (absent ones as `null`, as the SDK dataclasses
/// serialize); unknown types are returned unchanged.
pub fn to_queue_json(event: &Map<String, Value>) -> Map<String, Value> {
    let ev = event.get("ev").and_then(Value::as_str).unwrap_or("");
    let Some(fields) = mapping(ev) else {
        return event.clone();
    };
    fields
        .iter()
        .map(|(short, long)| {
            (
                long.to_string(),
                event.get(*short).cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// True when a Massive JSON object looks like stocks market data (has `ev`
/// other than `status`).
pub fn is_market_event(event: &Map<String, Value>) -> bool {
    matches!(event.get("ev").and_then(Value::as_str), Some(ev) if ev != "status")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn converts_each_type_with_the_seed_field_names() {
        let t = to_queue_json(&obj(
            r#"{"ev":"T","sym":"MSFT","x":4,"i":"12345","z":3,"p":114.125,"s":100,"c":[0,12],"t":1536036818784,"q":3681328,"ds":"100.0"}"#,
        ));
        assert_eq!(t["symbol"], "MSFT");
        assert_eq!(t["price"], 114.125);
        assert_eq!(t["sequence_number"], 3681328);
        assert_eq!(t["trf_id"], Value::Null);
        assert!(!t.contains_key("ds"));
        let l = to_queue_json(&obj(
            r#"{"ev":"LULD","h":3.63,"l":2.97,"i":[15],"z":3,"T":"ATHR","t":1788877046310003385,"q":3209681}"#,
        ));
        assert_eq!(l["symbol"], "ATHR");
        assert_eq!(l["timestamp"], 1788877046310003385u64);
        let a = to_queue_json(&obj(
            r#"{"ev":"AM","sym":"FCX","v":4989,"av":4332125,"op":75.98,"vw":78.0894,"o":78.1,"c":78.08,"h":78.125,"l":78.07,"a":76.8404,"z":62,"s":1,"e":2,"dv":"4989.0"}"#,
        ));
        assert_eq!(a["accumulated_volume"], 4332125);
        assert_eq!(a["aggregate_vwap"], 76.8404);
        assert!(!a.contains_key("dv"));
        let noi = obj(r#"{"ev":"NOI","T":"X"}"#);
        assert_eq!(to_queue_json(&noi), noi);
    }
}
