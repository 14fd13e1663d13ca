//! The simulator's HTTP server: the Massive WebSocket session (`/stocks`),
//! the REST endpoints and the admin API (`/admin/*`), over one market
//! advanced by a generator task (or a recorded stream being replayed).
//!
//! Admin API: `GET /admin/stats`; `POST /admin/clock` (`{"at": RFC 3339 or
//! ms}`, `{"session": "pre|regular|after|closed"}`, `{"speed": 60}`);
//! `POST /admin/profile` (`{"profile": "quiet"}` or `{"rate": 5000,
//! "quote_rate": 5000}`); `POST /admin/fault` (`{"fault": "stall"}`);
//! `POST /admin/finlight` (see [`super::finlight`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use super::market::Market;
use super::{Fault, Profile, SimClock, SimulateArgs, session_at};
use crate::feed::{RecordedFrame, Recorder};

/// Most events in one WebSocket frame (frames stay well under 64 KiB).
const FRAME_EVENTS: usize = 200;
/// A frame send blocked this long means the client stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Event kinds counted by the simulator, in [`SimStats::sent`] order.
pub const KINDS: [&str; 7] = ["T", "Q", "A", "AM", "LULD", "NOI", "other"];

fn kind_index(ev: &str) -> usize {
    KINDS
        .iter()
        .position(|k| *k == ev)
        .unwrap_or(KINDS.len() - 1)
}

/// One frame of events, serialized once for every client.
struct Frame {
    text: String,
    events: Vec<Value>,
    /// Kind index of each event.
    kinds: Vec<usize>,
}

impl Frame {
    fn new(events: Vec<Value>) -> Frame {
        let kinds = events
            .iter()
            .map(|e| kind_index(e["ev"].as_str().unwrap_or("")))
            .collect();
        Frame {
            text: Value::Array(events.clone()).to_string(),
            events,
            kinds,
        }
    }

    /// A replayed frame: parsed when possible, else passed on verbatim.
    fn replayed(text: String) -> Frame {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(events)) => {
                let kinds = events
                    .iter()
                    .map(|e| kind_index(e["ev"].as_str().unwrap_or("")))
                    .collect();
                Frame {
                    text,
                    events,
                    kinds,
                }
            }
            _ => Frame {
                text,
                events: Vec::new(),
                kinds: Vec::new(),
            },
        }
    }
}

/// Counters of the simulator.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Events sent to clients, per kind in [`KINDS`] order.
    pub sent: [AtomicU64; 7],
    /// Frames sent to clients.
    pub frames: AtomicU64,
    /// Events generated (or replayed), per kind.
    pub generated: [AtomicU64; 7],
    /// Massive connections accepted.
    pub connections: AtomicU64,
    /// Successful authentications.
    pub authenticated: AtomicU64,
    /// Sessions evicted by the connection cap.
    pub evictions: AtomicU64,
    /// Sessions dropped as slow consumers.
    pub slow_consumers: AtomicU64,
    /// Scripted faults fired.
    pub faults_fired: AtomicU64,
    /// True when a replay reached its end.
    pub replay_done: AtomicBool,
}

impl SimStats {
    /// Events sent of kind `ev` (`T`, `Q`, `A`, `AM`, `LULD`, `NOI`).
    pub fn sent(&self, ev: &str) -> u64 {
        self.sent[kind_index(ev)].load(Ordering::Relaxed)
    }

    /// Events sent, all kinds.
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        let per = |a: &[AtomicU64; 7]| -> serde_json::Map<String, Value> {
            KINDS
                .iter()
                .zip(a.iter())
                .map(|(k, v)| (k.to_string(), json!(v.load(Ordering::Relaxed))))
                .collect()
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "sent": per(&self.sent),
            "generated": per(&self.generated),
            "frames": load(&self.frames),
            "connections": load(&self.connections),
            "authenticated": load(&self.authenticated),
            "evictions": load(&self.evictions),
            "slow_consumers": load(&self.slow_consumers),
            "faults_fired": load(&self.faults_fired),
            "replay_done": self.replay_done.load(Ordering::Relaxed),
        })
    }
}

