//! The integration tests, one binary (each test binary links wasmtime and
//! cranelift again): one module per area, run one area by name filter, e.g.
//! `cargo test -p mdp --test all feeds::`. The OpenTelemetry export is its
//! own binary (`tests/otel.rs`): it needs the `otel` cargo feature.
//!
//! The modules share one process, so what a test sets for the whole process
//! must not change what another one sees: `hot_reload` installs a global
//! tracing subscriber only to show its logs (`try_init`, output captured per
//! test), `sandbox` captures logs with a subscriber scoped to its own thread
//! and reads the Prometheus recorder's samples of its own plugin only, and
//! `tls` adds its throwaway CA to the trusted roots (the plaintext brokers
//! of every other test do not use them). No test changes the environment
//! or the working directory.
//!
//! A test reads best as one scenario from set-up to assertions, so the
//! workspace's function-length lint does not apply here.
#![allow(clippy::too_many_lines)]

#[path = "../support/mod.rs"]
mod support;

mod analyzer_goldens;
mod author_path;
mod browser;
mod cli_config;
mod deploy;
mod feeds;
mod fixtures;
mod fuzz;
mod hot_reload;
mod layout;
mod mdp_up;
mod minute_bars;
mod plugin_cli;
mod plugin_runtime;
mod polyglot;
mod polyglot_news;
mod processor;
mod queue_conformance;
mod replay;
mod sandbox;
mod scaffold;
mod scanner_and_news_analyzers;
mod scanner_and_reference;
mod secrets;
mod store_conformance;
mod tls;
mod topology;
mod widgets;
