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

/// Serve `/health` (alive), `/ready` (200 once `ready` is true, else 503)
/// and `/metrics` on `addr` for a role without a web server of its own.
pub async fn serve_admin(
    addr: &str,
    role: &'static str,
    ready: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::net::SocketAddr> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let handle = metrics_handle();
    let app =
        axum::Router::new()
            .route(
                "/health",
                get(move || async move {
                    axum::Json(serde_json::json!({"role": role, "status": "OK"}))
                }),
            )
            .route(
                "/ready",
                get(move || {
                    let ready = *ready.borrow();
                    async move {
                        if ready {
                            (StatusCode::OK, "ready")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "starting")
                        }
                    }
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