/// A control message to one session.
#[derive(Debug, Clone, Copy)]
struct Control {
    target: u64,
    fault: Fault,
}

/// Generation rates, changeable at runtime.
#[derive(Debug, Default)]
struct Rates {
    trades: AtomicU64,
    quotes: AtomicU64,
    stress: AtomicBool,
}

pub(super) struct Shared {
    pub(super) market: Arc<Mutex<Market>>,
    pub(super) clock: SimClock,
    api_key: Option<String>,
    frames: broadcast::Sender<Arc<Frame>>,
    frames_capacity: usize,
    control: broadcast::Sender<Control>,
    /// Authenticated sessions in connection order: (id, key).
    sessions: Mutex<Vec<(u64, String)>>,
    next_id: AtomicU64,
    pending: Mutex<Vec<Fault>>,
    rates: Rates,
    max_connections: usize,
    auth_timeout: Duration,
    subscribed: Notify,
    stats: Arc<SimStats>,
    finlight: Arc<super::finlight::FinlightShared>,
}

/// A running simulator; dropping it stops it.
pub struct SimHandle {
    /// The address of the Massive WebSocket, REST and admin API.
    pub addr: std::net::SocketAddr,
    /// The address of the Finlight WebSocket.
    pub finlight_addr: std::net::SocketAddr,
    /// Its clock (settable).
    pub clock: SimClock,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// Base URL of the WebSocket feed (`ws://addr`; the market path is `/stocks`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    /// Base URL of the REST API (and `/admin`).
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// URL of the Finlight enhanced stream (`/raw` for the raw one).
    pub fn finlight_url(&self) -> String {
        format!("ws://{}", self.finlight_addr)
    }
    /// The simulator's counters.
    pub fn stats(&self) -> Arc<SimStats> {
        self.shared.stats.clone()
    }
    /// Arm a scripted fault.
    pub fn arm(&self, fault: Fault) {
        self.shared.arm(fault);
    }
    /// Faults armed but not fired yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.pending().len()
    }
    /// Change the generation rates (trades and quotes per second).
    pub fn set_rates(&self, trades: u64, quotes: u64) {
        self.shared.set_rates(trades, quotes, false);
    }
    /// The Finlight side.
    pub fn finlight(&self) -> Arc<super::finlight::FinlightShared> {
        self.shared.finlight.clone()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.finlight.stop();
    }
}

/// Start the simulator.
pub async fn start(args: SimulateArgs) -> anyhow::Result<SimHandle> {
    let origin = match &args.at {
        Some(at) => crate::cli::parse_at_ms(at)?,
        None => chrono::Utc::now().timestamp_millis() as u64,
    };
    let clock = SimClock::new(origin, args.speed);
    let (frames, _) = broadcast::channel(args.send_buffer_frames.max(1));
    let (control, _) = broadcast::channel(256);
    let market = Arc::new(Mutex::new(Market::new(args.symbols.max(1), args.seed)));
    let stats = Arc::new(SimStats::default());
    let finlight = super::finlight::FinlightShared::new(&args, market.clone(), clock.clone());
    let shared = Arc::new(Shared {
        market,
        clock: clock.clone(),
        api_key: args.api_key.clone(),
        frames,
        frames_capacity: args.send_buffer_frames.max(1),
        control,
        sessions: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
        pending: Mutex::new(args.fault.clone()),
        rates: Rates::default(),
        max_connections: args.max_connections.max(1),
        auth_timeout: Duration::from_millis(args.auth_timeout_ms.max(1)),
        subscribed: Notify::new(),
        stats,
        finlight: finlight.clone(),
    });
    match (args.rate, args.quote_rate) {
        (None, None) => shared.set_profile(args.profile),
        (t, q) => {
            let trades = t.unwrap_or(args.profile.trades_per_sec());
            shared.set_rates(trades, q.unwrap_or(trades), false);
        }
    }
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
        .route("/admin/stats", get(admin_stats))
        .route("/admin/clock", post(admin_clock))
        .route("/admin/profile", post(admin_profile))
        .route("/admin/fault", post(admin_fault))
        .route("/admin/finlight", post(admin_finlight))
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    let recorder = match &args.record {
        Some(path) => Some(Recorder::create(path).await?),
        None => None,
    };
    let generator = match &args.replay {
        Some(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read replay file {}: {e}", path.display()))?;
            let frames: Vec<RecordedFrame> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("replay file {}: {e}", path.display()))?;
            tokio::spawn(replay(shared.clone(), frames, args.replay_speed, recorder))
        }
        None => tokio::spawn(generate(shared.clone(), recorder)),
    };
    let (finlight_addr, finlight_tasks) =
        super::finlight::start(finlight, &args.finlight_listen, args.news_per_min).await?;
    tracing::info!(%addr, %finlight_addr, symbols = args.symbols, "simulator running");
    let mut tasks = vec![server, generator];
    tasks.extend(finlight_tasks);
    Ok(SimHandle {
        addr,
        finlight_addr,
        clock,
        shared,
        tasks,
    })
}

