//! Memory: the limit is the sum of an instance's memories, the pool share,
//! and a memory bomb stopped at the instance total.

use super::*;

/// A component of `modules` core modules (each instantiated) with
/// `memories` linear memories of `mib` MiB each.
fn component_with_memories(modules: u32, memories: u32, mib: u64) -> Vec<u8> {
    let mut component = wasm_encoder::Component::new();
    for _ in 0..modules {
        let mut section = wasm_encoder::MemorySection::new();
        for _ in 0..memories {
            section.memory(wasm_encoder::MemoryType {
                minimum: mib * 16,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        let mut module = wasm_encoder::Module::new();
        module.section(&section);
        component.section(&wasm_encoder::ModuleSection(&module));
    }
    let mut instances = wasm_encoder::InstanceSection::new();
    for m in 0..modules {
        instances.instantiate(m, [] as [(&str, wasm_encoder::ModuleArg); 0]);
    }
    component.section(&instances);
    component.finish()
}

/// Two memories of 10 MiB (one per core module: a module with several
/// memories is refused by the engine's pool) are each within a 16 MiB limit
/// but not together: the instance's memory limit is their sum.
#[tokio::test]
async fn the_memory_limit_is_the_sum_of_an_instances_memories() {
    use mdp::plugin::limiter::MemoryBudget;
    let rt = runtime();
    if rt.pooling() {
        let refused =
            wasmtime::component::Component::new(rt.engine(), component_with_memories(1, 2, 1));
        assert!(refused.is_err(), "a module with two memories is refused");
    }
    let component =
        wasmtime::component::Component::new(rt.engine(), component_with_memories(2, 1, 10))
            .unwrap();
    let linker = wasmtime::component::Linker::<MemoryBudget>::new(rt.engine());
    let instantiate = |limit_mib: usize| {
        let per_memory = wasmtime::StoreLimitsBuilder::new()
            .memory_size(limit_mib << 20)
            .trap_on_grow_failure(true)
            .build();
        let mut store =
            wasmtime::Store::new(rt.engine(), MemoryBudget::new(per_memory, limit_mib << 20));
        store.limiter(|b| b);
        store.set_epoch_deadline(u64::MAX / 2);
        let (linker, component) = (linker.clone(), component.clone());
        async move {
            linker
                .instantiate_async(&mut store, &component)
                .await
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        }
    };
    let err = instantiate(16).await.expect_err("20 MiB in all, over 16");
    assert!(err.contains(mdp::plugin::limiter::GROWTH_REFUSED), "{err}");
    instantiate(32).await.expect("within 32 MiB");
}

/// One plugin cannot take every instance of the shared pool: past its
/// `instances_per_plugin` share it is refused, naming the setting, and other
/// plugins still get theirs.
#[tokio::test]
async fn a_plugin_cannot_exhaust_the_instance_pool_for_the_others() {
    let rt = Runtime::new(RuntimeConfig {
        instances_per_plugin: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let hostile = load_on(&rt, "hostile", Limits::default()).await;
    let a = mdp::plugin::Instance::new(&hostile, &services())
        .await
        .unwrap();
    let _b = mdp::plugin::Instance::new(&hostile, &services())
        .await
        .unwrap();
    let err = mdp::plugin::Instance::new(&hostile, &services())
        .await
        .err()
        .expect("over its share");
    assert!(err.to_string().contains("instances_per_plugin"), "{err}");
    others_keep_serving(&rt).await;
    drop(a);
    assert!(
        mdp::plugin::Instance::new(&hostile, &services())
            .await
            .is_ok()
    );
}

/// The memory limit is the instance's total: a memory bomb is stopped at it
/// with a clear reason, and the plugin's other events are served.
#[tokio::test]
async fn a_memory_bomb_is_stopped_at_the_instance_total() {
    let rt = runtime();
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut worker = hostile(&rt, "memory-bomb", &[], limits).await;
    let texts = [trade("A"), trade("BOMB")];
    let out = worker.analyze(&events(&texts)).await.expect("batch");
    assert_eq!(puts(&out), vec!["echo:A"]);
    let rejects = rejects(&out);
    assert!(
        rejects[0].1.contains("memory limit of 16 MiB"),
        "{rejects:?}"
    );
    others_keep_serving(&rt).await;
}
