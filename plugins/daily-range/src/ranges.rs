//! A symbol's session ranges: the high and low of each session of the
//! trading day, how a payload's prices move them (a new extreme, after the
//! first print, becomes an alert), and the record they are published in.

use mdp_sdk::calendar::Session;
use serde::{Deserialize, Serialize};

use crate::payload::{Object, num, positive};

/// Output field names per session: (high, low).
pub(crate) const FIELDS: [(&str, &str); 3] = [
    ("pre_market_high", "pre_market_low"),
    ("regular_session_high", "regular_session_low"),
    ("after_hours_high", "after_hours_low"),
];

/// One session's extremes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Range {
    pub(crate) high: Option<f64>,
    pub(crate) low: Option<f64>,
}

/// A symbol's extremes per session (indexed in the order of [`Session::ALL`]).
pub(crate) type Ranges = [Range; 3];

/// A new session high or low: what its alert says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Extreme {
    /// A new high (else a new low).
    pub(crate) high: bool,
    /// The new extreme.
    pub(crate) price: f64,
    /// The extreme it replaces.
    pub(crate) previous: f64,
    /// The cross-session breach note, or empty.
    pub(crate) note: String,
}

/// Fold a payload's high and low into `session`'s range; the new extremes
/// (the session's first print sets its range without an alert). A payload
/// without a positive high and low changes nothing.
pub(crate) fn update(ranges: &mut Ranges, session: Session, o: &Object) -> Vec<Extreme> {
    let high = positive(o.get("high")).or_else(|| positive(o.get("h")));
    let low = positive(o.get("low")).or_else(|| positive(o.get("l")));
    let (Some(high), Some(low)) = (high, low) else {
        return Vec::new();
    };
    let before = *ranges;
    let r = &mut ranges[session as usize];
    let mut extremes = Vec::new();
    match r.high {
        None => r.high = Some(high),
        Some(previous) if high > previous => {
            r.high = Some(high);
            extremes.push(Extreme {
                high: true,
                price: high,
                previous,
                note: note(&before, session, true, high),
            });
        }
        _ => {}
    }
    match r.low {
        None => r.low = Some(low),
        Some(previous) if low < previous => {
            r.low = Some(low);
            extremes.push(Extreme {
                high: false,
                price: low,
                previous,
                note: note(&before, session, false, low),
            });
        }
        _ => {}
    }
    extremes
}

/// The cross-session breach note of a new extreme (seed wording).
fn note(ranges: &Ranges, session: Session, high: bool, price: f64) -> String {
    let checks: &[(usize, &str)] = match session {
        Session::PreMarket => &[],
        Session::Regular => &[(0, "pre-market")],
        Session::AfterHours => &[(1, "regular session"), (0, "pre-market")],
    };
    for (i, label) in checks {
        let r = ranges[*i];
        let (bound, broke) = if high {
            (r.high, r.high.is_some_and(|b| price > b))
        } else {
            (r.low, r.low.is_some_and(|b| price < b))
        };
        if broke {
            let word = if high { "high" } else { "low" };
            return format!("Broke {label} {word} of ${:.2}", bound.unwrap_or_default());
        }
    }
    String::new()
}

/// The `daily_range:{SYM}` record: the payload, then each session's high
/// and low.
pub(crate) fn record(o: &Object, ranges: &Ranges) -> Object {
    let mut record = o.clone();
    for (i, (h, l)) in FIELDS.iter().enumerate() {
        record.set(h, num(ranges[i].high));
        record.set(l, num(ranges[i].low));
    }
    record
}

#[cfg(test)]
// A test reads best as one scenario; the function-length lint is for code.
#[allow(clippy::too_many_lines)]
mod tests {
    use mdp_sdk::testing::Harness;

    use crate::testing::{at, market, mon, quote, state, written};
    use crate::{DailyRange, HOD_KEY, LOD_KEY};

