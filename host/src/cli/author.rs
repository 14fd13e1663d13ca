//! A plugin author's project folder (as `mdp plugin new` writes it): find its
//! language and manifest, build its component with the language's toolchain,
//! and publish it into a plugin directory atomically.

use std::ffi::OsStr;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::plugin::embedded::COMPONENTIZE_JS;
use crate::plugin::manifest::Manifest;
use crate::plugin::scaffold::Lang;

/// The Rust target plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// A plugin project folder.
#[derive(Debug)]
pub struct Project {
    /// The folder.
    pub dir: PathBuf,
    /// Its language.
    pub lang: Lang,
    /// Its manifest (`<name>.toml`).
    pub manifest: Manifest,
}

impl Project {
    /// Open the project in `dir`: the language from its build files
    /// (`Cargo.toml`, `app.py`, `package.json`), the plugin from its one manifest.
    pub fn open(dir: &Path) -> anyhow::Result<Project> {
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("no project folder {}", dir.display()))?;
        let lang = if dir.join("Cargo.toml").exists() {
            Lang::Rust
        } else if dir.join("app.py").exists() {
            Lang::Python
        } else if dir.join("package.json").exists() {
            Lang::Js
        } else {
            bail!(
                "{}: not a plugin project (no Cargo.toml, app.py or package.json; create one with `mdp plugin new`)",
                dir.display()
            );
        };
        let mut manifests = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.extension() == Some(OsStr::new("toml"))
                && path.file_name() != Some(OsStr::new("Cargo.toml"))
            {
                manifests.push(path);
            }
        }
        let [path] = manifests.as_slice() else {
            bail!(
                "{}: expected one plugin manifest `<name>.toml`, found {}",
                dir.display(),
                manifests.len()
            );
        };
        let manifest = Manifest::load(path)?;
        Ok(Project {
            dir,
            lang,
            manifest,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Where `build` puts the component: `<dir>/<name>.wasm`.
    pub fn component(&self) -> PathBuf {
        self.dir.join(format!("{}.wasm", self.name()))
    }

    /// The built component, or an error saying to build it.
    pub fn built_component(&self) -> anyhow::Result<PathBuf> {
        let wasm = self.component();
        if !wasm.exists() {
            bail!(
                "{} is not built yet: run `mdp plugin build {}`",
                wasm.display(),
                self.dir.display()
            );
        }
        Ok(wasm)
    }

    /// Build the component with the project's toolchain into [`Self::component`];
    /// `release` selects cargo's release profile (Rust only).
    pub fn build(&self, release: bool) -> anyhow::Result<PathBuf> {
        let out = self.component();
        let tmp = temp_name(&out);
        match self.lang {
            Lang::Rust => {
                let built = self.cargo_build(release)?;
                std::fs::copy(&built, &tmp)
                    .with_context(|| format!("copy {} to {}", built.display(), tmp.display()))?;
            }
            Lang::Python => {
                let tool = find_tool(
                    "componentize-py",
                    &[self.dir.join(".venv/bin")],
                    "install it (pinned in requirements.txt): `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` in the project folder (Debian: apt install python3-venv)",
                )?;
                run(
                    Command::new(tool)
                        .args(["-d", "wit", "-w", "analyzer", "componentize", "app", "-o"])
                        .arg(&tmp)
                        .current_dir(&self.dir)
                        .stdout(Stdio::null()),
                    "componentize-py",
                )?;
            }
            Lang::Js => {
                let node = find_tool(
                    "node",
                    &[],
                    "install Node.js 18 or newer and npm (Debian: apt install nodejs npm)",
                )?;
                if !self
                    .dir
                    .ancestors()
                    .any(|d| d.join("node_modules").join(COMPONENTIZE_JS).is_dir())
                {
                    bail!(
                        "{COMPONENTIZE_JS} is not installed: run `npm ci` in {} (it installs the versions pinned in package-lock.json)",
                        self.dir.display()
                    );
                }
                run(
                    Command::new(node)
                        .arg("componentize.mjs")
                        .arg(format!("{}.js", self.name()))
                        .arg("wit")
                        .arg(&tmp)
                        .current_dir(&self.dir),
                    "componentize-js",
                )?;
            }
        }
        std::fs::rename(&tmp, &out)
            .with_context(|| format!("rename {} to {}", tmp.display(), out.display()))?;
        Ok(out)
    }

    /// `cargo build --target wasm32-wasip2`; returns the `.wasm` cargo wrote.
    fn cargo_build(&self, release: bool) -> anyhow::Result<PathBuf> {
        let cargo = find_tool(
            "cargo",
            &[],
            "install Rust from https://rustup.rs, then `rustup target add wasm32-wasip2`",
        )?;
        // rustup knows which targets are installed; without rustup cargo's own error has to do.
        if let Ok(out) = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(&self.dir)
            .output()
            && out.status.success()
            && !String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET)
        {
            bail!(
                "the Rust target {WASM_TARGET} is not installed: run `rustup target add {WASM_TARGET}`"
            );
        }
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--target", WASM_TARGET])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(&self.dir)
            .stdout(Stdio::piped());
        if release {
            cmd.arg("--release");
        }
        let mut child = cmd.spawn().context("run cargo")?;
        let mut wasm = None;
        for line in std::io::BufReader::new(child.stdout.take().context("cargo stdout")?).lines() {
            let msg: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
            if msg["reason"] == "compiler-artifact" {
                let files = msg["filenames"].as_array().into_iter().flatten();
                if let Some(f) = files
                    .filter_map(|f| f.as_str())
                    .find(|f| f.ends_with(".wasm"))
                {
                    wasm = Some(PathBuf::from(f));
                }
            }
        }
        let status = child.wait().context("wait for cargo")?;
        if !status.success() {
            bail!("cargo build failed ({status})");
        }
        wasm.context("cargo built no .wasm: is the crate's lib `crate-type = [\"cdylib\", ...]`?")
    }

    /// Write the component, its manifest and its golden file into
    /// `plugin_dir`, each under a temporary dot-name (which the host's watcher
    /// ignores) and then renamed into place: the golden file first, then the
    /// manifest, the component last. Returns the component's new path.
    pub fn publish(&self, plugin_dir: &Path) -> anyhow::Result<PathBuf> {
        let wasm = self.built_component()?;
        let name = self.name();
        let mut manifest = std::fs::read_to_string(self.dir.join(format!("{name}.toml")))
            .context("read the manifest")?;
        if let Some(golden) = &self.manifest.golden {
            // Beside other plugins' files: under golden/<name>/, as scripts/build-plugins does.
            let rel = Path::new("golden").join(name).join(golden);
            let text = std::fs::read(self.dir.join(golden))
                .with_context(|| format!("read {}", self.dir.join(golden).display()))?;
            write_atomic(&plugin_dir.join(&rel), &text)?;
            let line = format!("golden = {}", toml::Value::from(rel.display().to_string()));
            manifest = manifest
                .lines()
                .map(|l| {
                    if is_key(l, "golden") {
                        line.as_str()
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
        }
        write_atomic(
            &plugin_dir.join(format!("{name}.toml")),
            manifest.as_bytes(),
        )?;
        let bytes = std::fs::read(&wasm).with_context(|| format!("read {}", wasm.display()))?;
        let to = plugin_dir.join(format!("{name}.wasm"));
        write_atomic(&to, &bytes)?;
        Ok(to)
    }
}

/// Does TOML line `line` assign top-level `key`?
fn is_key(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// `<dir>/.<file>.tmp`: a name the plugin watcher ignores (dot files).
fn temp_name(path: &Path) -> PathBuf {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{file}.{}.tmp", std::process::id()))
}

/// Write `bytes` to `path` via a synced temporary dot-file and a rename, so
/// a reader sees the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let tmp = temp_name(path);
    let write = || {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .with_context(|| format!("write {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// `name` from `extra` folders, then `PATH`; else an error saying what to install.
fn find_tool(name: &str, extra: &[PathBuf], install: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found: {install}"))
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
