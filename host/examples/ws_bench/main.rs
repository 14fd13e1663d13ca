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
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mdp::store::Write;

mod clients;
mod floor;

use clients::{Histogram, Window, now_ns, read_clients};
use floor::floor_server;

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
    let (served, _floor, port, target) = if o.floor {
        let (floor, port, target) = spawn_floor(o.channels)?;
        (None, Some(floor), port, target)
    } else {
        let (served, store) = start_serve().await?;
        let port = served.port;
        (Some(served), None, port, Target::Serve(store))
    };
    let window = Arc::new(Window::new());
    let started = Instant::now();
    let readers = start_readers(&o, port, &window)?;
    println!(
        "{} clients connected and subscribed in {:.1} s on {} reader threads (RLIMIT_NOFILE {limit})",
        o.clients,
        started.elapsed().as_secs_f64(),
        o.reader_threads
    );
    let publisher = spawn_publisher(&o, target, window.clone());

    // Warm up, then measure the messages published in the window; then give
    // them a second to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r0 = window.received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    window.from.store(now_ns(), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    window.until.store(now_ns(), Ordering::Relaxed);
    let delivered = window.received.load(Ordering::Relaxed) - r0;
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
    report(&o, &window, &measured, &hist, delivered, elapsed);
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

/// A reader thread's result: its clients' latency histogram.
type Reader = std::thread::JoinHandle<anyhow::Result<Histogram>>;

/// Clients: `--reader-threads` threads, each connecting its share of the
/// clients and then reading them all from one epoll loop (edge-triggered,
/// mio). A lean load generator: it shares this machine's cores with the
/// server it measures. Returns once every client is subscribed.
fn start_readers(o: &Opts, port: u16, window: &Arc<Window>) -> anyhow::Result<Vec<Reader>> {
    let url = format!("ws://127.0.0.1:{port}/ws");
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
    Ok(readers)
}

/// Publisher: bursts of `burst` messages, `rate` per second overall, until
/// the window stops; returns the messages published in the window, per channel.
fn spawn_publisher(
    o: &Opts,
    mut target: Target,
    window: Arc<Window>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let (rate, burst, channels, payload) = (o.rate, o.burst, o.channels, o.payload);
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
}

/// Print the run's rates, losses and latency quantiles.
fn report(
    o: &Opts,
    window: &Window,
    measured: &[u64],
    hist: &Histogram,
    delivered: u64,
    elapsed: f64,
) {
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
        "measured {elapsed:.1} s: {delivered} deliveries = {:.0} deliveries/s (expected ≈ {:.0}/s)",
        delivered as f64 / elapsed,
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
}
