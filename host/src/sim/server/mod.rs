//! The simulator's HTTP server: the Massive WebSocket session (`/stocks`),
//! the REST endpoints and the admin API (`/admin/*`), over one market
//! advanced by a generator task (or a recorded stream being replayed).
//!
//! Admin API: `GET /admin/stats`; `POST /admin/clock` (`{"at": RFC 3339 or
//! ms}`, `{"session": "pre|regular|after|closed"}`, `{"speed": 60}`);
//! `POST /admin/profile` (`{"profile": "quiet"}` or `{"rate": 5000,
//! "quote_rate": 5000}`); `POST /admin/fault` (`{"fault": "stall"}`);
//! `POST /admin/finlight` (see [`super::finlight`]).

mod admin;
mod rest;
mod session;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use super::market::Market;
use super::{Fault, Profile, SimClock, SimConfig, session_at};
use crate::feed::{RecordedFrame, Recorder};

/// Most events in one WebSocket frame (frames stay well under 64 KiB).
const FRAME_EVENTS: usize = 200;
/// Event kinds counted by the simulator, in [`SimStats::sent`] order.
pub const KINDS: [&str; 7] = ["T", "Q", "A", "AM", "LULD", "NOI", "other"];

/// The index of event kind `ev` in [`KINDS`] (`other` for any other).
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
    /// Events sent to clients, per kind in `KINDS` order.
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
pub async fn start(args: SimConfig) -> anyhow::Result<SimHandle> {
    let origin = match &args.at {
        Some(at) => crate::time::parse_at_ms(at)?,
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
        .route("/stocks", axum::routing::get(session::ws_handler))
        .merge(rest::routes())
        .merge(admin::routes())
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    let generator = start_market(&shared, &args).await?;
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

/// Start the task that moves the market: the generator, or a replay of
/// `args.replay`; frames are recorded to `args.record` when given.
async fn start_market(
    shared: &Arc<Shared>,
    args: &SimConfig,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let recorder = match &args.record {
        Some(path) => Some(Recorder::create(path).await?),
        None => None,
    };
    Ok(match &args.replay {
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
