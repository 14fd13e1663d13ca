//! The New York trading-day calendar, one copy for the plugins, the host and
//! the simulator.
//!
//! - A trading day runs from 04:00 America/New_York to the next 04:00,
//!   DST-correct (before 04:00 the day is still the previous one).
//! - Sessions follow the regular US schedule on weekdays: pre-market
//!   04:00–09:30, regular 09:30–16:00, after-hours 16:00–20:00; otherwise the
//!   market is closed. Exchange holidays are not known: where they matter the
//!   market status from the Massive REST API takes precedence.
//! - Market-status names are those of `mdc:market_status`, golden files and
//!   `mdp plugin test`: `open`, `pre-market` (or the API's `early-hours`),
//!   `after-hours`; anything else is closed.
//!
//! Times are Unix microseconds (`host::now-us`) unless a name says otherwise.
//!
//! ```
//! use mdp_sdk::calendar::{Session, scheduled_session, session_named};
//! // Monday 2026-03-09 10:00 New York (EDT, UTC−4) is 14:00 UTC.
//! let ten_am = 1_773_064_800_000_000;
//! assert_eq!(scheduled_session(ten_am), Some(Session::Regular));
//! assert_eq!(session_named("early-hours"), Some(Session::PreMarket));
//! ```

use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Weekday};
use chrono_tz::America::New_York;

use crate::{Market, MarketStatus};

/// A trading session of the US equity market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Session {
    /// 04:00–09:30 ET.
    PreMarket,
    /// 09:30–16:00 ET.
    Regular,
    /// 16:00–20:00 ET.
    AfterHours,
}

impl Session {
    /// The seed's name of the session (`pre_market`, `regular`, `after_hours`).
    pub fn name(self) -> &'static str {
        match self {
            Session::PreMarket => "pre_market",
            Session::Regular => "regular",
            Session::AfterHours => "after_hours",
        }
    }

    /// The market-status name of the session (`pre-market`, `open`, `after-hours`).
    pub fn status_name(self) -> &'static str {
        match self {
            Session::PreMarket => "pre-market",
            Session::Regular => "open",
            Session::AfterHours => "after-hours",
        }
    }

    /// Minutes after midnight New York when the session starts and ends.
    pub fn minutes(self) -> std::ops::Range<u32> {
        match self {
            Session::PreMarket => 240..570,
            Session::Regular => 570..960,
            Session::AfterHours => 960..1200,
        }
    }

    /// The three sessions in the order of the day.
    pub const ALL: [Session; 3] = [Session::PreMarket, Session::Regular, Session::AfterHours];
}

/// The session a market-status name stands for; `None` when it names a
/// closed market (or nothing known).
pub fn session_named(name: &str) -> Option<Session> {
    match name {
        "open" => Some(Session::Regular),
        "pre-market" | "early-hours" => Some(Session::PreMarket),
        "after-hours" => Some(Session::AfterHours),
        _ => None,
    }
}

/// The market-status name of an optional session (`closed` for `None`).
pub fn status_name(session: Option<Session>) -> &'static str {
    session.map_or("closed", Session::status_name)
}

/// The market status a session stands for (closed for `None`).
pub fn market_status(session: Option<Session>) -> MarketStatus {
    MarketStatus {
        market: match session {
            Some(Session::Regular) => Market::Open,
            Some(_) => Market::ExtendedHours,
            None => Market::Closed,
        },
        early_hours: session == Some(Session::PreMarket),
        after_hours: session == Some(Session::AfterHours),
    }
}

/// The market status a name stands for (see [`session_named`]).
pub fn market_status_named(name: &str) -> MarketStatus {
    market_status(session_named(name))
}

/// The session a market status stands for (the seed's `_get_session`): an
/// open market is the regular session, else the early- or after-hours flag
/// names it; `None` when closed.
pub fn session_of(status: &MarketStatus) -> Option<Session> {
    if status.market == Market::Open {
        Some(Session::Regular)
    } else if status.early_hours {
        Some(Session::PreMarket)
    } else if status.after_hours {
        Some(Session::AfterHours)
    } else {
        None
    }
}

/// `now_us` as New York wall-clock time (`None` outside chrono's range).
pub fn new_york(now_us: u64) -> Option<chrono::DateTime<chrono_tz::Tz>> {
    let secs = i64::try_from(now_us / 1_000_000).ok()?;
    New_York.timestamp_opt(secs, 0).single()
}

/// Unix seconds of `h:m` New York time on `date` (the earlier instant when
/// the wall-clock time occurs twice).
pub fn new_york_at(date: NaiveDate, h: u32, m: u32) -> Option<i64> {
    let t = date.and_hms_opt(h, m, 0)?;
    New_York
        .from_local_datetime(&t)
        .earliest()
        .map(|t| t.timestamp())
}

/// The session by the regular US schedule at `now_us` (weekdays, no
/// holidays); `None` when the market is closed.
pub fn scheduled_session(now_us: u64) -> Option<Session> {
    let ny = new_york(now_us)?;
    if matches!(ny.weekday(), Weekday::Sat | Weekday::Sun) {
        return None;
    }
    let minute = ny.hour() * 60 + ny.minute();
    Session::ALL
        .into_iter()
        .find(|s| s.minutes().contains(&minute))
}

