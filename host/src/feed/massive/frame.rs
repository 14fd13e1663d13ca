//! The Massive frame parser: statuses mixed with data in any position,
//! unknown fields ignored, unknown event types routed to `unknown` without
//! aborting the frame; garbage, truncated and oversized frames refused
//! without panicking (the fuzz targets drive [`parse_frame`]).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::event::{massive::to_queue_json, queue_for};

/// Largest frame accepted, bytes (larger ones are dropped and counted).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// What a frame holds, parsed.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedFrame {
    /// Queue JSON bodies per queue name.
    pub routed: BTreeMap<&'static str, Vec<Value>>,
    /// Status objects `(status, message)`.
    pub statuses: Vec<(String, String)>,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Over [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the 1 MB limit")]
    TooLarge(usize),
    /// Not JSON.
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    /// JSON but neither an array nor an object.
    #[error("frame is neither an array nor an object")]
    WrongShape,
}
/// Parse one server frame (an array of objects; a lone object is accepted).
pub fn parse_frame(text: &str) -> Result<ParsedFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(text.len()));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        v @ Value::Object(_) => vec![v],
        _ => return Err(FrameError::WrongShape),
    };
    let mut frame = ParsedFrame::default();
    for item in items {
        let Value::Object(obj) = item else { continue };
        match obj.get("ev").and_then(Value::as_str) {
            Some("status") => frame.statuses.push((
                obj.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                obj.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )),
            ev => {
                let queue = queue_for(ev.unwrap_or(""));
                frame
                    .routed
                    .entry(queue)
                    .or_default()
                    .push(Value::Object(to_queue_json(&obj)));
            }
        }
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_data_mix_and_unknown_types_do_not_abort_the_frame() {
        let f = parse_frame(r#"[{"ev":"status","status":"success","message":"subscribed to: T.*"},{"ev":"T","sym":"A","p":1,"s":1,"t":1,"new_field":true},{"ev":"NOI","T":"X"},{"ev":"Q","sym":"A","bp":1,"ap":2}]"#).unwrap();
        assert_eq!(
            f.statuses,
            vec![("success".to_string(), "subscribed to: T.*".to_string())]
        );
        assert_eq!(f.routed["trades"][0]["symbol"], "A");
        assert_eq!(f.routed["unknown"][0]["T"], "X");
        assert_eq!(f.routed["quotes"].len(), 1);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(matches!(
            parse_frame("[{\"ev\":"),
            Err(FrameError::NotJson(_))
        ));
        assert_eq!(parse_frame("42"), Err(FrameError::WrongShape));
        assert!(matches!(
            parse_frame(&"x".repeat(MAX_FRAME_BYTES + 1)),
            Err(FrameError::TooLarge(_))
        ));
        // Property-style: random bytes and every truncation of a valid frame never panic.
        let valid = r#"[{"ev":"T","sym":"A","p":1.5,"s":100,"t":1},{"ev":"A","sym":"B","v":1}]"#;
        for cut in 0..valid.len() {
            let _ = parse_frame(&valid[..cut]);
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let alphabet = b"[]{}\",:evTsymp0123 ";
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse_frame(&String::from_utf8_lossy(&bytes));
        }
    }
}
