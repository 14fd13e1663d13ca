//! `mdp plugin new <name> --lang rust|python|js`: a working analyzer project
//! (source, manifest, golden test) to start from.

use std::path::{Path, PathBuf};

/// The language of a new analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

const RUST_LIB: &str = r#"//! `{name}`: counts trades per symbol in each batch and publishes the
//! counts on `{name}:counts`. Replace with your analysis.

use std::collections::BTreeMap;

use mdp_sdk::prelude::*;

/// The analyzer.
pub struct Plugin;

impl Analyzer for Plugin {
    fn describe() -> Info {
        mdp_sdk::info("{name}", env!("CARGO_PKG_VERSION"), Kinds::TRADE, 0)
    }

    fn init(_config: Config, _state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        Ok(Plugin)
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for event in batch {
            if let Some(symbol) = event.symbol() {
                *counts.entry(symbol).or_default() += 1;
            }
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

# Standalone: build with `cargo build --release --target wasm32-wasip2`.
[workspace]
"#;

const PYTHON_APP: &str = r#""""{name}: counts trades per symbol in each batch and publishes the counts
on `{name}:counts`. Build: componentize-py -d <mdp>/wit -w analyzer componentize app -o {name}.wasm"""

import json
from typing import Dict, List

import wit_world
from wit_world.imports import types as t


class WitWorld(wit_world.WitWorld):
    def describe(self) -> t.Info:
        return t.Info(name="{name}", version="0.1.0", consumes=t.Kinds.TRADE, state_version=0)

    def init(self, config, state) -> None:
        return None

    def analyze(self, batch: List[t.Event]) -> List[t.Effect]:
        counts: Dict[str, int] = {}
        for event in batch:
            if isinstance(event, t.Event_Trade):
                counts[event.value.symbol] = counts.get(event.value.symbol, 0) + 1
        body = json.dumps(dict(sorted(counts.items())), separators=(",", ":"))
        return [t.Effect_Publish(t.Publish(channel="{name}:counts", value=t.Body_Json(body)))]

    def snapshot(self) -> bytes:
        return b""
"#;

const JS_APP: &str = r#"// {name}: counts trades per symbol in each batch and publishes the counts on
// `{name}:counts`. Build: node <mdp>/plugins/js/componentize.mjs {name}.js <mdp>/wit {name}.wasm
export const describe = () => ({ name: '{name}', version: '0.1.0', consumes: { trade: true }, stateVersion: 0 });
export const init = () => {};
export function analyze(batch) {
  const counts = {};
  for (const event of batch) {
    if (event.tag === 'trade') counts[event.val.symbol] = (counts[event.val.symbol] ?? 0) + 1;
  }
  const sorted = Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1)));
  return [{ tag: 'publish', val: { channel: '{name}:counts', value: { tag: 'json', val: JSON.stringify(sorted) } } }];
}
export const snapshot = () => new Uint8Array();
"#;

const MANIFEST: &str = r#"name = "{name}"
wit = "mdp:analyzer@1.0.0"
consumes = ["trades"]
golden = "golden.json"

[limits]
memory_mib = {memory}
deadline_ms = {deadline}

[capabilities]
key_prefixes = ["{name}:"]
channels = ["{name}:"]
"#;

const GOLDEN: &str = r#"{
  "now_us": 1767225600000000,
  "steps": [
    {
      "events": [
        {"event_type": "T", "symbol": "AAA", "price": 10.5, "size": 100, "timestamp": 1},
        {"event_type": "T", "symbol": "BBB", "price": 1.25, "size": 10, "timestamp": 2},
        {"event_type": "T", "symbol": "AAA", "price": 10.6, "size": 50, "timestamp": 3}
      ],
      "effects": [
        {"op": "publish", "channel": "{name}:counts", "value": "{\"AAA\":2,\"BBB\":1}"}
      ]
    }
  ]
}
"#;

const README: &str = r#"# {name}

An mdp analyzer ({lang}). `golden.json` is its test: events in, exact effects out.

- Build the component (see the comment at the top of the source), then run it through the real
  runtime: `mdp plugin test {name}.wasm --events events.jsonl`, or the golden file through the host.
- Deploy: copy `{name}.wasm` and `{name}.toml` into the plugin directory of a running mdp (write to
  a temporary name and rename into place); it is validated against `golden.json` and hot-reloaded.
"#;

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    std::fs::write(path, text).map_err(|source| ScaffoldError::Io {
        path: path.display().to_string(),
        source,
    })
}

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

/// Write a new analyzer project `name` in `lang` under `dir/name`; `sdk` is
/// the path of the `mdp-sdk` crate (for Rust). Returns the project folder.
pub fn scaffold(name: &str, lang: Lang, dir: &Path, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root.display().to_string()));
    }
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|source| ScaffoldError::Io {
            path: p.display().to_string(),
            source,
        })
    };
    mkdir(&root)?;
    let fill = |t: &str| {
        t.replace("{name}", name)
            .replace("{sdk}", &sdk.display().to_string())
            .replace("{lang}", &format!("{lang:?}"))
            .replace("{memory}", if lang == Lang::Rust { "32" } else { "256" })
            .replace("{deadline}", if lang == Lang::Rust { "50" } else { "500" })
    };
    match lang {
        Lang::Rust => {
            mkdir(&root.join("src"))?;
            write(&root.join("Cargo.toml"), &fill(RUST_CARGO))?;
            write(&root.join("src/lib.rs"), &fill(RUST_LIB))?;
        }
        Lang::Python => write(&root.join("app.py"), &fill(PYTHON_APP))?,
        Lang::Js => write(&root.join(format!("{name}.js")), &fill(JS_APP))?,
    }
    write(&root.join(format!("{name}.toml")), &fill(MANIFEST))?;
    // The golden file's JSON braces are literal; only the name is filled in.
    write(&root.join("golden.json"), &GOLDEN.replace("{name}", name))?;
    write(&root.join("README.md"), &fill(README))?;
    Ok(root)
}
