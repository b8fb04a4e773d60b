//! The Redis store's limits records (Q1-Q3): `Plimits:SUBJECT`, a JSON
//! string, deleted when a record is cleared.

use async_trait::async_trait;

use super::{encode, RedisStore};
use crate::store::{LimitStore, LimitSubject, LimitsRecord, StoreResult};

#[async_trait]
impl LimitStore for RedisStore {
    async fn put_limits(&self, subject: &LimitSubject, rec: &LimitsRecord) -> StoreResult<()> {
        let key = self.k("limits", &subject.store_id());
        if rec.is_empty() {
            self.q::<()>(redis::cmd("DEL").arg(&key)).await
        } else {
            self.q::<()>(redis::cmd("SET").arg(&key).arg(encode(rec)?))
                .await
        }
    }

    async fn limits(&self, subject: &LimitSubject) -> StoreResult<Option<LimitsRecord>> {
        self.get_json(&self.k("limits", &subject.store_id())).await
    }
}
