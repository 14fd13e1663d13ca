//! The key/value configuration an analyzer receives in `init`.

use crate::AnalyzerError;

/// Configuration from the plugin manifest, as ordered key/value pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl From<Vec<(String, String)>> for Config {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Config { pairs }
    }
}

impl Config {
    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as `T`, or `default` when absent; a value that
    /// does not parse is a `bad-config` error naming the key.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, AnalyzerError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| AnalyzerError::BadConfig(format!("config `{key}` = `{raw}`: {e}"))),
        }
    }

    /// All pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}
