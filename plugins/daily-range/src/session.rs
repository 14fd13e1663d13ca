//! Which session of the trading day it is: the market-status host import,
//! or the regular schedule by the clock while that import is failing.

use mdp_sdk::calendar::{Session, scheduled_session, session_of};
use mdp_sdk::prelude::*;

use crate::DailyRange;

impl DailyRange {
    /// The current session, `None` when the market is closed.
    pub(crate) fn session(&mut self, now_us: u64) -> Option<Session> {
        match reference::market_status() {
            Ok(status) => {
                if self.status_down {
                    self.status_down = false;
                    host::log(Level::Info, "market status available again");
                }
                session_of(&status)
            }
            Err(e) => {
                if !self.status_down {
                    self.status_down = true;
                    host::log(
                        Level::Warn,
                        &format!("market status unavailable ({e:?}); sessions follow the schedule"),
                    );
                }
                host::counter("dra.market_status_fallback", 1);
                scheduled_session(now_us)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mdp_sdk::testing::Harness;

    use crate::testing::{mon, quote, written};
    use crate::{DailyRange, HOD_KEY};

    #[test]
    fn without_market_status_sessions_follow_the_schedule() {
        let mut h = Harness::<DailyRange>::new().at_us(mon(10, 0));
        h.host(|h| h.reference.unavailable = Some("no Massive key".into()));
        h.init(&[]).unwrap();
        h.analyze(vec![quote("AAPL", 10.0, 9.0)]).unwrap();
        let e = h.analyze(vec![quote("AAPL", 10.5, 9.0)]).unwrap();
        let hod = written(&e, HOD_KEY);
        assert_eq!(
            hod.len(),
            1,
            "the seed produced nothing without market status"
        );
        assert_eq!(hod[0]["session"], "regular");
        assert_eq!(h.host(|h| h.counters["dra.market_status_fallback"]), 2);
        assert_eq!(h.host(|h| h.logs.len()), 1, "the outage is logged once");
    }
}
