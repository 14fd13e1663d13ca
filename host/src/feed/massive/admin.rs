//! The Massive listener's admin API: status, readiness, start/stop, and the
//! feed, market and subscriptions changed at runtime.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::MassiveListener;
use super::settings::MassiveSettings;

/// A list of topics given as a JSON array or `{"subscriptions": [...]}` or a comma string.
fn topics_of(body: &Value) -> Option<Vec<String>> {
    let v = body.get("subscriptions").unwrap_or(body);
    match v {
        Value::Array(items) => items.iter().map(|i| i.as_str().map(String::from)).collect(),
        Value::String(s) => Some(s.split(',').map(String::from).collect()),
        _ => None,
    }
}

/// The first string field of `body` named in `names` (or `body` itself when a string).
fn field<'a>(body: &'a Value, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| body.get(*n).and_then(Value::as_str))
        .or_else(|| body.as_str())
}

/// The admin routes of a Massive listener: `GET /status`, `GET /ready`, `GET|POST /feed`,
/// `GET|POST /market`, `GET|POST /subscriptions` (JSON bodies: `{"feed": url}`,
/// `{"market": "stocks"}`, `["T.*","Q.AAPL"]`); the `POST`s are
/// [guarded](crate::feed::admin::guarded) by the listener's `--admin-token`.
pub fn admin_router(listener: Arc<MassiveListener>) -> Router {
    let access = listener.config.admin.clone();
    type L = State<Arc<MassiveListener>>;
    fn answer(l: &MassiveListener, r: Result<MassiveSettings, String>) -> Response {
        match r {
            Ok(s) => Json(json!({"ok": true, "settings": s})).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "admin change rejected");
                crate::feed::admin::rejected(e, json!(l.settings()))
            }
        }
    }
    async fn settings(State(l): L) -> Json<MassiveSettings> {
        Json(l.settings())
    }
    let router = crate::feed::admin::status_routes::<MassiveListener>()
        .merge(crate::feed::lifecycle::routes::<MassiveListener>())
        .route(
            "/feed",
            get(settings).post(|State(l): L, Json(body): Json<Value>| async move {
                let r = field(&body, &["feed", "url", "feed_url"])
                    .ok_or_else(|| "expected {\"feed\": \"ws://host:port\"}".to_string())
                    .and_then(|u| l.set_feed(u));
                answer(&l, r)
            }),
        )
        .route(
            "/market",
            get(settings).post(|State(l): L, Json(body): Json<Value>| async move {
                let r = field(&body, &["market"])
                    .ok_or_else(|| "expected {\"market\": \"stocks\"}".to_string())
                    .and_then(|m| l.set_market(m));
                answer(&l, r)
            }),
        )
        .route(
            "/subscriptions",
            get(settings).post(|State(l): L, Json(body): Json<Value>| async move {
                let r = topics_of(&body)
                    .ok_or_else(|| {
                        "expected a JSON array of topics like [\"T.*\",\"Q.AAPL\"]".to_string()
                    })
                    .and_then(|t| l.set_subscriptions(&t));
                answer(&l, r)
            }),
        )
        .with_state(listener);
    crate::feed::admin::guarded(router, &access)
}

crate::feed::admin::listener_traits!(MassiveListener);
