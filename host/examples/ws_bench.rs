//! Benchmark (not a test): many concurrent WebSocket clients (this process)
//! on one `mdp serve` (a child process) over a throwaway `redis-server`;
//! messages are published into the store and the clients measure the
//! latency from PUBLISH to receipt. Prints deliveries per second and latency
//! percentiles.
//!
//! ```text
//! cargo build --release -p mdp --bin mdp --example ws_bench
//! target/release/examples/ws_bench [--clients 10000] [--seconds 10] [--rate 25] \
//!     [--burst 5] [--channels 1] [--payload 256]
//! ```
//!
//! `--rate` messages per second are published in bursts of `--burst` on
//! `--channels` channels (`bench:0`…); client *i* subscribes to
//! `bench:{i % channels}`, so deliveries/s ≈ rate × clients / channels.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use mdp::store::Write;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Latency histogram: 50 µs buckets up to 5 s.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const BUCKET_US: u64 = 50;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: (0..100_000).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.buckets
            .iter()
            .for_each(|b| b.store(0, Ordering::Relaxed));
    }

    /// The `q` quantile in milliseconds (upper edge of its bucket).
    fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
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
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        clients: 10_000,
        seconds: 10,
        rate: 25,
        burst: 5,
        channels: 1,
        payload: 256,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!(
                "usage: ws_bench [--clients N] [--seconds S] [--rate R] [--burst B] [--channels C] [--payload BYTES]"
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
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(o)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    let limit = raise_nofile(o.clients as u64 + 1024)?;
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

    // A throwaway Redis and `mdp serve` on it.
    let dir = tempfile::tempdir()?;
    let redis_port = free_port()?;
    let _redis = Kill(
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
    let _serve = Kill(
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

    // Clients.
    let url = format!("ws://127.0.0.1:{port}/ws");
    let hist = Arc::new(Histogram::new());
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..o.clients {
        let (url, gate) = (url.clone(), gate.clone());
        let feed = format!("bench:{}", i % o.channels);
        connecting.spawn(async move {
            let _permit = gate.acquire().await?;
            let config = WebSocketConfig::default()
                .read_buffer_size(8 * 1024)
                .write_buffer_size(0);
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(&url, Some(config), false).await?;
            let sub = serde_json::json!({"action": "subscribe", "feed": feed}).to_string();
            ws.send(Message::Text(sub.into())).await?;
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("subscribed") => Ok(ws),
                other => bail!("subscribe: {other:?}"),
            }
        });
    }
    let mut sockets = Vec::with_capacity(o.clients);
    while let Some(r) = connecting.join_next().await {
        sockets.push(r??);
    }
    println!(
        "{} clients connected and subscribed in {:.1} s (RLIMIT_NOFILE {limit})",
        sockets.len(),
        started.elapsed().as_secs_f64()
    );
    let mut readers = tokio::task::JoinSet::new();
    for mut ws in sockets {
        let (hist, delivered) = (hist.clone(), delivered.clone());
        readers.spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let now = now_ns();
                    // Payload: {"t":<ns>,…}
                    let sent: u64 = t
                        .get(5..)
                        .and_then(|s| s.split(',').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(now);
                    hist.record(now.saturating_sub(sent) / 1000);
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    // Publisher: bursts of `burst` messages, `rate` per second overall.
    let publisher = {
        let (stop, store) = (stop.clone(), store.clone());
        let (rate, burst, channels, payload) = (o.rate, o.burst, o.channels, o.payload);
        tokio::spawn(async move {
            let pad = "x".repeat(payload.saturating_sub(40));
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(burst as f64 / rate as f64));
            let mut seq = 0u64;
            let mut published = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = now_ns();
                let writes: Vec<Write> = (0..burst)
                    .map(|_| {
                        seq += 1;
                        Write::Publish {
                            channel: format!("bench:{}", seq as usize % channels),
                            message: format!(r#"{{"t":{t},"seq":{seq},"pad":"{pad}"}}"#),
                        }
                    })
                    .collect();
                if store.apply(&writes, false).await.is_ok() {
                    published += burst;
                }
            }
            published
        })
    };

    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    hist.reset();
    let d0 = delivered.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    let d1 = delivered.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await?;
    let rate = (d1 - d0) as f64 / elapsed;
    println!(
        "clients {}  channels {}  publish rate {}/s in bursts of {}  payload {} B",
        o.clients, o.channels, o.rate, o.burst, o.payload
    );
    println!(
        "measured {elapsed:.1} s: {} deliveries = {:.0} deliveries/s (expected ≈ {:.0}/s); {published} messages published in total",
        d1 - d0,
        rate,
        o.rate as f64 * o.clients as f64 / o.channels as f64
    );
    println!(
        "latency PUBLISH→receipt: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        hist.quantile_ms(0.50),
        hist.quantile_ms(0.90),
        hist.quantile_ms(0.99),
        hist.quantile_ms(0.999)
    );
    // The server's own view: time to hand one message to every client.
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in metrics.lines().filter(|l| l.starts_with("mdp_wds_fanout")) {
        println!("server: {line}");
    }
    readers.abort_all();
    Ok(())
}