impl Shared {
    fn market(&self) -> std::sync::MutexGuard<'_, Market> {
        self.market.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arm(&self, fault: Fault) {
        tracing::info!(?fault, "simulator: fault armed");
        self.pending().push(fault);
    }

    /// Take an armed fault matching `pred`.
    fn take_fault(&self, pred: impl Fn(Fault) -> bool) -> Option<Fault> {
        let mut p = self.pending();
        let i = p.iter().position(|f| pred(*f))?;
        let f = p.remove(i);
        self.stats.faults_fired.fetch_add(1, Ordering::Relaxed);
        tracing::info!(fault = ?f, "simulator: fault fired");
        Some(f)
    }

    fn set_rates(&self, trades: u64, quotes: u64, stress: bool) {
        self.rates.trades.store(trades, Ordering::Relaxed);
        self.rates.quotes.store(quotes, Ordering::Relaxed);
        self.rates.stress.store(stress, Ordering::Relaxed);
    }

    fn set_profile(&self, p: Profile) {
        self.set_rates(p.trades_per_sec(), p.quotes_per_sec(), p == Profile::Stress);
    }

    fn broadcast(&self, frame: Frame, recorder: Option<&Recorder>, t: u64) {
        for k in &frame.kinds {
            self.stats.generated[*k].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(r) = recorder {
            r.record(t, &frame.text);
        }
        let _ = self.frames.send(Arc::new(frame));
    }
}

/// Advance the market every 20 ms and broadcast mixed frames of ≤ 200 events.
async fn generate(shared: Arc<Shared>, recorder: Option<Recorder>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut carry_t, mut carry_q) = (0.0f64, 0.0f64);
    let mut ticks = 0u64;
    let started = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        ticks += 1;
        let now = shared.clock.now_ms();
        if session_at(now).0 == "closed" {
            continue;
        }
        let (mut trades_rate, mut quotes_rate) = (
            shared.rates.trades.load(Ordering::Relaxed),
            shared.rates.quotes.load(Ordering::Relaxed),
        );
        if shared.rates.stress.load(Ordering::Relaxed) && started.elapsed().as_secs() % 10 < 2 {
            (trades_rate, quotes_rate) = (120_000, 400_000);
        }
        carry_t += trades_rate as f64 / 50.0;
        carry_q += quotes_rate.saturating_sub(trades_rate) as f64 / 50.0;
        let (n, m) = (carry_t as usize, carry_q as usize);
        carry_t -= n as f64;
        carry_q -= m as f64;
        let mut events = Vec::with_capacity(2 * n + m + 16);
        {
            let mut market = shared.market();
            for _ in 0..n {
                let [t, q] = market.trade(now);
                events.push(t);
                if quotes_rate >= trades_rate {
                    events.push(q);
                }
            }
            for _ in 0..m {
                events.push(market.quote(now));
            }
            if ticks.is_multiple_of(250) {
                events.push(market.luld(now));
            }
            if ticks.is_multiple_of(100) {
                events.push(market.noi(now));
            }
            events.extend(market.close_bars(now));
        }
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<Value> = events.by_ref().take(FRAME_EVENTS).collect();
            shared.broadcast(Frame::new(chunk), recorder.as_ref(), now);
        }
    }
}

