//! What a role knows about its own health, as the admin endpoint reports it:
//! liveness (every role task still running), readiness (started, and every
//! dependency — queue, store, plugin, circuit breaker — last seen working)
//! and a per-worker status, as the seed's supervisor showed it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Debug, Default)]
struct State {
    role: &'static str,
    started: bool,
    stopping: bool,
    /// Tasks that ended, with how.
    ended: BTreeMap<String, String>,
    /// Dependency checks: name → (ok, detail).
    checks: BTreeMap<String, (bool, String)>,
    /// Per-worker status documents.
    workers: BTreeMap<String, Value>,
}

/// Stops a [`Health::watch`] when dropped.
#[derive(Debug)]
pub struct WatchGuard(tokio::task::JoinHandle<()>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A role's health, shared by its tasks and its admin endpoint (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

impl Health {
    /// The health of `role` (`process`, `scan`, `up`…), not yet started.
    pub fn new(role: &'static str) -> Health {
        let health = Health::default();
        health.lock().role = role;
        health
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every task was started: readiness now depends on the checks alone.
    pub fn started(&self) {
        self.lock().started = true;
    }

    /// The role is shutting down: tasks that end now end on purpose.
    pub fn stopping(&self) {
        self.lock().stopping = true;
    }

    /// Record dependency `name` as working or not, with a detail.
    pub fn check(&self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let mut state = self.lock();
        let changed = state.checks.get(name).is_none_or(|(was, _)| *was != ok);
        if changed {
            match ok {
                true => tracing::info!(role = state.role, check = name, "dependency healthy"),
                false => {
                    tracing::warn!(role = state.role, check = name, %detail, "dependency unhealthy")
                }
            }
            metrics::gauge!("mdp_dependency_up", "check" => name.to_string())
                .set(f64::from(u8::from(ok)));
        }
        state.checks.insert(name.to_string(), (ok, detail));
    }

    /// Evaluate `probe` every 500 ms (a probe that takes longer delays the
    /// next) as check `name` (its `Ok`/`Err` text is the detail) until the
    /// returned guard is dropped.
    pub fn watch<P, F>(&self, name: &str, probe: P) -> WatchGuard
    where
        P: Fn() -> F + Send + 'static,
        F: std::future::Future<Output = Result<String, String>> + Send,
    {
        let (health, name) = (self.clone(), name.to_string());
        WatchGuard(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match probe().await {
                    Ok(detail) => health.check(&name, true, detail),
                    Err(detail) => health.check(&name, false, detail),
                }
            }
        }))
    }

    /// Record that task `name` ended (`how`: its error, a panic, or returned).
    pub fn ended(&self, name: &str, how: impl Into<String>) {
        self.lock().ended.insert(name.to_string(), how.into());
    }

    /// Replace the status document of worker `name`.
    pub fn worker(&self, name: &str, status: Value) {
        self.lock().workers.insert(name.to_string(), status);
    }

    /// Liveness: false once a task ended while the role was not stopping.
    pub fn liveness(&self) -> (bool, Value) {
        let state = self.lock();
        let dead: BTreeMap<&String, &String> = match state.stopping {
            true => BTreeMap::new(),
            false => state.ended.iter().collect(),
        };
        let ok = dead.is_empty();
        let status = if ok { "OK" } else { "dead" };
        (
            ok,
            json!({"role": state.role, "status": status, "ended": dead}),
        )
    }

    /// Readiness: started, alive, and every check passing; the body names
    /// each failing check.
    pub fn readiness(&self) -> (bool, Value) {
        let (alive, _) = self.liveness();
        let state = self.lock();
        let failing: BTreeMap<&String, &String> = state
            .checks
            .iter()
            .filter(|(_, (ok, _))| !ok)
            .map(|(name, (_, detail))| (name, detail))
            .collect();
        let ok = alive && state.started && failing.is_empty();
        let status = match (ok, state.started) {
            (true, _) => "ready",
            (false, false) => "starting",
            (false, true) => "not ready",
        };
        (
            ok,
            json!({"role": state.role, "status": status, "failing": failing}),
        )
    }

    /// Everything known: checks, ended tasks and workers.
    pub fn status(&self) -> Value {
        let state = self.lock();
        let checks: BTreeMap<&String, Value> = state
            .checks
            .iter()
            .map(|(name, (ok, detail))| (name, json!({"ok": ok, "detail": detail})))
            .collect();
        json!({
            "role": state.role,
            "started": state.started,
            "checks": checks,
            "ended": state.ended,
            "workers": state.workers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_failing_checks_and_liveness_dead_tasks() {
        let h = Health::new("process");
        assert!(!h.readiness().0, "not ready before started");
        h.started();
        h.check("store", true, "");
        assert!(h.readiness().0);
        h.check("store", false, "connection refused");
        let (ok, body) = h.readiness();
        assert!(!ok);
        assert_eq!(body["failing"]["store"], "connection refused");
        h.check("store", true, "");
        assert!(h.liveness().0);
        h.ended("processor quotes", "panicked");
        let (alive, body) = h.liveness();
        assert!(!alive);
        assert_eq!(body["ended"]["processor quotes"], "panicked");
        assert!(!h.readiness().0, "a dead role is not ready");
        h.stopping();
        assert!(h.liveness().0, "tasks ending at shutdown are not deaths");
    }
}
