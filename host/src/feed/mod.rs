//! Feed listeners: WebSocket clients of the upstream services that put
//! events on the queues (seed MDL + MDQ, FDL + FDQ), with what they share:
//! reconnect backoff, the admin HTTP server, stream recording.

pub mod admin;
pub mod finlight;
pub mod massive;

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Exponential reconnect backoff with jitter: `base`, doubling up to `max`;
/// each wait is drawn uniformly from `[d/2, d]` ("equal jitter") so that
/// clients knocked off together do not reconnect together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `base` and capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            current: base,
        }
    }

    /// The next wait (jittered); doubles the following one.
    pub fn next_wait(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let spread = (d - half).as_millis() as u64;
        half + Duration::from_millis(if spread == 0 {
            0
        } else {
            rand::random::<u64>() % (spread + 1)
        })
    }

    /// Back to the base wait (after a healthy session).
    pub fn reset(&mut self) {
        self.current = self.base;
    }
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
    use super::*;

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

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        for (i, w) in waits.iter().enumerate() {
            let nominal = Duration::from_millis((100u64 << i).min(1000));
            assert!(
                *w >= nominal / 2 && *w <= nominal,
                "wait {i} = {w:?}, nominal {nominal:?}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
