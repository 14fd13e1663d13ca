//! The seed's queue JSON and a JSON form of effects.
//!
//! [`decode_event`] turns one queue message object into an [`Event`]: a typed
//! record when the object names a known `event_type` and carries its required
//! fields, otherwise [`Event::Other`] with the JSON unchanged (so a router can
//! still send it to `unknown`). The host uses the same decoder, so a native
//! test and a real run see identical events.
//!
//! [`EffectRecord`] is the JSON form of an effect with its body resolved: what
//! `mdp plugin test` prints and what golden files contain.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AggWindow, Aggregate, Body, Effect, Event, Luld, Quote, Raw, Trade};

/// Why a message could not be decoded at all.
#[derive(Debug, Clone, PartialEq)]
pub enum WireError {
    /// Not JSON (the seed's `decoding_error`).
    NotJson(String),
    /// JSON, but not an object.
    NotAnObject,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::NotJson(e) => write!(f, "message is not JSON: {e}"),
            WireError::NotAnObject => write!(f, "message is JSON but not an object"),
        }
    }
}

impl std::error::Error for WireError {}

fn f64_of(v: &Value, k: &str) -> Option<f64> {
    v.get(k)?.as_f64().filter(|x| x.is_finite())
}
fn u64_of(v: &Value, k: &str) -> Option<u64> {
    let x = v.get(k)?;
    x.as_u64().or_else(|| {
        x.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}
fn u32_or0(v: &Value, k: &str) -> u32 {
    u64_of(v, k)
        .and_then(|x| u32::try_from(x).ok())
        .unwrap_or(0)
}
fn u32_list(v: &Value, k: &str) -> Vec<u32> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default()
}
fn str_of(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn typed(v: &Value, kind: &str) -> Option<Event> {
    let symbol = str_of(v, "symbol")?;
    Some(match kind {
        "T" => Event::Trade(Trade {
            symbol,
            price: f64_of(v, "price")?,
            size: u64_of(v, "size")?,
            exchange: u32_or0(v, "exchange"),
            id: str_of(v, "id").unwrap_or_default(),
            tape: u32_or0(v, "tape"),
            conditions: u32_list(v, "conditions"),
            timestamp_ms: u64_of(v, "timestamp")?,
            sequence: u64_of(v, "sequence_number").unwrap_or(0),
        }),
        "Q" => Event::Quote(Quote {
            symbol,
            bid_price: f64_of(v, "bid_price")?,
            bid_size: u64_of(v, "bid_size").unwrap_or(0),
            bid_exchange: u32_or0(v, "bid_exchange_id"),
            ask_price: f64_of(v, "ask_price")?,
            ask_size: u64_of(v, "ask_size").unwrap_or(0),
            ask_exchange: u32_or0(v, "ask_exchange_id"),
            condition: u64_of(v, "condition").and_then(|c| u32::try_from(c).ok()),
            indicators: u32_list(v, "indicators"),
            timestamp_ms: u64_of(v, "timestamp")?,
            sequence: u64_of(v, "sequence_number").unwrap_or(0),
            tape: u32_or0(v, "tape"),
        }),
        "A" | "AM" => Event::Aggregate(Aggregate {
            window: if kind == "A" {
                AggWindow::Second
            } else {
                AggWindow::Minute
            },
            symbol,
            volume: u64_of(v, "volume")?,
            accumulated_volume: u64_of(v, "accumulated_volume").unwrap_or(0),
            official_open_price: f64_of(v, "official_open_price").unwrap_or(0.0),
            vwap: f64_of(v, "vwap").unwrap_or(0.0),
            open: f64_of(v, "open")?,
            close: f64_of(v, "close")?,
            high: f64_of(v, "high")?,
            low: f64_of(v, "low")?,
            aggregate_vwap: f64_of(v, "aggregate_vwap").unwrap_or(0.0),
            average_size: f64_of(v, "average_size").unwrap_or(0.0),
            start_ms: u64_of(v, "start_timestamp")?,
            end_ms: u64_of(v, "end_timestamp")?,
            otc: v.get("otc").and_then(Value::as_bool).unwrap_or(false),
        }),
        "LULD" => Event::Luld(Luld {
            symbol,
            high_price: f64_of(v, "high_price")?,
            low_price: f64_of(v, "low_price")?,
            indicators: u32_list(v, "indicators"),
            tape: u32_or0(v, "tape"),
            timestamp_ns: u64_of(v, "timestamp")?,
            sequence: u64_of(v, "sequence_number").unwrap_or(0),
        }),
        _ => return None,
    })
}

/// Decode an already-parsed queue message object (`json` is its exact text).
///
/// A JSON scalar (what the seed's listener publishes on `unknown` in its raw
/// mode: the frame as a JSON string) is an [`Event::Other`] of no kind, as
/// the seed's processors hand it to their analyzer; only an array (inside a
/// frame-batch array) is refused.
pub fn decode_value(value: &Value, json: &str) -> Result<Event, WireError> {
    if value.is_array() {
        return Err(WireError::NotAnObject);
    }
    if !value.is_object() {
        return Ok(Event::Other(Raw {
            kind: String::new(),
            json: json.to_string(),
        }));
    }
    let kind = value
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok(typed(value, &kind).unwrap_or_else(|| {
        Event::Other(Raw {
            kind,
            json: json.to_string(),
        })
    }))
}

/// Decode one queue message object (seed queue JSON) into an [`Event`].
pub fn decode_event(json: &str) -> Result<Event, WireError> {
    let value: Value = serde_json::from_str(json).map_err(|e| WireError::NotJson(e.to_string()))?;
    decode_value(&value, json)
}

/// An effect in JSON form, with its body resolved to the JSON text it stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum EffectRecord {
    /// `SET` with optional TTL.
    Put {
        /// Key.
        key: String,
        /// Value (JSON text).
        value: String,
        /// TTL in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u32>,
    },
    /// Capped `LPUSH`.
    Push {
        /// Key.
        key: String,
        /// Value (JSON text).
        value: String,
        /// Cap.
        max_len: u32,
        /// TTL in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u32>,
    },
    /// `ZADD` with optional keep-top.
    Zadd {
        /// Key.
        key: String,
        /// Members and scores.
        members: Vec<(String, f64)>,
        /// Keep this many highest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_top: Option<u32>,
        /// TTL in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u32>,
    },
    /// `HSET`.
    Hset {
        /// Key.
        key: String,
        /// Fields.
        fields: Vec<(String, String)>,
        /// TTL in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u32>,
    },
    /// `DEL`.
    Del {
        /// Keys.
        keys: Vec<String>,
    },
    /// `PUBLISH`.
    Publish {
        /// Channel.
        channel: String,
        /// Message (JSON text).
        value: String,
    },
    /// Reject one input event.
    Reject {
        /// Index in the batch.
        index: u32,
        /// Reason.
        reason: String,
    },
}

impl EffectRecord {
    /// The record for `effect`, resolving `Body::Input(i)` against `inputs`
    /// (the batch's messages as JSON text).
    pub fn new(effect: &Effect, inputs: &[String]) -> EffectRecord {
        let body = |b: &Body| match b {
            Body::Json(s) => s.clone(),
            Body::Input(i) => inputs
                .get(*i as usize)
                .cloned()
                .unwrap_or_else(|| "null".into()),
        };
        match effect {
            Effect::Put(p) => EffectRecord::Put {
                key: p.key.clone(),
                value: body(&p.value),
                ttl_secs: p.ttl_secs,
            },
            Effect::Push(p) => EffectRecord::Push {
                key: p.key.clone(),
                value: body(&p.value),
                max_len: p.max_len,
                ttl_secs: p.ttl_secs,
            },
            Effect::Zadd(z) => EffectRecord::Zadd {
                key: z.key.clone(),
                members: z.members.clone(),
                keep_top: z.keep_top,
                ttl_secs: z.ttl_secs,
            },
            Effect::Hset(h) => EffectRecord::Hset {
                key: h.key.clone(),
                fields: h.fields.clone(),
                ttl_secs: h.ttl_secs,
            },
            Effect::Del(keys) => EffectRecord::Del { keys: keys.clone() },
            Effect::Publish(p) => EffectRecord::Publish {
                channel: p.channel.clone(),
                value: body(&p.value),
            },
            Effect::Reject(r) => EffectRecord::Reject {
                index: r.index,
                reason: r.reason.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_trade_and_keeps_unknown_types_raw() {
        let t = decode_event(r#"{"event_type":"T","symbol":"MSFT","exchange":4,"id":"12345","tape":3,"price":114.125,"size":100,"conditions":[0,12],"timestamp":1536036818784,"sequence_number":3681328,"trf_id":null,"trf_timestamp":null}"#).unwrap();
        match t {
            Event::Trade(t) => {
                assert_eq!((t.symbol.as_str(), t.price, t.size), ("MSFT", 114.125, 100));
                assert_eq!(t.conditions, vec![0, 12]);
            }
            other => panic!("not a trade: {other:?}"),
        }
        let noi = decode_event(r#"{"event_type":"NOI","symbol":"X"}"#).unwrap();
        assert!(matches!(noi, Event::Other(Raw { ref kind, .. }) if kind == "NOI"));
    }

    #[test]
    fn malformed_known_types_fall_back_to_other_and_garbage_is_an_error() {
        let e = decode_event(r#"{"event_type":"T","symbol":"X"}"#).unwrap();
        assert!(matches!(e, Event::Other(Raw { ref kind, .. }) if kind == "T"));
        assert!(matches!(decode_event("NaN"), Err(WireError::NotJson(_))));
        assert!(matches!(
            decode_event(r#"{"event_type":"T","symbol":"X","price":NaN}"#),
            Err(WireError::NotJson(_))
        ));
        assert_eq!(decode_event("[1]"), Err(WireError::NotAnObject));
    }

    #[test]
    fn a_json_string_body_is_an_event_of_no_kind_as_the_seed_passes_it_on() {
        for body in [r#""{\"ev\":\"XQ\"} raw frame""#, "42", "null"] {
            let e = decode_event(body).unwrap();
            assert!(
                matches!(e, Event::Other(Raw { ref kind, ref json }) if kind.is_empty() && json == body),
                "{body}: {e:?}"
            );
        }
    }
}

/// Reference data a golden file provides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenReference {
    /// Ticker snapshots (camelCase JSON objects) by symbol.
    #[serde(default)]
    pub snapshots: std::collections::BTreeMap<String, Value>,
    /// 30-day average volumes by symbol.
    #[serde(default)]
    pub avg_volumes: std::collections::BTreeMap<String, f64>,
    /// Free floats by symbol.
    #[serde(default)]
    pub free_floats: std::collections::BTreeMap<String, f64>,
    /// Market status: `open`, `closed`, `pre-market` or `after-hours`.
    #[serde(default)]
    pub market: Option<String>,
}

/// How a golden step restarts its replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoldenRestart {
    /// A new instance, `init` without state: it rehydrates from the store.
    Cold,
    /// A new instance handed the old one's `snapshot`.
    Snapshot,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One batch of a golden file and the effects it must produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenStep {
    /// Clock for this batch, Unix microseconds (default: the file's `now_us`).
    #[serde(default)]
    pub now_us: Option<u64>,
    /// Which replica analyzes this batch (default 0). Replicas are separate
    /// instances of the analyzer sharing one store and one clock, each
    /// initialised with the file's config the first time it is used.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replica: u32,
    /// Restart the replica before this batch: `cold` drops it and calls
    /// `init` without state (rehydration from the store), `snapshot` hands
    /// its `snapshot` to the new instance (a hot reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<GoldenRestart>,
    /// The batch: queue JSON objects (or pub/sub payloads for scanners).
    pub events: Vec<Value>,
    /// The effects expected, in order.
    pub effects: Vec<EffectRecord>,
    /// Market status from this batch on (`open`, `closed`, `pre-market`,
    /// `after-hours`); absent keeps the previous one. Lets a golden file
    /// cross session transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<String>,
}

/// A golden test: config, starting cache and reference data, then batches and
/// the exact effects each must produce. Run natively by
/// [`crate::testing::run_golden`] and through Wasm by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    /// Config pairs passed to `init`.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// Clock at `init`, Unix microseconds.
    #[serde(default)]
    pub now_us: u64,
    /// String keys in the cache before `init` (values are JSON text).
    #[serde(default)]
    pub store: std::collections::BTreeMap<String, String>,
    /// Reference data.
    #[serde(default)]
    pub reference: GoldenReference,
    /// The batches.
    pub steps: Vec<GoldenStep>,
}

impl Golden {
    /// Parse a golden file's text.
    pub fn parse(text: &str) -> Result<Golden, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The kind of event a pub/sub payload becomes: `other` with the channel as kind.
pub fn pubsub_event(channel: &str, payload: &str) -> Event {
    Event::Other(Raw {
        kind: channel.to_string(),
        json: payload.to_string(),
    })
}
