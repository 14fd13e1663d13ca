//! Shared helpers for the integration tests: where the test servers and the
//! built plugins are.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn server_url(var: &str, what: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests with scripts/test, which starts a throwaway {what} \
             on a free loopback port (or export {var} yourself)"
        )
    })
}

/// URL of the throwaway Redis server started by `scripts/test`.
pub fn redis_url() -> String {
    server_url("MDP_TEST_REDIS_URL", "redis-server")
}

/// URL of the throwaway RabbitMQ server started by `scripts/test`.
pub fn amqp_url() -> String {
    server_url("MDP_TEST_AMQP_URL", "rabbitmq-server")
}

/// Path of a built plugin component (`target/plugins/<name>.wasm`, or
/// `target/test-plugins/<name>.wasm` for test fixtures), building all plugins
/// once per test binary if it is missing.
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let file = format!("{name}.wasm");
    let find = || {
        [
            "target/plugins",
            "target/test-plugins",
            "target/polyglot-plugins",
        ]
        .iter()
        .map(|d| repo_root().join(d).join(&file))
        .find(|p| p.exists())
    };
    if find().is_none() {
        BUILT.get_or_init(|| {
            let status = std::process::Command::new(repo_root().join("scripts/build-plugins"))
                .status()
                .expect("run scripts/build-plugins");
            assert!(status.success(), "scripts/build-plugins failed");
        });
    }
    find().unwrap_or_else(|| panic!("plugin {name} was not built (scripts/build-plugins)"))
}

/// A unique name for test isolation (queue names, key prefixes).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The body of `GET url` as text (panics on any failure: a test helper).
pub async fn http_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A private redis-server on a fixed port that a test may kill and restart.
pub struct PrivateRedis {
    /// The port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Start one on a free port and wait until it accepts connections.
    pub async fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        r.restart().await;
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill it hard (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/setup)");
        self.child = Some(child);
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("private redis-server did not start");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `id`s in the `tagged` list the `tagger` fixture writes, sorted.
pub fn tagged_ids(entries: &[String]) -> Vec<usize> {
    let mut ids: Vec<usize> = entries
        .iter()
        .map(|t| {
            let v: serde_json::Value = serde_json::from_str(t).expect("tagged entry is JSON");
            v["id"]
                .as_str()
                .expect("id")
                .trim_matches('"')
                .parse()
                .expect("numeric id")
        })
        .collect();
    ids.sort_unstable();
    ids
}
