//! Capabilities from a plugin's manifest: which keys it may write and which
//! channels it may publish on. The host enforces them on every effect.

/// Key prefixes and channel prefixes a plugin may write; `None` = unrestricted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Prefixes of keys the plugin may write (put, push, zadd, hset, del, try-acquire).
    pub key_prefixes: Option<Vec<String>>,
    /// Prefixes of channels the plugin may publish on.
    pub channels: Option<Vec<String>>,
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
}

fn allowed(prefixes: &Option<Vec<String>>, name: &str) -> bool {
    prefixes
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| name.starts_with(p.as_str())))
}

impl Capabilities {
    /// No restrictions.
    pub fn unrestricted() -> Self {
        Capabilities::default()
    }

    /// May the plugin write `key`?
    pub fn check_key(&self, key: &str) -> Result<(), Denied> {
        if allowed(&self.key_prefixes, key) {
            Ok(())
        } else {
            Err(Denied::Key(key.to_string()))
        }
    }

    /// May the plugin publish on `channel`?
    pub fn check_channel(&self, channel: &str) -> Result<(), Denied> {
        if allowed(&self.channels, channel) {
            Ok(())
        } else {
            Err(Denied::Channel(channel.to_string()))
        }
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
        };
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
