//! The analyzer plugin runtime: one wasmtime engine per process, components
//! loaded from files and type-checked against `wit/analyzer.wit`, batches in,
//! effects out, with memory and time limits and crash isolation.
//!
//! - [`Runtime`]: engine (pooling allocator, epochs ticked by an OS thread),
//!   linker, compiled-artifact cache.
//! - [`Plugin`]: a loaded component (`InstancePre` + `describe`).
//! - [`Instance`]: one live store; a fault poisons it.
//! - [`Worker`]: batches with retry and poison-event isolation.
//! - [`effects`]: effects → store writes, capabilities enforced.

pub mod artifact_cache;
mod batch;
pub mod bindings;
mod capability;
mod clock;
pub mod convert;
pub mod effects;
pub mod embedded;
mod engine;
pub mod golden;
mod host_state;
mod instance;
pub mod limiter;
mod live;
pub mod manifest;
mod reference;
pub mod registry;
pub mod scaffold;
pub mod share;
mod worker;

pub use artifact_cache::{ArtifactCache, ArtifactCacheError, CacheKey};
pub use batch::EventBatch;
pub use capability::{Capabilities, Denied};
pub use clock::{Clock, FixedClock, SystemClock};
pub use engine::{Compiled, Runtime, RuntimeConfig, wasmtime_version};
pub use host_state::{HostFault, HostServices, HostState};
pub use instance::{
    CallFault, DEFAULT_ISOLATION_CALLS, DEFAULT_ISOLATION_TIME, DEFAULT_MAX_EFFECTS,
    DEFAULT_MAX_OUTPUT_MIB, DEFAULT_WALL_BUDGET, Instance, Limits, LoadOptions, Plugin, PluginInfo,
};
pub use live::{LiveError, LiveWorker};
pub use reference::{
    ReferenceData, ReferenceFault, ReferenceKind, StoreReference, market_status_named,
};
pub use registry::{Generation, LoadOutcome, PluginSlot, Registry, WatchHandle};
pub use worker::{BatchError, BatchOutput, Worker};

/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "mdp:analyzer@1.1.0";

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not WebAssembly.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// The bytes are a core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build for wasm32-wasip2 or run `wasm-tools component new`"
    )]
    NotAComponent,
    /// Compilation failed.
    #[error("cannot compile component: {0}")]
    Compile(String),
    /// The component does not implement the analyzer world.
    #[error("component does not implement {WIT_VERSION} world `analyzer`: {0}")]
    WrongWorld(String),
    /// Instantiation failed.
    #[error("cannot instantiate component: {0}")]
    Instantiate(String),
    /// `describe` trapped.
    #[error("`describe` failed: {0}")]
    Describe(String),
    /// The compiled-artifact cache could not be set up as configured.
    #[error("{0}")]
    ArtifactCache(String),
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}
