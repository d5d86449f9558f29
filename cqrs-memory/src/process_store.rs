use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{LoadedProcess, ProcessRecord, ProcessStore, Result, StoredCommand, process_conflict};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

#[derive(Debug, Clone)]
struct Stored {
    record: ProcessRecord,
    pending: Vec<StoredCommand>,
    saved: u64,
}

impl Stored {
    fn loaded(&self) -> LoadedProcess {
        LoadedProcess {
            record: self.record.clone(),
            pending: self.pending.clone(),
        }
    }
}

/// An in-memory process store: each process's state and undispatched commands live in one map
/// entry, so a save writes both atomically.
#[derive(Debug, Clone, Default)]
pub struct MemoryProcessStore {
    processes: Arc<DashMap<(String, Uuid), Stored>>,
    keys: Arc<DashMap<(String, String), Vec<Uuid>>>,
    saves: Arc<AtomicU64>,
}

impl MemoryProcessStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ProcessStore for MemoryProcessStore {
    async fn load(&self, process_type: &str, id: Uuid) -> Result<Option<LoadedProcess>> {
        Ok(self
            .processes
            .get(&(process_type.to_owned(), id))
            .map(|p| p.loaded()))
    }

    async fn find_by_key(
        &self,
        process_type: &str,
        key: &str,
        include_completed: bool,
    ) -> Result<Option<LoadedProcess>> {
        let ids = match self.keys.get(&(process_type.to_owned(), key.to_owned())) {
            Some(ids) => ids.clone(),
            None => return Ok(None),
        };
        let candidates: Vec<Stored> = ids
            .into_iter()
            .filter_map(|id| {
                self.processes
                    .get(&(process_type.to_owned(), id))
                    .map(|p| p.clone())
            })
            .filter(|p| p.record.key.as_deref() == Some(key))
            .collect();
        let latest = |completed: bool| {
            candidates
                .iter()
                .filter(|p| p.record.completed == completed)
                .max_by_key(|p| p.saved)
                .map(Stored::loaded)
        };
        Ok(latest(false).or_else(|| if include_completed { latest(true) } else { None }))
    }

    async fn save(&self, mut record: ProcessRecord, commands: Vec<StoredCommand>) -> Result<i64> {
        let expected = record.version;
        let saved = self.saves.fetch_add(1, Ordering::SeqCst);
        let (process_type, id, key) = (record.process_type.clone(), record.id, record.key.clone());
        match self.processes.entry((process_type.clone(), id)) {
            Entry::Occupied(mut occupied) => {
                let stored = occupied.get_mut();
                if stored.record.version != expected {
                    return Err(process_conflict(
                        &record.process_type,
                        record.id,
                        expected,
                        stored.record.version,
                    ));
                }
                record.version = expected + 1;
                stored.record = record;
                stored.pending.extend(commands);
                stored.saved = saved;
            }
            Entry::Vacant(vacant) => {
                if expected != -1 {
                    return Err(process_conflict(&record.process_type, record.id, expected, -1));
                }
                record.version = 0;
                vacant.insert(Stored {
                    record,
                    pending: commands,
                    saved,
                });
            }
        }
        if let Some(key) = key {
            let mut ids = self.keys.entry((process_type, key)).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(expected + 1)
    }

    async fn remove_command(&self, process_type: &str, id: Uuid, message_id: &str) -> Result<()> {
        if let Some(mut stored) = self.processes.get_mut(&(process_type.to_owned(), id)) {
            stored.pending.retain(|c| c.message_id != message_id);
        }
        Ok(())
    }

    async fn with_pending(&self, stored_before: DateTime<Utc>, limit: usize) -> Result<Vec<(String, Uuid)>> {
        Ok(self
            .processes
            .iter()
            .filter(|p| p.pending.first().is_some_and(|c| c.stored_at < stored_before))
            .take(limit)
            .map(|p| (p.record.process_type.clone(), p.record.id))
            .collect())
    }
}
