//! Files compiled into the `mdp` binary so a plugin author needs nothing
//! else from this repository: the WIT package, the Rust SDK's source (vendored
//! into Rust projects, with a `Cargo.lock` pinning the crate versions the host
//! was built and tested with), and the pinned Python and JavaScript build
//! tools.

use std::path::Path;

/// A file compiled into the binary, by path relative to where it is written.
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// Path relative to the folder it is written under.
    pub path: &'static str,
    /// Contents.
    pub text: &'static str,
}

macro_rules! files {
    ($root:literal; $($path:literal),+ $(,)?) => {
        &[$(File { path: $path, text: include_str!(concat!($root, $path)) }),+]
    };
}

/// The WIT package the host implements (`mdp:analyzer`), as files of a `wit/` folder.
pub const WIT: &[File] = files!("../../../wit/"; "analyzer.wit");

/// The Rust SDK's sources, as files of its crate folder.
pub const SDK_SOURCES: &[File] = files!("../../../sdk/";
    "src/lib.rs", "src/calendar.rs", "src/config.rs", "src/effects.rs", "src/imports.rs", "src/testing.rs", "src/wire.rs",
);

const SDK_MANIFEST: &str = include_str!("../../../sdk/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");
const WORKSPACE_LOCK: &str = include_str!("../../../Cargo.lock");

/// The pinned componentize-py requirement (`requirements.txt`; the same file
/// `scripts/setup` installs from).
pub const PYTHON_REQUIREMENTS: &str = include_str!("../../../plugins/python/requirements.txt");

/// The pinned componentize-js build files (`package.json`, its lock, and the
/// build script; the same files `scripts/setup` and `scripts/build-plugins` use).
pub const JS_TOOLS: &[File] = files!("../../../plugins/js/";
    "package.json", "package-lock.json", "componentize.mjs",
);

/// The componentize-js package name (what a JS project's build imports).
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js";

/// Write `files` under `dir`, creating folders as needed.
pub fn write_all(dir: &Path, files: &[File]) -> std::io::Result<()> {
    for f in files {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, f.text)?;
    }
    Ok(())
}

fn parse(text: &str, what: &str) -> toml::Table {
    // Compiled-in files of this repository: a parse failure is a build defect
    // caught by this module's tests.
    toml::from_str(text).unwrap_or_else(|e| panic!("embedded {what}: {e}"))
}

/// The SDK crate's version.
pub fn sdk_version() -> String {
    let ws = parse(WORKSPACE_MANIFEST, "Cargo.toml");
    ws["workspace"]["package"]["version"]
        .as_str()
        .unwrap_or("0.0.0")
        .to_string()
}

/// The SDK's `Cargo.toml` as a standalone crate: every `*.workspace = true`
/// replaced by the workspace's value.
pub fn sdk_manifest() -> String {
    let ws = parse(WORKSPACE_MANIFEST, "Cargo.toml");
    let inherited = |section: &str| {
        ws["workspace"][section]
            .as_table()
            .cloned()
            .unwrap_or_default()
    };
    let (ws_package, ws_deps) = (inherited("package"), inherited("dependencies"));
    let is_inherited = |v: &toml::Value| {
        v.get("workspace")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    };
    let mut sdk = parse(SDK_MANIFEST, "sdk/Cargo.toml");
    if let Some(package) = sdk.get_mut("package").and_then(toml::Value::as_table_mut) {
        for (key, value) in package.iter_mut() {
            if is_inherited(value)
                && let Some(v) = ws_package.get(key)
            {
                *value = v.clone();
            }
        }
    }
    // `[lints] workspace = true` becomes the workspace's lint tables.
    if let Some(lints) = sdk.get_mut("lints")
        && is_inherited(lints)
    {
        *lints = toml::Value::Table(inherited("lints"));
    }
    if let Some(deps) = sdk
        .get_mut("dependencies")
        .and_then(toml::Value::as_table_mut)
    {
        for (name, dep) in deps.iter_mut() {
            if !is_inherited(dep) {
                continue;
            }
            let mut resolved = match ws_deps.get(name) {
                Some(toml::Value::String(version)) => {
                    toml::Table::from_iter([("version".to_string(), version.clone().into())])
                }
                Some(toml::Value::Table(t)) => t.clone(),
                _ => continue,
            };
            // Keys beside `workspace = true` (features, optional) add to the workspace's.
            for (k, v) in dep.as_table().into_iter().flatten() {
                match (k.as_str(), resolved.get_mut(k)) {
                    ("workspace", _) => {}
                    ("features", Some(toml::Value::Array(fs))) => {
                        fs.extend(v.as_array().cloned().unwrap_or_default())
                    }
                    _ => {
                        resolved.insert(k.clone(), v.clone());
                    }
                }
            }
            *dep = toml::Value::Table(resolved);
        }
    }
    format!(
        "# The mdp Rust SDK, vendored by `mdp plugin new` (it is not on crates.io);\n\
         # it builds against ../wit, the WIT package of the mdp that wrote it.\n{}",
        toml::to_string(&sdk).unwrap_or_default()
    )
}

