//! The Massive REST endpoints the host uses, answered from the simulated
//! market: snapshot, daily bars, market status, ratios, float.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Shared;
use crate::sim::{Fault, session_at};

/// The REST routes.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v2/snapshot/locale/us/markets/stocks/tickers/{ticker}",
            get(snapshot),
        )
        .route(
            "/v2/aggs/ticker/{ticker}/range/{mult}/{span}/{from}/{to}",
            get(aggs),
        )
        .route("/v1/marketstatus/now", get(market_status))
        .route("/stocks/financials/v1/ratios", get(ratios))
        .route("/stocks/vX/float", get(float))
}

fn authorized(shared: &Shared, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let Some(key) = &shared.api_key else {
        return true;
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer == Some(key.as_str()) || query.get("apiKey") == Some(key)
}

fn error(code: StatusCode, status: &str, message: &str) -> Response {
    (
        code,
        Json(json!({"status": status, "request_id": "sim", "message": message, "error": message})),
    )
        .into_response()
}

macro_rules! guard {
    ($shared:expr, $headers:expr, $query:expr) => {
        if !authorized(&$shared, &$headers, &$query) {
            return error(StatusCode::UNAUTHORIZED, "ERROR", "Unknown API Key");
        }
    };
}

async fn snapshot(
    State(shared): State<Arc<Shared>>,
    Path(ticker): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    guard!(shared, headers, q);
    let now = shared.clock.now_ms();
    let snap = shared.market().snapshot(&ticker, now);
    match snap {
        Some(t) => Json(json!({"request_id": "sim", "status": "OK", "ticker": t})).into_response(),
        None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "Ticker not found."),
    }
}

async fn aggs(
    State(shared): State<Arc<Shared>>,
    Path((ticker, _mult, _span, _from, _to)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    guard!(shared, headers, q);
    let now = shared.clock.now_ms();
    let bars = shared.market().daily_bars(&ticker, now);
    let bars = bars.unwrap_or_default();
    Json(json!({"ticker": ticker, "status": "OK", "request_id": "sim", "resultsCount": bars.len(), "count": bars.len(), "adjusted": true, "results": bars})).into_response()
}

async fn market_status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    guard!(shared, headers, q);
    if shared.take_fault(|f| f == Fault::RestLie).is_some() {
        return Json(json!({"market": 7, "earlyHours": "maybe"})).into_response();
    }
    let now = shared.clock.now_ms();
    let (market, early, after) = session_at(now);
    let server_time = chrono::DateTime::from_timestamp_millis(now as i64)
        .map(|t| t.with_timezone(&chrono_tz::America::New_York).to_rfc3339())
        .unwrap_or_default();
    Json(json!({"market": market, "earlyHours": early, "afterHours": after, "serverTime": server_time,
                "exchanges": {"nyse": market, "nasdaq": market, "otc": market}})).into_response()
}

async fn ratios(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    guard!(shared, headers, q);
    let results = ticker_results(
        &shared,
        &q,
        |t| json!({"ticker": t.symbol, "date": "2026-01-02", "price": t.prev_close, "average_volume": t.avg_volume}),
    );
    Json(json!({"status": "OK", "request_id": "sim", "count": results.len(), "results": results}))
        .into_response()
}

async fn float(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    guard!(shared, headers, q);
    let results = ticker_results(
        &shared,
        &q,
        |t| json!({"ticker": t.symbol, "free_float": t.free_float, "free_float_percent": 90.0, "effective_date": "2026-01-02"}),
    );
    Json(json!({"status": "OK", "request_id": "sim", "results": results})).into_response()
}

/// The results array of a reference endpoint: one row for the `ticker`
/// query parameter's symbol, none for an unknown one.
fn ticker_results(
    shared: &Shared,
    q: &HashMap<String, String>,
    row: impl Fn(&crate::sim::market::Ticker) -> Value,
) -> Vec<Value> {
    let ticker = q.get("ticker").map(String::as_str).unwrap_or_default();
    shared
        .market()
        .ticker(ticker)
        .map(&row)
        .into_iter()
        .collect()
}
