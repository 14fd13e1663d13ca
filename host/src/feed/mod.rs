//! Feed listeners: WebSocket clients of the upstream services that put
//! events on the queues (seed MDL + MDQ, FDL + FDQ), with what they share:
//! reconnect backoff, the admin HTTP server, stream recording.

pub mod admin;
pub mod finlight;
pub mod lifecycle;
pub mod massive;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub use crate::backoff::Backoff;
use crate::queue::Queue;

/// How long a listener waits for the broker to confirm a publish.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Publish `bodies` (carrying `events` events) to `queue` for the `feed`
/// listener, waiting at most `timeout` for the broker's confirms. A publish
/// that fails is retried once (the broker client reconnects); one that times
/// out is not (it may still be delivered, and a retry would duplicate it).
/// When it still fails, its events are lost: counted in
/// `mdp_listener_lost_events_total{feed}` and logged, and the error returned.
pub async fn publish(
    queue: &dyn Queue,
    name: &str,
    bodies: &[Bytes],
    events: u64,
    feed: &'static str,
    timeout: Duration,
) -> Result<(), String> {
    let mut retried = false;
    let error = loop {
        match tokio::time::timeout(timeout, queue.publish(name, bodies)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if !retried => {
                tracing::debug!(error = %e, queue = name, "publish failed; retrying once");
                retried = true;
            }
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("no publisher confirm within {timeout:?}"),
        }
    };
    metrics::counter!("mdp_listener_lost_events_total", "feed" => feed).increment(events);
    tracing::warn!(%error, queue = name, events, "publish failed; events lost");
    Err(error)
}

/// A list setting given as a JSON array (the seed's `["A.*","T.*"]`) or
/// comma separated; entries trimmed, empty ones dropped.
pub fn list_setting<S: AsRef<str>>(values: &[S]) -> Vec<String> {
    let joined = values
        .iter()
        .map(|v| v.as_ref())
        .collect::<Vec<_>>()
        .join(",");
    let trimmed = joined.trim();
    if trimmed.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed)
    {
        return list
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A Prometheus counter a listener event also bumps (see [`count`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Metric {
    /// `name{feed}`.
    Feed(&'static str),
    /// `name{feed, status}`: a status the feed sent.
    Status(&'static str, &'static str),
    /// `name{queue}`: messages put on `queue`.
    Queue(&'static str, &'static str),
}

/// Add `n` to a listener's status `counter` and, when the event has one, to
/// its Prometheus `metric` of `feed`: every listener event is counted by this
/// one call, so the status document and the metrics cannot disagree.
pub(crate) fn count(counter: &AtomicU64, n: u64, feed: &'static str, metric: Option<Metric>) {
    counter.fetch_add(n, Ordering::Relaxed);
    match metric {
        None => {}
        Some(Metric::Feed(name)) => metrics::counter!(name, "feed" => feed).increment(n),
        Some(Metric::Status(name, status)) => {
            metrics::counter!(name, "feed" => feed, "status" => status).increment(n)
        }
        Some(Metric::Queue(name, queue)) => metrics::counter!(name, "queue" => queue).increment(n),
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One recorded frame: `{"t": <unix ms>, "frame": "<text as received>"}`, one
/// per line. [`crate::sim`] replays these files.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordedFrame {
    /// When the frame was sent or received, Unix ms (simulated or wall clock).
    pub t: u64,
    /// The frame text, verbatim (garbage included).
    pub frame: String,
}

/// A JSONL stream recorder writing on its own task; a full buffer drops
/// frames (counted in the log) rather than stalling the feed.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<RecordedFrame>,
}

impl Recorder {
    /// Create (truncate) `path` and start the writer task.
    pub async fn create(path: &Path) -> std::io::Result<Recorder> {
        let file = tokio::fs::File::create(path).await?;
        let (tx, mut rx) = mpsc::channel::<RecordedFrame>(65_536);
        let shown = path.display().to_string();
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(file);
            while let Some(rec) = rx.recv().await {
                let mut line = serde_json::to_string(&rec).unwrap_or_default();
                line.push('\n');
                if let Err(e) = out.write_all(line.as_bytes()).await {
                    tracing::error!(file = %shown, error = %e, "recording stopped");
                    return;
                }
                if rx.is_empty() {
                    let _ = out.flush().await;
                }
            }
            let _ = out.flush().await;
        });
        Ok(Recorder { tx })
    }

    /// Record one frame (dropped with a warning when the writer is behind).
    pub fn record(&self, t: u64, frame: &str) {
        if self
            .tx
            .try_send(RecordedFrame {
                t,
                frame: frame.to_string(),
            })
            .is_err()
        {
            metrics::counter!("mdp_recorder_dropped_total").increment(1);
            tracing::warn!("recorder behind; frame not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::queue::{Consumer, QueueError, QueueResult, QueueSpec};

    /// A broker whose publishes fail the first `failures` times, or never answer.
    struct Flaky {
        failures: u32,
        hang: bool,
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl Queue for Flaky {
        async fn declare(&self, _: &QueueSpec) -> QueueResult<()> {
            Ok(())
        }
        async fn publish(&self, _: &str, _: &[Bytes]) -> QueueResult<()> {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            if self.hang {
                std::future::pending::<()>().await;
            }
            if n < self.failures {
                return Err(QueueError::Other("connection reset".into()));
            }
            Ok(())
        }
        async fn consume(&self, _: &str, _: u16) -> QueueResult<Box<dyn Consumer>> {
            Err(QueueError::Other("not a consumer".into()))
        }
        async fn depth(&self, _: &str) -> QueueResult<u64> {
            Ok(0)
        }
    }

    async fn try_publish(failures: u32, hang: bool) -> (Result<(), String>, u32) {
        let q = Flaky {
            failures,
            hang,
            calls: AtomicU32::new(0),
        };
        let body = [Bytes::from_static(b"{}")];
        let timeout = Duration::from_millis(50);
        let r = publish(&q, "trades", &body, 1, "test", timeout).await;
        (r, q.calls.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn publishes_time_out_and_failures_are_retried_once() {
        assert_eq!(try_publish(0, false).await, (Ok(()), 1));
        assert_eq!(try_publish(1, false).await, (Ok(()), 2), "retried once");
        let (r, calls) = try_publish(2, false).await;
        assert!(r.unwrap_err().contains("connection reset"));
        assert_eq!(calls, 2, "only once");
        let (r, calls) = tokio::time::timeout(Duration::from_secs(5), try_publish(0, true))
            .await
            .expect("a publish without confirms gives up");
        assert!(r.unwrap_err().contains("no publisher confirm"));
        assert_eq!(calls, 1, "a timed-out publish is not repeated");
    }

    #[test]
    fn list_settings_accept_json_arrays_and_commas() {
        assert_eq!(list_setting(&[r#"["A.*", "T.*"]"#]), ["A.*", "T.*"]);
        assert_eq!(list_setting(&["A.*, T.*,"]), ["A.*", "T.*"]);
        // clap splits a JSON array at its commas; rejoined it parses again.
        assert_eq!(
            list_setting(&[r#"["AAPL""#, r#""NVDA"]"#]),
            ["AAPL", "NVDA"]
        );
    }
}
