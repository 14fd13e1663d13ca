//! The simulator's HTTP server: the Massive WebSocket session (`/stocks`)
//! and REST endpoints, over one market advanced by a generator task.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::market::Market;
use super::{SimClock, SimulateArgs, session_at};

/// Most events in one WebSocket frame (frames stay well under 64 KiB).
const FRAME_EVENTS: usize = 200;

/// One frame of events of one type, serialized once for every client.
struct Frame {
    kind: &'static str,
    text: String,
    events: Vec<Value>,
}

struct Shared {
    market: Mutex<Market>,
    clock: SimClock,
    api_key: Option<String>,
    frames: broadcast::Sender<Arc<Frame>>,
}

/// A running simulator; dropping it stops it.
pub struct SimHandle {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// Its clock (settable).
    pub clock: SimClock,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// Base URL of the WebSocket feed (`ws://addr`; the market path is `/stocks`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    /// Base URL of the REST API.
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Start the simulator.
pub async fn start(args: SimulateArgs) -> anyhow::Result<SimHandle> {
    let origin = match &args.at {
        Some(at) => crate::cli::parse_at_ms(at)?,
        None => chrono::Utc::now().timestamp_millis() as u64,
    };
    let clock = SimClock::new(origin, args.speed);
    let (frames, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        market: Mutex::new(Market::new(args.symbols.max(1), args.seed)),
        clock: clock.clone(),
        api_key: args.api_key.clone(),
        frames,
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("simulator cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/stocks", get(ws_handler))
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
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    let rate = args.rate.unwrap_or(args.profile.trades_per_sec());
    let generator = tokio::spawn(generate(shared, rate));
    tracing::info!(%addr, rate, symbols = args.symbols, "simulator running");
    Ok(SimHandle {
        addr,
        clock,
        tasks: vec![server, generator],
    })
}

impl Shared {
    fn market(&self) -> std::sync::MutexGuard<'_, Market> {
        self.market.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn frames_of(kind: &'static str, events: Vec<Value>) -> Vec<Arc<Frame>> {
    events
        .chunks(FRAME_EVENTS)
        .map(|chunk| {
            Arc::new(Frame {
                kind,
                text: Value::Array(chunk.to_vec()).to_string(),
                events: chunk.to_vec(),
            })
        })
        .collect()
}

/// Advance the market every 20 ms and broadcast frames per event type.
async fn generate(shared: Arc<Shared>, rate: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut carry = 0.0f64;
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        let now = shared.clock.now_ms();
        if session_at(now).0 == "closed" {
            continue;
        }
        carry += rate as f64 / 50.0;
        let n = carry as usize;
        carry -= n as f64;
        let (mut trades, mut quotes, mut luld) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
        let bars = {
            let mut market = shared.market();
            for _ in 0..n {
                let [t, q] = market.trade(now);
                trades.push(t);
                quotes.push(q);
            }
            if ticks.is_multiple_of(250) {
                luld.push(market.luld(now));
            }
            market.close_bars(now)
        };
        let (seconds, minutes): (Vec<Value>, Vec<Value>) =
            bars.into_iter().partition(|b| b["ev"] == "A");
        for frame in frames_of("T", trades)
            .into_iter()
            .chain(frames_of("Q", quotes))
            .chain(frames_of("A", seconds))
            .chain(frames_of("AM", minutes))
            .chain(frames_of("LULD", luld))
        {
            let _ = shared.frames.send(frame);
        }
    }
}

fn status(status: &str, message: &str) -> String {
    json!([{"ev": "status", "status": status, "message": message}]).to_string()
}

async fn ws_handler(ws: WebSocketUpgrade, State(shared): State<Arc<Shared>>) -> Response {
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| session(socket, shared))
}

/// Topics one client subscribed to: per event type, `*` or a symbol set.
#[derive(Default)]
struct Subscriptions {
    all: HashSet<String>,
    symbols: HashMap<String, HashSet<String>>,
}

impl Subscriptions {
    fn apply(&mut self, params: &str, subscribe: bool) -> Vec<String> {
        let mut acks = Vec::new();
        for topic in params.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((kind, sym)) = topic.split_once('.') else {
                continue;
            };
            if !matches!(kind, "T" | "Q" | "A" | "AM" | "LULD" | "NOI") {
                continue; // unknown topic codes are silently ignored
            }
            if sym == "*" {
                if subscribe {
                    self.all.insert(kind.to_string());
                } else {
                    self.all.remove(kind);
                }
            } else if subscribe {
                self.symbols
                    .entry(kind.to_string())
                    .or_default()
                    .insert(sym.to_string());
            } else if let Some(s) = self.symbols.get_mut(kind) {
                s.remove(sym);
            }
            let verb = if subscribe {
                "subscribed to"
            } else {
                "unsubscribed to"
            };
            acks.push(status("success", &format!("{verb}: {topic}")));
        }
        acks
    }