    #[test]
    fn session_highs_and_lows_alert_after_the_first_print_with_breach_notes() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(4, 30));
        market(&h, "pre-market");
        h.init(&[]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.0, 9.8)]).unwrap();
        assert!(written(&e, HOD_KEY).is_empty() && written(&e, LOD_KEY).is_empty());
        let s = state(&e, "AAPL");
        assert_eq!(
            (s["pre_market_high"].as_f64(), s["pre_market_low"].as_f64()),
            (Some(10.0), Some(9.8))
        );
        assert!(s["regular_session_high"].is_null());
        // Equal is not a new extreme; higher is.
        let e = h
            .analyze(vec![quote("AAPL", 10.0, 9.8), quote("AAPL", 10.5, 9.5)])
            .unwrap();
        let hod = written(&e, HOD_KEY);
        assert_eq!(hod.len(), 1);
        assert_eq!(hod[0]["session"], "pre_market");
        assert_eq!(hod[0]["direction"], "high");
        assert_eq!(
            (hod[0]["price"].as_f64(), hod[0]["previous"].as_f64()),
            (Some(10.5), Some(10.0))
        );
        assert_eq!(hod[0]["note"], "");
        assert_eq!(hod[0]["symbol"], "AAPL");
        assert_eq!(written(&e, LOD_KEY)[0]["previous"].as_f64(), Some(9.8));

        at(&h, mon(9, 45), "open");
        let e = h.analyze(vec![quote("AAPL", 10.2, 10.1)]).unwrap();
        assert!(
            written(&e, HOD_KEY).is_empty(),
            "first regular print is not an alert"
        );
        let e = h.analyze(vec![quote("AAPL", 10.8, 9.9)]).unwrap();
        assert_eq!(
            written(&e, HOD_KEY)[0]["note"],
            "Broke pre-market high of $10.50"
        );
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "",
            "9.9 is above the pre-market low"
        );
        let e = h.analyze(vec![quote("AAPL", 10.7, 9.4)]).unwrap();
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "Broke pre-market low of $9.50"
        );

        at(&h, mon(16, 30), "after-hours");
        h.analyze(vec![quote("AAPL", 10.6, 10.0)]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.9, 9.45)]).unwrap();
        assert_eq!(
            written(&e, HOD_KEY)[0]["note"],
            "Broke regular session high of $10.80"
        );
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "Broke pre-market low of $9.50"
        );
        let e = h.analyze(vec![quote("AAPL", 10.95, 9.3)]).unwrap();
        assert_eq!(
            written(&e, LOD_KEY)[0]["note"],
            "Broke regular session low of $9.40"
        );
        let s = state(&e, "AAPL");
        for (k, v) in [
            ("pre_market_high", 10.5),
            ("pre_market_low", 9.5),
            ("regular_session_high", 10.8),
            ("regular_session_low", 9.4),
            ("after_hours_high", 10.95),
            ("after_hours_low", 9.3),
        ] {
            assert_eq!(s[k].as_f64(), Some(v), "{k}");
        }
        // Lists: newest first, capped, 8 h TTL.
        let hod = h.host(|h| h.store.lrange(HOD_KEY, 0, -1));
        assert_eq!(hod.len(), 4);
        assert!(hod[0].contains("10.95"));
        assert_eq!(
            h.host(|h| h.store.expiry_ms(HOD_KEY)),
            Some(mon(16, 30) / 1000 + 28_800_000)
        );
        assert_eq!(
            h.host(|h| h.store.expiry_ms("daily_range:AAPL")),
            Some(mon(16, 30) / 1000 + 345_600_000)
        );
    }

    #[test]
    fn closed_market_publishes_state_without_updating_it() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(20, 30));
        market(&h, "closed");
        h.init(&[]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        let s = state(&e, "AAPL");
        assert!(s["after_hours_high"].is_null() && s["pre_market_low"].is_null());
        assert_eq!(s["high"].as_f64(), Some(10.0));
    }
}
