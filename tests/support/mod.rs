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
        ["target/plugins", "target/test-plugins"]
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
