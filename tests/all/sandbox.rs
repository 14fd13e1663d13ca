//! The plugin sandbox: what a hostile plugin, or whoever can
//! write the plugin directory, must not be able to do to the host. Each test
//! checks that the host survives, that other plugins keep serving, and that
//! the operator gets one clear reason.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mdp::plugin::bindings::Effect;
use mdp::plugin::{
    BatchOutput, CacheKey, Capabilities, HostServices, Limits, LoadOptions, Plugin, Registry,
    Runtime, RuntimeConfig, Worker,
};
use mdp::store::{EmbeddedStore, Store};

fn services_over(store: Arc<dyn Store>) -> HostServices {
    support::services_over(store, 1_767_225_600_000_000)
}

fn services() -> HostServices {
    services_over(Arc::new(EmbeddedStore::new()))
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

async fn load_on(rt: &Runtime, name: &str, limits: Limits) -> Arc<Plugin> {
    let bytes = std::fs::read(support::plugin_wasm(name)).expect("read plugin");
    let options = LoadOptions {
        limits,
        capabilities: Capabilities::unrestricted(),
        ..LoadOptions::default()
    };
    Plugin::load(rt, bytes, options, &services())
        .await
        .expect("load")
}

/// A `hostile` worker in `mode` (extra config pairs after it).
async fn hostile(rt: &Runtime, mode: &str, config: &[(&str, &str)], limits: Limits) -> Worker {
    hostile_with(rt, services(), mode, config, limits).await
}

/// [`hostile`] with these host services.
async fn hostile_with(
    rt: &Runtime,
    services: HostServices,
    mode: &str,
    config: &[(&str, &str)],
    limits: Limits,
) -> Worker {
    let plugin = load_on(rt, "hostile", limits).await;
    let mut pairs = vec![("mode".to_string(), mode.to_string())];
    pairs.extend(config.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Worker::new(plugin, services, pairs)
}

use support::{decode_all as events, trade_json as trade};

fn shared(texts: &[String]) -> Vec<std::sync::Arc<str>> {
    texts.iter().map(|t| t.as_str().into()).collect()
}

/// Keys put by the effects (`echo:{SYM}` for the events a plugin served).
fn puts(out: &BatchOutput) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Put(p) => Some(p.key.clone()),
            _ => None,
        })
        .collect()
}

/// (index, reason) of the rejected events.
fn rejects(out: &BatchOutput) -> Vec<(u32, String)> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reject(r) => Some((r.index, r.reason.clone())),
            _ => None,
        })
        .collect()
}

/// Another plugin on the same runtime still serves.
async fn others_keep_serving(rt: &Runtime) {
    let router = load_on(rt, "massive-router", Limits::default()).await;
    let mut worker = Worker::new(router, services(), vec![]);
    let texts = [trade("OK")];
    let out = worker
        .analyze(&events(&texts))
        .await
        .expect("router serves");
    assert!(out.faults.is_empty(), "{:?}", out.faults);
    assert!(!out.effects.is_empty());
}

fn cached_runtime(dir: &std::path::Path, key: &[u8]) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_path_buf()),
        cache_key: CacheKey::Bytes(key.to_vec()),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

// ---------------------------------------------------------------------------
// 1. The compiled-artifact cache

/// Put `hostile` into a fresh plugin directory with this manifest text.
fn plugin_dir_with_hostile(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::plugin_wasm("hostile"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("hostile.toml"), manifest).unwrap();
    dir
}

const HOSTILE: &str = "name = \"hostile\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"q\"]\n";

mod artifacts;
mod capabilities;
mod memory;
mod output;
mod probation;
mod time;
