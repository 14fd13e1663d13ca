//! Scenario `fanout` (5): many concurrent WebSocket clients (this process)
//! on one `mdp serve` (a child process) over a throwaway `redis-server`;
//! messages are published into the store and the clients measure the
//! latency from PUBLISH to receipt. Each load is run twice: against `mdp
//! serve`, and against the floor, a child process (this executable with
//! `--floor-server`) doing the least any server must do for the same load —
//! the same handshake and subscription, then one blocking write per client
//! per round from one thread per core, no runtime, queues or store.
//!
//! Two loads, `rate` messages per second in bursts of `burst` on one channel
//! (`bench:0`), which every client subscribes to:
//!
//! - 1,000 clients at 10 msg/s: 10,000 deliveries/s;
//! - 10,000 clients at 25 msg/s: 250,000 deliveries/s.
//!
//! Recorded per load and server: latency p50 and p99, deliveries/s, the
//! deliveries lost (owed for the messages published in the measured window,
//! minus those received), and the server process's CPU per delivery over
//! the window.
//!
//! The clients are a lean load generator, since they share this machine's
//! cores with the server: two threads each read their share of the sockets
//! from one edge-triggered epoll loop. When idle a reader naps 500 µs
//! instead of sleeping in epoll, so that the server's writes do not each have
//! to wake a reader thread; a receipt is therefore noticed up to that much
//! late, which only adds to the measured latency (of both servers).

mod clients;
mod floor;

use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mdp::store::Write;

use crate::report::{self, Recorder, Sample, Target};
use crate::scenario::{Ctx, Kill, free_port, http_ok, poll_until, procfs, wait_port};
use clients::{Histogram, Window, now_ns, read_clients};

pub use floor::floor_server;

/// One load: clients, publish rate and how long it is measured.
struct Load {
    /// Clients, all subscribed to channel `bench:{i % channels}`.
    clients: usize,
    /// Messages published per second (all channels).
    rate: u64,
    /// Messages per publish.
    burst: u64,
    /// Channels the clients are spread over.
    channels: usize,
    /// Bytes per message.
    payload: usize,
    /// Client reader threads.
    reader_threads: usize,
    /// How long an idle reader naps (zero: blocks in epoll).
    reader_nap: Duration,
    /// Publishing before the measured window.
    warmup: Duration,
    /// The measured window.
    window: Duration,
    /// After the window, for its messages to arrive.
    tail: Duration,
    /// Whether the issue's targets apply (the 10k deliveries/s load).
    targets: bool,
}

impl Load {
    /// Deliveries per second the load asks for.
    fn deliveries_per_s(&self) -> u64 {
        self.rate * self.clients as u64 / self.channels as u64
    }

    /// The metrics' prefix, e.g. `1k clients, 10k deliveries/s`.
    fn label(&self) -> String {
        format!(
            "{} clients, {} deliveries/s",
            short(self.clients as u64),
            short(self.deliveries_per_s())
        )
    }
}

/// `1000` → `1k`, `250000` → `250k`, `20` → `20`.
fn short(n: u64) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The two loads (tiny in a smoke run).
fn loads(ctx: &Ctx) -> [Load; 2] {
    let load = |clients: usize, rate: u64, targets: bool| Load {
        clients: ctx.size(clients, 20),
        rate,
        burst: 1,
        channels: 1,
        payload: 256,
        reader_threads: 2,
        reader_nap: Duration::from_micros(500),
        warmup: ctx.size(Duration::from_secs(2), Duration::from_millis(300)),
        window: ctx.size(Duration::from_secs(10), Duration::from_secs(1)),
        tail: ctx.size(Duration::from_secs(1), Duration::from_millis(300)),
        targets,
    };
    [load(1_000, 10, true), load(10_000, 25, false)]
}

