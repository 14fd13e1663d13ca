//! Plugin manifests: `<name>.toml` beside `<name>.wasm`.
//!
//! ```toml
//! name = "leaderboard"
//! wit = "mdp:analyzer@1.0.0"
//! consumes = ["aggregate"]          # queue names or pub/sub channel patterns
//! golden = "golden/basic.json"      # optional, relative to the manifest
//! [config]                          # string key/values passed to init
//! board_size = "500"
//! list_max = "${DRA_CACHE_LIST_MAX:-1000}"  # from the environment, else 1000
//! [limits]
//! memory_mib = 64
//! deadline_ms = 50                  # per call; scaled by batch length
//! batches_in_flight = 2              # analyze the next batch while this one is applied
//! wall_ms = 5000                    # per call, host imports included (default)
//! isolation_calls = 64              # bisection calls per failing batch (default)
//! isolation_ms = 10000              # bisection time per failing batch (default)
//! max_effects = 100000              # per call (default)
//! max_output_mib = 32               # resolved output per call (default)
//! idle_tick_ms = 10                 # processors: analyze([]) once the queue idles this long
//! [capabilities]                    # absent: writes only under "<name>:", reads any key
//! key_prefixes = ["quote:", "scanners:"]   # default ["<name>:"]; [""] allows every key
//! channels = ["quote:", "scanners:"]       # default ["<name>:"]
//! read_prefixes = ["quote:"]               # default: any key may be read
//! [placement]                       # keys kept in the MDC (analyzer state);
//! cache_keys = ["leaderboard:*"]    # the rest, and channels, in the WDC
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Capabilities, Limits, LoadOptions, WIT_VERSION};

/// Why a manifest was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("manifest {path}: {reason}")]
pub struct ManifestError {
    /// The manifest file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Why manifest text was refused (the file aside).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestParseError {
    /// Not TOML, or not the manifest's shape (unknown or missing fields, wrong types).
    #[error("{0}")]
    Toml(String),
    /// Well-formed, but a value is refused (name, WIT version, limits...).
    #[error("{0}")]
    Invalid(String),
}

/// Resource limits in a manifest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Linear memory cap, MiB.
    pub memory_mib: Option<u32>,
    /// Per-call guest time, milliseconds (scaled by batch length).
    pub deadline_ms: Option<u64>,
    /// Largest batch, events.
    pub max_batch: Option<usize>,
    /// Batches in flight between analysis and acknowledgement (default 1):
    /// see [`Limits::batches_in_flight`].
    pub batches_in_flight: Option<usize>,
    /// Wall-clock budget per call, host imports included, milliseconds
    /// (default [`super::DEFAULT_WALL_BUDGET`]).
    pub wall_ms: Option<u64>,
    /// Calls a failing batch's poison isolation may make (default
    /// [`super::DEFAULT_ISOLATION_CALLS`]).
    pub isolation_calls: Option<usize>,
    /// Time a failing batch's poison isolation may take, milliseconds
    /// (default [`super::DEFAULT_ISOLATION_TIME`]).
    pub isolation_ms: Option<u64>,
    /// Most effects per call (default [`super::DEFAULT_MAX_EFFECTS`]).
    pub max_effects: Option<usize>,
    /// Most resolved output per call, MiB (default
    /// [`super::DEFAULT_MAX_OUTPUT_MIB`]).
    pub max_output_mib: Option<u32>,
    /// After a batch, a processor that receives nothing for this long calls
    /// `analyze` with an empty batch once (see [`Limits::idle_tick`]).
    pub idle_tick_ms: Option<u64>,
}

/// Capabilities in a manifest. Writes default to the plugin's own
/// `<name>:` prefix; reads default to unrestricted. An empty prefix (`""`)
/// allows everything.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestCapabilities {
    /// Key prefixes the plugin may write (default `["<name>:"]`).
    pub key_prefixes: Option<Vec<String>>,
    /// Channel prefixes it may publish on (default `["<name>:"]`).
    pub channels: Option<Vec<String>>,
    /// Key prefixes it may read through the cache imports (default: any).
    pub read_prefixes: Option<Vec<String>>,
}

