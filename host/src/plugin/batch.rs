//! [`EventBatch`]: the events one analyzer call receives, with the exact
//! texts they were decoded from.

/// Events a processor or scanner hands its analyzer, as one batch: the
/// plugin events and the exact texts `Body::Input` refers to.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// Events for the plugin.
    pub events: Vec<super::bindings::Event>,
    /// The JSON text of each event.
    pub texts: Vec<String>,
}

impl EventBatch {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
    /// The texts as shared strings: every effect whose body is an input
    /// refers to one of these instead of copying it.
    pub fn shared_texts(&self) -> Vec<std::sync::Arc<str>> {
        self.texts.iter().map(|t| t.as_str().into()).collect()
    }
}