/// What one load measured on one server.
struct Outcome {
    /// Latency PUBLISH → receipt, median (ms).
    p50: f64,
    /// Latency PUBLISH → receipt, 99th percentile (ms).
    p99: f64,
    /// Deliveries received per second in the window.
    rate: f64,
    /// Deliveries owed for the window's messages but not received.
    lost: u64,
    /// Clients whose connection ended during the run.
    closed: usize,
    /// The server process's CPU time per delivery in the window (µs).
    cpu_us: f64,
}

/// Run both loads against `mdp serve` and against the floor.
pub async fn run(ctx: &Ctx, rec: &mut Recorder) -> anyhow::Result<()> {
    let loads = loads(ctx);
    let most = loads.iter().map(|l| l.clients).max().unwrap_or(0);
    raise_nofile(most as u64 + 1024)?;
    let mdp = ctx.mdp()?;
    for load in &loads {
        let served = start_serve(&mdp, load.clients).await?;
        let sink = Sink::Serve(served.store.clone());
        let serve = measure(load, served.port, sink, served.serve.pid()).await?;
        print_server_metrics(&served).await;
        drop(served);
        let (floor_child, port, sink) = spawn_floor(load.channels)?;
        let floor = measure(load, port, sink, floor_child.pid()).await?;
        drop(floor_child);
        record(rec, load, &serve, &floor);
    }
    Ok(())
}

/// Record one load's samples: serve's next to the floor's.
fn record(rec: &mut Recorder, load: &Load, serve: &Outcome, floor: &Outcome) {
    let l = load.label();
    let with_target = |s: Sample, t: Target| if load.targets { s.target(t) } else { s };
    for (o, f) in [(floor, " floor"), (serve, "")] {
        if o.closed > 0 {
            println!("  ({l}:{f} {} clients closed by the server)", o.closed);
        }
    }
    let conditions = format!(
        "{} msg/s in bursts of {} on {} channel(s), {} B payload; PUBLISH → client receipt; \
         clients on {} epoll threads napping {} µs when idle (floor: blocking writes, one thread per core)",
        load.rate,
        load.burst,
        load.channels,
        load.payload,
        load.reader_threads,
        load.reader_nap.as_micros()
    );
    let p50 = Sample::new(format!("{l}: p50"), serve.p50, report::MS);
    rec.add(p50.floor(format!("{l}: floor p50")).note(conditions));
    rec.add(Sample::new(
        format!("{l}: floor p50"),
        floor.p50,
        report::MS,
    ));
    let p99 = Sample::new(format!("{l}: p99"), serve.p99, report::MS);
    rec.add(with_target(
        p99.floor(format!("{l}: floor p99")),
        Target::FloorAtMost(1.1),
    ));
    rec.add(Sample::new(
        format!("{l}: floor p99"),
        floor.p99,
        report::MS,
    ));
    let rate = Sample::new(format!("{l}: delivered"), serve.rate, report::DELIVERIES_S);
    rec.add(rate.floor(format!("{l}: floor delivered")));
    rec.add(Sample::new(
        format!("{l}: floor delivered"),
        floor.rate,
        report::DELIVERIES_S,
    ));
    rec.add(
        Sample::new(format!("{l}: lost"), serve.lost as f64, report::COUNT)
            .target(Target::AtMost(0.0))
            .note("deliveries owed (each message published in the window × its channel's clients) minus received"),
    );
    rec.add(Sample::new(
        format!("{l}: floor lost"),
        floor.lost as f64,
        report::COUNT,
    ));
    let cpu = Sample::new(format!("{l}: CPU"), serve.cpu_us, report::US_DELIVERY)
        .floor(format!("{l}: floor CPU"))
        .note("user + system CPU of the server process (mdp serve, not its redis-server) over the window ÷ deliveries");
    rec.add(with_target(cpu, Target::FloorAtMost(1.1)));
    rec.add(Sample::new(
        format!("{l}: floor CPU"),
        floor.cpu_us,
        report::US_DELIVERY,
    ));
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
            "RLIMIT_NOFILE hard limit {} < {need} needed: raise it (ulimit -Hn)",
            lim.rlim_cur
        );
    }
    Ok(lim.rlim_cur)
}

