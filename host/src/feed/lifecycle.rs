//! Start, stop and restart of a listener at runtime, as the seed's listeners
//! offer them (`/start`, `/stop`, `/restart`), and whether a listener
//! connects on its own when it starts (auto-start). A single-connection
//! Massive plan depends on it: a second listener must be stopped before the
//! first one can take the connection over.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

/// Whether the listener should be connected, and how often it was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Run {
    /// True while the listener should hold its feed connection.
    pub running: bool,
    /// Restarts asked for through the control API.
    pub restarts: u64,
}

/// The desired run state of one listener; its session loops follow it.
#[derive(Debug)]
pub struct Lifecycle {
    tx: watch::Sender<Run>,
}

impl Lifecycle {
    /// Running from the start when `auto_start`, else stopped until started.
    pub fn new(auto_start: bool) -> Self {
        let (tx, _) = watch::channel(Run {
            running: auto_start,
            restarts: 0,
        });
        Lifecycle { tx }
    }

    /// The desired state now.
    pub fn state(&self) -> Run {
        *self.tx.borrow()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Run> {
        self.tx.subscribe()
    }

    /// Connect (no change when running).
    pub fn start(&self) -> Run {
        self.tx
            .send_if_modified(|r| !std::mem::replace(&mut r.running, true));
        self.state()
    }

    /// Disconnect and stay disconnected until started.
    pub fn stop(&self) -> Run {
        self.tx
            .send_if_modified(|r| std::mem::replace(&mut r.running, false));
        self.state()
    }

    /// Drop the connection and connect afresh (starts a stopped listener).
    pub fn restart(&self) -> Run {
        self.tx.send_modify(|r| {
            r.running = true;
            r.restarts += 1;
        });
        self.state()
    }

    /// Wait until the listener should run: true, or false when `shutdown`
    /// turned true first.
    pub async fn wait_running(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut rx = self.subscribe();
        loop {
            if *shutdown.borrow() {
                return false;
            }
            if rx.borrow_and_update().running {
                return true;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return false },
                changed = shutdown.changed() => if changed.is_err() { return false },
            }
        }
    }
}

/// A listener with a [`Lifecycle`].
pub trait Controlled: Send + Sync + 'static {
    /// Its lifecycle.
    fn lifecycle(&self) -> &Lifecycle;
}

/// `POST /start`, `/stop` and `/restart`, each answering
/// `{"ok": true, "running": …, "restarts": …}` (behind the admin token, as
/// every write route, when mounted in a guarded router).
pub fn routes<T: Controlled>() -> Router<Arc<T>> {
    fn answer(run: Run, what: &str) -> Response {
        tracing::info!(
            running = run.running,
            restarts = run.restarts,
            "listener {what} through the control API"
        );
        Json(json!({"ok": true, "running": run.running, "restarts": run.restarts})).into_response()
    }
    Router::new()
        .route(
            "/start",
            post(|State(l): State<Arc<T>>| async move { answer(l.lifecycle().start(), "started") }),
        )
        .route(
            "/stop",
            post(|State(l): State<Arc<T>>| async move { answer(l.lifecycle().stop(), "stopped") }),
        )
        .route(
            "/restart",
            post(|State(l): State<Arc<T>>| async move {
                answer(l.lifecycle().restart(), "restarted")
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_start_restart_change_the_state_and_wake_waiters() {
        let life = Arc::new(Lifecycle::new(false));
        let (_stop, mut shutdown) = watch::channel(false);
        let mut rx = life.subscribe();
        assert!(!life.state().running);
        let waiter = {
            let life = life.clone();
            tokio::spawn(async move { life.wait_running(&mut shutdown).await })
        };
        assert_eq!(
            life.start(),
            Run {
                running: true,
                restarts: 0
            }
        );
        assert!(waiter.await.unwrap(), "a waiter wakes when started");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        life.start();
        assert!(
            !rx.has_changed().unwrap(),
            "starting a running listener changes nothing"
        );
        assert_eq!(
            life.stop(),
            Run {
                running: false,
                restarts: 0
            }
        );
        assert_eq!(
            life.restart(),
            Run {
                running: true,
                restarts: 1
            }
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_of_a_stopped_listener() {
        let life = Lifecycle::new(false);
        let (stop, mut shutdown) = watch::channel(false);
        stop.send(true).unwrap();
        assert!(!life.wait_running(&mut shutdown).await);
    }
}
