//! `mdp plugin new <name> --lang rust|python|js`: a working analyzer project
//! (source, manifest, golden test) to start from.

use std::path::{Path, PathBuf};

use super::embedded;

/// The language of a new analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust, with the `mdp-sdk` crate.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

/// Why scaffolding failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable as a plugin and crate name.
    #[error("plugin name `{0}` must be lowercase letters, digits and `-`, starting with a letter")]
    BadName(String),
    /// The target exists.
    #[error("{0} already exists")]
    Exists(String),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

const RUST_LIB: &str = r#"//! `{name}`: counts the events of each batch per symbol (store messages,
//! such as the `quote:*` channels it consumes, per channel) and publishes the
//! counts on `{name}:counts`. Replace with your analysis.

use std::collections::BTreeMap;

use mdp_sdk::prelude::*;

/// The analyzer.
pub struct Plugin;

impl Analyzer for Plugin {
    fn describe() -> Info {
        mdp_sdk::info("{name}", env!("CARGO_PKG_VERSION"), Kinds::TRADE | Kinds::OTHER, 0)
    }

    fn init(_config: Config, _state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        Ok(Plugin)
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for event in batch {
            let key = match event {
                Event::Other(raw) => raw.kind.as_str(),
                typed => typed.symbol().unwrap_or_default(),
            };
            *counts.entry(key).or_default() += 1;
        }
        Ok(vec![publish("{name}:counts", json(&counts))])
    }
}

export_analyzer!(Plugin);

#[cfg(test)]
mod tests {
    #[test]
    fn golden() {
        mdp_sdk::testing::run_golden::<super::Plugin>(include_str!("../golden.json"));
    }
}
"#;

const RUST_CARGO: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
mdp-sdk = { path = "{sdk}" }

# Standalone: `mdp plugin build` (cargo build --release --target wasm32-wasip2).
[workspace]
"#;

