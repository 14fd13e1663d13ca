//! `mdp serve`: the widget data service (seed WDS). A WebSocket endpoint
//! `/ws` speaking the seed's JSON protocol (`auth`,
//! `subscribe`, `unsubscribe`, `get`, status frames, raw payload pushes),
//! fan-out through [`hub`], `/health`, `/metrics` and the dashboard at `/`.
//!
//! Compared with the seed: pattern subscriptions deliver; the pub/sub task is
//! supervised and resubscribes; payloads are shared, not copied per client;
//! slow clients cannot stall others; keys are compared in constant time;
//! frame size, subscriptions per client and message rate are limited; no
//! third-party API key is ever sent to a browser.

pub mod auth;
pub mod hub;
pub mod outbox;
pub mod protocol;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::sync::watch;

use crate::store::Store;
use hub::Hub;
pub use outbox::SlowClientPolicy;

/// Settings of the widget server (the `mdp serve` flags but the store URL).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: String,
    /// Who may connect and what each client may do (shared with `mdp up`).
    pub widgets: WidgetConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            widgets: WidgetConfig::default(),
        }
    }
}

/// Authentication, origins and limits of the widget endpoint: the same flags
/// for `mdp serve` and `mdp up`.
#[derive(Debug, Clone)]
pub struct WidgetConfig {
    /// Require the first frame to be `auth` with the shared key.
    pub auth_enabled: bool,
    /// The shared key clients authenticate with.
    pub auth_api_key: Option<String>,
    /// Secret of HS256 widget tokens (JWT); turns auth on.
    pub jwt_secret: Option<String>,
    /// Ed25519 public key (PEM file) of EdDSA widget tokens (JWT); turns auth on.
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// The `iss` a widget token must carry (unchecked when unset).
    pub jwt_issuer: Option<String>,
    /// The `aud` a widget token must carry (unchecked when unset).
    pub jwt_audience: Option<String>,
    /// Seconds a client has to send its `auth` frame when auth is on.
    pub auth_timeout_secs: u64,
    /// Allowed `Origin` values (any when empty).
    pub allow_origins: Vec<String>,
    /// WebSocket clients connected at once, in all (more are refused with 503).
    pub max_clients: usize,
    /// WebSocket clients connected at once from one IP address (more are
    /// refused with 429).
    pub max_clients_per_ip: usize,
    /// Bearer token `/metrics` requires (open when unset).
    pub metrics_token: Option<String>,
    /// Frames a client may have queued before the slow-client policy applies.
    pub client_queue: usize,
    /// Payload bytes a client may have queued before the slow-client policy applies.
    pub client_queue_bytes: usize,
    /// What to do with a client that cannot keep up: `disconnect` (close
    /// 1013) or `conflate` (newest payload per channel while behind).
    pub slow_client: SlowClientPolicy,
    /// Subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// Client frames per second allowed.
    pub max_rate: u32,
    /// Largest client frame, bytes.
    pub max_frame: usize,
}

impl Default for WidgetConfig {
    fn default() -> Self {
        WidgetConfig {
            auth_enabled: false,
            auth_api_key: None,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            auth_timeout_secs: 10,
            allow_origins: Vec::new(),
            max_clients: 20_000,
            max_clients_per_ip: 500,
            metrics_token: None,
            client_queue: 4096,
            client_queue_bytes: 8 * 1024 * 1024,
            slow_client: SlowClientPolicy::Disconnect,
            max_subscriptions: 256,
            max_rate: 50,
            max_frame: 16 * 1024,
        }
    }
}

/// Shared state of one server.
pub struct Server {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) auth: Option<auth::Authenticator>,
    pub(crate) args: WidgetConfig,
    pub(crate) clients: AtomicU64,
    /// Connected clients per IP address.
    pub(crate) per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    pub(crate) next_id: AtomicU64,
}

/// A running widget server.
pub struct ServeHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its task (ends on shutdown).
    pub task: tokio::task::JoinHandle<()>,
}