/// Replay recorded frames at `speed` once a client has subscribed.
async fn replay(
    shared: Arc<Shared>,
    frames: Vec<RecordedFrame>,
    speed: f64,
    recorder: Option<Recorder>,
) {
    shared.subscribed.notified().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = tokio::time::Instant::now();
    let t0 = frames.first().map(|f| f.t).unwrap_or(0);
    tracing::info!(frames = frames.len(), speed, "simulator: replay started");
    for f in frames {
        if speed > 0.0 {
            let offset = Duration::from_secs_f64(f.t.saturating_sub(t0) as f64 / 1000.0 / speed);
            tokio::time::sleep_until(start + offset).await;
        } else {
            tokio::task::yield_now().await;
        }
        // Wait for room rather than make a fast replay evict its client.
        while shared.frames.len() > shared.frames_capacity * 3 / 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t = f.t;
        shared.broadcast(Frame::replayed(f.frame), recorder.as_ref(), t);
    }
    shared.stats.replay_done.store(true, Ordering::Relaxed);
    tracing::info!("simulator: replay finished");
}

fn status(status: &str, message: &str) -> String {
    json!([{"ev": "status", "status": status, "message": message}]).to_string()
}

async fn ws_handler(ws: WebSocketUpgrade, State(shared): State<Arc<Shared>>) -> Response {
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| session(socket, shared))
}

/// Topics one client subscribed to: per event kind, `*` or a symbol set.
#[derive(Default)]
struct Subscriptions {
    all: [bool; 7],
    symbols: HashMap<usize, HashSet<String>>,
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
            let k = kind_index(kind);
            if sym == "*" {
                self.all[k] = subscribe;
            } else if subscribe {
                self.symbols.entry(k).or_default().insert(sym.to_string());
            } else if let Some(s) = self.symbols.get_mut(&k) {
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

    fn any(&self) -> bool {
        self.all.iter().any(|a| *a) || self.symbols.values().any(|s| !s.is_empty())
    }

    /// The frame text this client should get, with the kinds it holds.
    fn filter(&self, frame: &Frame) -> Option<(String, Vec<usize>)> {
        if frame.events.is_empty() {
            // A replayed frame that is not an event array: everyone gets it.
            return self.any().then(|| (frame.text.clone(), Vec::new()));
        }
        if frame.kinds.iter().all(|k| self.all[*k]) {
            return Some((frame.text.clone(), frame.kinds.clone()));
        }
        let mut events = Vec::new();
        let mut kinds = Vec::new();
        for (e, k) in frame.events.iter().zip(&frame.kinds) {
            let key = if matches!(KINDS[*k], "LULD" | "NOI") {
                "T"
            } else {
                "sym"
            };
            let wanted = self.all[*k]
                || self
                    .symbols
                    .get(k)
                    .is_some_and(|s| e[key].as_str().is_some_and(|sym| s.contains(sym)));
            if wanted {
                events.push(e);
                kinds.push(*k);
            }
        }
        (!events.is_empty()).then(|| (serde_json::to_string(&events).unwrap_or_default(), kinds))
    }
}

/// Removes a session from the registry when it ends.
struct Registered(Arc<Shared>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _)| *id != self.1);
    }
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        })))
        .await;
}