const PYTHON_APP: &str = r#""""{name}: counts the events of each batch per symbol (store messages, such as
the `quote:*` channels it consumes, per channel) and publishes the counts on
`{name}:counts`. Build: mdp plugin build (componentize-py, see requirements.txt)."""

import json
from typing import Dict, List

import wit_world
from wit_world.imports import types as t


class WitWorld(wit_world.WitWorld):
    def describe(self) -> t.Info:
        return t.Info(name="{name}", version="0.1.0", consumes=t.Kinds.TRADE | t.Kinds.OTHER, state_version=0)

    def init(self, config, state) -> None:
        return None

    def analyze(self, batch: List[t.Event]) -> List[t.Effect]:
        counts: Dict[str, int] = {}
        for event in batch:
            key = event.value.kind if isinstance(event, t.Event_Other) else event.value.symbol
            counts[key] = counts.get(key, 0) + 1
        body = json.dumps(dict(sorted(counts.items())), separators=(",", ":"))
        return [t.Effect_Publish(t.Publish(channel="{name}:counts", value=t.Body_Json(body)))]

    def snapshot(self) -> bytes:
        return b""
"#;

const JS_APP: &str = r#"// {name}: counts the events of each batch per symbol (store messages, such as
// the `quote:*` channels it consumes, per channel) and publishes the counts on
// `{name}:counts`. Build: mdp plugin build (componentize-js, see package.json).
export const describe = () => ({ name: '{name}', version: '0.1.0', consumes: { trade: true, other: true }, stateVersion: 0 });
export const init = () => {};
export function analyze(batch) {
  const counts = {};
  for (const event of batch) {
    const key = event.tag === 'other' ? event.val.kind : event.val.symbol;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  const sorted = Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1)));
  return [{ tag: 'publish', val: { channel: '{name}:counts', value: { tag: 'json', val: JSON.stringify(sorted) } } }];
}
export const snapshot = () => new Uint8Array();
"#;

const MANIFEST: &str = r#"name = "{name}"
wit = "{wit}"
# Store channels (patterns) it is run on as a scanner by `mdp up`, or queues.
consumes = ["quote:*"]
golden = "golden.json"

[limits]
memory_mib = {memory}
deadline_ms = {deadline}

# What the host lets the plugin touch; effects outside are refused and counted.
# Without this table the plugin may write only keys and channels starting with
# "{name}:" (the defaults below) and read any key; an empty prefix "" allows all.
[capabilities]
key_prefixes = ["{name}:"]
channels = ["{name}:"]
# read_prefixes = ["{name}:", "quote:"]   # cache reads; default: any key
"#;

const GOLDEN: &str = r#"{
  "now_us": 1767225600000000,
  "steps": [
    {
      "events": [
        {"event_type": "T", "symbol": "AAA", "price": 10.5, "size": 100, "timestamp": 1},
        {"event_type": "T", "symbol": "BBB", "price": 1.25, "size": 10, "timestamp": 2},
        {"event_type": "T", "symbol": "AAA", "price": 10.6, "size": 50, "timestamp": 3},
        {"event_type": "quote:AAA", "symbol": "AAA", "bid_price": 10.5, "ask_price": 10.6}
      ],
      "effects": [
        {"op": "publish", "channel": "{name}:counts", "value": "{\"AAA\":2,\"BBB\":1,\"quote:AAA\":1}"}
      ]
    }
  ]
}
"#;

const README: &str = r#"# {name}

An mdp analyzer ({lang}) for {wit}. `golden.json` is its test: events in, exact effects out.
`wit/` is the WIT package of the mdp that wrote this project{extra}.

```sh
mdp plugin build            # {build}
mdp plugin test .           # golden.json through the real runtime; a mismatch prints a diff
mdp plugin publish . --to PLUGIN_DIR   # {name}.wasm + {name}.toml, atomically; hot-reloaded
```

A running mdp validates the plugin against `golden.json` before it serves, and runs it as a
scanner on the store channels in `consumes` (subscribe to `{name}:counts` on the widget socket).
"#;

const GITIGNORE: &str = "target/\n*.wasm\n.*.tmp\nnode_modules/\n.venv/\n__pycache__/\n";

/// Check that `name` is usable as a plugin, crate and file name.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.to_string()))
    }
}

/// Write a new analyzer project `name` in `lang` under `dir/name`, with its
/// own copy of the host's WIT package. A Rust project depends on the
/// `mdp-sdk` crate at `sdk` when given, otherwise on a copy of the SDK
/// vendored into the project (with a `Cargo.lock` pinning its dependencies).
/// Returns the project folder.
pub fn scaffold(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: Option<&Path>,
) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root.display().to_string()));
    }
    std::fs::create_dir_all(&root).map_err(io_error(&root))?;
    let (files, embedded) = project_files(name, lang, &root, sdk);
    for (dir, set) in embedded {
        embedded::write_all(&dir, set).map_err(io_error(&dir))?;
    }
    for (file, text) in files {
        let path = root.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::fs::write(&path, text).map_err(io_error(&path))?;
    }
    Ok(root)
}

/// A [`ScaffoldError::Io`] on `path`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError {
    let path = path.display().to_string();
    move |source| ScaffoldError::Io { path, source }
}

/// How a project in `lang` is built, and what its README adds about the
/// vendored SDK (when `sdk` is not given).
fn build_notes(lang: Lang, sdk: Option<&Path>) -> (&'static str, &'static str) {
    match lang {
        Lang::Rust => (
            "cargo build --release --target wasm32-wasip2",
            match sdk {
                Some(_) => "",
                None => {
                    "; `mdp-sdk/` is the Rust SDK it builds against, vendored with `Cargo.lock`"
                }
            },
        ),
        Lang::Python => ("componentize-py (pinned in requirements.txt)", ""),
        Lang::Js => (
            "componentize-js (pinned in package.json; `npm ci` first)",
            "",
        ),
    }
}

/// The files of a new project: its templates filled in (path in the
/// project, text), and the embedded file sets with the folder each goes to.
type ProjectFiles = (
    Vec<(String, String)>,
    Vec<(PathBuf, &'static [embedded::File])>,
);

/// The files of project `name` in `lang` at `root`.
fn project_files(name: &str, lang: Lang, root: &Path, sdk: Option<&Path>) -> ProjectFiles {
    let (build, extra) = build_notes(lang, sdk);
    let sdk_path = sdk.map_or_else(|| "mdp-sdk".to_string(), |p| p.display().to_string());
    let fill = |t: &str| {
        t.replace("{name}", name)
            .replace("{sdk}", &sdk_path)
            .replace("{wit}", super::WIT_VERSION)
            .replace("{lang}", &format!("{lang:?}"))
            .replace("{build}", build)
            .replace("{extra}", extra)
            .replace("{memory}", if lang == Lang::Rust { "32" } else { "256" })
            .replace("{deadline}", if lang == Lang::Rust { "50" } else { "500" })
    };
    let mut files: Vec<(String, String)> = vec![
        (format!("{name}.toml"), fill(MANIFEST)),
        // The golden file's JSON braces are literal; only the name is filled in.
        ("golden.json".into(), GOLDEN.replace("{name}", name)),
        ("README.md".into(), fill(README)),
        (".gitignore".into(), GITIGNORE.to_string()),
    ];
    let mut embedded: Vec<(PathBuf, &'static [embedded::File])> =
        vec![(root.join("wit"), embedded::WIT)];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(RUST_CARGO)));
            files.push(("src/lib.rs".into(), fill(RUST_LIB)));
            if sdk.is_none() {
                files.push(("Cargo.lock".into(), embedded::rust_lock(name)));
                files.push(("mdp-sdk/Cargo.toml".into(), embedded::sdk_manifest()));
                embedded.push((root.join("mdp-sdk"), embedded::SDK_SOURCES));
            }
        }
        Lang::Python => {
            files.push(("app.py".into(), fill(PYTHON_APP)));
            files.push((
                "requirements.txt".into(),
                embedded::PYTHON_REQUIREMENTS.to_string(),
            ));
        }
        Lang::Js => {
            files.push((format!("{name}.js"), fill(JS_APP)));
            embedded.push((root.to_path_buf(), embedded::JS_TOOLS));
        }
    }
    (files, embedded)
}