/// A `Cargo.lock` for a crate `root` (version 0.1.0) depending on the
/// vendored SDK: exactly the registry crates, at the versions, the host's own
/// build of the SDK uses.
pub fn rust_lock(root: &str) -> String {
    let lock = parse(WORKSPACE_LOCK, "Cargo.lock");
    let packages: Vec<&toml::Table> = lock["package"]
        .as_array()
        .map(|a| a.iter().filter_map(toml::Value::as_table).collect())
        .unwrap_or_default();
    let str_of =
        |p: &toml::Table, k: &str| p.get(k).and_then(toml::Value::as_str).map(String::from);
    // A lock dependency is "name", "name version" or "name version (source)".
    let find = |dep: &str| {
        let mut parts = dep.split(' ');
        let name = parts.next().unwrap_or_default();
        let version = parts.next();
        packages.iter().copied().find(|p| {
            str_of(p, "name").as_deref() == Some(name)
                && version.is_none_or(|v| str_of(p, "version").as_deref() == Some(v))
        })
    };
    let mut keep: Vec<&toml::Table> = Vec::new();
    let mut todo = vec!["mdp-sdk".to_string()];
    while let Some(dep) = todo.pop() {
        let Some(p) = find(&dep) else { continue };
        if keep.iter().any(|k| std::ptr::eq(*k, p)) {
            continue;
        }
        keep.push(p);
        for d in p
            .get("dependencies")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            todo.extend(d.as_str().map(String::from));
        }
    }
    let root_package = toml::Table::from_iter([
        ("name".to_string(), toml::Value::from(root)),
        ("version".to_string(), "0.1.0".into()),
        (
            "dependencies".to_string(),
            toml::Value::Array(vec!["mdp-sdk".into()]),
        ),
    ]);
    let mut out: Vec<toml::Table> = keep.into_iter().cloned().collect();
    out.push(root_package);
    out.sort_by_key(|p| (str_of(p, "name"), str_of(p, "version")));
    // Cargo's own layout, so cargo leaves the file as it is.
    let mut text = format!(
        "# Written by `mdp plugin new`: the crate versions this mdp's SDK was tested with.\nversion = {}\n",
        lock["version"]
    );
    for p in out {
        text.push_str("\n[[package]]\n");
        for key in ["name", "version", "source", "checksum"] {
            if let Some(v) = p.get(key) {
                text.push_str(&format!("{key} = {v}\n"));
            }
        }
        if let Some(deps) = p.get("dependencies").and_then(toml::Value::as_array) {
            text.push_str("dependencies = [\n");
            for d in deps {
                text.push_str(&format!(" {d},\n"));
            }
            text.push_str("]\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_wit_is_the_version_the_host_implements() {
        let text = WIT[0].text;
        assert!(
            text.contains(&format!("package {};", super::super::WIT_VERSION)),
            "wit/analyzer.wit declares {}",
            super::super::WIT_VERSION
        );
    }

    #[test]
    fn every_wit_and_sdk_source_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (dir, files, ext) in [("wit", WIT, "wit"), ("sdk/src", SDK_SOURCES, "rs")] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == ext) {
                    let name = path.file_name().unwrap().to_str().unwrap();
                    assert!(
                        files.iter().any(|f| f.path.ends_with(name)),
                        "{dir}/{name} is not embedded (add it to embedded.rs)"
                    );
                }
            }
        }
    }

    #[test]
    fn the_vendored_sdk_manifest_is_standalone() {
        let text = sdk_manifest();
        assert!(!text.contains("workspace"), "{text}");
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["package"]["name"].as_str(), Some("mdp-sdk"));
        assert_eq!(t["package"]["edition"].as_str(), Some("2024"));
        let wit_bindgen = &t["dependencies"]["wit-bindgen"];
        assert_eq!(wit_bindgen["version"].as_str(), Some("0.46"));
        assert_eq!(wit_bindgen["default-features"].as_bool(), Some(false));
        assert_eq!(t["lints"]["rust"]["missing_docs"].as_str(), Some("deny"));
    }

    #[test]
    fn the_lock_pins_the_sdk_dependencies_only() {
        let t: toml::Table = toml::from_str(&rust_lock("probe")).unwrap();
        let names: Vec<&str> = t["package"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for n in ["probe", "mdp-sdk", "wit-bindgen", "serde", "serde_json"] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        for n in ["wasmtime", "tokio", "mdp"] {
            assert!(!names.contains(&n), "{n} is not an SDK dependency");
        }
    }
}