/// Start serving on `args.listen` with `store`, until `shutdown` turns true.
pub async fn serve(
    store: Arc<dyn Store>,
    args: ServeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<ServeHandle> {
    // Install the metrics recorder before the first client is counted.
    crate::telemetry::metrics_handle();
    let w = &args.widgets;
    let auth = auth::Authenticator::new(
        w.auth_enabled,
        w.auth_api_key.as_deref(),
        w.jwt_secret.as_deref(),
        w.jwt_public_key.as_deref(),
    )?
    .map(|a| a.expecting(w.jwt_issuer.as_deref(), w.jwt_audience.as_deref()));
    tracing::info!(auth = ?auth, policy = ?w.slow_client, "widget server settings");
    let server = Arc::new(Server {
        hub: Hub::new(store.clone()),
        auth,
        store,
        args: w.clone(),
        clients: AtomicU64::new(0),
        per_ip: Default::default(),
        next_id: AtomicU64::new(1),
    });
    let app = router(server.clone());
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (is the port in use? pass --listen)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    if server.auth.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "widget server reachable beyond this machine without auth: anyone who can connect reads every feed (set AUTH_API_KEY with --auth-enabled true, or a JWT key)");
    }
    // Pushes are small and latency matters: no Nagle delay (it measurably
    // lowered PUBLISH→receipt latency with 10,000 clients).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "widget server stopped");
        }
    });
    tracing::info!(%addr, "widget server listening");
    Ok(ServeHandle { addr, task })
}

const JS: &str = "text/javascript; charset=utf-8";

/// The dashboard's files, embedded: path, content type, body.
const DASHBOARD: [(&str, &str, &str); 9] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    ("/app.js", JS, include_str!("assets/app.js")),
    ("/feed.js", JS, include_str!("assets/feed.js")),
    ("/prefs.js", JS, include_str!("assets/prefs.js")),
    ("/panels.js", JS, include_str!("assets/panels.js")),
    ("/table.js", JS, include_str!("assets/table.js")),
    ("/chart.js", JS, include_str!("assets/chart.js")),
    (
        "/uplot.js",
        JS,
        include_str!(concat!(env!("OUT_DIR"), "/uplot.js")),
    ),
    (
        "/uplot.css",
        "text/css; charset=utf-8",
        include_str!(concat!(env!("OUT_DIR"), "/uplot.css")),
    ),
];

/// The dashboard, `/ws`, `/health` and `/metrics` of `server`.
fn router(server: Arc<Server>) -> Router {
    let mut router = Router::new();
    for (path, content_type, body) in DASHBOARD {
        router = router.route(
            path,
            get(move || async move { dashboard(content_type, body) }),
        );
    }
    router
        .route("/ws", get(ws))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(server)
}

fn dashboard(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn health(State(server): State<Arc<Server>>) -> Response {
    let store_ok = server.store.get("mdp:health").await.is_ok();
    let body = serde_json::json!({
        "service": "Widget Data Service",
        "status": if store_ok { "OK" } else { "ERROR" },
        "status_code": u8::from(store_ok),
        "image_version": env!("CARGO_PKG_VERSION"),
        "active_ws_clients": server.clients.load(Ordering::Relaxed),
        "feeds": server.hub.feeds(),
    });
    let code = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// `/metrics`, behind `--metrics-token` when one is set.
async fn metrics(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Some(token) = &server.args.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !crate::secret::same_secret(given, token) {
            return (StatusCode::UNAUTHORIZED, "metrics need the bearer token").into_response();
        }
    }
    crate::telemetry::metrics_handle().render().into_response()
}

/// One connected client's place in the connection caps, given back on drop.
pub(crate) struct Admission {
    server: Arc<Server>,
    ip: std::net::IpAddr,
}

impl Admission {
    /// Admit a client from `ip`, or say which cap it hits.
    fn new(
        server: &Arc<Server>,
        ip: std::net::IpAddr,
    ) -> Result<Admission, (StatusCode, &'static str)> {
        let mut per_ip = server.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = per_ip.values().sum();
        if total >= server.args.max_clients {
            metrics::counter!("mdp_wds_rejected_total", "reason" => "max_clients").increment(1);
            return Err((StatusCode::SERVICE_UNAVAILABLE, "too many clients"));
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if *mine >= server.args.max_clients_per_ip {
            metrics::counter!("mdp_wds_rejected_total", "reason" => "max_clients_per_ip")
                .increment(1);
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "too many clients from this address",
            ));
        }
        *mine += 1;
        Ok(Admission {
            server: server.clone(),
            ip,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per_ip = self.server.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

async fn ws(
    State(server): State<Arc<Server>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !server.args.allow_origins.is_empty() {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        if !server.args.allow_origins.iter().any(|o| o == origin) {
            metrics::counter!("mdp_wds_rejected_total", "reason" => "origin").increment(1);
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    let admission = match Admission::new(&server, peer.ip()) {
        Ok(a) => a,
        Err(refusal) => return refusal.into_response(),
    };
    let max = server.args.max_frame;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // Client frames are small: do not reserve the default 128 KiB each.
        .read_buffer_size(4096)
        .on_upgrade(move |socket| async move {
            session::run(server, socket).await;
            drop(admission);
        })
}
