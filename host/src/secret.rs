//! Handling secrets: comparing them without timing leaks, and keeping
//! passwords out of URLs that are shown or logged.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `given` equals `expected`, in time independent of where they
/// differ and of their lengths (both are hashed first, then the digests are
/// compared in constant time).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.ct_eq(&b).into()
}

/// A URL with its password replaced by `***` (`scheme://user:***@host/…`).
/// The URL is parsed, so a password containing `@` or `:` is hidden whole;
/// URLs without a password come back unchanged, and text that looks like a
/// URL with credentials (`://` and `@`) but does not parse is hidden entirely.
pub fn redact_url(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            if url.set_password(Some("***")).is_err() {
                return "<redacted URL>".to_string();
            }
            url.to_string()
        }
        Ok(_) => value.to_string(),
        Err(_) if value.contains("://") && value.contains('@') => "<redacted URL>".to_string(),
        Err(_) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3cre"));
        assert!(!same_secret("", "s3cret"));
        assert!(!same_secret("S3cret", "s3cret"));
    }

    #[test]
    fn passwords_are_redacted_whole_even_with_at_signs() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        let shown = redact_url("amqp://guest:p@ss:w@rd@rabbit:5672/%2f");
        assert_eq!(shown, "amqp://guest:***@rabbit:5672/%2f");
        for part in ["p@ss", "ss:w", "w@rd", "rd@"] {
            assert!(!shown.contains(part), "{shown} leaks {part}");
        }
        assert_eq!(
            redact_url("redis://:hunter@2@redis:6379/1"),
            "redis://:***@redis:6379/1"
        );
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("memory://"), "memory://");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("ops@example.com"), "ops@example.com");
        assert_eq!(redact_url("amqp://u:p@ss@ho st/"), "<redacted URL>");
    }
}
