//! The simulator's admin API: `GET /admin/stats`; `POST /admin/clock`,
//! `/admin/profile`, `/admin/fault`, `/admin/finlight`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Shared;
use crate::sim::{Fault, Profile, session_at};

/// The admin routes.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/admin/stats", get(admin_stats))
        .route("/admin/clock", post(admin_clock))
        .route("/admin/profile", post(admin_profile))
        .route("/admin/fault", post(admin_fault))
        .route("/admin/finlight", post(admin_finlight))
}

fn admin_error(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": msg.to_string()})),
    )
        .into_response()
}

async fn admin_stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let now = shared.clock.now_ms();
    Json(json!({
        "massive": shared.stats.to_json(),
        "finlight": shared.finlight.stats_json(),
        "clock": {"now_ms": now, "session": session_at(now).0, "speed": shared.clock.speed()},
        "rates": {"trades": shared.rates.trades.load(Ordering::Relaxed), "quotes": shared.rates.quotes.load(Ordering::Relaxed),
                  "stress": shared.rates.stress.load(Ordering::Relaxed)},
        "pending_faults": shared.pending().iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
    }))
}

async fn admin_clock(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    if let Some(speed) = body.get("speed") {
        match speed.as_f64() {
            Some(s) if (0.0..=100_000.0).contains(&s) => shared.clock.set_speed(s),
            _ => return admin_error("speed must be a number between 0 and 100000"),
        }
    }
    if let Some(at) = body.get("at") {
        let parsed = match at {
            Value::Number(n) => n.as_u64().ok_or_else(|| anyhow::anyhow!("bad ms")),
            Value::String(s) => crate::time::parse_at_ms(s),
            _ => Err(anyhow::anyhow!("`at` must be RFC 3339 or Unix ms")),
        };
        match parsed {
            Ok(ms) => shared.clock.set_ms(ms),
            Err(e) => return admin_error(format!("bad `at`: {e}")),
        }
    }
    if let Some(session) = body.get("session") {
        let name = session.as_str().unwrap_or("");
        if shared.clock.jump_to_session(name).is_none() {
            return admin_error(format!(
                "unknown session `{name}` (pre, regular, after, closed)"
            ));
        }
    }
    let now = shared.clock.now_ms();
    Json(json!({"now_ms": now, "session": session_at(now).0, "speed": shared.clock.speed()}))
        .into_response()
}

async fn admin_profile(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    if let Some(p) = body.get("profile") {
        let Some(p) = p.as_str().and_then(Profile::from_name) else {
            return admin_error("profile must be quiet, average, open or stress");
        };
        shared.set_profile(p);
    } else if let Some(rate) = body.get("rate").and_then(Value::as_u64) {
        let quotes = body
            .get("quote_rate")
            .and_then(Value::as_u64)
            .unwrap_or(rate);
        shared.set_rates(rate, quotes, false);
    } else {
        return admin_error("expected {\"profile\": ...} or {\"rate\": N, \"quote_rate\": M}");
    }
    Json(json!({"trades": shared.rates.trades.load(Ordering::Relaxed), "quotes": shared.rates.quotes.load(Ordering::Relaxed)}))
        .into_response()
}

async fn admin_fault(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let name = body
        .get("fault")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match Fault::from_name(name) {
        Some(f) => {
            shared.arm(f);
            Json(json!({"armed": name})).into_response()
        }
        None => admin_error(format!(
            "unknown fault `{name}` (auth-failure, max-connections, slow-consumer, force-disconnect, reset, garbage, oversize, stall, rest-lie)"
        )),
    }
}

async fn admin_finlight(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    match shared.finlight.admin(&body) {
        Ok(v) => Json(v).into_response(),
        Err(e) => admin_error(e),
    }
}
