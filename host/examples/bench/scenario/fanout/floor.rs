//! The floor: the least any server must do for the same load, run as a
//! child process (`bench --floor-server <channels>`).

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio_tungstenite::tungstenite::Message;

use super::raise_nofile;

/// Work for a floor writer thread.
pub(crate) enum Job {
    /// A subscribed client (its channel index and socket).
    Client(usize, std::net::TcpStream),
    /// An encoded WebSocket frame for the clients of a channel.
    Frame(usize, Arc<[u8]>),
}

/// The floor: the least any server must do — the same WebSocket handshake
/// and subscription, then one blocking `write` per client per round of the
/// pre-encoded frames that queued up, from plain threads (one per core), with
/// no runtime, queues or store. What the clients measure against it is this machine's
/// floor for the same load.
pub(crate) fn start_floor(
    channels: usize,
) -> anyhow::Result<(u16, Vec<std::sync::mpsc::Sender<Job>>)> {
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

/// Run as the floor child (`bench --floor-server <channels>`): serve the floor on a free port (printed on
/// stdout) and write each stdin line `<channel> <payload>` to the clients of
/// that channel, until stdin closes.
pub fn floor_server(channels: usize) -> anyhow::Result<()> {
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
