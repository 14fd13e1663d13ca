//! The listeners' admin HTTP API (axum): `GET /status`, `GET /health`,
//! `GET /metrics`, plus the listener's own settings routes. Settings
//! changes are validated; a bad value is refused with `400
//! {"error": reason, "current": settings}` and the old settings are kept.
//!
//! Reads (`GET`, `HEAD`) are open. Writes ([`guarded`]) need
//! `Authorization: Bearer <token>` matching `--admin-token` /
//! `MDP_ADMIN_TOKEN` (compared in constant time): without a configured token
//! they are refused with 403, with a missing or wrong one 401. Accepted
//! changes are rate limited (`--admin-change-interval-ms`; 429 with
//! `Retry-After` when too soon), as each may reconnect to the upstream.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Who may change a listener's settings through its admin API, and how often.
#[derive(Clone)]
pub struct AdminAccess {
    /// Bearer token the admin API's write routes require; without one they are refused.
    pub admin_token: Option<String>,
    /// Least time between two accepted settings changes, ms (sooner: 429).
    pub admin_change_interval_ms: u64,
}

impl Default for AdminAccess {
    fn default() -> Self {
        AdminAccess {
            admin_token: None,
            admin_change_interval_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_change_interval_ms", &self.admin_change_interval_ms)
            .finish()
    }
}

/// The state of the write guard: the token, the interval, the last change.
#[derive(Clone)]
struct Guard {
    token: Option<Arc<str>>,
    interval: Duration,
    last_change: Arc<Mutex<Option<Instant>>>,
}

/// `router` with its write routes (every method but `GET` and `HEAD`)
/// behind the bearer token and the change rate limit of `access`.
pub fn guarded(router: Router, access: &AdminAccess) -> Router {
    let guard = Guard {
        token: access
            .admin_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Arc::from),
        interval: Duration::from_millis(access.admin_change_interval_ms),
        last_change: Arc::default(),
    };
    router.layer(axum::middleware::from_fn_with_state(guard, guard_writes))
}

fn refused(code: StatusCode, error: &str) -> Response {
    (code, Json(json!({"error": error}))).into_response()
}

async fn guard_writes(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let Some(token) = &guard.token else {
        tracing::warn!(path = %request.uri().path(), "admin change refused: no admin token configured");
        return refused(
            StatusCode::FORBIDDEN,
            "settings changes are disabled: no admin token is configured (set MDP_ADMIN_TOKEN or --admin-token)",
        );
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if !given.is_some_and(|t| crate::secret::same_secret(t, token)) {
        tracing::warn!(path = %request.uri().path(), "admin change refused: missing or wrong token");
        let mut r = refused(
            StatusCode::UNAUTHORIZED,
            "settings changes need `Authorization: Bearer <admin token>`",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    // Held through the change, so concurrent changes are counted one by one.
    let mut last = guard.last_change.lock().await;
    if let Some(at) = *last {
        let next_allowed = at + guard.interval;
        let now = Instant::now();
        if now < next_allowed {
            let wait = next_allowed - now;
            tracing::warn!(path = %request.uri().path(), ?wait, "admin change refused: too soon after the last one");
            let mut r = refused(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "settings changed less than {} ms ago; retry in {} ms",
                    guard.interval.as_millis(),
                    wait.as_millis()
                ),
            );
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return r;
        }
    }
    let response = next.run(request).await;
    if response.status().is_success() {
        *last = Some(Instant::now());
    }
    response
}

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

/// What every listener reports on its admin API.
pub trait ListenerStatus: Send + Sync + 'static {
    /// The status document (`GET /` and `GET /status`).
    fn status_json(&self) -> Value;
    /// Whether the upstream connection is up (`GET /ready`).
    fn connected(&self) -> bool;
    /// Whether the broker took the last publish (`GET /ready`).
    fn broker_connected(&self) -> bool;
}

/// The routes every listener shares: `/` and `/status` (the status
/// document) and `/ready` (200 while connected to the feed and the broker
/// took the last publish, else 503 naming which is down).
pub fn status_routes<T: ListenerStatus>() -> Router<std::sync::Arc<T>> {
    use axum::extract::State;
    use axum::routing::get;
    let status = |State(l): State<std::sync::Arc<T>>| async move { Json(l.status_json()) };
    Router::new()
        .route("/", get(status))
        .route("/status", get(status))
        .route(
            "/ready",
            get(|State(l): State<std::sync::Arc<T>>| async move {
                match (l.connected(), l.broker_connected()) {
                    (true, true) => (StatusCode::OK, "connected"),
                    (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not connected to the feed"),
                    (true, false) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the broker did not take the last publish",
                    ),
                }
            }),
        )
}

/// The read-only routes of a listener (`/`, `/status`, `/ready`), for the
/// health port apart from the control API.
pub fn read_router<T: ListenerStatus>(listener: std::sync::Arc<T>) -> Router {
    status_routes::<T>().with_state(listener)
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

/// Implement [`ListenerStatus`] and [`super::lifecycle::Controlled`] for a
/// listener with the fields every listener has (`lifecycle`, `stats.connected`,
/// `queue`) and an inherent `status_json`.
macro_rules! listener_traits {
    ($listener:ty) => {
        impl $crate::feed::lifecycle::Controlled for $listener {
            fn lifecycle(&self) -> &$crate::feed::lifecycle::Lifecycle {
                &self.lifecycle
            }
        }

        impl $crate::feed::admin::ListenerStatus for $listener {
            fn status_json(&self) -> serde_json::Value {
                <$listener>::status_json(self)
            }
            fn connected(&self) -> bool {
                self.stats
                    .connected
                    .load(std::sync::atomic::Ordering::Relaxed)
            }
            fn broker_connected(&self) -> bool {
                self.queue.connected()
            }
        }
    };
}
pub(crate) use listener_traits;
