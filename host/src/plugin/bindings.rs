#![allow(missing_docs)] // The items `bindgen!` generates carry the WIT comments, not rustdoc.
//! The one `bindgen!` site: host-side bindings of `wit/analyzer.wit`.
//!
//! Imports are async (cache reads go to Redis) and trappable: a host
//! infrastructure failure aborts the call as a [`super::HostFault`] instead
//! of surfacing as an error the plugin would have to handle.

wasmtime::component::bindgen!({
    world: "analyzer",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use mdp::analyzer::types::{
    AggWindow, Aggregate, Body, Kinds, Luld, Market, MarketStatus, Quote, Raw, ReferenceError,
    Trade,
};
