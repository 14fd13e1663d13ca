//! Default capabilities: a plugin writes only its own keys, read prefixes
//! scope cache reads.

use super::*;

/// A manifest without `[capabilities]` no longer means "write anything": the
/// plugin may write only under its own name.
#[tokio::test]
async fn without_capabilities_a_plugin_writes_only_its_own_keys() {
    let dir = plugin_dir_with_hostile(&format!("{HOSTILE}[config]\nmode = \"trap\"\n"));
    let registry = Registry::open(runtime(), services(), dir.path())
        .await
        .unwrap();
    let generation = registry.slot("hostile").unwrap().current().unwrap();
    let caps = &generation.plugin.capabilities;
    assert!(caps.check_key("hostile:x").is_ok());
    assert!(caps.check_key("echo:A").is_err());
    assert!(caps.check_key("stocks:trades:A").is_err());
    assert!(caps.check_channel("quote:A").is_err());
    // Its echo effects are refused when resolved.
    let mut worker = Worker::new(generation.plugin.clone(), services(), vec![]);
    let texts = [trade("A")];
    let out = worker.analyze(&events(&texts)).await.unwrap();
    let resolved = mdp::plugin::effects::resolve(&out.effects, &texts, caps);
    assert!(resolved.writes.is_empty());
    assert_eq!(resolved.denied.len(), 1);
}

/// `read_prefixes` scopes the cache imports: a read outside sees nothing.
#[tokio::test]
async fn read_prefixes_scope_cache_reads() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    for key in ["SECRET", "hostile:mine"] {
        store
            .apply(
                &[mdp::store::Write::Set {
                    key: key.into(),
                    value: "\"value\"".into(),
                    ttl: None,
                }],
                false,
            )
            .await
            .unwrap();
    }
    let dir = plugin_dir_with_hostile(&format!(
        "{HOSTILE}[capabilities]\nkey_prefixes = [\"echo:\"]\nread_prefixes = [\"hostile:\"]\n[config]\nmode = \"read\"\n"
    ));
    let services = services_over(store);
    let registry = Registry::open(runtime(), services.clone(), dir.path())
        .await
        .unwrap();
    let plugin = registry.slot("hostile").unwrap().current().unwrap();
    let mut worker = Worker::new(
        plugin.plugin.clone(),
        services,
        plugin.manifest.config_pairs(),
    );
    let out = worker
        .analyze(&events(&[trade("SECRET"), trade("hostile:mine")]))
        .await
        .unwrap();
    let seen: Vec<String> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Put(p) => Some(format!("{}={:?}", p.key, p.value)),
            _ => None,
        })
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("echo:SECRET=") && seen[0].contains("null"),
        "{seen:?}"
    );
    assert!(seen[1].contains("value"), "{seen:?}");
}

// ---------------------------------------------------------------------------
// 5. Probation blames only the plugin's own faults