    /// The frame text this client should get, if any.
    fn filter(&self, frame: &Frame) -> Option<String> {
        if self.all.contains(frame.kind) {
            return Some(frame.text.clone());
        }
        let wanted = self.symbols.get(frame.kind)?;
        let key = if frame.kind == "LULD" { "T" } else { "sym" };
        let events: Vec<&Value> = frame
            .events
            .iter()
            .filter(|e| e[key].as_str().is_some_and(|s| wanted.contains(s)))
            .collect();
        (!events.is_empty()).then(|| serde_json::to_string(&events).unwrap_or_default())
    }
}

async fn session(mut socket: WebSocket, shared: Arc<Shared>) {
    if socket
        .send(WsMessage::Text(
            status("connected", "Connected Successfully").into(),
        ))
        .await
        .is_err()
    {
        return;
    }
    let mut frames = shared.frames.subscribe();
    let mut subs = Subscriptions::default();
    let mut authed = false;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                let WsMessage::Text(text) = msg else { continue };
                let Ok(req) = serde_json::from_str::<Value>(&text) else { continue };
                let params = req["params"].as_str().unwrap_or("");
                let replies = match req["action"].as_str() {
                    Some("auth") => {
                        if shared.api_key.as_deref().is_none_or(|k| k == params) {
                            authed = true;
                            vec![status("auth_success", "authenticated")]
                        } else {
                            let _ = socket.send(WsMessage::Text(status("auth_failed", "authentication failed").into())).await;
                            return;
                        }
                    }
                    Some("subscribe") if authed => subs.apply(params, true),
                    Some("unsubscribe") if authed => subs.apply(params, false),
                    Some(_) => vec![status("auth_required", "authentication required")],
                    None => Vec::new(),
                };
                for r in replies {
                    if socket.send(WsMessage::Text(r.into())).await.is_err() {
                        return;
                    }
                }
            }
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if let Some(text) = subs.filter(&frame)
                        && socket.send(WsMessage::Text(text.into())).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = socket.send(WsMessage::Text(status("slow_consumer", "Slow consumer: disconnecting").into())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
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
    let ticker = q.get("ticker").cloned().unwrap_or_default();
    let market = shared.market();
    let results: Vec<Value> = market
        .ticker(&ticker)
        .map(|t| vec![json!({"ticker": t.symbol, "date": "2026-01-02", "price": t.prev_close, "average_volume": t.avg_volume})])
        .unwrap_or_default();
    Json(json!({"status": "OK", "request_id": "sim", "count": results.len(), "results": results}))
        .into_response()
}

async fn float(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    guard!(shared, headers, q);
    let ticker = q.get("ticker").cloned().unwrap_or_default();
    let market = shared.market();
    let results: Vec<Value> = market
        .ticker(&ticker)
        .map(|t| vec![json!({"ticker": t.symbol, "free_float": t.free_float, "free_float_percent": 90.0, "effective_date": "2026-01-02"})])
        .unwrap_or_default();
    Json(json!({"status": "OK", "request_id": "sim", "results": results})).into_response()
}
