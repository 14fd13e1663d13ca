//! The Finlight listener's admin API: status, readiness, start/stop, and
//! the filter changed at runtime.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{FinlightFilter, FinlightListener};

/// The admin routes of a Finlight listener: `GET /status`, `GET /ready`, `GET|POST /filter`
/// (`{"query":…, "tickers":[…], "sources":[…], "language":"en"}`; omitted
/// fields keep their value); the `POST` is [guarded](crate::feed::admin::guarded)
/// by the listener's `--admin-token`.
pub fn admin_router(listener: Arc<FinlightListener>) -> Router {
    let access = listener.config.admin.clone();
    let router = crate::feed::admin::status_routes::<FinlightListener>()
        .merge(crate::feed::lifecycle::routes::<FinlightListener>())
        .route(
            "/filter",
            get(|State(l): State<Arc<FinlightListener>>| async move { Json(l.filter()) })
                .post(post_filter),
        )
        .with_state(listener);
    crate::feed::admin::guarded(router, &access)
}

/// `POST /filter`: the fields given replace those of the current filter.
async fn post_filter(State(l): State<Arc<FinlightListener>>, Json(body): Json<Value>) -> Response {
    match changed_filter(l.filter(), &body).and_then(|f| l.set_filter(f)) {
        Ok(f) => Json(json!({"ok": true, "filter": f})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "admin change rejected");
            crate::feed::admin::rejected(e, json!(l.filter()))
        }
    }
}

/// A list of strings given as an array, a comma string, or null (none).
fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(a) => a.iter().map(|i| i.as_str().map(String::from)).collect(),
        Value::String(s) => Some(
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        ),
        _ => None,
    }
}

/// `f` with the fields of `body` (`query`, `tickers`, `sources`, `language`) applied.
fn changed_filter(mut f: FinlightFilter, body: &Value) -> Result<FinlightFilter, String> {
    let Value::Object(body) = body else {
        return Err("expected a JSON object".to_string());
    };
    for (k, v) in body {
        match k.as_str() {
            "query" => {
                f.query = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err("query must be a string or null".into()),
                }
            }
            "tickers" => f.tickers = strings(v).ok_or("tickers must be a list of strings")?,
            "sources" => f.sources = strings(v).ok_or("sources must be a list of strings")?,
            "language" => f.language = v.as_str().ok_or("language must be a string")?.to_string(),
            other => return Err(format!("unknown field `{other}`")),
        }
    }
    Ok(f)
}

crate::feed::admin::listener_traits!(FinlightListener);
