//! The scenario's clients: WebSocket readers on one epoll loop per
//! thread, and the latency histogram they fill.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Latency histogram: 50 µs buckets up to 5 s (one per reader thread, merged at the end).
pub(crate) struct Histogram {
    buckets: Vec<u64>,
}

const BUCKET_US: u64 = 50;

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Histogram {
        Histogram {
            buckets: vec![0; 100_000],
        }
    }

    /// Count one latency of `us` microseconds.
    pub(crate) fn record(&mut self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
    }

    /// Add `other`'s counts to this one's.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// Latencies counted.
    pub(crate) fn total(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q` quantile in milliseconds (upper edge of its bucket).
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        let want = ((self.total() as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

/// What the main thread, the publisher and the reader threads share.
pub(crate) struct Window {
    /// Messages published in `[from, until)` (ns since the epoch) are measured.
    pub(crate) from: AtomicU64,
    /// End of the measured span (ns since the epoch, exclusive).
    pub(crate) until: AtomicU64,
    /// Deliveries received so far (all messages).
    pub(crate) received: AtomicU64,
    /// Clients connected and subscribed.
    pub(crate) connected: AtomicUsize,
    /// Clients whose connection ended during the run.
    pub(crate) closed: AtomicUsize,
    /// Tells the reader threads and the publisher to end.
    pub(crate) stop: AtomicBool,
}

impl Window {
    /// Nothing measured yet: the span starts at the end of time.
    pub(crate) fn new() -> Window {
        Window {
            from: AtomicU64::new(u64::MAX),
            until: AtomicU64::new(u64::MAX),
            received: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        }
    }
}

/// A benchmark client: a blocking WebSocket over a non-blocking socket.
pub(crate) type Client = tokio_tungstenite::tungstenite::WebSocket<std::net::TcpStream>;

/// Connect and subscribe clients `ids` (client *i* to `bench:{i % channels}`),
/// then read them all until told to stop, napping `nap` when idle (zero:
/// block in epoll); returns the latency histogram of the messages published
/// in the window.
pub(crate) fn read_clients(
    url: &str,
    ids: &[usize],
    channels: usize,
    nap: Duration,
    window: &Window,
) -> anyhow::Result<Histogram> {
    let mut poll = mio::Poll::new()?;
    let mut sockets = connect_clients(url, ids, channels, &poll, window)?;
    let mut hist = Histogram::new();
    let mut events = mio::Events::with_capacity(1024);
    while !window.stop.load(Ordering::Relaxed) {
        // With a nap, check without blocking and nap when idle, so that the
        // server's writes find no reader asleep in epoll to wake.
        let timeout = if nap.is_zero() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        let span = (
            window.from.load(Ordering::Relaxed),
            window.until.load(Ordering::Relaxed),
        );
        let mut received = 0;
        for event in events.iter() {
            let slot = &mut sockets[event.token().0];
            let Some(ws) = slot.as_mut() else { continue };
            let (n, open) = drain(ws, span, &mut hist);
            received += n;
            if !open {
                window.closed.fetch_add(1, Ordering::Relaxed);
                *slot = None;
            }
        }
        window.received.fetch_add(received, Ordering::Relaxed);
        if events.is_empty() && !nap.is_zero() {
            std::thread::sleep(nap);
        }
    }
    Ok(hist)
}

/// Connect clients `ids`, subscribe each, and register them with `poll`
/// (token = index in the returned list).
pub(crate) fn connect_clients(
    url: &str,
    ids: &[usize],
    channels: usize,
    poll: &mio::Poll,
    window: &Window,
) -> anyhow::Result<Vec<Option<Client>>> {
    use mio::unix::SourceFd;
    use mio::{Interest, Token};
    use std::os::fd::AsRawFd;
    use tokio_tungstenite::tungstenite::client::client_with_config;

    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .context("url has no address")?;
    let mut sockets = Vec::with_capacity(ids.len());
    for &i in ids {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (mut ws, _) = client_with_config(url, stream, Some(config))
            .map_err(|e| anyhow::anyhow!("client {i}: handshake: {e}"))?;
        let sub =
            serde_json::json!({"action": "subscribe", "feed": format!("bench:{}", i % channels)});
        ws.send(Message::Text(sub.to_string().into()))?;
        match ws.read()? {
            Message::Text(t) if t.contains("subscribed") => {}
            other => bail!("client {i}: subscribe answered {other:?}"),
        }
        ws.get_ref().set_nonblocking(true)?;
        let fd = ws.get_ref().as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(sockets.len()), Interest::READABLE)?;
        sockets.push(Some(ws));
        window.connected.fetch_add(1, Ordering::Relaxed);
    }
    Ok(sockets)
}

/// Read `ws` until its socket is empty (edge-triggered), recording the
/// latency of messages sent within `span` (ns); returns the messages read
/// and whether the connection is still open.
pub(crate) fn drain(ws: &mut Client, span: (u64, u64), hist: &mut Histogram) -> (u64, bool) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut received = 0;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let now = now_ns();
                // Payload: {"t":<ns>,…}
                let sent: u64 = t
                    .get(5..)
                    .and_then(|s| s.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(now);
                received += 1;
                if (span.0..span.1).contains(&sent) {
                    hist.record(now.saturating_sub(sent) / 1000);
                }
            }
            Ok(_) => {}
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return (received, true);
            }
            Err(_) => return (received, false),
        }
    }
}

/// Nanoseconds since the Unix epoch (the clock the payloads carry).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
