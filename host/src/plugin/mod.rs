//! The analyzer plugin runtime: one wasmtime engine, components loaded from
//! files, batches in, effects out, with limits and crash isolation.
