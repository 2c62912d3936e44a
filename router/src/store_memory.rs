//! The memory store: nothing outlives the owner. Loads start rooms afresh,
//! and the owner never waits for a write (it does not ask for any).

use proto::internal::StoreFence;

use crate::history::HistoryConfig;
use crate::store::{Append, Loaded, Store, StoreError};

#[derive(Debug)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    fn load(&self, _room: String, epoch: String, _: HistoryConfig) -> bus::BoxFuture<'_, Result<Loaded, StoreError>> {
        Box::pin(async move { Ok(Loaded { epoch, ..Loaded::default() }) })
    }

    fn append(&self, _: Append) -> bus::BoxFuture<'_, Result<StoreFence, StoreError>> {
        Box::pin(async { Ok(StoreFence::default()) })
    }

    fn save_read(&self, _: String, _: String, _: u64) -> bus::BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
