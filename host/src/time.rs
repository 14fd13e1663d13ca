//! Times given on the command line and in admin requests: RFC 3339 or Unix
//! milliseconds.

use anyhow::{Context, bail};

/// Latest `--at` accepted, Unix ms (9999-12-31T23:59:59.999Z, as far as
/// RFC 3339 goes).
pub const MAX_AT_MS: u64 = 253_402_300_799_999;

/// Parse `--at`: RFC 3339 or Unix milliseconds; returns Unix microseconds.
pub fn parse_at(s: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        if ms > MAX_AT_MS {
            bail!("--at `{s}`: Unix ms after year 9999 (at most {MAX_AT_MS})");
        }
        return Ok(ms * 1000);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| {
        format!("--at `{s}`: expected RFC 3339 (e.g. 2026-03-09T09:30:00-04:00) or Unix ms")
    })?;
    u64::try_from(t.timestamp_micros()).context("--at is before 1970")
}

/// A time given as RFC 3339 or Unix milliseconds, as Unix milliseconds.
pub fn parse_at_ms(s: &str) -> anyhow::Result<u64> {
    Ok(parse_at(s)? / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_rfc3339_and_unix_ms_and_refuses_huge_numbers() {
        assert_eq!(parse_at("1000").unwrap(), 1_000_000);
        assert_eq!(
            parse_at("1970-01-01T00:00:01Z").unwrap(),
            1_000_000,
            "RFC 3339"
        );
        assert_eq!(parse_at(&MAX_AT_MS.to_string()).unwrap(), MAX_AT_MS * 1000);
        for huge in [MAX_AT_MS + 1, u64::MAX / 1000 + 1, u64::MAX] {
            let e = parse_at(&huge.to_string()).unwrap_err().to_string();
            assert!(e.contains("after year 9999"), "{huge}: {e}");
        }
        assert!(parse_at("99999999999999999999999").is_err(), "beyond u64");
    }
}
