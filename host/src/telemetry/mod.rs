//! Metrics for every role: one Prometheus recorder per process, rendered by
//! each role's `/metrics` endpoint.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus handle (installs the global recorder once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

mod health;

pub use health::{Health, WatchGuard};

/// Serve `/health` (liveness: 503 once a role task has ended), `/ready`
/// (200 once started and every dependency check passes, else 503 with a
/// JSON body naming what is wrong), `/status` (each check and worker) and
/// `/metrics` on `addr` for a role without a web server of its own.
pub async fn serve_admin(addr: &str, health: Health) -> anyhow::Result<std::net::SocketAddr> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let handle = metrics_handle();
    let code = |ok: bool| match ok {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let (live, ready, status) = (health.clone(), health.clone(), health);
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || {
                let (ok, body) = live.liveness();
                async move { (code(ok), axum::Json(body)) }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let (ok, body) = ready.readiness();
                async move { (code(ok), axum::Json(body)) }
            }),
        )
        .route(
            "/status",
            get(move || {
                let body = status.status();
                async move { axum::Json(body) }
            }),
        )
        .route("/metrics", get(move || async move { handle.render() }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for health and metrics: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(bound)
}
