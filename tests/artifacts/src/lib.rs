//! The Wasm components the integration tests run, built by this crate's
//! build script (`cargo build --profile plugin --target wasm32-wasip2` in a
//! target dir of its own) whenever a guest's sources, the SDK or the WIT
//! change, so a test never runs a stale component.
//!
//! One constant per component holds its path: the shipped plugins
//! (`plugins/*`, e.g. [`LEADERBOARD`]) sit in [`PLUGIN_DIR`] beside their
//! manifests and golden files, a plugin directory the host can load; the
//! test fixtures (`tests/fixtures/plugins/*`, e.g. [`TAGGER`]) sit apart.
//! [`foreach_fixture!`] and [`foreach_plugin!`] call a macro once per
//! component name, which lets a test module refuse to compile while a
//! fixture has no test named after it.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The path of the component built from the crate `name` (a shipped plugin
/// or a test fixture, e.g. `"massive-router"` or `"wrong-world"`).
pub fn component(name: &str) -> Option<&'static str> {
    COMPONENTS
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, path)| *path)
}

/// The component `bytes` with a custom section (`mdp-variant`, holding
/// `tag`) appended: other bytes, hence another fingerprint, and the same
/// behaviour. Tests and benchmarks deploy such variants as new versions.
pub fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"mdp-variant";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}
