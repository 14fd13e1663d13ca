//! The Finlight frame parser: one server frame, a JSON object with an
//! `action`, as a [`ServerMessage`] (the fuzz targets drive [`parse_frame`]).

use serde_json::{Value, json};

/// One server frame of the Finlight stream, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `admit`: the session is admitted under `lease_id`.
    Admit {
        /// The lease id (empty when the server sent none).
        lease_id: String,
        /// The echoed `clientNonce`, if any.
        client_nonce: Option<String>,
    },
    /// `sendArticle`: one article (a JSON object), published unchanged.
    Article(serde_json::Map<String, Value>),
    /// `pong`: the answer to our application ping.
    Pong,
    /// `preempted`: another session of the key took over (terminal).
    Preempted {
        /// The server's reason (`preempted` when it gave none).
        reason: String,
    },
    /// `admin_kick`: reconnect only after `retry_after_ms` (see [`super::session::kick_wait`]).
    AdminKick {
        /// The server's `retryAfter`, ms.
        retry_after_ms: Option<u64>,
    },
    /// `error`: the server's error text (`data` or `error`).
    Error {
        /// The text (a non-string value as its JSON).
        text: String,
    },
    /// Any other `action` (empty when the frame had none): logged, ignored.
    Unknown {
        /// The action named.
        action: String,
    },
}

/// Why a Finlight server frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerFrameError {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A `sendArticle` whose `data` is not an object.
    #[error("sendArticle without an object `data`")]
    ArticleWithoutData,
}

/// Parse one text frame of the Finlight stream.
pub fn parse_frame(text: &str) -> Result<ServerMessage, ServerFrameError> {
    let Ok(Value::Object(mut msg)) = serde_json::from_str::<Value>(text) else {
        return Err(ServerFrameError::NotAnObject);
    };
    let string = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
    let action = string(msg.get("action")).unwrap_or_default();
    Ok(match action.as_str() {
        "admit" => ServerMessage::Admit {
            lease_id: string(msg.get("leaseId")).unwrap_or_default(),
            client_nonce: string(msg.get("clientNonce")),
        },
        "sendArticle" => match msg.remove("data") {
            Some(Value::Object(data)) => ServerMessage::Article(data),
            _ => return Err(ServerFrameError::ArticleWithoutData),
        },
        "pong" => ServerMessage::Pong,
        "preempted" => ServerMessage::Preempted {
            reason: string(msg.get("reason")).unwrap_or_else(|| "preempted".into()),
        },
        "admin_kick" => ServerMessage::AdminKick {
            retry_after_ms: msg.get("retryAfter").and_then(Value::as_u64),
        },
        "error" => ServerMessage::Error {
            text: msg
                .get("data")
                .or_else(|| msg.get("error"))
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_default(),
        },
        _ => ServerMessage::Unknown { action },
    })
}

impl ServerMessage {
    /// The frame a server sends for this message: [`parse_frame`] of it
    /// gives this message back.
    pub fn to_frame(&self) -> Value {
        match self {
            ServerMessage::Admit {
                lease_id,
                client_nonce,
            } => json!({"action": "admit", "leaseId": lease_id, "clientNonce": client_nonce}),
            ServerMessage::Article(data) => json!({"action": "sendArticle", "data": data}),
            ServerMessage::Pong => json!({"action": "pong"}),
            ServerMessage::Preempted { reason } => json!({"action": "preempted", "reason": reason}),
            ServerMessage::AdminKick { retry_after_ms } => {
                json!({"action": "admin_kick", "retryAfter": retry_after_ms})
            }
            ServerMessage::Error { text } => json!({"action": "error", "data": text}),
            ServerMessage::Unknown { action } => json!({"action": action}),
        }
    }
}
