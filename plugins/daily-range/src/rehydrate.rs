//! Rehydration: a symbol's ranges restored from its stored record the first
//! time it appears after a start, when the record is from the current trading
//! day, for the sessions already elapsed.

use mdp_sdk::calendar::Session;
use mdp_sdk::prelude::*;

use crate::DailyRange;
use crate::payload::{Object, payload_time, positive};
use crate::ranges::{FIELDS, Range, Ranges};

impl DailyRange {
    /// Restore the symbols of `wanted` not seen yet from their stored records.
    pub(crate) fn rehydrate(&mut self, wanted: &[String], session: Option<Session>) {
        let fresh: Vec<&String> = wanted
            .iter()
            .filter(|s| !self.symbols.contains_key(s.as_str()))
            .collect();
        if fresh.is_empty() {
            return;
        }
        if self.anchor != self.init_anchor {
            // A day boundary passed since the start: everything stored is older.
            for s in fresh {
                self.symbols.insert(s.clone(), Ranges::default());
            }
            return;
        }
        let elapsed = match session {
            Some(Session::PreMarket) => 1,
            Some(Session::Regular) => 2,
            Some(Session::AfterHours) | None => 3,
        };
        let keys: Vec<String> = fresh.iter().map(|s| format!("daily_range:{s}")).collect();
        let mut restored = 0;
        for (symbol, record) in fresh.into_iter().zip(cache::get_many(&keys)) {
            let mut ranges = Ranges::default();
            let record = record.and_then(|t| serde_json::from_str::<Object>(&t).ok());
            if let Some(o) = record {
                let today = match payload_time(&o) {
                    Some(t) => t >= self.anchor as f64,
                    None => self.trust_untimed,
                };
                if today {
                    for (i, (h, l)) in FIELDS.iter().enumerate().take(elapsed) {
                        ranges[i] = Range {
                            high: positive(o.get(h)),
                            low: positive(o.get(l)),
                        };
                    }
                    restored += 1;
                }
            }
            self.symbols.insert(symbol.clone(), ranges);
        }
        if restored > 0 {
            host::counter("dra.rehydrated", restored);
        }
    }
}

#[cfg(test)]
mod tests {
    use mdp_sdk::calendar::day_anchor;
    use mdp_sdk::prelude::*;
    use mdp_sdk::testing::Harness;
    use serde_json::json;

    use crate::testing::{market, mon, quote, state, written};
    use crate::{BOUNDARY_KEY, DailyRange, HOD_KEY, LOD_KEY};

    #[test]
    fn rehydrates_todays_records_for_elapsed_sessions_only() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        market(&h, "open");
        let record = |end_ms: Option<u64>| {
            let mut v = json!({
                "symbol": "S", "high": 1.0, "low": 1.0,
                "pre_market_high": 10.5, "pre_market_low": 9.5,
                "regular_session_high": 10.8, "regular_session_low": 9.9,
                "after_hours_high": 11.0, "after_hours_low": 9.4,
            });
            if let Some(t) = end_ms {
                v["end_timestamp"] = json!(t);
            }
            v.to_string()
        };
        h.host(|h| {
            h.store
                .set("daily_range:TODAY", &record(Some(mon(9, 50) / 1000)), None);
            // Friday's record: not restored.
            h.store.set(
                "daily_range:OLD",
                &record(Some(mon(9, 50) / 1000 - 3 * 86_400_000)),
                None,
            );
            // No timestamp: trusted only because the boundary key says today.
            h.store.set("daily_range:NOTS", &record(None), None);
            h.store
                .set(BOUNDARY_KEY, &day_anchor(mon(10, 0)).to_string(), None);
        });
        h.init(&[]).unwrap();
        let e = h
            .analyze(vec![
                quote("TODAY", 10.9, 10.0),
                quote("OLD", 10.9, 10.0),
                quote("NOTS", 10.7, 9.8),
            ])
            .unwrap();
        assert!(
            !e.iter()
                .any(|e| matches!(e, Effect::Put(p) if p.key == BOUNDARY_KEY))
        );
        let s = state(&e, "TODAY");
        assert_eq!(s["pre_market_high"].as_f64(), Some(10.5));
        assert_eq!(s["regular_session_high"].as_f64(), Some(10.9));
        assert!(
            s["after_hours_high"].is_null(),
            "after-hours has not happened yet"
        );
        let hod = written(&e, HOD_KEY);
        assert_eq!(hod.len(), 1, "only TODAY alerts: {hod:?}");
        assert_eq!(hod[0]["previous"].as_f64(), Some(10.8));
        assert_eq!(hod[0]["note"], "Broke pre-market high of $10.50");
        assert!(state(&e, "OLD")["pre_market_high"].is_null());
        let lod = written(&e, LOD_KEY);
        assert_eq!(lod.len(), 1);
        assert_eq!(lod[0]["symbol"], "NOTS");
        assert_eq!(h.host(|h| h.counters["dra.rehydrated"]), 2);
    }

    #[test]
    fn timestampless_records_are_not_trusted_without_todays_boundary() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.host(|h| {
            h.store.set(
                "daily_range:NOTS",
                r#"{"symbol":"NOTS","regular_session_high":10.8,"regular_session_low":9.9}"#,
                None,
            );
            h.store.set(BOUNDARY_KEY, "1772870400", None);
        });
        h.init(&[]).unwrap();
        let e = h.analyze(vec![quote("NOTS", 10.9, 10.0)]).unwrap();
        assert!(written(&e, HOD_KEY).is_empty());
        assert_eq!(
            written(&e, BOUNDARY_KEY),
            vec![json!(day_anchor(mon(10, 0)))]
        );
    }
}
