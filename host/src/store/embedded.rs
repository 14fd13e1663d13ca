//! TEMP stub for type-checking (replaced by the store branch).
use super::*;
use std::sync::Arc;
/// stub
#[derive(Default)]
pub struct EmbeddedStore;
impl EmbeddedStore {
    /// stub
    pub fn new() -> Self {
        EmbeddedStore
    }
}
#[async_trait]
impl Store for EmbeddedStore {
    async fn apply(&self, _: &[Write], _: bool) -> StoreResult<()> {
        todo!()
    }
    async fn get(&self, _: &str) -> StoreResult<Option<String>> {
        todo!()
    }
    async fn get_many(&self, _: &[String]) -> StoreResult<Vec<Option<String>>> {
        todo!()
    }
    async fn ztop(&self, _: &str, _: u32) -> StoreResult<Vec<(String, f64)>> {
        todo!()
    }
    async fn hgetall(&self, _: &str) -> StoreResult<Vec<(String, String)>> {
        todo!()
    }
    async fn lrange(&self, _: &str, _: i64, _: i64) -> StoreResult<Vec<String>> {
        todo!()
    }
    async fn set_nx_px(&self, _: &str, _: &str, _: u64) -> StoreResult<bool> {
        todo!()
    }
    async fn del_if_eq(&self, _: &str, _: &str) -> StoreResult<bool> {
        todo!()
    }
    async fn scan_prefix(&self, _: &str) -> StoreResult<Vec<String>> {
        todo!()
    }
    async fn ttl(&self, _: &str) -> StoreResult<Option<u64>> {
        todo!()
    }
    async fn subscribe(&self, _: &[Topic]) -> StoreResult<Subscription> {
        todo!()
    }
}
/// stub
pub async fn open(_url: &str) -> anyhow::Result<Arc<dyn Store>> {
    todo!()
}