/// Where in the trading day a time falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradingDay {
    /// 04:00 America/New_York that started the trading day, Unix seconds.
    pub anchor: i64,
    /// The trading day's date in New York.
    pub date: NaiveDate,
    /// 09:30 New York of that date, Unix seconds.
    pub open_at: i64,
    /// The next day's 04:00 anchor, Unix seconds.
    pub next_anchor: i64,
    /// True at or after 09:30.
    pub after_open: bool,
}

/// The trading day containing `now_us`.
pub fn trading_day(now_us: u64) -> TradingDay {
    let secs = (now_us / 1_000_000) as i64;
    let date = match new_york(now_us) {
        Some(ny) if ny.hour() < 4 => ny.date_naive().pred_opt().unwrap_or(ny.date_naive()),
        Some(ny) => ny.date_naive(),
        None => NaiveDate::default(),
    };
    let anchor = new_york_at(date, 4, 0).unwrap_or(secs - secs.rem_euclid(86_400));
    let open_at = new_york_at(date, 9, 30).unwrap_or(anchor + 5 * 3600 + 1800);
    let next_anchor = date
        .succ_opt()
        .and_then(|d| new_york_at(d, 4, 0))
        .unwrap_or(anchor + 86_400);
    TradingDay {
        anchor,
        date,
        open_at,
        next_anchor,
        after_open: secs >= open_at,
    }
}

/// 04:00 America/New_York of the trading day containing `now_us`, Unix seconds.
pub fn day_anchor(now_us: u64) -> i64 {
    trading_day(now_us).anchor
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix µs of Monday 2026-03-09 (the day after the spring DST change) at `hh:mm` New York.
    fn mon(hh: u64, mm: u64) -> u64 {
        (1_773_028_800 + hh * 3600 + mm * 60) * 1_000_000
    }

    #[test]
    fn the_day_starts_at_4am_new_york_across_dst() {
        // Monday after the spring change (EDT): 04:00 ET is 08:00 UTC.
        assert_eq!(day_anchor(mon(4, 0)), 1_773_043_200);
        assert_eq!(day_anchor(mon(23, 59)), 1_773_043_200);
        // 03:59 is still Sunday's trading day (its 04:00, after the 02:00
        // change, was EDT too: 08:00 UTC).
        assert_eq!(day_anchor(mon(3, 59)), 1_772_956_800);
        // Winter (EST, 04:00 = 09:00 UTC): 2026-01-05 10:00, the day of the
        // fall change (2026-11-01), and 03:30 on 2026-11-03 (still Monday's day).
        assert_eq!(day_anchor(1_767_625_200_000_000), 1_767_603_600);
        assert_eq!(day_anchor(1_793_530_800_000_000), 1_793_523_600);
        assert_eq!(day_anchor(1_793_694_600_000_000), 1_793_610_000);
        assert_eq!(day_anchor(1_793_698_200_000_000), 1_793_696_400);
        let day = trading_day(mon(10, 0));
        assert_eq!(day.open_at, 1_773_063_000);
        assert!(day.after_open);
        assert!(!trading_day(mon(9, 29)).after_open);
        assert_eq!(day.next_anchor - day.anchor, 86_400);
    }

    #[test]
    fn sessions_follow_the_weekday_schedule() {
        assert_eq!(scheduled_session(mon(3, 59)), None);
        assert_eq!(scheduled_session(mon(4, 0)), Some(Session::PreMarket));
        assert_eq!(scheduled_session(mon(9, 29)), Some(Session::PreMarket));
        assert_eq!(scheduled_session(mon(9, 30)), Some(Session::Regular));
        assert_eq!(scheduled_session(mon(15, 59)), Some(Session::Regular));
        assert_eq!(scheduled_session(mon(16, 0)), Some(Session::AfterHours));
        assert_eq!(scheduled_session(mon(19, 59)), Some(Session::AfterHours));
        assert_eq!(scheduled_session(mon(20, 0)), None);
        // Saturday and Sunday at 10:00 are closed.
        let day = 86_400_000_000;
        assert_eq!(scheduled_session(mon(10, 0) - 2 * day), None);
        assert_eq!(scheduled_session(mon(10, 0) - day), None);
        assert_eq!(
            scheduled_session(mon(10, 0) + 4 * day),
            Some(Session::Regular)
        );
    }

    #[test]
    fn status_names_round_trip_and_early_hours_is_pre_market() {
        for s in Session::ALL {
            assert_eq!(session_named(s.status_name()), Some(s));
        }
        assert_eq!(session_named("early-hours"), Some(Session::PreMarket));
        assert_eq!(session_named("closed"), None);
        assert_eq!(session_named("nonsense"), None);
        assert_eq!(status_name(None), "closed");
        assert_eq!(status_name(Some(Session::Regular)), "open");
        for s in [
            None,
            Some(Session::PreMarket),
            Some(Session::Regular),
            Some(Session::AfterHours),
        ] {
            assert_eq!(session_of(&market_status(s)), s);
        }
        let early = market_status_named("early-hours");
        assert_eq!(early.market, Market::ExtendedHours);
        assert!(early.early_hours && !early.after_hours);
    }
}
