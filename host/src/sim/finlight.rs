//! The simulator's Finlight news WebSocket: `x-api-key` header auth at the
//! upgrade (401 without a valid key), a per-key connection cap (`x-takeover: true` preempts the older
//! sessions, otherwise HTTP 429), the filter as first frame → `admit` with
//! the echoed `clientNonce` → (enhanced) the latest matching article → live
//! articles about simulated symbols matching tickers / `ticker:` query terms
//! / sources / language; `ping` → `pong`; idle timeout and maximum lifetime.
//!
//! `POST /admin/finlight` on the simulator's main port injects behaviour
//! into every open session: `{"action": "article", "count": n}` (publish now),
//! `"kick"` (`admin_kick`, optional `retryAfter` ms), `"error"` (`text`),
//! `"close"` (`code`), `"preempt"`, `"duplicate"` (re-send the last article),
//! `"mute"` (stop answering pings, to trip the client's pong watchdog).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::market::Market;
use super::{SimClock, SimConfig, send_close};

const SOURCES: [&str; 5] = [
    "www.reuters.com",
    "www.bloomberg.com",
    "www.cnbc.com",
    "www.marketwatch.com",
    "finance.yahoo.com",
];
const MICS: [(&str, &str); 3] = [
    ("XNAS", "NASDAQ"),
    ("XNYS", "NYSE"),
    ("XASE", "NYSE American"),
];

/// Something injected into a session.
#[derive(Debug, Clone)]
enum Ctl {
    Preempt(String),
    Kick(u64),
    Error(String),
    Close(u16),
    Duplicate,
    Mute,
}

/// Counters of the Finlight side.
#[derive(Debug, Default)]
pub struct FinlightSimStats {
    /// Articles generated.
    pub generated: AtomicU64,
    /// Articles sent (all sessions).
    pub sent: AtomicU64,
    /// Connections admitted.
    pub admitted: AtomicU64,
    /// Upgrades refused (401/429).
    pub refused: AtomicU64,
    /// Sessions preempted by a takeover.
    pub preempted: AtomicU64,
    /// Pings answered.
    pub pongs: AtomicU64,
}

/// State of the simulated Finlight service.
pub struct FinlightShared {
    market: Arc<Mutex<Market>>,
    clock: SimClock,
    api_key: Option<String>,
    cap: usize,
    idle_timeout: Duration,
    max_lifetime: Duration,
    sessions: Mutex<Vec<(u64, String, mpsc::UnboundedSender<Ctl>)>>,
    next_id: AtomicU64,
    articles: broadcast::Sender<Arc<Value>>,
    latest: Mutex<VecDeque<Arc<Value>>>,
    serial: AtomicU64,
    stopped: AtomicBool,
    /// Counters.
    pub stats: FinlightSimStats,
}