/// Where a plugin's keys live (see [`crate::store::PlacedStore`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPlacement {
    /// Redis globs of the keys kept in the market-data cache (MDC): the
    /// analyzer's own state. Every other key, and every channel, is the
    /// widget cache's (WDC).
    #[serde(default)]
    pub cache_keys: Vec<String>,
}

/// A plugin manifest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin name (also the `.wasm` file stem).
    pub name: String,
    /// The WIT package it targets, e.g. `mdp:analyzer@1.0.0`.
    pub wit: String,
    /// Queues or pub/sub channels/patterns it consumes.
    pub consumes: Vec<String>,
    /// A golden file run at load time (relative to the manifest).
    pub golden: Option<PathBuf>,
    /// Config passed to `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Limits.
    pub limits: Option<ManifestLimits>,
    /// Capabilities; absent = writes only under the plugin's own `<name>:`
    /// prefix (keys and channels), reads unrestricted.
    pub capabilities: Option<ManifestCapabilities>,
    /// Reference data the host fetches concurrently for each batch's new
    /// symbols before the analyzer runs, so the plugin's own (sequential)
    /// reference calls hit the cache: `ticker-snapshot`, `avg-volume`,
    /// `free-float`.
    #[serde(default)]
    pub reference_prefetch: Vec<super::ReferenceKind>,
    /// Which keys live in the MDC rather than the WDC.
    #[serde(default)]
    pub placement: ManifestPlacement,
    /// The manifest's directory (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Manifest {
    /// Read and validate a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let err = |reason: String| ManifestError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut manifest = Manifest::parse(&text).map_err(|e| err(e.to_string()))?;
        manifest.dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(manifest)
    }

    /// Parse and validate manifest text (`dir` left empty).
    pub fn parse(text: &str) -> Result<Manifest, ManifestParseError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestParseError::Toml(e.message().to_string()))?;
        manifest.validate().map_err(ManifestParseError::Invalid)?;
        Ok(manifest)
    }

    /// The manifest as TOML text; [`Manifest::parse`] of it gives this
    /// manifest back (`dir` aside).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    fn validate(&self) -> Result<(), String> {
        for (key, raw) in &self.config {
            if let Some(inner) = env_reference(raw)
                && env_name(inner).is_none()
            {
                return Err(format!(
                    "config {key} = `{raw}`: write `${{NAME}}` or `${{NAME:-default}}` with NAME in A-Z, 0-9, _"
                ));
            }
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "name `{}` must be non-empty ASCII letters, digits, `-` or `_`",
                self.name
            ));
        }
        let (pkg, ver) = self
            .wit
            .split_once('@')
            .ok_or_else(|| format!("wit `{}` must be `mdp:analyzer@<version>`", self.wit))?;
        let (host_pkg, host_ver) = WIT_VERSION.split_once('@').expect("constant has a version");
        if pkg != host_pkg {
            return Err(format!(
                "wit `{}`: this host implements {WIT_VERSION}",
                self.wit
            ));
        }
        // Same major, and a minor the host has: a host serves every older
        // minor of its major, never a newer one (whose imports it lacks).
        let part = |v: &str, n: usize| v.split('.').nth(n).unwrap_or("").to_string();
        if part(ver, 0) != part(host_ver, 0) {
            return Err(format!(
                "wit `{}` is another major version; this host implements {WIT_VERSION}",
                self.wit
            ));
        }
        let minor = |v: &str| part(v, 1).parse::<u32>().unwrap_or(0);
        if minor(ver) > minor(host_ver) {
            return Err(format!(
                "wit `{}` is newer than this host: it implements {WIT_VERSION}",
                self.wit
            ));
        }
        if self.consumes.is_empty() {
            return Err("consumes must name at least one queue or channel".into());
        }
        if let Some(l) = &self.limits
            && (l.memory_mib == Some(0)
                || l.deadline_ms == Some(0)
                || l.max_batch == Some(0)
                || l.batches_in_flight == Some(0)
                || l.wall_ms == Some(0)
                || l.isolation_calls == Some(0)
                || l.isolation_ms == Some(0)
                || l.max_effects == Some(0)
                || l.max_output_mib == Some(0)
                || l.idle_tick_ms == Some(0))
        {
            return Err("limits must be positive".into());
        }
        Ok(())
    }

    /// The `.wasm` file this manifest describes.
    pub fn wasm_path(&self) -> PathBuf {
        self.dir.join(format!("{}.wasm", self.name))
    }

    /// The golden file path, if any.
    pub fn golden_path(&self) -> Option<PathBuf> {
        self.golden.as_ref().map(|g| self.dir.join(g))
    }

    /// Config pairs for `init`, `${NAME}` values read from the environment.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        self.config_sources()
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect()
    }

    /// Config pairs for `init` with where each value came from: `manifest`,
    /// `environment NAME`, or `default (NAME unset)`.
    pub fn config_sources(&self) -> Vec<(String, String, String)> {
        self.config
            .iter()
            .map(|(k, raw)| {
                let (value, source) = expand_env(raw, |name| std::env::var(name).ok());
                (k.clone(), value, source)
            })
            .collect()
    }

    /// The capabilities the host enforces: the manifest's, with writes not
    /// named defaulting to the plugin's own `<name>:` prefix.
    pub fn capabilities(&self) -> Capabilities {
        let own = Capabilities::own_prefix(&self.name);
        match &self.capabilities {
            Some(c) => Capabilities {
                key_prefixes: c.key_prefixes.clone().or(own.key_prefixes),
                channels: c.channels.clone().or(own.channels),
                read_prefixes: c.read_prefixes.clone(),
            },
            None => own,
        }
    }

    /// Load options (name, limits, capabilities) for this plugin.
    pub fn load_options(&self) -> LoadOptions {
        let mut limits = Limits::default();
        if let Some(l) = &self.limits {
            if let Some(m) = l.memory_mib {
                limits.memory_bytes = (m as usize) << 20;
            }
            if let Some(d) = l.deadline_ms {
                limits.deadline_base = Duration::from_millis(d);
            }
            if let Some(b) = l.max_batch {
                limits.max_batch = b;
            }
            if let Some(n) = l.batches_in_flight {
                limits.batches_in_flight = n;
            }
            if let Some(ms) = l.wall_ms {
                limits.wall_budget = Duration::from_millis(ms);
            }
            if let Some(n) = l.isolation_calls {
                limits.isolation_calls = n;
            }
            if let Some(ms) = l.isolation_ms {
                limits.isolation_time = Duration::from_millis(ms);
            }
            if let Some(n) = l.max_effects {
                limits.max_effects = n;
            }
            if let Some(m) = l.max_output_mib {
                limits.max_output_bytes = (m as usize) << 20;
            }
            limits.idle_tick = l.idle_tick_ms.map(Duration::from_millis);
        }
        LoadOptions {
            name: Some(self.name.clone()),
            limits,
            capabilities: self.capabilities(),
            reference_prefetch: self.reference_prefetch.clone(),
        }
    }
}

