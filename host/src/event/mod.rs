//! Market-data events as they travel through queues: the seed's queue JSON.
//! [`massive`] converts Massive WebSocket short-key objects into it;
//! [`split_body`] cuts a queue message body (one object, an array of
//! objects, or a raw JSON scalar) into events.

pub mod massive;

use serde_json::Value;

/// The queues market data is routed to, in the seed's order.
pub const MARKET_QUEUES: [&str; 5] = ["trades", "aggregate", "quotes", "halts", "unknown"];

/// The queue news articles go to.
pub const NEWS_QUEUE: &str = "news";

/// The queue a queue-JSON event belongs on (seed `QueueNameResolver`).
pub fn queue_for(event_type: &str) -> &'static str {
    match event_type {
        "T" => "trades",
        "A" | "AM" => "aggregate",
        "Q" => "quotes",
        "LULD" => "halts",
        _ => "unknown",
    }
}

/// Why a message body could not be split into events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON.
    #[error("message body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but neither an object nor an array of objects.
    #[error("message body is neither an event object nor an array of event objects")]
    WrongShape,
    /// Larger than allowed.
    #[error("message body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// One event of a body: the parsed object and its exact JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyEvent {
    /// The parsed event (an object, or a scalar body).
    pub value: Value,
    /// Its JSON text (the whole body for a single object, re-serialized for
    /// an element of an array).
    pub text: String,
}

/// Split a body that is one event object or a JSON array of them. A body
/// that is a JSON scalar (the seed listener's raw mode publishes frames as
/// JSON strings on `unknown`) is one event too; inside an array only objects
/// are events.
pub fn split_body(body: &[u8], max_bytes: usize) -> Result<Vec<BodyEvent>, BodyError> {
    if body.len() > max_bytes {
        return Err(BodyError::TooLarge {
            len: body.len(),
            max: max_bytes,
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    match value {
        Value::Object(_) | Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
            Ok(vec![BodyEvent {
                text: String::from_utf8_lossy(body).into_owned(),
                value,
            }])
        }
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(_) => Ok(BodyEvent {
                    text: v.to_string(),
                    value: v,
                }),
                _ => Err(BodyError::WrongShape),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_objects_and_arrays_and_refuses_the_rest() {
        let one = split_body(br#"{"event_type":"T","symbol":"A"}"#, 1024).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].text, r#"{"event_type":"T","symbol":"A"}"#);
        let many = split_body(br#"[{"a":1},{"b":2}]"#, 1024).unwrap();
        assert_eq!(
            many.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(split_body(b"[1]", 1024), Err(BodyError::WrongShape));
        let raw = split_body(br#""{\"ev\":\"XQ\"}""#, 1024).unwrap();
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].text, r#""{\"ev\":\"XQ\"}""#);
        assert!(matches!(
            split_body(b"{nope", 1024),
            Err(BodyError::NotJson(_))
        ));
        assert_eq!(
            split_body(b"{}", 1),
            Err(BodyError::TooLarge { len: 2, max: 1 })
        );
    }

    #[test]
    fn routes_like_the_seed() {
        assert_eq!(queue_for("T"), "trades");
        assert_eq!(queue_for("AM"), "aggregate");
        assert_eq!(queue_for("A"), "aggregate");
        assert_eq!(queue_for("Q"), "quotes");
        assert_eq!(queue_for("LULD"), "halts");
        assert_eq!(queue_for("NOI"), "unknown");
    }
}