impl FinlightShared {
    pub(super) fn new(
        args: &SimConfig,
        market: Arc<Mutex<Market>>,
        clock: SimClock,
    ) -> Arc<FinlightShared> {
        Arc::new(FinlightShared {
            market,
            clock,
            api_key: args.api_key.clone(),
            cap: args.finlight_max_connections.max(1),
            idle_timeout: Duration::from_millis(args.finlight_idle_timeout_ms.max(1)),
            max_lifetime: Duration::from_millis(args.finlight_max_lifetime_ms.max(1)),
            sessions: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            articles: broadcast::channel(1024).0,
            latest: Mutex::new(VecDeque::new()),
            serial: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            stats: FinlightSimStats::default(),
        })
    }

    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        for (_, _, tx) in self.sessions().iter() {
            let _ = tx.send(Ctl::Close(1001));
        }
    }

    fn sessions(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(u64, String, mpsc::UnboundedSender<Ctl>)>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of open sessions.
    pub fn open_sessions(&self) -> usize {
        self.sessions().len()
    }

    /// Generate and publish one article now; returns it.
    pub fn publish_article(&self) -> Arc<Value> {
        let article = Arc::new(self.make_article());
        self.stats.generated.fetch_add(1, Ordering::Relaxed);
        {
            let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            latest.push_back(article.clone());
            if latest.len() > 100 {
                latest.pop_front();
            }
        }
        let _ = self.articles.send(article.clone());
        article
    }

    fn make_article(&self) -> Value {
        let n = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let (symbol, price, pick, up) = {
            let mut m = self.market.lock().unwrap_or_else(|p| p.into_inner());
            let (s, p) = m.pick_symbol();
            (s, p, m.random_below(1_000_000), m.random_below(3))
        };
        let source = SOURCES[(pick % SOURCES.len() as u64) as usize];
        let (mic, exchange) = MICS[(pick / 7 % MICS.len() as u64) as usize];
        let (verb, sentiment) = match up {
            0 => ("rise", "positive"),
            1 => ("fall", "negative"),
            _ => ("hold steady", "neutral"),
        };
        let now = self.clock.now_ms() as i64;
        let iso = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or_default()
        };
        json!({
            "link": format!("https://{source}/markets/us/{}-shares-{verb}-{n}/", symbol.to_lowercase()).replace(' ', "-"),
            "title": format!("{symbol} shares {verb} near ${price:.2} as traders weigh the outlook"),
            "publishDate": iso(now - 30_000),
            "createdAt": iso(now),
            "source": source,
            "language": "en",
            "summary": format!("Shares of {symbol} Corp. (NASDAQ: {symbol}) {verb} in active trading."),
            "images": [format!("https://{source}/img/{n}.jpg")],
            "sentiment": sentiment,
            "confidence": 0.5 + (pick % 5000) as f64 / 10_000.0,
            "categories": ["markets"],
            "countries": ["US"],
            "content": null,
            "companies": [{
                "companyId": 1000 + (pick % 9000),
                "name": format!("{symbol} Corp."),
                "ticker": symbol,
                "confidence": format!("{:.4}", 0.9 + (pick % 1000) as f64 / 10_000.0),
                "country": "US",
                "exchange": exchange,
                "sector": "Technology",
                "industry": "Software",
                "isin": format!("US{:09}{}", pick, n % 10),
                "primaryListing": {"ticker": symbol, "exchangeCode": mic, "exchangeCountry": "US"},
                "otherListings": [],
            }],
        })
    }

    /// Counters as JSON.
    pub fn stats_json(&self) -> Value {
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "generated": load(&s.generated), "sent": load(&s.sent), "admitted": load(&s.admitted),
            "refused": load(&s.refused), "preempted": load(&s.preempted), "pongs": load(&s.pongs),
            "open_sessions": self.open_sessions(),
        })
    }

    /// Apply an admin action (see the module docs).
    pub fn admin(&self, body: &Value) -> Result<Value, String> {
        let action = body.get("action").and_then(Value::as_str).unwrap_or("");
        let ctl = match action {
            "article" => {
                let count = body
                    .get("count")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .min(10_000);
                let links: Vec<Value> = (0..count)
                    .map(|_| self.publish_article()["link"].clone())
                    .collect();
                return Ok(json!({"published": links}));
            }
            "kick" => Ctl::Kick(
                body.get("retryAfter")
                    .and_then(Value::as_u64)
                    .unwrap_or(900_000),
            ),
            "error" => Ctl::Error(
                body.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("rate limit exceeded")
                    .to_string(),
            ),
            "close" => match body.get("code").and_then(Value::as_u64) {
                Some(c @ 1000..=4999) => Ctl::Close(c as u16),
                _ => return Err("close needs a `code` between 1000 and 4999".into()),
            },
            "preempt" => Ctl::Preempt("Another connection took over this key".into()),
            "duplicate" => Ctl::Duplicate,
            "mute" => Ctl::Mute,
            other => {
                return Err(format!(
                    "unknown action `{other}` (article, kick, error, close, preempt, duplicate, mute)"
                ));
            }
        };
        let sessions = self.sessions();
        for (_, _, tx) in sessions.iter() {
            let _ = tx.send(ctl.clone());
        }
        Ok(json!({"sessions": sessions.len()}))
    }
}

/// Start the Finlight server and its article generator.
pub(super) async fn start(
    shared: Arc<FinlightShared>,
    listen: &str,
    news_per_min: f64,
) -> anyhow::Result<(std::net::SocketAddr, Vec<tokio::task::JoinHandle<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("simulator cannot listen on {listen} (Finlight): {e}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(upgrade_enhanced))
        .route("/raw", get(upgrade_raw))
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "finlight simulator stopped");
        }
    });
    let generator = tokio::spawn(async move {
        if news_per_min <= 0.0 {
            return;
        }
        let period = Duration::from_secs_f64(60.0 / news_per_min);
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            shared.publish_article();
        }
    });
    Ok((addr, vec![server, generator]))
}

/// The subscription filter a client sent (nulls = absent).
#[derive(Debug, Default)]
struct Filter {
    tickers: Vec<String>,
    sources: Vec<String>,
    exclude_sources: Vec<String>,
    language: Option<String>,
    include_entities: bool,
    nonce: Value,
}

