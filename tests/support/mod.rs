//! Shared helpers for the integration tests: where the test servers and the
//! built plugins are.
#![allow(dead_code)]

pub mod deploy;

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

/// Path of a built plugin component by crate or directory name. The shipped
/// Rust plugins (in the plugin directory [`mdp_test_artifacts::PLUGIN_DIR`],
/// beside their manifests) and the test fixtures are built by the
/// `mdp-test-artifacts` build script whenever their sources change; the
/// Python and JavaScript plugins (`*-py`, `*-js`) by [`polyglot_wasm`].
pub fn plugin_wasm(name: &str) -> PathBuf {
    if name.ends_with("-py") || name.ends_with("-js") {
        return polyglot_wasm(name);
    }
    let path = mdp_test_artifacts::component(name)
        .unwrap_or_else(|| panic!("no plugin or test fixture is named {name}"));
    PathBuf::from(path)
}

/// Path of a Python or JavaScript plugin in `target/polyglot-plugins/`. The
/// first call in a process runs `scripts/build-plugins polyglot`, which
/// rebuilds each one whose sources or WIT changed (and fails, saying what
/// to install, when componentize-py or componentize-js is missing), so a
/// test never runs a stale one.
pub fn polyglot_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let output = std::process::Command::new(repo_root().join("scripts/build-plugins"))
            .arg("polyglot")
            .output()
            .expect("run scripts/build-plugins polyglot");
        assert!(
            output.status.success(),
            "scripts/build-plugins polyglot failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
    let path = repo_root().join(format!("target/polyglot-plugins/{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Host services over `store` (reference data read from it too), with the
/// clock fixed at `now_us` (Unix µs).
pub fn services_over(
    store: std::sync::Arc<dyn mdp::store::Store>,
    now_us: u64,
) -> mdp::plugin::HostServices {
    mdp::plugin::HostServices {
        store: store.clone(),
        reference: std::sync::Arc::new(mdp::plugin::StoreReference::new(store)),
        clock: std::sync::Arc::new(mdp::plugin::FixedClock::new(now_us)),
    }
}

/// [`services_over`] a fresh embedded store.
pub fn embedded_services(now_us: u64) -> mdp::plugin::HostServices {
    services_over(
        std::sync::Arc::new(mdp::store::EmbeddedStore::new()),
        now_us,
    )
}

/// Copy directory `from` into `to`, recursively.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// Held by the tests that load the machine most (building components in
/// three languages; a browser measuring its long tasks), so that they run
/// one at a time and a timing check does not measure the other
/// (`HEAVY.lock().await`, or `blocking_lock()` outside a runtime).
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A minimal trade in the seed's queue JSON.
pub fn trade_json(symbol: &str) -> String {
    format!(r#"{{"event_type":"T","symbol":"{symbol}","price":1.5,"size":10,"timestamp":1}}"#)
}

/// Queue messages decoded into the events a plugin receives.
pub fn decode_all(texts: &[String]) -> Vec<mdp::plugin::bindings::Event> {
    texts
        .iter()
        .map(|t| mdp::plugin::convert::decode(t).expect("decodes"))
        .collect()
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

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
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

/// A TCP proxy on a free loopback port in front of `127.0.0.1:upstream`
/// that can be told to cut the connection in the middle of a request: after
/// [`CutProxy::cut_after`], once that many more client bytes have been
/// forwarded, the connection carrying them is closed both ways.
pub struct CutProxy {
    /// The port it listens on.
    pub port: u16,
    /// Client bytes still to forward before cutting (`usize::MAX`: never).
    budget: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Start forwarding to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> CutProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = std::sync::Arc::new(AtomicUsize::new(usize::MAX));
        let shared = budget.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let budget = shared.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let left = budget.load(Ordering::SeqCst);
                        let send = n.min(left);
                        if left != usize::MAX {
                            budget.fetch_sub(send, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..send]).await.is_err() {
                            break;
                        }
                        if send < n || budget.load(Ordering::SeqCst) == 0 {
                            break;
                        }
                    }
                    down.abort();
                    let _ = sw.shutdown().await;
                });
            }
        });
        CutProxy { port, budget, task }
    }

    /// Cut the connection once `bytes` more client bytes were forwarded.
    pub fn cut_after(&self, bytes: usize) {
        self.budget
            .store(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forward without cutting again.
    pub fn heal(&self) {
        self.budget
            .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The port of a `scheme://host:port/...` URL.
pub fn url_port(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// A private rabbitmq-server (started by the test command's own script) that
/// a test may kill and restart on the same AMQP port.
pub struct PrivateRabbit {
    /// Its AMQP URL.
    pub url: String,
    /// The AMQP port (kept across restarts).
    pub port: u16,
    pid: Option<i32>,
    env_file: tempfile::NamedTempFile,
}

impl PrivateRabbit {
    /// Start one on a free port (blocks until it accepts connections).
    pub fn start() -> PrivateRabbit {
        let mut r = PrivateRabbit {
            url: String::new(),
            port: 0,
            pid: None,
            env_file: tempfile::NamedTempFile::new().expect("tempfile"),
        };
        r.launch(None);
        r
    }

    fn launch(&mut self, port: Option<u16>) {
        let script = repo_root().join("scripts/servers/rabbitmq.sh");
        let cmd = format!(
            "source '{}'; start_rabbitmq >&2 && echo \"$MDP_TEST_AMQP_URL $MDP_RABBIT_PID $RABBITMQ_NODE_PORT\" > '{}'",
            script.display(),
            self.env_file.path().display()
        );
        let mut command = std::process::Command::new("bash");
        command.arg("-c").arg(cmd);
        if let Some(p) = port {
            command.env("MDP_RABBIT_PORT", p.to_string());
        }
        assert!(
            command.status().unwrap().success(),
            "private rabbitmq-server started"
        );
        let text = std::fs::read_to_string(self.env_file.path()).unwrap();
        let mut parts = text.split_whitespace();
        self.url = parts.next().unwrap().to_string();
        self.pid = Some(parts.next().unwrap().parse().unwrap());
        self.port = parts.next().unwrap().parse().unwrap();
    }

    /// Kill it hard (SIGKILL, with its Erlang children).
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let pid = pid.to_string();
            let _ = std::process::Command::new("pkill")
                .args(["-9", "-P", &pid])
                .status();
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
    }

    /// Start it again on the same port (a fresh node: queues are re-declared by clients).
    pub fn restart(&mut self) {
        self.kill();
        self.launch(Some(self.port));
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of every sample of `name` in a Prometheus text body whose labels
/// contain all of `labels` (e.g. `queue="trades"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then_some(())?;
            labels
                .iter()
                .all(|want| rest.contains(want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