/// What a fault does to the session: `true` = the session ends.
async fn apply_fault(socket: &mut WebSocket, fault: Fault, stalled: &mut bool) -> bool {
    match fault {
        Fault::AuthFailure | Fault::RestLie => false,
        Fault::MaxConnections => {
            let _ = socket.send(WsMessage::Text(status("max_connections", "Maximum number of websocket connections exceeded. You have reached the connection limit for your account. Please contact support at https://polygon.io/contact to increase your limit.").into())).await;
            close_with(socket, 1008, "max connections").await;
            true
        }
        Fault::SlowConsumer => {
            let _ = socket
                .send(WsMessage::Text(
                    status("slow_consumer", "Slow consumer: send buffer full").into(),
                ))
                .await;
            close_with(socket, 1011, "slow consumer").await;
            true
        }
        Fault::ForceDisconnect => {
            let _ = socket
                .send(WsMessage::Text(
                    status("force_disconnect", "Forced disconnect").into(),
                ))
                .await;
            close_with(socket, 1000, "force disconnect").await;
            true
        }
        Fault::Reset => true,
        Fault::Garbage => {
            let _ = socket
                .send(WsMessage::Text(
                    r#"[{"ev":"T","sym":"AAA","p":12.5,"s":1"#.into(),
                ))
                .await;
            let _ = socket
                .send(WsMessage::Text("\u{1}garbage \u{fffd} not json".into()))
                .await;
            let _ = socket
                .send(WsMessage::Binary(vec![0xff, 0x00, 0x13, 0x37].into()))
                .await;
            false
        }
        Fault::Oversize => {
            let one = r#"{"ev":"T","sym":"BIG","x":4,"i":"1","z":3,"p":1.0,"s":1,"t":1,"q":1}"#;
            let n = (1 << 20) / one.len() + 100;
            let text = format!("[{}]", vec![one; n].join(","));
            let _ = socket.send(WsMessage::Text(text.into())).await;
            false
        }
        Fault::Stall => {
            *stalled = true;
            false
        }
    }
}

