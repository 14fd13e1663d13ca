//! mdp: a market-data platform host whose analyzers are sandboxed
//! WebAssembly components.
//!
//! Data flows feed → [`queue`] → processor ([`role`]) → analyzer ([`plugin`])
//! → effects applied to the [`store`] → pub/sub → scanners and the widget
//! server ([`widgets`]).

pub mod backoff;
pub mod cli;
pub mod event;
pub mod feed;
#[doc(hidden)]
pub mod fuzz;
pub mod plugin;
pub mod queue;
pub mod refdata;
pub mod role;
pub mod secret;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod widgets;
