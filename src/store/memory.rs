//! An in-memory store: the reference implementation of the contract, and a
//! test double with fault injection (down, slow, scripted errors).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};
use crate::secret::SecretValue;

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<RemoteName, RemoteEntry>>,
    versions: AtomicU64,
    down: AtomicBool,
    delay: Mutex<Option<Duration>>,
    scripted: Mutex<VecDeque<StoreError>>,
    scripted_writes: Mutex<VecDeque<StoreError>>,
    writes: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call fails with `Unavailable` while down.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every call sleeps this long first.
    pub fn set_delay(&self, delay: Option<Duration>) {
        *lock(&self.delay) = delay;
    }

    /// The next calls fail with these errors, in order.
    pub fn fail_next(&self, error: StoreError) {
        lock(&self.scripted).push_back(error);
    }

    /// The next writes (creates and puts) fail with these errors, in order;
    /// reads still work.
    pub fn fail_next_write(&self, error: StoreError) {
        lock(&self.scripted_writes).push_back(error);
    }

    fn enter_write(&self) -> Result<(), StoreError> {
        match lock(&self.scripted_writes).pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Number of successful writes (creates and puts).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Puts an entry in place directly (e.g. one not owned by us).
    pub fn seed(&self, name: &str, payload: &[u8], tags: BTreeMap<String, String>) {
        let version = self.next_version();
        lock(&self.entries).insert(
            RemoteName::new_unchecked(name),
            RemoteEntry {
                payload: SecretValue::new(payload.to_vec()),
                tags,
                version: Some(version),
            },
        );
    }

    pub fn get(&self, name: &str) -> Option<RemoteEntry> {
        lock(&self.entries)
            .get(&RemoteName::new_unchecked(name))
            .cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn next_version(&self) -> String {
        format!("v{}", self.versions.fetch_add(1, Ordering::SeqCst) + 1)
    }

    async fn enter(&self) -> Result<(), StoreError> {
        let delay = *lock(&self.delay);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "connection refused (memory store is down)".into(),
            ));
        }
        if let Some(e) = lock(&self.scripted).pop_front() {
            return Err(e);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn all_tags(owner: &Ownership, options: &WriteOptions) -> BTreeMap<String, String> {
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    tags
}

#[async_trait]
impl SecretStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    /// One lock around check and insert.
    fn atomic_create(&self) -> bool {
        true
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        self.enter().await?;
        Ok(lock(&self.entries).get(name).cloned())
    }

    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        self.enter().await?;
        self.enter_write()?;
        let mut entries = lock(&self.entries);
        if let Some(existing) = entries.get(name) {
            return Ok(CreateOutcome::Exists(existing.clone()));
        }
        let version = self.next_version();
        entries.insert(
            name.clone(),
            RemoteEntry {
                payload: payload.clone(),
                tags: all_tags(owner, options),
                version: Some(version.clone()),
            },
        );
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(CreateOutcome::Created {
            version: Some(version),
        })
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        self.enter().await?;
        self.enter_write()?;
        let version = self.next_version();
        lock(&self.entries).insert(
            name.clone(),
            RemoteEntry {
                payload: payload.clone(),
                tags: all_tags(owner, options),
                version: Some(version.clone()),
            },
        );
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(Some(version))
    }
}
