//! The listeners' admin HTTP API (axum): `GET /status`, `GET /health`,
//! `GET /metrics`, plus the listener's own settings routes. Settings
//! changes are validated; a bad value is refused with `400
//! {"error": reason, "current": settings}` and the old settings are kept.

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Serve `router` (plus `/health` and `/metrics`) on `addr`; returns the bound address.
pub async fn serve(addr: &str, router: Router) -> anyhow::Result<std::net::SocketAddr> {
    let handle = crate::telemetry::metrics_handle();
    let app = router
        .route(
            "/health",
            axum::routing::get(|| async { Json(json!({"status": "OK"})) }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || async move { handle.render() }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the listener admin API: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "listener admin server stopped");
        }
    });
    tracing::info!(%bound, "listener admin API listening");
    Ok(bound)
}

/// `400 {"error": reason, "current": current}`.
pub fn rejected(reason: impl std::fmt::Display, current: Value) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": reason.to_string(), "current": current})),
    )
        .into_response()
}

/// A ticker symbol as the feeds accept it: `*`, or 1–12 of `A-Z 0-9 . -`
/// starting with a letter (tickers are case-sensitive upper case).
pub fn valid_symbol(s: &str) -> bool {
    s == "*"
        || (!s.is_empty()
            && s.len() <= 12
            && s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.' || c == '-'))
}

/// Check a WebSocket base URL (`ws://` or `wss://` with a host).
pub fn valid_ws_url(s: &str) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    if !(s.starts_with("ws://") || s.starts_with("wss://")) {
        return Err(format!("`{s}` is not a ws:// or wss:// URL"));
    }
    s.into_client_request()
        .map(|_| ())
        .map_err(|e| format!("`{s}` is not a usable URL: {e}"))
}
