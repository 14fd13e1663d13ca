//! The compiled-artifact cache: authenticated, outside the plugin directory.

use super::*;

/// A forged artifact (here: another plugin's valid compiled code under the
/// router's name, as someone who can write the cache would plant it) is not
/// loaded: the router is compiled again and its artifact rewritten.
#[tokio::test]
async fn a_tampered_artifact_is_recompiled_not_loaded() {
    let cache = tempfile::tempdir().unwrap();
    let rt = cached_runtime(cache.path(), b"0123456789abcdef0123456789abcdef");
    let router = std::fs::read(support::plugin_wasm("massive-router")).unwrap();
    let hostile = std::fs::read(support::plugin_wasm("hostile")).unwrap();
    let first = rt.compile(&router).unwrap();
    assert!(!first.from_cache);
    assert!(
        rt.compile(&router).unwrap().from_cache,
        "a good artifact is used"
    );

    let path = rt
        .artifact_cache()
        .unwrap()
        .path(&rt.artifact_name(&first.hash));
    let planted = rt.compile(&hostile).unwrap().component.serialize().unwrap();
    let good = std::fs::read(&path).unwrap();
    // Same header and a stale tag, another component's code: what an
    // attacker without the key can do; and the bare wasmtime artifact.
    for forged in [[&good[..40], &planted[..]].concat(), planted.clone()] {
        std::fs::write(&path, &forged).unwrap();
        let again = rt.compile(&router).unwrap();
        assert!(!again.from_cache, "a forged artifact must not be loaded");
        assert_ne!(std::fs::read(&path).unwrap(), forged, "artifact rewritten");
        assert!(rt.compile(&router).unwrap().from_cache, "and usable again");
    }

    // An artifact tagged under another host's key is not trusted either.
    let other = cached_runtime(cache.path(), b"another host's key, 32 bytes....");
    assert!(!other.compile(&router).unwrap().from_cache);
}

/// The default cache lived in `<plugin-dir>/.cache`: a cache configured
/// inside the plugin directory is refused with a clear reason.
#[tokio::test]
async fn an_artifact_cache_inside_the_plugin_dir_is_refused() {
    let plugins = tempfile::tempdir().unwrap();
    let rt = cached_runtime(
        &plugins.path().join(".cache"),
        b"0123456789abcdef0123456789abcdef",
    );
    let err = Registry::open(rt, services(), plugins.path())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("inside the plugin directory"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// 2. Output caps