impl Filter {
    fn parse(v: &Value) -> Filter {
        let list = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut tickers = list("tickers");
        // `ticker:XYZ` terms of the query widen the ticker set (other terms are not modelled).
        if let Some(q) = v.get("query").and_then(Value::as_str) {
            for term in q.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
                if let Some(t) = term.strip_prefix("ticker:") {
                    tickers.push(t.to_string());
                }
            }
        }
        Filter {
            tickers,
            sources: list("sources"),
            exclude_sources: list("excludeSources"),
            language: v.get("language").and_then(Value::as_str).map(String::from),
            include_entities: v
                .get("includeEntities")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            nonce: v.get("clientNonce").cloned().unwrap_or(Value::Null),
        }
    }

    fn matches(&self, a: &Value) -> bool {
        let source = a["source"].as_str().unwrap_or("");
        if !self.sources.is_empty() && !self.sources.iter().any(|s| s == source) {
            return false;
        }
        if self.exclude_sources.iter().any(|s| s == source) {
            return false;
        }
        if let Some(lang) = &self.language
            && a["language"].as_str() != Some(lang.as_str())
        {
            return false;
        }
        if !self.tickers.is_empty() {
            let tickers: Vec<&str> = a["companies"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c["ticker"].as_str()).collect())
                .unwrap_or_default();
            if !self.tickers.iter().any(|t| tickers.contains(&t.as_str())) {
                return false;
            }
        }
        true
    }

    /// The article as this client receives it.
    fn shape(&self, a: &Value, raw: bool) -> Value {
        let mut a = a.clone();
        if let Value::Object(m) = &mut a {
            if raw {
                for k in ["sentiment", "confidence", "companies"] {
                    m.remove(k);
                }
            } else if !self.include_entities {
                m.remove("companies");
            }
        }
        json!({"action": "sendArticle", "data": a})
    }
}

async fn upgrade_enhanced(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    State(shared): State<Arc<FinlightShared>>,
) -> Response {
    upgrade(ws, headers, shared, false)
}

async fn upgrade_raw(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    State(shared): State<Arc<FinlightShared>>,
) -> Response {
    upgrade(ws, headers, shared, true)
}

fn upgrade(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    shared: Arc<FinlightShared>,
    raw: bool,
) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if key.is_empty() || shared.api_key.as_deref().is_some_and(|k| k != key) {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Invalid API key"})),
        )
            .into_response();
    }
    let takeover = headers
        .get("x-takeover")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (tx, rx) = mpsc::unbounded_channel();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut sessions = shared.sessions();
        let same = sessions.iter().filter(|(_, k, _)| *k == key).count();
        if same >= shared.cap {
            if !takeover {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"error": "connection limit reached"})),
                )
                    .into_response();
            }
            for (_, k, old) in sessions.iter().filter(|(_, k, _)| *k == key) {
                let _ = k;
                shared.stats.preempted.fetch_add(1, Ordering::Relaxed);
                let _ = old.send(Ctl::Preempt("Another connection took over this key".into()));
            }
            sessions.retain(|(_, k, _)| *k != key);
        }
        sessions.push((id, key, tx));
    }
    ws.on_upgrade(move |socket| async move {
        session(socket, shared.clone(), raw, rx, id).await;
        shared.sessions().retain(|(i, _, _)| *i != id);
    })
}

/// Go on with the session, or end it.
type Flow = std::ops::ControlFlow<()>;

/// One admitted client connection: its filter and what the loop keeps.
struct Session {
    socket: WebSocket,
    shared: Arc<FinlightShared>,
    filter: Filter,
    raw: bool,
    /// The last article sent (for the `duplicate` control).
    last_sent: Option<Value>,
    /// Pings go unanswered (the `mute` control).
    muted: bool,
    /// Closed as idle at this instant unless the client sends something.
    idle: tokio::time::Instant,
}

