//! One test per guest fixture (`tests/fixtures/plugins/*`), named after it:
//! `foreach_fixture!` lists every fixture the artifacts crate built, and
//! `assert_test_exists!` refers to the test of each, so a fixture added
//! without a test here does not compile. The fixtures' behaviour is tested
//! in the areas that use them (`sandbox`, `hot_reload`, `plugin_runtime`);
//! these check that each one is the component its tests expect.

use crate::support;

use std::sync::Arc;

use mdp::plugin::{LoadOptions, Plugin, PluginError, Runtime, RuntimeConfig};

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
mdp_test_artifacts::foreach_fixture!(assert_test_exists);

/// Load a built component under the default limits.
async fn load(path: &str) -> Result<Arc<Plugin>, PluginError> {
    let services = support::embedded_services(0);
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let bytes = std::fs::read(path).expect("read the built fixture");
    Plugin::load(&runtime, bytes, LoadOptions::default(), &services).await
}

#[tokio::test]
async fn hostile() {
    load(mdp_test_artifacts::HOSTILE)
        .await
        .expect("the hostile fixture is an analyzer component");
}

#[tokio::test]
async fn tagger() {
    load(mdp_test_artifacts::TAGGER)
        .await
        .expect("the tagger fixture is an analyzer component");
}

#[tokio::test]
async fn wrong_world() {
    let err = load(mdp_test_artifacts::WRONG_WORLD)
        .await
        .expect_err("a component of another world is refused");
    assert!(matches!(err, PluginError::WrongWorld(_)), "{err}");
}

#[tokio::test]
async fn analyzer_v1_0() {
    let plugin = load(mdp_test_artifacts::ANALYZER_V1_0)
        .await
        .expect("a component of the frozen 1.0.0 WIT loads on a 1.x host");
    assert_eq!(plugin.info.name, "analyzer-v1-0");
}
