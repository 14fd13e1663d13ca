//! A widget client measuring simulator print → receipt: subscribed to the
//! router's quotes of every symbol ending in `A` (`stocks:quotes:*A`, one
//! in 26 symbols: the raw `Q` event with its `t`) and the leaderboard's
//! quotes (`quote:*`, built from a second bar, with the bar's `end_timestamp`). Times are on the simulator's clock, converted with the
//! wall-clock offset measured from its `/admin/stats`.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::pipeline::wall_ms;

/// The simulator emits events on a 20 ms tick (`sim::server::generate`).
const SIM_TICK_MS: u64 = 20;

/// The router channels the client subscribes to.
pub const ROUTER_FEED: &str = "stocks:quotes:*A";

/// Latencies received so far, ms.
#[derive(Default)]
pub struct Latencies {
    /// Router path: `Q` event `t` → receipt.
    pub router: Vec<f64>,
    /// Leaderboard path: the tick that emitted the second bar → receipt.
    pub leaderboard: Vec<f64>,
    /// The simulator's tick phase (`t mod 20`) of the last quote.
    phase: Option<u64>,
}

/// What the client reads from a message (any other field is ignored): the
/// router's quote is normalised (`event_type`, `timestamp` in ms), the
/// leaderboard's carries its bar's `end_timestamp`.
#[derive(serde::Deserialize)]
struct Msg {
    #[serde(alias = "ev")]
    event_type: Option<String>,
    #[serde(alias = "t")]
    timestamp: Option<u64>,
    end_timestamp: Option<u64>,
}

impl Latencies {
    fn record(&mut self, text: &str, received_sim: f64) {
        let Ok(m) = serde_json::from_str::<Msg>(text) else {
            return;
        };
        if m.event_type.as_deref() == Some("Q")
            && let Some(t) = m.timestamp
        {
            self.phase = Some(t % SIM_TICK_MS);
            self.router.push(received_sim - t as f64);
        } else if let (Some(end), Some(phase)) = (m.end_timestamp, self.phase) {
            // The bar went out at the first tick at or after its end.
            let wait = (phase + SIM_TICK_MS - end % SIM_TICK_MS) % SIM_TICK_MS;
            self.leaderboard.push(received_sim - (end + wait) as f64);
        }
    }
}

/// A connected widget client (its reader task ends on drop).
pub struct Probe {
    lat: Arc<Mutex<Latencies>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    /// Connect to `ws://127.0.0.1:port/ws` (authenticating with `key` when
    /// given) and subscribe; `offset_ms` is wall clock minus simulator clock.
    pub async fn connect(port: u16, key: Option<&str>, offset_ms: f64) -> anyhow::Result<Probe> {
        let url = format!("ws://127.0.0.1:{port}/ws");
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        if let Some(key) = key {
            let auth = serde_json::json!({"action": "auth", "api_key": key});
            ws.send(Message::Text(auth.to_string().into())).await?;
        }
        for feed in [ROUTER_FEED, "quote:*"] {
            let sub = serde_json::json!({"action": "subscribe", "feed": feed});
            ws.send(Message::Text(sub.to_string().into())).await?;
        }
        let lat = Arc::new(Mutex::new(Latencies::default()));
        let sink = lat.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(text) = m {
                    let received_sim = wall_ms() - offset_ms;
                    let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                    l.record(&text, received_sim);
                }
            }
        });
        Ok(Probe { lat, task })
    }

    /// Forget what was received so far (end of the warm-up).
    pub fn reset(&self) {
        let mut l = self.lat.lock().unwrap_or_else(|p| p.into_inner());
        l.router.clear();
        l.leaderboard.clear();
    }

    /// What was received since the last reset.
    pub fn take(&self) -> Latencies {
        let mut l = self.lat.lock().unwrap_or_else(|p| p.into_inner());
        let phase = l.phase;
        let mut out = std::mem::take(&mut *l);
        l.phase = phase;
        out.phase = phase;
        out
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `q` quantile (0–1) of `v` (nearest rank), or 0 when empty.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 500.0);
        assert_eq!(quantile(&mut v, 0.99), 990.0);
        assert_eq!(quantile(&mut v, 0.999), 999.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn a_bar_is_timed_from_the_tick_that_emitted_it() {
        let mut l = Latencies::default();
        l.record(
            r#"{"event_type":"Q","symbol":"AAA","timestamp":1007}"#,
            1010.0,
        );
        assert_eq!(l.router, vec![3.0]);
        // Ticks at …987, 1007, 1027: the bar ending at 1000 went out at 1007.
        l.record(r#"{"symbol":"AAA","end_timestamp":1000}"#, 1019.0);
        assert_eq!(l.leaderboard, vec![12.0]);
    }
}