/// `mdp serve` over a throwaway `redis-server`, both children of this process.
struct Served {
    /// First, so that it ends before its store does (fields drop in order).
    serve: Kill,
    _redis: Kill,
    _dir: tempfile::TempDir,
    port: u16,
    http: reqwest::Client,
    store: Arc<dyn mdp::store::Store>,
}

/// Start a `redis-server` and an `mdp serve` (`mdp`) for `clients` clients
/// over it; ready when returned.
async fn start_serve(mdp: &Path, clients: usize) -> anyhow::Result<Served> {
    let dir = tempfile::tempdir()?;
    let redis_port = free_port()?;
    let redis = Kill::spawn(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--client-output-buffer-limit", "pubsub", "0", "0", "0"])
            .current_dir(dir.path())
            .stdout(Stdio::null()),
    )
    .context("redis-server (scripts/setup installs it)")?;
    wait_port(redis_port, Duration::from_secs(10)).await?;
    let redis_url = format!("redis://127.0.0.1:{redis_port}/");
    let port = free_port()?;
    let serve = Kill::spawn(
        Command::new(mdp)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--store-url", &redis_url])
            // Every client comes from 127.0.0.1.
            .args(["--max-clients", &clients.to_string()])
            .args(["--max-clients-per-ip", &clients.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    )?;
    let http = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/health");
    let ready = async || http_ok(&http, &health).await.then_some(());
    poll_until(Duration::from_secs(30), Duration::from_millis(100), ready)
        .await
        .context("mdp serve did not become ready")?;
    let store = mdp::store::open(&redis_url).await?;
    Ok(Served {
        _redis: redis,
        serve,
        _dir: dir,
        port,
        http,
        store,
    })
}

/// The server's own view: time to hand one message to every client.
async fn print_server_metrics(served: &Served) {
    let url = format!("http://127.0.0.1:{}/metrics", served.port);
    let Ok(response) = served.http.get(url).send().await else {
        return;
    };
    let Ok(metrics) = response.text().await else {
        return;
    };
    for line in metrics.lines().filter(|l| l.starts_with("mdp_wds_fanout")) {
        println!("  serve: {line}");
    }
}

/// Where the publisher's messages go.
enum Sink {
    /// Through the store to `mdp serve`.
    Serve(Arc<dyn mdp::store::Store>),
    /// To the floor child's stdin.
    Floor(ChildStdin),
}

impl Sink {
    /// Publish `(channel, payload)` messages; false if they were not.
    async fn publish(&mut self, messages: Vec<(usize, String)>) -> bool {
        match self {
            Sink::Serve(store) => {
                let writes: Vec<Write> = messages
                    .into_iter()
                    .map(|(c, message)| Write::Publish {
                        channel: format!("bench:{c}"),
                        message: message.into(),
                    })
                    .collect();
                store.apply(&writes, false).await.is_ok()
            }
            Sink::Floor(stdin) => {
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

/// Start the floor child (this executable with `--floor-server`); the child,
/// its port and the sink to publish to. `/proc/self/exe` rather than the
/// executable's path: the file may have been replaced (rebuilt) since.
fn spawn_floor(channels: usize) -> anyhow::Result<(Kill, u16, Sink)> {
    use std::io::BufRead as _;
    let mut child = Kill::spawn(
        Command::new("/proc/self/exe")
            .args(["--floor-server", &channels.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .context("starting the floor server")?;
    let stdin = child.0.stdin.take().context("floor stdin")?;
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().context("floor stdout")?).read_line(&mut line)?;
    let port = line.trim().parse().context("floor server port")?;
    Ok((child, port, Sink::Floor(stdin)))
}

/// Sets the window's `stop` when dropped: the reader threads and the
/// publisher end on every path, errors included.
struct StopOnDrop(Arc<Window>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Connect the load's clients to the server on `port`, publish to `sink`,
/// and measure a window; `pid` is the server process, whose CPU is measured.
async fn measure(load: &Load, port: u16, sink: Sink, pid: u32) -> anyhow::Result<Outcome> {
    let window = Arc::new(Window::new());
    let _stop = StopOnDrop(window.clone());
    let started = Instant::now();
    let readers = start_readers(load, port, &window).await?;
    println!(
        "  {} clients connected and subscribed in {:.1} s",
        load.clients,
        started.elapsed().as_secs_f64()
    );
    let publisher = spawn_publisher(load, sink, window.clone());

    // Warm up, then measure the messages published in the window; then give
    // them time to arrive.
    tokio::time::sleep(load.warmup).await;
    let r0 = window.received.load(Ordering::Relaxed);
    let cpu0 = procfs::cpu_seconds(pid)?;
    let t0 = Instant::now();
    window.from.store(now_ns(), Ordering::Relaxed);
    tokio::time::sleep(load.window).await;
    window.until.store(now_ns(), Ordering::Relaxed);
    let delivered = window.received.load(Ordering::Relaxed) - r0;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = procfs::cpu_seconds(pid)? - cpu0;
    tokio::time::sleep(load.tail).await;
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
        .map(|(c, n)| n * (load.clients.saturating_sub(c)).div_ceil(load.channels) as u64)
        .sum();
    if hist.total() == 0 {
        bail!("no message published in the window reached a client");
    }
    Ok(Outcome {
        p50: hist.quantile_ms(0.50),
        p99: hist.quantile_ms(0.99),
        rate: delivered as f64 / elapsed,
        lost: owed.saturating_sub(hist.total()),
        closed: window.closed.load(Ordering::Relaxed),
        cpu_us: cpu * 1e6 / delivered.max(1) as f64,
    })
}

/// A reader thread's result: its clients' latency histogram.
type Reader = std::thread::JoinHandle<anyhow::Result<Histogram>>;

/// Clients: `reader_threads` threads, each connecting its share of the
/// clients and then reading them all from one epoll loop (edge-triggered,
/// mio). A lean load generator: it shares this machine's cores with the
/// server it measures. Returns once every client is subscribed.
async fn start_readers(
    load: &Load,
    port: u16,
    window: &Arc<Window>,
) -> anyhow::Result<Vec<Reader>> {
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut readers = Vec::new();
    for t in 0..load.reader_threads {
        let ids: Vec<usize> = (t..load.clients).step_by(load.reader_threads).collect();
        let (url, window, channels, nap) =
            (url.clone(), window.clone(), load.channels, load.reader_nap);
        readers.push(std::thread::spawn(move || {
            read_clients(&url, &ids, channels, nap, &window)
        }));
    }
    while window.connected.load(Ordering::Relaxed) < load.clients {
        if readers.iter().any(|r| r.is_finished()) {
            let failed = readers.into_iter().find(|r| r.is_finished());
            return match failed.map(|r| r.join()) {
                Some(Ok(Err(e))) => Err(e.context("connecting clients")),
                _ => bail!("a reader thread ended while connecting"),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(readers)
}

/// Publisher: bursts of `burst` messages, `rate` per second overall, until
/// the window stops; returns the messages published in the window, per channel.
fn spawn_publisher(
    load: &Load,
    mut sink: Sink,
    window: Arc<Window>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let (rate, burst, channels, payload) = (load.rate, load.burst, load.channels, load.payload);
    tokio::spawn(async move {
        let pad = "x".repeat(payload.saturating_sub(40));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(burst as f64 / rate as f64));
        let mut seq = 0u64;
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
            if sink.publish(messages).await {
                let from = window.from.load(Ordering::Relaxed);
                let until = window.until.load(Ordering::Relaxed);
                if (from..until).contains(&t) {
                    counted.into_iter().for_each(|c| measured[c] += 1);
                }
            }
        }
        measured
    })
}
