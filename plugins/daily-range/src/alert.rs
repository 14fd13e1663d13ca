//! Alerts: a new session extreme becomes an object pushed onto the high or
//! low alert list and published there.

use mdp_sdk::calendar::Session;
use mdp_sdk::prelude::*;
use serde_json::Value;

use crate::payload::{Object, num, payload_time};
use crate::ranges::Extreme;
use crate::{ALERT_TTL, HOD_KEY, LOD_KEY};

/// The effects of a payload's new extremes: each alert pushed onto its list
/// (capped at `list_max`) and published.
pub(crate) fn alerts(
    o: &Object,
    session: Option<Session>,
    extremes: Vec<Extreme>,
    now_us: u64,
    list_max: u32,
) -> Vec<Effect> {
    if extremes.is_empty() {
        return Vec::new();
    }
    let timestamp = payload_time(o).unwrap_or(now_us as f64 / 1e6);
    let session = session.map(Session::name).unwrap_or_default();
    let mut effects = Vec::new();
    for extreme in extremes {
        let key = if extreme.high { HOD_KEY } else { LOD_KEY };
        let body = Body::Json(alert(o, session, extreme, timestamp).text());
        effects.push(push(key, body.clone(), list_max, Some(ALERT_TTL)));
        effects.push(publish(key, body));
    }
    effects
}

/// One alert: `session`, `direction`, `price`, `previous`, `timestamp`
/// (epoch seconds), `note`, then the payload's fields.
fn alert(o: &Object, session: &str, extreme: Extreme, timestamp: f64) -> Object {
    let mut alert = Object::default();
    alert.set("session", Value::from(session));
    alert.set(
        "direction",
        Value::from(if extreme.high { "high" } else { "low" }),
    );
    alert.set("price", num(Some(extreme.price)));
    alert.set("previous", num(Some(extreme.previous)));
    alert.set("timestamp", num(Some(timestamp)));
    alert.set("note", Value::from(extreme.note));
    for (k, v) in o.fields() {
        alert.set(k, v.clone());
    }
    // Payload fields win, except the alert's time in epoch seconds.
    alert.set("timestamp", num(Some(timestamp)));
    alert
}

#[cfg(test)]
mod tests {
    use mdp_sdk::prelude::*;
    use mdp_sdk::testing::Harness;
    use serde_json::{Value, json};

    use crate::testing::{mon, quote, written};
    use crate::{DailyRange, HOD_KEY};

    #[test]
    fn alert_timestamps_come_from_the_payload_else_the_clock() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0) + 250_000);
        h.init(&[]).unwrap();
        let tick = |high: f64, extra: Value| {
            let mut v = json!({"symbol": "X", "high": high, "low": 1.0});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            Event::Other(Raw {
                kind: "quote:X".into(),
                json: v.to_string(),
            })
        };
        h.analyze(vec![tick(2.0, json!({}))]).unwrap();
        let e = h
            .analyze(vec![
                tick(3.0, json!({"end_timestamp": 1_773_064_801_500u64})),
                tick(4.0, json!({"timestamp": 1_773_064_802_000_000_000u64})),
                tick(5.0, json!({"end_timestamp": 0})),
            ])
            .unwrap();
        let ts: Vec<f64> = written(&e, HOD_KEY)
            .iter()
            .map(|a| a["timestamp"].as_f64().unwrap())
            .collect();
        assert_eq!(ts, vec![1_773_064_801.5, 1_773_064_802.0, 1_773_064_800.25]);
    }

    #[test]
    fn alert_lists_are_capped_by_config() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.init(&[("dra_cache_list_max", "2")]).unwrap();
        for n in 0..5 {
            h.analyze(vec![quote("AAPL", 10.0 + n as f64, 9.0)])
                .unwrap();
        }
        assert_eq!(h.host(|h| h.store.lrange(HOD_KEY, 0, -1)).len(), 2);
        assert!(matches!(
            Harness::<DailyRange>::new().init(&[("dra_cache_list_max", "x")]),
            Err(AnalyzerError::BadConfig(_))
        ));
    }
}
