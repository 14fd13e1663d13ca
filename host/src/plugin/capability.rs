//! Capabilities from a plugin's manifest: which keys it may write, which
//! channels it may publish on and which keys it may read. The host enforces
//! them on every effect and every cache read.

/// Key prefixes and channel prefixes a plugin may write, and key prefixes it
/// may read; `None` = unrestricted. (A manifest without `[capabilities]`
/// restricts writes to the plugin's own `<name>:` prefix: see the manifest.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Prefixes of keys the plugin may write (put, push, zadd, hset, del, try-acquire).
    pub key_prefixes: Option<Vec<String>>,
    /// Prefixes of channels the plugin may publish on.
    pub channels: Option<Vec<String>>,
    /// Prefixes of keys the plugin may read through the cache imports.
    pub read_prefixes: Option<Vec<String>>,
}

/// An effect outside the plugin's capabilities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// A key outside the allowed prefixes.
    #[error("key `{0}` is outside the plugin's key prefixes")]
    Key(String),
    /// A channel outside the allowed prefixes.
    #[error("channel `{0}` is outside the plugin's channels")]
    Channel(String),
    /// A read of a key outside the allowed read prefixes.
    #[error("reading key `{0}` is outside the plugin's read prefixes")]
    Read(String),
}

fn allowed(prefixes: &Option<Vec<String>>, name: &str) -> bool {
    prefixes
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| name.starts_with(p.as_str())))
}

fn check(
    prefixes: &Option<Vec<String>>,
    name: &str,
    denied: fn(String) -> Denied,
) -> Result<(), Denied> {
    if allowed(prefixes, name) {
        Ok(())
    } else {
        Err(denied(name.to_string()))
    }
}

impl Capabilities {
    /// No restrictions.
    pub fn unrestricted() -> Self {
        Capabilities::default()
    }

    /// Only `<name>:` keys and channels written, reads unrestricted: what
    /// a manifest without `[capabilities]` grants.
    pub fn own_prefix(name: &str) -> Self {
        let own = vec![format!("{name}:")];
        Capabilities {
            key_prefixes: Some(own.clone()),
            channels: Some(own),
            read_prefixes: None,
        }
    }

    /// May the plugin write `key`?
    pub fn check_key(&self, key: &str) -> Result<(), Denied> {
        check(&self.key_prefixes, key, Denied::Key)
    }

    /// May the plugin publish on `channel`?
    pub fn check_channel(&self, channel: &str) -> Result<(), Denied> {
        check(&self.channels, channel, Denied::Channel)
    }

    /// May the plugin read `key`?
    pub fn check_read(&self, key: &str) -> Result<(), Denied> {
        check(&self.read_prefixes, key, Denied::Read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_restrict_keys_and_channels() {
        let caps = Capabilities {
            key_prefixes: Some(vec!["stocks:".into()]),
            channels: Some(vec!["stocks:".into(), "unknown".into()]),
            read_prefixes: Some(vec!["stocks:".into()]),
        };
        assert!(caps.check_read("stocks:x").is_ok());
        assert_eq!(
            caps.check_read("secret"),
            Err(Denied::Read("secret".into()))
        );
        let own = Capabilities::own_prefix("p");
        assert!(own.check_key("p:x").is_ok() && own.check_channel("p:c").is_ok());
        assert!(own.check_key("px").is_err() && own.check_channel("quote:A").is_err());
        assert!(own.check_read("anything").is_ok());
        assert!(caps.check_key("stocks:trades:A").is_ok());
        assert_eq!(
            caps.check_key("quote:A"),
            Err(Denied::Key("quote:A".into()))
        );
        assert!(caps.check_channel("unknown").is_ok());
        assert!(caps.check_channel("news:x").is_err());
        assert!(Capabilities::unrestricted().check_key("anything").is_ok());
    }
}
