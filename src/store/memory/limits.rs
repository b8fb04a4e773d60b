//! The memory store's limits records (Q1-Q3): a map beside the others,
//! under the same lock.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{LimitStore, LimitSubject, LimitsRecord, StoreResult};

#[async_trait]
impl LimitStore for MemoryStore {
    async fn put_limits(&self, subject: &LimitSubject, rec: &LimitsRecord) -> StoreResult<()> {
        let mut g = self.lock();
        if rec.is_empty() {
            g.limits.remove(&subject.store_id());
        } else {
            g.limits.insert(subject.store_id(), *rec);
        }
        Ok(())
    }

    async fn limits(&self, subject: &LimitSubject) -> StoreResult<Option<LimitsRecord>> {
        Ok(self.lock().limits.get(&subject.store_id()).copied())
    }
}