/// The inside of a `${…}` config value, if the value is one.
fn env_reference(raw: &str) -> Option<&str> {
    raw.strip_prefix("${")?.strip_suffix('}')
}

/// `NAME` and the optional default of `NAME` / `NAME:-default`, when NAME is
/// an environment variable name (A-Z, 0-9, `_`, not starting with a digit).
fn env_name(inner: &str) -> Option<(&str, Option<&str>)> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    valid.then_some((name, default))
}

/// A manifest config value with `${NAME}` / `${NAME:-default}` expanded
/// through `env` (the seed's settings such as `DRA_CACHE_LIST_MAX` reach a
/// plugin this way), and where the value came from. Anything else is taken
/// as written; an unset variable without a default is empty.
pub fn expand_env(raw: &str, env: impl Fn(&str) -> Option<String>) -> (String, String) {
    let Some((name, default)) = env_reference(raw).and_then(env_name) else {
        return (raw.to_string(), "manifest".into());
    };
    match (env(name), default) {
        (Some(value), _) => (value, format!("environment {name}")),
        (None, Some(default)) => (default.to_string(), format!("default ({name} unset)")),
        (None, None) => (String::new(), format!("empty ({name} unset)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn loads_a_full_manifest() {
        let (_d, path) = write(
            r#"name = "p"
wit = "mdp:analyzer@1.0.0"
consumes = ["quotes"]
[config]
a = "1"
[limits]
memory_mib = 32
deadline_ms = 20
idle_tick_ms = 15
[capabilities]
key_prefixes = ["stocks:"]
channels = ["stocks:"]
"#,
        );
        let m = Manifest::load(&path).unwrap();
        let o = m.load_options();
        assert_eq!(o.limits.memory_bytes, 32 << 20);
        assert_eq!(o.limits.deadline_base, Duration::from_millis(20));
        assert_eq!(o.limits.idle_tick, Some(Duration::from_millis(15)));
        let zero = "name = \"p\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n[limits]\nidle_tick_ms = 0\n";
        assert_eq!(
            Manifest::parse(zero),
            Err(ManifestParseError::Invalid(
                "limits must be positive".into()
            ))
        );
        assert_eq!(
            Manifest::parse(&zero.replace("idle_tick_ms = 0\n", ""))
                .unwrap()
                .load_options()
                .limits
                .idle_tick,
            None
        );
        assert!(o.capabilities.check_key("quote:x").is_err());
        assert_eq!(m.config_pairs(), vec![("a".to_string(), "1".to_string())]);
        assert!(m.wasm_path().ends_with("p.wasm"));
    }

    #[test]
    fn config_values_name_the_seeds_environment_variables() {
        let env = |name: &str| (name == "DRA_CACHE_LIST_MAX").then(|| "10000".to_string());
        let expand = |raw: &str| expand_env(raw, env);
        assert_eq!(
            expand("${DRA_CACHE_LIST_MAX:-1000}"),
            ("10000".into(), "environment DRA_CACHE_LIST_MAX".into())
        );
        assert_eq!(
            expand("${NEWS_TICKER_LIST_MAX:-100}"),
            ("100".into(), "default (NEWS_TICKER_LIST_MAX unset)".into())
        );
        assert_eq!(
            expand("${UNSET}"),
            ("".into(), "empty (UNSET unset)".into())
        );
        assert_eq!(expand("plain"), ("plain".into(), "manifest".into()));
        assert_eq!(expand("$DRA"), ("$DRA".into(), "manifest".into()));
        let (_d, path) = write(
            r#"name = "p"
wit = "mdp:analyzer@1.0.0"
consumes = ["quotes"]
[config]
a = "${lower-case}"
"#,
        );
        let e = Manifest::load(&path).unwrap_err();
        assert!(e.reason.contains("config a"), "{e}");
    }

    #[test]
    fn without_capabilities_a_plugin_writes_only_under_its_own_name() {
        let (_d, path) = write("name = \"p\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n");
        let caps = Manifest::load(&path).unwrap().load_options().capabilities;
        assert!(caps.check_key("p:x").is_ok());
        assert!(caps.check_key("stocks:x").is_err());
        assert!(caps.check_channel("p:c").is_ok());
        assert!(caps.check_channel("quote:A").is_err());
        assert!(caps.check_read("stocks:x").is_ok());
        let (_d, path) = write(
            "name = \"p\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n[capabilities]\nread_prefixes = [\"p:\"]\n",
        );
        let caps = Manifest::load(&path).unwrap().load_options().capabilities;
        assert!(caps.check_key("p:x").is_ok() && caps.check_key("q:x").is_err());
        assert!(caps.check_read("secret").is_err());
    }

    #[test]
    fn refuses_unknown_keys_missing_fields_other_majors_and_newer_minors() {
        let cases = [
            (
                "name = \"p\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\ncolour = 1\n",
                "unknown field",
            ),
            ("name = \"p\"\nconsumes = [\"q\"]\n", "missing field `wit`"),
            (
                "name = \"p\"\nwit = \"mdp:analyzer@2.0.0\"\nconsumes = [\"q\"]\n",
                "another major",
            ),
            (
                "name = \"p\"\nwit = \"mdp:analyzer@1.9.0\"\nconsumes = [\"q\"]\n",
                "newer than this host",
            ),
            (
                "name = \"p\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = []\n",
                "consumes",
            ),
        ];
        for (text, expected) in cases {
            let (_d, path) = write(text);
            let e = Manifest::load(&path).unwrap_err();
            assert!(e.to_string().contains(expected), "{e} lacks {expected}");
        }
    }

    #[test]
    fn a_manifest_of_an_older_minor_loads() {
        let (_d, path) = write("name = \"p\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n");
        assert!(Manifest::load(&path).is_ok());
    }
}
