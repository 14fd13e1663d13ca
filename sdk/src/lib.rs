//! Rust SDK for mdp analyzer plugins.
//!
//! An analyzer implements [`Analyzer`] and exports it with
//! [`export_analyzer!`]. Built for `wasm32-wasip2` it becomes a component of
//! the `mdp:analyzer@1.1.0` world; built natively (plain `cargo test`) the
//! host imports are served by [`testing`]'s in-memory harness, so analyzers are
//! unit-tested without Wasm.
//!
//! ```
//! use mdp_sdk::prelude::*;
//!
//! /// Publishes every event it gets on `echo`, byte for byte.
//! struct Echo;
//!
//! impl Analyzer for Echo {
//!     fn describe() -> Info {
//!         mdp_sdk::info("echo", "0.1.0", Kinds::OTHER, 0)
//!     }
//!     fn init(_: Config, _: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
//!         Ok(Echo)
//!     }
//!     fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
//!         Ok((0..batch.len() as u32).map(|i| publish("echo", Body::Input(i))).collect())
//!     }
//! }
//! export_analyzer!(Echo);
//!
//! // Natively, the harness serves the host's imports: no Wasm needed to test.
//! let mut harness = mdp_sdk::testing::Harness::<Echo>::new();
//! harness.init(&[]).unwrap();
//! let news = Event::Other(Raw { kind: "news".into(), json: r#"{"title":"hi"}"#.into() });
//! let effects = harness.analyze(vec![news]).unwrap();
//! assert_eq!(effects, vec![publish("echo", Body::Input(0))]);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "analyzer",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_world_analyzer",
        default_bindings_module: "mdp_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub mod calendar;
mod config;
pub mod effects;
pub mod imports;
pub mod testing;
pub mod wire;

pub use bindings::mdp::analyzer::host::Level;
pub use bindings::mdp::analyzer::types::{
    AggWindow, Aggregate, AnalyzerError, Body, Effect, Event, Hset, Info, Kinds, Luld, Market,
    MarketStatus, Publish, Push, Put, Quote, Raw, ReferenceError, Reject, Trade, Zadd,
};
pub use config::Config;
pub use imports::{cache, host, reference};

/// Everything an analyzer usually needs, in one import.
pub mod prelude {
    pub use crate::effects::*;
    pub use crate::{
        AggWindow, Aggregate, Analyzer, AnalyzerError, Body, Config, Effect, Event, Info, Kinds,
        Level, Luld, Market, MarketStatus, Quote, Raw, ReferenceError, Trade, cache,
        export_analyzer, host, reference,
    };
}

/// An analyzer: created by `init`, fed batches, asked for a snapshot before a
/// hot reload replaces it.
pub trait Analyzer: Sized + 'static {
    /// Name, version, consumed kinds and state version. Must not fail.
    fn describe() -> Info;
    /// Create the analyzer from its manifest config, and the previous
    /// generation's snapshot when the state versions match.
    fn init(config: Config, state: Option<Vec<u8>>) -> Result<Self, AnalyzerError>;
    /// Analyze one batch; return the effects for the host to apply, in order.
    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError>;
    /// Serialize in-memory state for the next generation (default: none).
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// Build an [`Info`].
pub fn info(name: &str, version: &str, consumes: Kinds, state_version: u32) -> Info {
    Info {
        name: name.to_string(),
        version: version.to_string(),
        consumes,
        state_version,
    }
}

impl Event {
    /// The ticker symbol of a typed event (`None` for `other`).
    pub fn symbol(&self) -> Option<&str> {
        match self {
            Event::Trade(t) => Some(&t.symbol),
            Event::Quote(q) => Some(&q.symbol),
            Event::Aggregate(a) => Some(&a.symbol),
            Event::Luld(l) => Some(&l.symbol),
            Event::Other(_) => None,
        }
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
    }

    /// `init` export: create and keep the analyzer.
    pub fn init<A: Analyzer>(
        config: Vec<(String, String)>,
        state: Option<Vec<u8>>,
    ) -> Result<(), AnalyzerError> {
        let analyzer = A::init(Config::from(config), state)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(analyzer)));
        Ok(())
    }

    /// Run `f` on the live analyzer, or fail with `not-ready` before `init`.
    pub fn with<A: Analyzer, R>(
        f: impl FnOnce(&mut A) -> Result<R, AnalyzerError>,
    ) -> Result<R, AnalyzerError> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            match slot.as_mut().and_then(|a| a.downcast_mut::<A>()) {
                Some(analyzer) => f(analyzer),
                None => Err(AnalyzerError::NotReady("analyze called before init".into())),
            }
        })
    }
}

/// Export an [`Analyzer`] implementation as the plugin's `mdp:analyzer` world.
///
/// On non-Wasm targets this expands to nothing, so the same crate builds
/// natively for unit tests with [`testing::Harness`].
#[macro_export]
macro_rules! export_analyzer {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __MdpExport;
            impl $crate::bindings::Guest for __MdpExport {
                fn describe() -> $crate::Info {
                    <$ty as $crate::Analyzer>::describe()
                }
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                ) -> ::std::result::Result<(), $crate::AnalyzerError> {
                    $crate::__private::init::<$ty>(config, state)
                }
                fn analyze(
                    batch: ::std::vec::Vec<$crate::Event>,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Effect>, $crate::AnalyzerError>
                {
                    $crate::__private::with::<$ty, _>(|a| $crate::Analyzer::analyze(a, &batch))
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    $crate::__private::with::<$ty, _>(|a| Ok($crate::Analyzer::snapshot(a)))
                        .unwrap_or_default()
                }
            }
    $crate::bindings::__export_world_analyzer!(__MdpExport with_types_in $crate::bindings);
        };
    };
}
