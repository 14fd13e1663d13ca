//! mdp: a market-data platform host whose analyzers are sandboxed
//! WebAssembly components.
//!
//! Data flows feed → [`queue`] → processor ([`process`]) → analyzer
//! ([`plugin`]) → effects applied to the [`store`] → pub/sub → scanners
//! ([`scan`]) and the widget server ([`widgets`]).

pub mod backoff;
pub mod cli;
pub mod event;
pub mod feed;
#[doc(hidden)]
pub mod fuzz;
pub mod plugin;
pub mod process;
pub mod queue;
pub mod refdata;
pub mod scan;
pub mod secret;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod widgets;
