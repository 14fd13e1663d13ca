//! Benchmark (not a test): many concurrent WebSocket clients (this process)
//! on one `mdp serve` (a child process) over a throwaway `redis-server`;
//! messages are published into the store and the clients measure the
//! latency from PUBLISH to receipt. Prints deliveries per second, whether
//! every message published in the measured window reached every client, and
//! latency percentiles.
//!
//! ```text
//! cargo build --release -p mdp --bin mdp --example ws_bench
//! target/release/examples/ws_bench [--clients 10000] [--seconds 10] [--rate 25] \
//!     [--burst 5] [--channels 1] [--payload 256] [--reader-threads 2] \
//!     [--reader-nap-us 500] [--floor]
//! ```
//!
//! `--rate` messages per second are published in bursts of `--burst` on
//! `--channels` channels (`bench:0`…); client *i* subscribes to
//! `bench:{i % channels}`, so deliveries/s ≈ rate × clients / channels.
//!
//! The clients are a lean load generator, since they share this machine's
//! cores with the server: `--reader-threads` threads each read their share of
//! the sockets from one edge-triggered epoll loop. When idle a reader naps
//! `--reader-nap-us` (0 = blocks in epoll) instead of sleeping in epoll, so
//! that the server's writes do not each have to wake a reader thread; a
//! receipt is therefore noticed up to that much late, which only adds to the
//! measured latency.
//!
//! `--floor` replaces `mdp serve` with the least any server must do for the
//! same load (a child process doing the same handshake and subscription,
//! then one blocking write per client per round from one thread per core, no
//! runtime, queues or store), so the two can be compared on this machine.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use mdp::store::Write;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Latency histogram: 50 µs buckets up to 5 s (one per reader thread, merged at the end).
struct Histogram {
    buckets: Vec<u64>,
}

