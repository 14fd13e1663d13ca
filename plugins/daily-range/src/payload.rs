//! Pub/sub payloads: [`Object`], a JSON object that keeps its key order,
//! and how a payload is decoded into a symbol and its fields, with the
//! numbers and times read from it.

use mdp_sdk::prelude::*;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A JSON object that keeps its keys in order (the seed's dicts do), so the
/// payload's fields come out as they came in, the added fields after them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object(Vec<(String, Value)>);

impl Object {
    /// Set `key`, in place when present (like a dict), else at the end.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }
    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The fields, in order.
    pub fn fields(&self) -> &[(String, Value)] {
        &self.0
    }
    /// The object as JSON text.
    pub(crate) fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Object, A::Error> {
                let mut o = Object::default();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    o.set(&k, v);
                }
                Ok(o)
            }
        }
        d.deserialize_map(V)
    }
}

/// A finite, positive number at `v`, if that is what it holds.
pub(crate) fn positive(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
        .filter(|x| x.is_finite() && *x > 0.0)
}

/// `v` as a JSON number, `null` when absent or not finite.
pub(crate) fn num(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Epoch seconds from a timestamp in s, ms, µs or ns (by magnitude).
pub fn epoch_seconds(ts: f64) -> f64 {
    if ts >= 1e17 {
        ts / 1e9
    } else if ts >= 1e14 {
        ts / 1e6
    } else if ts >= 1e11 {
        ts / 1e3
    } else {
        ts
    }
}

/// The payload's own time, epoch seconds: `t`, `timestamp`, `end_timestamp`.
pub(crate) fn payload_time(o: &Object) -> Option<f64> {
    ["t", "timestamp", "end_timestamp"]
        .iter()
        .find_map(|k| positive(o.get(k)))
        .map(epoch_seconds)
}

/// True when `s` can be a symbol key: 1–32 printable ASCII characters other
/// than glob metacharacters.
fn valid_symbol(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'*' | b'?' | b'[' | b']'))
}

/// A payload's symbol and fields, or why it is rejected.
pub(crate) fn decode(event: &Event) -> Result<(String, Object), &'static str> {
    let Event::Other(raw) = event else {
        return Err("not a pub/sub quote payload");
    };
    let Ok(o) = serde_json::from_str::<Object>(&raw.json) else {
        return Err("payload is not a JSON object");
    };
    let symbol = ["sym", "symbol"]
        .iter()
        .find_map(|k| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()));
    match symbol {
        Some(s) if valid_symbol(s) => Ok((s.to_string(), o)),
        Some(_) => Err("payload symbol is not a valid ticker"),
        None => Err("payload has no symbol"),
    }
}

#[cfg(test)]
mod tests {
    use mdp_sdk::testing::Harness;

    use super::*;
    use crate::DailyRange;
    use crate::testing::{mon, state};

    #[test]
    fn payload_fields_keep_their_order_and_session_fields_follow() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.init(&[]).unwrap();
        let payload =
            r#"{"symbol":"AAPL","zeta":1,"alpha":2,"high":5,"low":4,"pre_market_high":99}"#;
        let e = h
            .analyze(vec![Event::Other(Raw {
                kind: "quote:AAPL".into(),
                json: payload.into(),
            })])
            .unwrap();
        let text = e
            .iter()
            .find_map(|e| match e {
                Effect::Put(p) if p.key == "daily_range:AAPL" => Some(p.value.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            text,
            Body::Json(
                r#"{"symbol":"AAPL","zeta":1,"alpha":2,"high":5,"low":4,"pre_market_high":null,"pre_market_low":null,"regular_session_high":5.0,"regular_session_low":4.0,"after_hours_high":null,"after_hours_low":null}"#
                    .into()
            )
        );
    }

    #[test]
    fn bad_payloads_are_rejected_or_ignored_never_trapped() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.init(&[]).unwrap();
        let raw = |j: &str| {
            Event::Other(Raw {
                kind: "quote:X".into(),
                json: j.into(),
            })
        };
        let e = h
            .analyze(vec![
                raw("not json"),
                raw("[1]"),
                raw(r#"{"close":1}"#),
                raw(r#"{"symbol":"BAD SYM","high":1,"low":1}"#),
                raw(r#"{"sym":"ZERO","high":0,"low":0}"#),
                raw(r#"{"symbol":"MISSING","close":3}"#),
                raw(r#"{"symbol":"NEG","h":-1,"l":"x"}"#),
                Event::Trade(Trade {
                    symbol: "T".into(),
                    price: 1.0,
                    size: 1,
                    exchange: 0,
                    id: String::new(),
                    tape: 0,
                    conditions: vec![],
                    timestamp_ms: 0,
                    sequence: 0,
                }),
            ])
            .unwrap();
        let rejected: Vec<u32> = e
            .iter()
            .filter_map(|e| match e {
                Effect::Reject(r) => Some(r.index),
                _ => None,
            })
            .collect();
        assert_eq!(rejected, vec![0, 1, 2, 3, 7]);
        for sym in ["ZERO", "MISSING", "NEG"] {
            let s = state(&e, sym);
            assert!(s["regular_session_high"].is_null(), "{sym}: {s}");
        }
        // `sym` works as the symbol field; later valid prices still count.
        let e = h
            .analyze(vec![raw(r#"{"sym":"ZERO","h":2,"l":1}"#)])
            .unwrap();
        assert_eq!(
            state(&e, "ZERO")["regular_session_high"].as_f64(),
            Some(2.0)
        );
    }
}
