//! Client frames of the widget protocol, parsed into
//! requests apart from the session that answers them.

use serde_json::{Value, json};

/// One client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `{"action":"auth","token":…}` or `{"action":"auth","api_key":…}`.
    Auth {
        /// A widget token (JWT); preferred over `api_key` when both are given.
        token: Option<String>,
        /// The shared key.
        api_key: Option<String>,
    },
    /// `{"action":"subscribe","feed":…}` (an empty feed is ignored).
    Subscribe {
        /// Channel or pattern.
        feed: String,
    },
    /// `{"action":"unsubscribe","feed":…}`.
    Unsubscribe {
        /// Channel or pattern.
        feed: String,
    },
    /// `{"action":"get","cache":…,"limit":…}`: a snapshot of a key.
    Get {
        /// The key (never empty).
        cache: String,
        /// Newest list items wanted (0 or less: all).
        limit: i64,
    },
    /// Anything else (a `get` without a key included), answered
    /// `invalid action`.
    Invalid {
        /// The action named (empty when none).
        action: String,
    },
}

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON (answered `invalid json`, or `unauthorized` before auth).
    #[error("client frame is not JSON: {0}")]
    NotJson(String),
}

/// Parse one client text frame.
pub fn parse_request(raw: &str) -> Result<Request, RequestError> {
    let req: Value = serde_json::from_str(raw).map_err(|e| RequestError::NotJson(e.to_string()))?;
    let string = |key: &str| req.get(key).and_then(Value::as_str).map(String::from);
    let action = string("action").unwrap_or_default();
    Ok(match action.as_str() {
        "auth" => Request::Auth {
            token: string("token"),
            api_key: string("api_key"),
        },
        "subscribe" => Request::Subscribe {
            feed: string("feed").unwrap_or_default(),
        },
        "unsubscribe" => Request::Unsubscribe {
            feed: string("feed").unwrap_or_default(),
        },
        "get" => match string("cache") {
            Some(cache) if !cache.is_empty() => Request::Get {
                cache,
                limit: req.get("limit").and_then(Value::as_i64).unwrap_or(0),
            },
            _ => Request::Invalid { action },
        },
        _ => Request::Invalid { action },
    })
}

impl Request {
    /// The frame a client sends for this request: [`parse_request`] of it
    /// gives this request back.
    pub fn to_frame(&self) -> Value {
        match self {
            Request::Auth { token, api_key } => {
                json!({"action": "auth", "token": token, "api_key": api_key})
            }
            Request::Subscribe { feed } => json!({"action": "subscribe", "feed": feed}),
            Request::Unsubscribe { feed } => json!({"action": "unsubscribe", "feed": feed}),
            Request::Get { cache, limit } => {
                json!({"action": "get", "cache": cache, "limit": limit})
            }
            Request::Invalid { action } => json!({"action": action}),
        }
    }
}
