//! TEMP stub
use super::*;
use std::sync::Arc;
/// stub
#[derive(Default)]
pub struct EmbeddedQueue;
impl EmbeddedQueue {
    /// stub
    pub fn new() -> Self {
        EmbeddedQueue
    }
}
#[async_trait]
impl Queue for EmbeddedQueue {
    async fn declare(&self, _: &QueueSpec) -> QueueResult<()> {
        todo!()
    }
    async fn publish(&self, _: &str, _: &[bytes::Bytes]) -> QueueResult<()> {
        todo!()
    }
    async fn consume(&self, _: &str, _: u16) -> QueueResult<Box<dyn Consumer>> {
        todo!()
    }
    async fn depth(&self, _: &str) -> QueueResult<u64> {
        todo!()
    }
}
/// stub
pub async fn open(_url: &str) -> anyhow::Result<Arc<dyn Queue>> {
    todo!()
}