/// Serve one connection: read the filter, admit, then stream.
async fn session(
    mut socket: WebSocket,
    shared: Arc<FinlightShared>,
    raw: bool,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    id: u64,
) {
    let Some(filter) = read_filter(&mut socket).await else {
        return;
    };
    let mut articles = shared.articles.subscribe();
    let admit = json!({"action": "admit", "leaseId": format!("lease-{id}"), "serverNow": shared.clock.now_ms(), "clientNonce": filter.nonce});
    if socket
        .send(WsMessage::Text(admit.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    shared.stats.admitted.fetch_add(1, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + shared.max_lifetime;
    let mut session = Session {
        socket,
        idle: tokio::time::Instant::now() + shared.idle_timeout,
        shared,
        filter,
        raw,
        last_sent: None,
        muted: false,
    };
    if session.send_latest().await.is_break() {
        return;
    }
    loop {
        let flow = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                session.close(1001, "maximum connection lifetime").await
            }
            _ = tokio::time::sleep_until(session.idle) => session.close(1001, "idle timeout").await,
            msg = session.socket.recv() => session.on_message(msg).await,
            a = articles.recv() => session.on_article(a).await,
            c = ctl.recv() => match c {
                Some(c) => session.on_control(c).await,
                None => Flow::Break(()),
            },
        };
        if flow.is_break() {
            return;
        }
    }
}

/// The first frame, the filter; `None` (the client told when it is not an
/// object) ends the connection.
async fn read_filter(socket: &mut WebSocket) -> Option<Filter> {
    let first = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
    let Ok(Some(Ok(WsMessage::Text(t)))) = first else {
        return None;
    };
    match serde_json::from_str::<Value>(&t) {
        Ok(v @ Value::Object(_)) => Some(Filter::parse(&v)),
        _ => {
            let error = json!({"action": "error", "error": "invalid subscription"});
            let _ = socket.send(WsMessage::Text(error.to_string().into())).await;
            send_close(socket, 1003, "invalid subscription").await;
            None
        }
    }
}

impl Session {
    /// Send a text frame; false when the client is gone.
    async fn send(&mut self, msg: &Value) -> bool {
        self.socket
            .send(WsMessage::Text(msg.to_string().into()))
            .await
            .is_ok()
    }

    /// Close with `code` and `reason`; the session ends.
    async fn close(&mut self, code: u16, reason: &str) -> Flow {
        send_close(&mut self.socket, code, reason).await;
        Flow::Break(())
    }

    /// Send an article shaped for the filter and count it.
    async fn send_article(&mut self, a: &Value) -> Flow {
        let msg = self.filter.shape(a, self.raw);
        if !self.send(&msg).await {
            return Flow::Break(());
        }
        self.shared.stats.sent.fetch_add(1, Ordering::Relaxed);
        self.last_sent = Some(msg);
        Flow::Continue(())
    }

    /// The enhanced stream starts with the latest matching article.
    async fn send_latest(&mut self) -> Flow {
        if self.raw {
            return Flow::Continue(());
        }
        let latest = self
            .shared
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|a| self.filter.matches(a))
            .cloned();
        match latest {
            Some(a) => self.send_article(&a).await,
            None => Flow::Continue(()),
        }
    }

    /// A client frame: it keeps the session from idling; a `ping` is answered.
    async fn on_message(&mut self, msg: Option<Result<WsMessage, axum::Error>>) -> Flow {
        let Some(Ok(msg)) = msg else {
            return Flow::Break(());
        };
        self.idle = tokio::time::Instant::now() + self.shared.idle_timeout;
        if let WsMessage::Text(t) = msg
            && let Ok(v) = serde_json::from_str::<Value>(&t)
            && v["action"] == "ping"
            && !self.muted
        {
            self.shared.stats.pongs.fetch_add(1, Ordering::Relaxed);
            if !self.send(&json!({"action": "pong", "t": v["t"]})).await {
                return Flow::Break(());
            }
        }
        Flow::Continue(())
    }

    /// A published article: sent when the filter matches it.
    async fn on_article(&mut self, a: Result<Arc<Value>, broadcast::error::RecvError>) -> Flow {
        match a {
            Ok(a) if self.filter.matches(&a) => self.send_article(&a).await,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Flow::Continue(()),
            Err(broadcast::error::RecvError::Closed) => Flow::Break(()),
        }
    }

    /// A control from the admin API.
    async fn on_control(&mut self, c: Ctl) -> Flow {
        match c {
            Ctl::Preempt(reason) => {
                let m = json!({"action": "preempted", "reason": reason, "newLeaseId": "lease-new"});
                self.send(&m).await;
                return self.close(1000, "preempted").await;
            }
            Ctl::Kick(after) => {
                self.send(&json!({"action": "admin_kick", "retryAfter": after}))
                    .await;
            }
            Ctl::Error(text) => {
                self.send(&json!({"action": "error", "data": text})).await;
            }
            Ctl::Close(code) => return self.close(code, "closed by the simulator").await,
            Ctl::Mute => self.muted = true,
            Ctl::Duplicate => {
                if let Some(m) = self.last_sent.clone() {
                    self.send(&m).await;
                    self.shared.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Flow::Continue(())
    }
}
