//! A plugin author with only the `mdp` binary and a language toolchain, in a
//! folder outside the repository: `mdp plugin new` → `build` → `test` →
//! `publish` into the plugin directory of a running `mdp up`, for Rust,
//! Python and JavaScript; each new plugin is hot-loaded and its effects
//! (publishes on `<name>:counts`) reach a widget WebSocket subscriber.
//!
//! The author's commands run with the temporary folder as working directory
//! and a cleared environment: `PATH` (minus anything inside the repository),
//! `HOME`, plus the toolchains `scripts/setup` installed — componentize-py's
//! `bin/` on `PATH`, componentize-js as `node_modules` in the author's parent
//! folder — and, for speed, a `CARGO_TARGET_DIR` shared across runs
//! (`target/author-path`) with `CARGO_NET_OFFLINE` (the scaffold's
//! `Cargo.lock` pins crates the host's own build has already fetched).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// The author's shell: `mdp` with the author's folder as cwd and environment.
struct Author {
    home: PathBuf,
    path: std::ffi::OsString,
}

impl Author {
    fn new(home: &Path) -> Author {
        let repo = support::repo_root();
        let system = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&system)
            .filter(|d| !d.starts_with(&repo))
            .collect();
        dirs.push(repo.join("target/tools/py/bin"));
        // componentize-js installed once in the author's parent folder.
        std::os::unix::fs::symlink(
            repo.join("target/tools/js/node_modules"),
            home.join("node_modules"),
        )
        .unwrap();
        Author {
            home: home.to_path_buf(),
            path: std::env::join_paths(dirs).unwrap(),
        }
    }

    /// Run `mdp plugin ARGS` in `cwd`; returns (success, stdout + stderr).
    fn mdp(&self, cwd: &Path, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdp"));
        cmd.arg("plugin")
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", &self.path)
            .env(
                "CARGO_TARGET_DIR",
                support::repo_root().join("target/author-path"),
            )
            .env("CARGO_NET_OFFLINE", "true");
        for var in ["HOME", "RUSTUP_HOME", "CARGO_HOME", "RUSTUP_TOOLCHAIN"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        let out = cmd.output().expect("run mdp");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `mdp plugin ARGS` must succeed.
    fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let (ok, text) = self.mdp(cwd, args);
        assert!(ok, "mdp plugin {args:?} failed:\n{text}");
        text
    }
}

/// `mdp up` on a free port over `plugin_dir`, killed on drop.
struct Up {
    child: Child,
    port: u16,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_up(plugin_dir: &Path, cache: &Path, log: &Path) -> Up {
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_mdp"))
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--symbols",
            "50",
        ])
        .args(["--sim-at", "2026-03-09T10:00:00-04:00"])
        .arg("--plugin-dir")
        .arg(plugin_dir)
        .env_remove("MASSIVE_API_KEY")
        .env_remove("POLYGON_API_KEY")
        .env("MDP_PLUGIN_CACHE", cache)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start mdp up");
    let up = Up { child, port };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "mdp up did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    up
}

/// The first `feed` update over the widget WebSocket that is a JSON object
/// with a key starting `quote:` (the scaffold counts `quote:*` messages).
async fn first_counts(port: u16, feed: &str) -> Option<serde_json::Value> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("ws");
    let sub = serde_json::json!({"action": "subscribe", "feed": feed}).to_string();
    ws.send(Message::Text(sub.into())).await.unwrap();
    // A hang guard, not a performance bound: hot reload compiles the component first.
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if v.as_object()
            .is_some_and(|o| o.keys().any(|k| k.starts_with("quote:")))
        {
            return Some(v);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_test_publish_into_a_running_host_for_each_language() {
    let _heavy = support::HEAVY.lock().await;
    let started = Instant::now();
    let shipped = support::plugin_wasm("leaderboard");
    let plugin_dir = tempfile::tempdir().unwrap();
    support::copy_dir(shipped.parent().unwrap(), plugin_dir.path());
    let home = tempfile::tempdir().unwrap();
    assert!(!home.path().starts_with(support::repo_root()));
    let author = Author::new(home.path());
    let log = plugin_dir.path().join("up.log");
    // The artifact cache is never inside the plugin directory.
    let cache = tempfile::tempdir().unwrap();
    let up = start_up(plugin_dir.path(), cache.path(), &log).await;

    for (lang, name) in [
        ("rust", "probe-rs"),
        ("python", "probe-py"),
        ("js", "probe-js"),
    ] {
        author.ok(&author.home, &["new", name, "--lang", lang]);
        let project = author.home.join(name);
        assert!(project.join("wit/analyzer.wit").exists(), "{lang}: own WIT");
        let mut build = vec!["build"];
        if lang == "rust" {
            build.push("--debug");
        }
        author.ok(&project, &build);
        let tested = author.ok(&project, &["test", "."]);
        assert!(tested.contains("ok:"), "{lang}: {tested}");
        let to = plugin_dir.path().to_str().unwrap();
        author.ok(&author.home, &["publish", name, "--to", to]);
        let counts = first_counts(up.port, &format!("{name}:counts")).await;
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            counts.is_some(),
            "{lang}: no update on {name}:counts from the running host; its log:\n{log_text}"
        );
        eprintln!(
            "{lang}: {name} published and running after {:?}",
            started.elapsed()
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(plugin_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "publish left {leftovers:?}");
    drop(up);
}

/// A golden mismatch fails `mdp plugin test` with a readable diff, and a
/// missing toolchain is named with what to install.
#[test]
fn a_golden_mismatch_shows_a_diff_and_missing_toolchains_are_named() {
    let home = tempfile::tempdir().unwrap();
    let author = Author {
        home: home.path().to_path_buf(),
        path: "/nonexistent".into(),
    };
    author.ok(home.path(), &["new", "lonely-py", "--lang", "python"]);
    let (ok, text) = author.mdp(&home.path().join("lonely-py"), &["build"]);
    assert!(!ok);
    assert!(
        text.contains("componentize-py not found")
            && text.contains("pip install -r requirements.txt"),
        "{text}"
    );
    author.ok(home.path(), &["new", "lonely-js", "--lang", "js"]);
    let (ok, text) = author.mdp(&home.path().join("lonely-js"), &["build"]);
    assert!(!ok);
    assert!(
        text.contains("node not found") && text.contains("Node.js"),
        "{text}"
    );

    // A built component against a golden file expecting other counts.
    let project = home.path().join("lonely-py");
    std::fs::copy(
        support::plugin_wasm("massive-router"),
        project.join("other.wasm"),
    )
    .unwrap();
    let (ok, text) = author.mdp(&project, &["test", "other.wasm", "--golden", "golden.json"]);
    assert!(!ok, "a mismatch exits non-zero: {text}");
    assert!(
        text.contains("effects differ (- expected, + got)")
            && text.contains("- {\"op\":\"publish\",\"channel\":\"lonely-py:counts\""),
        "{text}"
    );
}
