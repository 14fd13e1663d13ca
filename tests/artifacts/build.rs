//! Builds every guest crate (the shipped Rust plugins under `plugins/` and
//! the fixtures under `tests/fixtures/plugins/`) as a Wasm component with the
//! `plugin` profile, in a target dir of its own (`target/wasm`: the nested
//! cargo must not wait on the lock the outer build holds), then writes
//! `components.rs`: one path constant per component and one `foreach_*!`
//! macro per kind. Cargo reruns this whenever a guest's sources, the SDK, the
//! WIT or the workspace manifests change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A guest crate: where it lives and what it is named.
struct Guest {
    /// The crate name (`massive-router`).
    name: String,
    /// Its directory.
    dir: PathBuf,
}

impl Guest {
    /// The identifier the macros pass for it (`massive_router`).
    fn ident(&self) -> String {
        self.name.replace('-', "_")
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().expect("workspace root");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    for watched in ["plugins", "tests/fixtures/plugins", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let plugins = guests(&root.join("plugins"));
    let fixtures = guests(&root.join("tests/fixtures/plugins"));
    let built = build(&root, plugins.iter().chain(&fixtures));

    let plugin_dir = fresh_dir(&out.join("plugins"));
    let fixture_dir = fresh_dir(&out.join("fixtures"));
    let mut code = String::new();
    let mut table = Vec::new();
    for guest in &plugins {
        let wasm = install_plugin(guest, &built, &plugin_dir);
        constant(&mut code, guest, &wasm, "shipped plugin");
        table.push((guest.name.clone(), wasm));
    }
    for guest in &fixtures {
        let wasm = fixture_dir.join(format!("{}.wasm", guest.name));
        copy(&wasm_of(&built, guest), &wasm);
        constant(&mut code, guest, &wasm, "test fixture");
        table.push((guest.name.clone(), wasm));
    }
    writeln!(
        code,
        "/// The plugin directory of the shipped plugins: each `<name>.wasm` beside its \
         `<name>.toml` manifest, golden files under `golden/<name>/`.\n\
         pub const PLUGIN_DIR: &str = {:?};",
        path_str(&plugin_dir)
    )
    .unwrap();
    code += "/// Every component by crate name.\npub const COMPONENTS: &[(&str, &str)] = &[\n";
    for (name, wasm) in &table {
        writeln!(code, "    ({name:?}, {:?}),", path_str(wasm)).unwrap();
    }
    code += "];\n";
    foreach(&mut code, "fixture", "test fixture", &fixtures);
    foreach(&mut code, "plugin", "shipped Rust plugin", &plugins);
    std::fs::write(out.join("components.rs"), code).expect("write components.rs");
}

/// The guest crates directly under `dir` (each directory with a `Cargo.toml`), sorted.
fn guests(dir: &Path) -> Vec<Guest> {
    let mut found: Vec<Guest> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
            let name = manifest.lines().find_map(|line| {
                let value = line.strip_prefix("name")?.trim_start().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })?;
            Some(Guest { name, dir })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Build `guests` for `wasm32-wasip2`; returns the directory holding the `.wasm` files.
fn build<'a>(root: &Path, guests: impl Iterator<Item = &'a Guest>) -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(root)
        .args(["build", "--quiet", "--profile", "plugin"])
        .args(["--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for guest in guests {
        cargo.args(["-p", &guest.name]);
    }
    // What the outer build set for its own compilation must not leak in
    // (clippy's driver, the host's flags, the outer target dir).
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .status()
        .expect("run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed ({status}); the wasm32-wasip2 target must be \
         installed (scripts/setup, or `rustup target add wasm32-wasip2`)"
    );
    target_dir.join("wasm32-wasip2/plugin")
}

/// The component cargo built for `guest`.
fn wasm_of(built: &Path, guest: &Guest) -> PathBuf {
    built.join(format!("{}.wasm", guest.ident()))
}

/// Copy a shipped plugin into the plugin directory with its manifest (its
/// `golden` path pointed under `golden/<name>/`) and golden files.
fn install_plugin(guest: &Guest, built: &Path, plugin_dir: &Path) -> PathBuf {
    let name = &guest.name;
    let wasm = plugin_dir.join(format!("{name}.wasm"));
    copy(&wasm_of(built, guest), &wasm);
    let manifest = guest.dir.join(format!("{name}.toml"));
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        let rewritten: String = text
            .lines()
            .map(|line| match golden_path(line) {
                Some(path) => format!("golden = \"golden/{name}/{path}\"\n"),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(plugin_dir.join(format!("{name}.toml")), rewritten).expect("write manifest");
    }
    let golden = guest.dir.join("golden");
    if let Ok(files) = std::fs::read_dir(&golden) {
        let dest = plugin_dir.join("golden").join(name).join("golden");
        std::fs::create_dir_all(&dest).expect("golden dir");
        for file in files.flatten() {
            copy(&file.path(), &dest.join(file.file_name()));
        }
    }
    wasm
}

/// The value of a manifest's `golden = "..."` line.
fn golden_path(line: &str) -> Option<&str> {
    let value = line
        .strip_prefix("golden")?
        .trim_start()
        .strip_prefix('=')?;
    value.trim().strip_prefix('"')?.strip_suffix('"')
}

/// Append the constant naming `guest`'s component.
fn constant(code: &mut String, guest: &Guest, wasm: &Path, kind: &str) {
    writeln!(
        code,
        "/// The `{}` {kind} component (built from `{}`).\npub const {}: &str = {:?};",
        guest.name,
        guest.dir.file_name().unwrap_or_default().to_string_lossy(),
        guest.ident().to_uppercase(),
        path_str(wasm)
    )
    .unwrap();
}

/// Append `foreach_<kind>!`, which calls `$mac!(ident)` once per guest.
fn foreach(code: &mut String, kind: &str, what: &str, guests: &[Guest]) {
    writeln!(
        code,
        "/// Calls `$mac!(name)` once per {what}, with its crate name as an \
         identifier (`-` becomes `_`).\n#[macro_export]\nmacro_rules! foreach_{kind} {{\n    \
         ($mac:ident) => {{"
    )
    .unwrap();
    for guest in guests {
        writeln!(code, "        $mac!({});", guest.ident()).unwrap();
    }
    code.push_str("    };\n}\n");
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// `dir`, emptied (or created).
fn fresh_dir(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir.to_path_buf()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("the build paths are UTF-8")
}