async fn session(mut socket: WebSocket, shared: Arc<Shared>) {
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
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
    let mut control = shared.control.subscribe();
    let mut subs = Subscriptions::default();
    let mut authed = false;
    let mut stalled = false;
    let mut _registered = None;
    let auth_deadline = tokio::time::Instant::now() + shared.auth_timeout;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(auth_deadline), if !authed => {
                let _ = socket.send(WsMessage::Text(status("auth_timeout", "No authentication request received.").into())).await;
                close_with(&mut socket, 1008, "auth timeout").await;
                return;
            }
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                let WsMessage::Text(text) = msg else { continue };
                let Ok(req) = serde_json::from_str::<Value>(&text) else { continue };
                let params = req["params"].as_str().unwrap_or("");
                let replies = match req["action"].as_str() {
                    Some("auth") => {
                        let key_ok = shared.api_key.as_deref().is_none_or(|k| k == params);
                        if !key_ok || shared.take_fault(|f| f == Fault::AuthFailure).is_some() {
                            let _ = socket.send(WsMessage::Text(status("auth_failed", "authentication failed").into())).await;
                            close_with(&mut socket, 1008, "authentication failed").await;
                            return;
                        }
                        authed = true;
                        shared.stats.authenticated.fetch_add(1, Ordering::Relaxed);
                        let evict = {
                            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
                            sessions.push((id, params.to_string()));
                            let same: Vec<u64> = sessions.iter().filter(|(_, k)| k == params).map(|(i, _)| *i).collect();
                            same.len().checked_sub(shared.max_connections).map(|n| same[..n].to_vec()).unwrap_or_default()
                        };
                        _registered = Some(Registered(shared.clone(), id));
                        for target in evict {
                            shared.stats.evictions.fetch_add(1, Ordering::Relaxed);
                            let _ = shared.control.send(Control { target, fault: Fault::MaxConnections });
                        }
                        vec![status("auth_success", "authenticated")]
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
                if subs.any() {
                    shared.subscribed.notify_one();
                }
            }
            c = control.recv() => {
                if let Ok(c) = c
                    && c.target == id
                    && apply_fault(&mut socket, c.fault, &mut stalled).await
                {
                    return;
                }
            }
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if stalled || !authed {
                        continue;
                    }
                    if subs.any()
                        && let Some(fault) = shared.take_fault(|f| !matches!(f, Fault::AuthFailure | Fault::RestLie))
                        && apply_fault(&mut socket, fault, &mut stalled).await
                    {
                        return;
                    }
                    if stalled {
                        continue;
                    }
                    if let Some((text, kinds)) = subs.filter(&frame) {
                        match tokio::time::timeout(SEND_TIMEOUT, socket.send(WsMessage::Text(text.into()))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return,
                            Err(_) => {
                                // The client stopped reading: latency grew past the limit.
                                shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(session = id, "simulator: slow consumer (send blocked) disconnected");
                                let slow = socket.send(WsMessage::Text(status("slow_consumer", "Slow consumer: send buffer full").into()));
                                let _ = tokio::time::timeout(Duration::from_millis(100), slow).await;
                                return;
                            }
                        }
                        shared.stats.frames.fetch_add(1, Ordering::Relaxed);
                        for k in kinds {
                            shared.stats.sent[k].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = id, lagged_frames = n, "simulator: slow consumer disconnected");
                    let _ = socket.send(WsMessage::Text(status("slow_consumer", "Slow consumer: send buffer full").into())).await;
                    close_with(&mut socket, 1011, "slow consumer").await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn admin_error(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": msg.to_string()})),
    )
        .into_response()
}

async fn admin_stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let now = shared.clock.now_ms();
    Json(json!({
        "massive": shared.stats.to_json(),
        "finlight": shared.finlight.stats_json(),
        "clock": {"now_ms": now, "session": session_at(now).0, "speed": shared.clock.speed()},
        "rates": {"trades": shared.rates.trades.load(Ordering::Relaxed), "quotes": shared.rates.quotes.load(Ordering::Relaxed),
                  "stress": shared.rates.stress.load(Ordering::Relaxed)},
        "pending_faults": shared.pending().iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
    }))
}

async fn admin_clock(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    if let Some(speed) = body.get("speed") {
        match speed.as_f64() {
            Some(s) if (0.0..=100_000.0).contains(&s) => shared.clock.set_speed(s),
            _ => return admin_error("speed must be a number between 0 and 100000"),
        }
    }
    if let Some(at) = body.get("at") {
        let parsed = match at {
            Value::Number(n) => n.as_u64().ok_or_else(|| anyhow::anyhow!("bad ms")),
            Value::String(s) => crate::cli::parse_at_ms(s),
            _ => Err(anyhow::anyhow!("`at` must be RFC 3339 or Unix ms")),
        };
        match parsed {
            Ok(ms) => shared.clock.set_ms(ms),
            Err(e) => return admin_error(format!("bad `at`: {e}")),
        }
    }
    if let Some(session) = body.get("session") {
        let name = session.as_str().unwrap_or("");
        if shared.clock.jump_to_session(name).is_none() {
            return admin_error(format!(
                "unknown session `{name}` (pre, regular, after, closed)"
            ));
        }
    }
    let now = shared.clock.now_ms();
    Json(json!({"now_ms": now, "session": session_at(now).0, "speed": shared.clock.speed()}))
        .into_response()
}

async fn admin_profile(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    if let Some(p) = body.get("profile") {
        let Some(p) = p
            .as_str()
            .and_then(|p| <Profile as clap::ValueEnum>::from_str(p, true).ok())
        else {
            return admin_error("profile must be quiet, average, open or stress");
        };
        shared.set_profile(p);
    } else if let Some(rate) = body.get("rate").and_then(Value::as_u64) {
        let quotes = body
            .get("quote_rate")
            .and_then(Value::as_u64)
            .unwrap_or(rate);
        shared.set_rates(rate, quotes, false);
    } else {
        return admin_error("expected {\"profile\": ...} or {\"rate\": N, \"quote_rate\": M}");
    }
    Json(json!({"trades": shared.rates.trades.load(Ordering::Relaxed), "quotes": shared.rates.quotes.load(Ordering::Relaxed)}))
        .into_response()
}

async fn admin_fault(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let name = body
        .get("fault")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match <Fault as clap::ValueEnum>::from_str(&name.replace('_', "-"), true) {
        Ok(f) => {
            shared.arm(f);
            Json(json!({"armed": name})).into_response()
        }
        Err(_) => admin_error(format!(
            "unknown fault `{name}` (auth-failure, max-connections, slow-consumer, force-disconnect, reset, garbage, oversize, stall, rest-lie)"
        )),
    }
}

async fn admin_finlight(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    match shared.finlight.admin(&body) {
        Ok(v) => Json(v).into_response(),
        Err(e) => admin_error(e),
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