const BUCKET_US: u64 = 50;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: vec![0; 100_000],
        }
    }

    fn record(&mut self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    fn total(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q` quantile in milliseconds (upper edge of its bucket).
    fn quantile_ms(&self, q: f64) -> f64 {
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
struct Window {
    /// Messages published in `[from, until)` (ns since the epoch) are measured.
    from: AtomicU64,
    until: AtomicU64,
    /// Deliveries received so far (all messages).
    received: AtomicU64,
    /// Clients connected and subscribed.
    connected: AtomicUsize,
    /// Clients whose connection ended during the run.
    closed: AtomicUsize,
    stop: AtomicBool,
}

impl Window {
    fn new() -> Window {
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

/// Connect and subscribe clients `ids` (client *i* to `bench:{i % channels}`),
/// then read them all until told to stop, napping `nap` when idle (zero:
/// block in epoll); returns the latency histogram of the messages published
/// in the window.
fn read_clients(
    url: &str,
    ids: &[usize],
    channels: usize,
    nap: Duration,
    window: &Window,
) -> anyhow::Result<Histogram> {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;
    use tokio_tungstenite::tungstenite::{Error as WsError, client::client_with_config};

    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .context("url has no address")?;
    let mut poll = Poll::new()?;
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

    let mut hist = Histogram::new();
    let mut events = Events::with_capacity(1024);
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
        let (from, until) = (
            window.from.load(Ordering::Relaxed),
            window.until.load(Ordering::Relaxed),
        );
        let mut received = 0;
        for event in events.iter() {
            let slot = &mut sockets[event.token().0];
            let Some(ws) = slot.as_mut() else { continue };
            // Edge-triggered: read until the socket is empty.
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
                        if (from..until).contains(&sent) {
                            hist.record(now.saturating_sub(sent) / 1000);
                        }
                    }
                    Ok(_) => {}
                    Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        window.closed.fetch_add(1, Ordering::Relaxed);
                        *slot = None;
                        break;
                    }
                }
            }
        }
        window.received.fetch_add(received, Ordering::Relaxed);
        if events.is_empty() && !nap.is_zero() {
            std::thread::sleep(nap);
        }
    }
    Ok(hist)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Raise the soft open-files limit to the hard one (children inherit it).
fn raise_nofile(need: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit failed");
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit failed");
        }
    }
    if lim.rlim_cur < need {
        bail!(
            "RLIMIT_NOFILE hard limit {} < {need} needed: raise it (ulimit -Hn) or use fewer --clients",
            lim.rlim_cur
        );
    }
    Ok(lim.rlim_cur)
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Opts {
    clients: usize,
    seconds: u64,
    rate: u64,
    burst: u64,
    channels: usize,
    payload: usize,
    reader_threads: usize,
    floor: bool,
    reader_nap_us: u64,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        clients: 10_000,
        seconds: 10,
        rate: 25,
        burst: 5,
        channels: 1,
        payload: 256,
        reader_threads: 2,
        floor: false,
        reader_nap_us: 500,
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        args.remove(i);
        o.floor = true;
    }
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!(
                "usage: ws_bench [--clients N] [--seconds S] [--rate R] [--burst B] [--channels C] [--payload BYTES] [--reader-threads T] [--reader-nap-us U] [--floor]"
            );
        };
        let v: u64 = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--clients" => o.clients = v as usize,
            "--seconds" => o.seconds = v,
            "--rate" => o.rate = v,
            "--burst" => o.burst = v.max(1),
            "--channels" => o.channels = (v as usize).max(1),
            "--payload" => o.payload = v as usize,
            "--reader-threads" => o.reader_threads = (v as usize).max(1),
            "--reader-nap-us" => o.reader_nap_us = v,
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(o)
}

/// `mdp serve` over a throwaway `redis-server`, both children of this process.
struct Served {
    _redis: Kill,
    _serve: Kill,
    _dir: tempfile::TempDir,
    port: u16,
    http: reqwest::Client,
}

async fn start_serve() -> anyhow::Result<(Served, Arc<dyn mdp::store::Store>)> {
    let mdp_bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("mdp"))
        .context("where is the mdp binary?")?;
    if !mdp_bin.exists() {
        bail!(
            "{} not found: cargo build --release -p mdp --bin mdp",
            mdp_bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let redis_port = free_port()?;
    let redis = Kill(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--client-output-buffer-limit", "pubsub", "0", "0", "0"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server (scripts/setup installs it)")?,
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}/");
    let port = free_port()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serve = Kill(
        Command::new(&mdp_bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--store-url", &redis_url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("start mdp serve")?,
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("mdp serve did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = mdp::store::open(&redis_url).await?;
    let served = Served {
        _redis: redis,
        _serve: serve,
        _dir: dir,
        port,
        http,
    };
    Ok((served, store))
}

/// Work for a floor writer thread.
enum Job {
    /// A subscribed client (its channel index and socket).
    Client(usize, std::net::TcpStream),
    /// An encoded WebSocket frame for the clients of a channel.
    Frame(usize, Arc<[u8]>),
}

/// `--floor`: the least any server must do — the same WebSocket handshake
/// and subscription, then one blocking `write` per client per round of the
/// pre-encoded frames that queued up, from plain threads (one per core), with
/// no runtime, queues or store. What the clients measure against it is this machine's
/// floor for the same load.
fn start_floor(channels: usize) -> anyhow::Result<(u16, Vec<std::sync::mpsc::Sender<Job>>)> {
    use tokio_tungstenite::tungstenite::accept;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut writers = Vec::new();
    for _ in 0..cores {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        writers.push(tx);
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut clients: Vec<(usize, std::net::TcpStream)> = Vec::new();
            // Frames that queued up while the last round was written go out
            // together: one write per client per round.
            let mut pending: Vec<Vec<u8>> = vec![Vec::new(); channels];
            while let Ok(first) = rx.recv() {
                let mut job = Some(first);
                while let Some(j) = job.take().or_else(|| rx.try_recv().ok()) {
                    match j {
                        Job::Client(channel, socket) => clients.push((channel, socket)),
                        Job::Frame(channel, frame) => pending[channel].extend_from_slice(&frame),
                    }
                }
                clients.retain_mut(|(c, socket)| {
                    pending[*c].is_empty() || socket.write_all(&pending[*c]).is_ok()
                });
                pending.iter_mut().for_each(Vec::clear);
            }
        });
    }
    let shards = writers.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let subscribed = stream.map_err(anyhow::Error::from).and_then(|stream| {
                stream.set_nodelay(true)?;
                let mut ws = accept(stream).map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
                let feed = match ws.read()? {
                    Message::Text(t) => serde_json::from_str::<serde_json::Value>(&t)?["feed"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    other => bail!("expected a subscribe frame, got {other:?}"),
                };
                let channel = feed
                    .strip_prefix("bench:")
                    .and_then(|c| c.parse::<usize>().ok())
                    .filter(|c| *c < channels)
                    .context("feed is not bench:<n>")?;
                let reply = serde_json::json!({"status": "subscribed", "feed": feed});
                ws.send(Message::Text(reply.to_string().into()))?;
                Ok((channel, ws.into_inner()))
            });
            match subscribed {
                Ok((channel, socket)) => {
                    let _ = shards[n % shards.len()].send(Job::Client(channel, socket));
                }
                Err(e) => eprintln!("floor: client refused: {e:#}"),
            }
        }
    });
    Ok((port, writers))
}

/// Run as the `--floor` child: serve the floor on a free port (printed on
/// stdout) and write each stdin line `<channel> <payload>` to the clients of
/// that channel, until stdin closes.
fn floor_server(channels: usize) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    raise_nofile(10_000)?;
    let (port, writers) = start_floor(channels)?;
    println!("{port}");
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (c, payload) = line.split_once(' ').context("line without channel")?;
        let c: usize = c.parse()?;
        let mut frame = Vec::with_capacity(payload.len() + 10);
        Frame::message(payload.to_string(), OpCode::Data(Data::Text), true).format(&mut frame)?;
        let frame: Arc<[u8]> = frame.into();
        for w in &writers {
            w.send(Job::Frame(c, frame.clone()))?;
        }
    }
    Ok(())
}

/// Where the publisher's messages go.
enum Target {
    /// Through the store to `mdp serve`.
    Serve(Arc<dyn mdp::store::Store>),
    /// To the `--floor` child's stdin.
    Floor(std::process::ChildStdin),
}

impl Target {
    /// Publish `(channel, payload)` messages; false if they were not.
    async fn publish(&mut self, messages: Vec<(usize, String)>) -> bool {
        match self {
            Target::Serve(store) => {
                let writes: Vec<Write> = messages
                    .into_iter()
                    .map(|(c, message)| Write::Publish {
                        channel: format!("bench:{c}"),
                        message: message.into(),
                    })
                    .collect();
                store.apply(&writes, false).await.is_ok()
            }
            Target::Floor(stdin) => {
                use std::io::Write as _;
                let lines: String = messages
                    .into_iter()
                    .map(|(c, message)| format!("{c} {message}\n"))
                    .collect();
                stdin.write_all(lines.as_bytes()).is_ok()
            }
        }
    }
}

/// Start the `--floor` child; its port and the target to publish to.
fn spawn_floor(channels: usize) -> anyhow::Result<(Kill, u16, Target)> {
    use std::io::BufRead as _;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--floor-server", &channels.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the floor server")?;
    let stdin = child.stdin.take().context("floor stdin")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("floor stdout")?).read_line(&mut line)?;
    let port = line.trim().parse().context("floor server port")?;
    Ok((Kill(child), port, Target::Floor(stdin)))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--floor-server") {
        let channels = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
        return floor_server(channels);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let o = opts()?;
    let limit = raise_nofile(o.clients as u64 + 1024)?;
    let (served, _floor, port, mut target) = if o.floor {
        let (floor, port, target) = spawn_floor(o.channels)?;
        (None, Some(floor), port, target)
    } else {
        let (served, store) = start_serve().await?;
        let port = served.port;
        (Some(served), None, port, Target::Serve(store))
    };

    // Clients: `--reader-threads` threads, each connecting its share of the
    // clients and then reading them all from one epoll loop (edge-triggered,
    // mio). A lean load generator: it shares this machine's cores with the
    // server it measures.
    let url = format!("ws://127.0.0.1:{port}/ws");
    let window = Arc::new(Window::new());
    let started = Instant::now();
    let mut readers = Vec::new();
    for t in 0..o.reader_threads {
        let ids: Vec<usize> = (t..o.clients).step_by(o.reader_threads).collect();
        let (url, window, channels) = (url.clone(), window.clone(), o.channels);
        let nap = Duration::from_micros(o.reader_nap_us);
        readers.push(std::thread::spawn(move || {
            read_clients(&url, &ids, channels, nap, &window)
        }));
    }
    while window.connected.load(Ordering::Relaxed) < o.clients {
        if readers.iter().any(|r| r.is_finished()) {
            let failed = readers.into_iter().find(|r| r.is_finished());
            return match failed.map(|r| r.join()) {
                Some(Ok(Err(e))) => Err(e.context("connecting clients")),
                _ => bail!("a reader thread ended while connecting"),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{} clients connected and subscribed in {:.1} s on {} reader threads (RLIMIT_NOFILE {limit})",
        o.clients,
        started.elapsed().as_secs_f64(),
        o.reader_threads
    );

    // Publisher: bursts of `burst` messages, `rate` per second overall.
    let publisher = {
        let window = window.clone();
        let (rate, burst, channels, payload) = (o.rate, o.burst, o.channels, o.payload);
        tokio::spawn(async move {
            let pad = "x".repeat(payload.saturating_sub(40));
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(burst as f64 / rate as f64));
            let mut seq = 0u64;
            // Messages published in the window, per channel.
            let mut measured = vec![0u64; channels];
            while !window.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = now_ns();
                let messages: Vec<(usize, String)> = (0..burst)
                    .map(|_| {
                        seq += 1;
                        let c = seq as usize % channels;
                        (c, format!(r#"{{"t":{t},"seq":{seq},"pad":"{pad}"}}"#))
                    })
                    .collect();
                let counted: Vec<usize> = messages.iter().map(|(c, _)| *c).collect();
                if target.publish(messages).await {
                    let from = window.from.load(Ordering::Relaxed);
                    let until = window.until.load(Ordering::Relaxed);
                    if (from..until).contains(&t) {
                        counted.into_iter().for_each(|c| measured[c] += 1);
                    }
                }
            }
            measured
        })
    };

    // Warm up, then measure the messages published in the window; then give
    // them a second to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r0 = window.received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    window.from.store(now_ns(), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    window.until.store(now_ns(), Ordering::Relaxed);
    let r1 = window.received.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    window.stop.store(true, Ordering::Relaxed);
    let measured = publisher.await?;
    let mut hist = Histogram::new();
    for r in readers {
        let h = r
            .join()
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
        hist.merge(&h);
    }
    // Deliveries owed for the window's messages: each to every client of its channel.
    let owed: u64 = measured
        .iter()
        .enumerate()
        .map(|(c, n)| n * (o.clients.saturating_sub(c)).div_ceil(o.channels) as u64)
        .sum();
    println!(
        "clients {}  channels {}  publish rate {}/s in bursts of {}  payload {} B",
        o.clients, o.channels, o.rate, o.burst, o.payload
    );
    println!(
        "measured {elapsed:.1} s: {} deliveries = {:.0} deliveries/s (expected ≈ {:.0}/s)",
        r1 - r0,
        (r1 - r0) as f64 / elapsed,
        o.rate as f64 * o.clients as f64 / o.channels as f64
    );
    println!(
        "messages published in the window: {}; deliveries owed {owed}, received {} ({} missing); clients closed by the server: {}",
        measured.iter().sum::<u64>(),
        hist.total(),
        owed.saturating_sub(hist.total()),
        window.closed.load(Ordering::Relaxed)
    );
    println!(
        "latency PUBLISH→receipt: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        hist.quantile_ms(0.50),
        hist.quantile_ms(0.90),
        hist.quantile_ms(0.99),
        hist.quantile_ms(0.999)
    );
    // The server's own view: time to hand one message to every client.
    if let Some(served) = served {
        let metrics = served
            .http
            .get(format!("http://127.0.0.1:{}/metrics", served.port))
            .send()
            .await?
            .text()
            .await?;
        for line in metrics.lines().filter(|l| l.starts_with("mdp_wds_fanout")) {
            println!("server: {line}");
        }
    } else {
        println!("(--floor: bare blocking writes from one thread per core, no mdp serve)");
    }
    Ok(())
}
