//! The contract every store backend satisfies. Each backend's test calls
//! `contract::run` with a fresh client; here: the in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::contract;
use secret_santa::store::memory::MemoryStore;

#[tokio::test]
async fn memory_store_satisfies_the_contract() {
    contract::run(Arc::new(MemoryStore::new()), "contract").await;
}
