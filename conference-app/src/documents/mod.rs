//! The read models' storage: JSON documents keyed by (model, key) with two optional index
//! columns, on SQLite (a file of its own beside the event store, so projections never contend
//! with appends for SQLite's write lock) or PostgreSQL (the event store's database).
//!
//! A projection writes through a [`UnitOfWork`]: its writes stay in memory, visible to its own
//! reads, until the projection saves its checkpoint; then the writes and the checkpoint commit
//! in one transaction. An event is therefore applied exactly once, whatever the point of a
//! crash (`DESIGN.md` guarantee 3). Every commit tells the waiting requests of this process
//! what it wrote and where its checkpoint got to (see `changes`); on PostgreSQL a commit is
//! also announced with `NOTIFY`, so the long polls of a `web` process wake when a `worker`
//! process commits.
//!
//! This module holds what both databases share (the statements, generations, the projections'
//! unit of work); `sqlite` and `postgres` run the statements, each its own way.

mod changes;
mod postgres;
mod sqlite;

pub use changes::DocumentWatch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cqrs_core::{CheckpointStore, Envelope, Error, ExpectedVersion, MessageHandler, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use changes::Changes;
use postgres::PostgresDocuments;
use sqlite::SqliteDocuments;

/// The database of the read models.
///
/// On SQLite, a file of its own, written through one connection (see [`sqlite`]): the
/// projections' commits queue in the process instead of colliding on SQLite's write lock, where
/// a loser sleeps in the busy handler for milliseconds at a time. Reads never wait for writes
/// (WAL). Every connection is used on the calling thread, sparing each statement two thread
/// hand-offs to and from a sqlx worker thread.
///
/// On PostgreSQL, the event store's database (see [`postgres`]).
#[derive(Debug, Clone)]
enum Db {
    Sqlite(Arc<SqliteDocuments>),
    Postgres(Arc<PostgresDocuments>),
}

/// Runs `$call` on the database of `$db` as `$dialect`: [`SqliteDocuments`] and
/// [`PostgresDocuments`] offer the same operations, each running the shared statements its own
/// way.
macro_rules! on_db {
    ($db:expr, $dialect:ident => $call:expr) => {
        match $db {
            Db::Sqlite($dialect) => $call,
            Db::Postgres($dialect) => $call,
        }
    };
}

/// The tables, created where missing, and their indexes brought up to date.
///
/// An index column is indexed only where it is set: every lookup asks for a value, and most
/// documents leave one column or both empty (a priced order and an order's seats use neither,
/// a draft order no second one, an admin order none until its seats are assigned), whose
/// entries no lookup ever read but every insert, and every write that moved the row, wrote.
/// Indexed in full before: each index is created under its new name before the old one goes,
/// so that lookups find an index all along.
const SCHEMA: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS rm_documents (
        model TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        ix1 TEXT,
        ix2 TEXT,
        PRIMARY KEY (model, key))",
    "CREATE INDEX IF NOT EXISTS rm_documents_ix1_set ON rm_documents (model, ix1) WHERE ix1 IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS rm_documents_ix2_set ON rm_documents (model, ix2) WHERE ix2 IS NOT NULL",
    "DROP INDEX IF EXISTS rm_documents_ix1",
    "DROP INDEX IF EXISTS rm_documents_ix2",
    "CREATE TABLE IF NOT EXISTS rm_checkpoints (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_generations (model TEXT PRIMARY KEY, generation BIGINT NOT NULL)",
];

const GET: &str = "SELECT doc, ix1, ix2 FROM rm_documents WHERE model = $1 AND key = $2";
// No `ORDER BY key` in the lookups: `find` puts the rows in key order itself. With it, SQLite
// walked the model's documents in key order through the primary key, checking each one's index
// column, instead of seeking `(model, ixN)`: 580 µs instead of 6 µs per lookup at 2,000
// payments, growing with every order.
const FIND_IX1: &str = "SELECT key, doc, ix1, ix2 FROM rm_documents WHERE model = $1 AND ix1 = $2";
const FIND_IX2: &str = "SELECT key, doc, ix1, ix2 FROM rm_documents WHERE model = $1 AND ix2 = $2";
const PUT: &str = "INSERT INTO rm_documents (model, key, doc, ix1, ix2) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (model, key) DO UPDATE SET doc = excluded.doc, ix1 = excluded.ix1, ix2 = excluded.ix2";
const DELETE: &str = "DELETE FROM rm_documents WHERE model = $1 AND key = $2";
const LOAD_GENERATIONS: &str = "SELECT model, generation FROM rm_generations";
const SET_GENERATION: &str = "INSERT INTO rm_generations (model, generation) VALUES ($1, $2)
    ON CONFLICT (model) DO UPDATE SET generation = excluded.generation";
const DROP_MODEL: &str = "DELETE FROM rm_documents WHERE model = $1";
const DROP_CHECKPOINT: &str = "DELETE FROM rm_checkpoints WHERE name = $1";
const DUMP: &str = "SELECT key, doc FROM rm_documents WHERE model = $1 ORDER BY key";
const LOAD_CHECKPOINT: &str = "SELECT position FROM rm_checkpoints WHERE name = $1";
const INSERT_CHECKPOINT: &str = "INSERT INTO rm_checkpoints (name, position) VALUES ($1, $2)
    ON CONFLICT (name) DO NOTHING";
const ADVANCE_CHECKPOINT: &str = "UPDATE rm_checkpoints SET position = $2 WHERE name = $1 AND position = $3";

/// Which index column a lookup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Index {
    /// The first index column.
    One,
    /// The second index column.
    Two,
}

/// A document as stored: its JSON and its index values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    doc: String,
    ix1: Option<String>,
    ix2: Option<String>,
}

impl Row {
    /// A row for `doc` with its index values.
    ///
    /// # Errors
    /// When `doc` does not serialize.
    pub fn new(doc: &impl Serialize, ix1: Option<String>, ix2: Option<String>) -> Result<Self> {
        Ok(Self {
            doc: serde_json::to_string(doc).map_err(Error::permanent)?,
            ix1,
            ix2,
        })
    }

    fn index(&self, index: Index) -> Option<&str> {
        match index {
            Index::One => self.ix1.as_deref(),
            Index::Two => self.ix2.as_deref(),
        }
    }

    fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.doc).map_err(Error::permanent)
    }
}

/// Writes not committed yet: `None` deletes.
type Writes = HashMap<(String, String), Option<Row>>;

/// The writes of a projection between two checkpoints.
#[derive(Debug, Default)]
struct Overlay {
    /// Writes of events handled since the last checkpoint.
    committed: Writes,
    /// Writes of the event being handled.
    current: Writes,
    /// Rows this unit of work has committed, as the database holds them for as long as no
    /// other runner moves the projection's checkpoint (a projection's models are written by it
    /// alone): a projection reads the documents it wrote without a query. Forgotten when the
    /// checkpoint moved under it, and when it holds [`Overlay::STORED_ROWS`].
    stored: Writes,
    /// What lookups by index found, by model, then index and value: the rows the database
    /// holds, kept up to date with the writes this unit commits and trusted as long as
    /// [`Overlay::stored`] is. A projection that looks up the same rows for event after event
    /// (a conference's seat types, for each reservation) reads them once.
    found: HashMap<String, HashMap<(Index, String), Found>>,
    /// Bumped whenever this unit commits or forgets what it stored and found: a lookup read
    /// from the database before is not remembered.
    epoch: u64,
}

/// The rows a lookup by index found, by key.
type Found = std::collections::BTreeMap<String, Row>;

/// Applies the write of `row` (`None`: a delete) under `key` to `rows`, the rows of a model
/// whose `index` column is `value`: a row written with another value, or deleted, leaves them.
fn apply(rows: &mut Found, key: &str, row: Option<&Row>, index: Index, value: &str) {
    match row {
        Some(row) if row.index(index) == Some(value) => {
            rows.insert(key.to_owned(), row.clone());
        }
        _ => {
            rows.remove(key);
        }
    }
}

impl Overlay {
    /// The most rows [`Overlay::stored`] keeps.
    const STORED_ROWS: usize = 16_384;

    fn get(&self, id: &(String, String)) -> Option<&Option<Row>> {
        self.current
            .get(id)
            .or_else(|| self.committed.get(id))
            .or_else(|| self.stored.get(id))
    }

    /// The most lookups [`Overlay::found`] keeps.
    const FOUND_LOOKUPS: usize = 1_024;

    /// `writes` committed: from now on they are what the database holds.
    fn stored(&mut self, writes: Writes) {
        if self.stored.len() + writes.len() > Self::STORED_ROWS {
            self.stored.clear();
        }
        for ((model, key), row) in &writes {
            for ((index, value), rows) in self.found.get_mut(model).into_iter().flatten() {
                apply(rows, key, row.as_ref(), *index, value);
            }
        }
        self.stored.extend(writes);
        self.epoch += 1;
    }

    /// Another runner may have written: nothing stored or found is trusted any longer.
    fn forget(&mut self) {
        self.stored.clear();
        self.found.clear();
        self.epoch += 1;
    }

    /// What a lookup by index found, if this unit remembers it.
    fn lookup(&self, model: &str, index: Index, value: &str) -> Option<&Found> {
        self.found.get(model)?.get(&(index, value.to_owned()))
    }

    /// What a lookup by index read from the database at `epoch`.
    fn found(&mut self, epoch: u64, model: &str, index: Index, value: &str, rows: &Found) {
        if epoch != self.epoch {
            return;
        }
        if self.found.values().map(HashMap::len).sum::<usize>() >= Self::FOUND_LOOKUPS {
            self.found.clear();
        }
        self.found
            .entry(model.to_owned())
            .or_default()
            .insert((index, value.to_owned()), rows.clone());
    }
}

/// The read models' documents.
///
/// Each model has a *generation*: a rebuild writes a new generation beside the one that serves,
/// then switches every process to it (see [`switch_generation`](Self::switch_generation)).
/// Generation 0 is stored under the model's name, generation `n` under `<model>@<n>`.
#[derive(Debug, Clone)]
pub struct Documents {
    db: Db,
    changes: Arc<Changes>,
    overlay: Option<Arc<Mutex<Overlay>>>,
    /// Model → the generation that serves, shared by the clones in this process.
    generations: Arc<RwLock<HashMap<String, i64>>>,
    /// Generations fixed for this handle (a rebuild writing a new generation).
    pinned: Option<Arc<HashMap<String, i64>>>,
}

/// The name a model's generation is stored under.
pub fn physical_name(model: &str, generation: i64) -> String {
    if generation == 0 {
        model.to_owned()
    } else {
        format!("{model}@{generation}")
    }
}

impl Documents {
    /// The documents in the SQLite file `path`, created if missing.
    ///
    /// # Errors
    /// When the file cannot be opened or the tables created.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let db = SqliteDocuments::open(path, &SCHEMA)?;
        Self::create(Db::Sqlite(Arc::new(db)), Changes::default()).await
    }

    /// The documents in the PostgreSQL database at `url`, in `schema`.
    ///
    /// # Errors
    /// When the database cannot be reached or the tables created.
    pub async fn connect_postgres(url: &str, schema: &str) -> Result<Self> {
        let db = Arc::new(PostgresDocuments::connect(url, schema).await?);
        // Every process's commit is announced to every other, so documents read can be kept
        // until an announcement names them.
        let documents = Self::create(Db::Postgres(Arc::clone(&db)), Changes::caching()).await?;
        // Commits of the projections of other processes wake this process's long polls.
        db.listen(Arc::clone(&documents.changes)).await?;
        Ok(documents)
    }

    /// The documents in the PostgreSQL database at `url`, in `schema`, for a process that
    /// does not listen to the other processes' commits: every read goes to the database, and
    /// a [`watch`](Self::watch) wakes only on this process's own commits. For one-shot
    /// commands and the load generator, whose listening connection's backend would otherwise
    /// be woken by every commit of every projection.
    ///
    /// # Errors
    /// When the database cannot be reached or the tables created.
    pub async fn connect_postgres_unlistening(url: &str, schema: &str) -> Result<Self> {
        let db = Arc::new(PostgresDocuments::connect(url, schema).await?);
        Self::create(Db::Postgres(db), Changes::default()).await
    }

    /// The documents of `db`, whose tables exist, with what this process knows of commits.
    /// Documents read are cached only where every commit is heard of (`Changes::caching`): on
    /// PostgreSQL, when listening; never on SQLite, where another process's commit to the
    /// file (the load tool, a rebuild) is not announced, and reads run in the process anyway.
    async fn create(db: Db, changes: Changes) -> Result<Self> {
        let documents = Self {
            db,
            changes: Arc::new(changes),
            overlay: None,
            generations: Arc::new(RwLock::new(HashMap::new())),
            pinned: None,
        };
        documents.refresh_generations().await?;
        Ok(documents)
    }

    /// The generation of `model` that this handle reads and writes.
    pub fn generation(&self, model: &str) -> i64 {
        if let Some(generation) = self.pinned.as_ref().and_then(|p| p.get(model)) {
            return *generation;
        }
        let generations = self
            .generations
            .read()
            .expect("the generations lock is never poisoned");
        generations.get(model).copied().unwrap_or(0)
    }

    fn physical(&self, model: &str) -> String {
        physical_name(model, self.generation(model))
    }

    /// Reads which generation of each model serves (other processes may have switched).
    /// Returns whether anything changed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn refresh_generations(&self) -> Result<bool> {
        let rows = on_db!(&self.db, db => db.generations().await?);
        let fresh: HashMap<String, i64> = rows.into_iter().collect();
        let mut generations = self
            .generations
            .write()
            .expect("the generations lock is never poisoned");
        let changed = *generations != fresh;
        *generations = fresh;
        drop(generations);
        if changed {
            // Waiters read other checkpoints now.
            self.changes.forget();
        }
        Ok(changed)
    }

    /// A handle that reads and writes the given generations of these models, whatever serves.
    pub fn pinned(&self, generations: impl IntoIterator<Item = (String, i64)>) -> Self {
        Self {
            pinned: Some(Arc::new(generations.into_iter().collect())),
            overlay: None,
            ..self.clone()
        }
    }

    /// Makes `generation` of `models` the one that serves, in one transaction. This process
    /// switches at once; the others at their next [`refresh_generations`](Self::refresh_generations).
    ///
    /// # Errors
    /// Database failures.
    pub async fn switch_generation(&self, models: &[&str], generation: i64) -> Result<()> {
        on_db!(&self.db, db => db.set_generation(models, generation).await?);
        let mut generations = self
            .generations
            .write()
            .expect("the generations lock is never poisoned");
        for model in models {
            generations.insert((*model).to_owned(), generation);
        }
        drop(generations);
        self.changes.forget();
        Ok(())
    }

    /// Deletes every document of one generation of `model`; returns how many.
    ///
    /// # Errors
    /// Database failures.
    pub async fn drop_generation(&self, model: &str, generation: i64) -> Result<u64> {
        let name = physical_name(model, generation);
        on_db!(&self.db, db => db.drop_model(&name).await)
    }

    /// Forgets the checkpoint `name`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn drop_checkpoint(&self, name: &str) -> Result<()> {
        on_db!(&self.db, db => db.drop_checkpoint(name).await)
    }

    /// Every document of `model` (the generation this handle reads), as `(key, JSON)`, in key
    /// order: for comparing generations.
    ///
    /// # Errors
    /// Database failures.
    pub async fn dump(&self, model: &str) -> Result<Vec<(String, String)>> {
        let name = self.physical(model);
        on_db!(&self.db, db => db.dump(&name).await)
    }

    /// A handle that buffers its writes until [`CheckpointStore::save_checkpoint`]: what a
    /// projection writes through. Reads see the buffered writes.
    pub fn unit_of_work(&self) -> UnitOfWork {
        UnitOfWork {
            documents: Self {
                overlay: Some(Arc::new(Mutex::new(Overlay::default()))),
                ..self.clone()
            },
            read: Arc::new(Mutex::new(None)),
            skipped: Arc::new(Mutex::new(None)),
        }
    }

    /// A receiver that changes whenever a projection commits.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.changes.commits()
    }

    /// Tells the other processes that this process's publisher published events (on
    /// PostgreSQL; SQLite has one process). They hear of it soon after, once a round with the
    /// projections' progress of the moment (best effort: they also poll). A projection runs in
    /// whichever worker holds its lease, often not the publisher's.
    pub fn announce_published(&self) {
        if let Db::Postgres(db) = &self.db {
            db.announce_published();
        }
    }

    /// A receiver that changes whenever another process's publisher announces that it published
    /// events ([`announce_published`](Self::announce_published)); never without listening.
    pub fn publications_elsewhere(&self) -> watch::Receiver<u64> {
        self.changes.publications_elsewhere()
    }

    /// Watches the document `key` of each of `models`: the watch changes when a commit writes
    /// one of them (a generation's commit counts for its model).
    pub fn watch(&self, models: &[&str], key: &str) -> DocumentWatch {
        self.changes.watch(models, key)
    }

    fn overlay(&self) -> Option<std::sync::MutexGuard<'_, Overlay>> {
        self.overlay
            .as_ref()
            .map(|o| o.lock().expect("the overlay lock is never poisoned"))
    }

    /// The document `key` of `model`.
    ///
    /// # Errors
    /// Database failures; a document that does not decode.
    pub async fn get<T: DeserializeOwned>(&self, model: &str, key: &str) -> Result<Option<T>> {
        let model = self.physical(model);
        let id = (model.clone(), key.to_owned());
        if let Some(pending) = self.overlay().and_then(|o| o.get(&id).cloned()) {
            return pending.map(|row| row.decode()).transpose();
        }
        // The cache (kept on PostgreSQL only, see `Changes::caching`) is not for a
        // projection's own reads (it reads what it will overwrite, and under another runner's
        // commits not yet announced the cache could be behind), nor for a pinned handle (a
        // rebuild's generation).
        let cacheable = self.overlay.is_none() && self.pinned.is_none();
        if cacheable && let Some(row) = self.changes.cached(&model, key) {
            return row.map(|row| row.decode()).transpose();
        }
        let epoch = if cacheable { self.changes.epoch() } else { None };
        let row = on_db!(&self.db, db => db.get(&model, key).await?);
        if let Some(epoch) = epoch {
            self.changes.remember(epoch, &model, key, row.clone());
        }
        row.map(|row| row.decode()).transpose()
    }

    /// The documents of `model` whose `index` column is `value`, in key order.
    ///
    /// # Errors
    /// Database failures; a document that does not decode.
    pub async fn find<T: DeserializeOwned>(&self, model: &str, index: Index, value: &str) -> Result<Vec<T>> {
        let model = self.physical(model);
        // A unit of work looks up what it found before, as the writes it committed since left it.
        let (known, epoch) = match self.overlay() {
            Some(overlay) => (overlay.lookup(&model, index, value).cloned(), Some(overlay.epoch)),
            None => (None, None),
        };
        let mut rows = match known {
            Some(rows) => rows,
            None => {
                let stored = on_db!(&self.db, db => db.find(index, &model, value).await?);
                let rows: Found = stored.into_iter().collect();
                if let (Some(epoch), Some(mut overlay)) = (epoch, self.overlay()) {
                    overlay.found(epoch, &model, index, value, &rows);
                }
                rows
            }
        };
        if let Some(overlay) = self.overlay() {
            for ((m, key), row) in overlay.committed.iter().chain(&overlay.current) {
                if *m == model {
                    apply(&mut rows, key, row.as_ref(), index, value);
                }
            }
        }
        rows.values().map(Row::decode).collect()
    }

    /// Writes the document `key` of `model`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn put(&self, model: &str, key: &str, row: Row) -> Result<()> {
        self.write(model, key, Some(row)).await
    }

    /// Deletes the document `key` of `model` (absent is fine).
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete(&self, model: &str, key: &str) -> Result<()> {
        self.write(model, key, None).await
    }

    async fn write(&self, model: &str, key: &str, row: Option<Row>) -> Result<()> {
        let model = self.physical(model);
        let model = model.as_str();
        if let Some(mut overlay) = self.overlay() {
            overlay.current.insert((model.to_owned(), key.to_owned()), row);
            return Ok(());
        }
        let writes = Writes::from([((model.to_owned(), key.to_owned()), row)]);
        self.commit(&writes, None).await
    }

    /// Applies `writes`, and moves a checkpoint from where it was read to a new position, in
    /// one transaction; then tells the waiters. When another process moved the checkpoint
    /// first, nothing is written and the answer is a conflict.
    async fn commit(&self, writes: &Writes, checkpoint: Option<Checkpoint<'_>>) -> Result<()> {
        on_db!(&self.db, db => db.commit(writes, checkpoint.as_ref()).await?);
        self.changes.committed(
            checkpoint.map(|c| (c.name, c.position)),
            writes.keys().map(|(model, key)| (model.as_str(), key.as_str())),
        );
        Ok(())
    }

    /// A projection applied every event up to `position` without writing: the waiters learn
    /// it at once, and on PostgreSQL the other processes' soon after, announced with the other
    /// projections' progress (best effort: a lost announcement only delays a waiter until the
    /// next one).
    fn applied(&self, checkpoint: &str, position: u64) {
        self.changes
            .committed(Some((checkpoint, position)), std::iter::empty());
        if let Db::Postgres(db) = &self.db {
            db.announce_applied(checkpoint, position);
        }
    }

    /// How far projection `name` is known to have applied the log: as this process's commits
    /// (and, on PostgreSQL, the other processes' announcements) reported it, read from the
    /// database only when none has been reported yet. A projection does not store the position
    /// of pages that write nothing at once, so this may be ahead of
    /// [`checkpoint`](Self::checkpoint).
    ///
    /// # Errors
    /// Database failures.
    pub async fn known_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        if let Some(position) = self.changes.checkpoint(name) {
            return Ok(Some(position));
        }
        let position = self.checkpoint(name).await?;
        // The database may count commits this process has not heard of yet, whose documents
        // could still be cached as they were before.
        self.changes.forget_documents();
        if let Some(position) = position {
            self.changes.checkpoint_reached(name, position);
        }
        Ok(position)
    }

    /// The checkpoint of projection `name`, as the database has it.
    ///
    /// # Errors
    /// Database failures.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<u64>> {
        let position = on_db!(&self.db, db => db.checkpoint(name).await?);
        position
            .map(|p| u64::try_from(p).map_err(Error::permanent))
            .transpose()
    }
}

/// A checkpoint to move: from the position read (`None`: no checkpoint yet) to `position`.
#[derive(Debug, Clone, Copy)]
struct Checkpoint<'a> {
    name: &'a str,
    read: Option<u64>,
    position: u64,
}

impl Checkpoint<'_> {
    /// The new position and the one read, as the database stores them.
    fn stored(&self) -> Result<(i64, Option<i64>)> {
        let position = i64::try_from(self.position).map_err(Error::permanent)?;
        let read = self
            .read
            .map(i64::try_from)
            .transpose()
            .map_err(Error::permanent)?;
        Ok((position, read))
    }

    /// The answer when another runner moved the checkpoint from where this one read it.
    fn conflict(&self) -> Error {
        Error::Conflict {
            stream: format!("checkpoint {}", self.name),
            expected: ExpectedVersion::Exact(self.read.map_or(-1, |r| r as i64)),
            actual: -1,
        }
    }
}

/// A projection's handle on the documents: writes wait for the checkpoint, which moves only
/// from where this projection read it, so two processes running one projection never both
/// apply an event (the second one's commit is refused and it starts again from the first's
/// checkpoint).
#[derive(Debug, Clone)]
pub struct UnitOfWork {
    documents: Documents,
    read: Arc<Mutex<Option<u64>>>,
    /// Where the projection got to without writing anything since the stored checkpoint
    /// (`read`), and since when: stored later (see [`UnitOfWork::store_skipped`]).
    skipped: Arc<Mutex<Option<(u64, std::time::Instant)>>>,
}

impl UnitOfWork {
    /// The documents, reading through the pending writes.
    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.documents.overlay().expect("a unit of work has an overlay")
    }

    /// Wraps `handler` so that the writes of an event that fails are dropped, and those of an
    /// event that succeeds wait for the checkpoint.
    pub fn wrap<H: MessageHandler>(&self, handler: H) -> PerEvent<H> {
        PerEvent {
            unit: self.clone(),
            handler,
        }
    }
}

impl UnitOfWork {
    fn read_position(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.read.lock().expect("the checkpoint lock is never poisoned")
    }

    fn skipped(&self) -> std::sync::MutexGuard<'_, Option<(u64, std::time::Instant)>> {
        self.skipped
            .lock()
            .expect("the checkpoint lock is never poisoned")
    }

    /// Stores the checkpoint `subscription` reached without writing anything, if that has
    /// waited `older_than` or more. A projection's runner calls it between catch-ups, so the
    /// stored checkpoint follows within about that time when the pages write nothing.
    ///
    /// # Errors
    /// Database failures; a conflict when another process moved the checkpoint first (then
    /// the skipped position is forgotten, and the next catch-up starts from the other's).
    pub async fn store_skipped(&self, subscription: &str, older_than: Duration) -> Result<()> {
        let Some((position, since)) = *self.skipped() else {
            return Ok(());
        };
        if since.elapsed() < older_than {
            return Ok(());
        }
        let read = *self.read_position();
        let checkpoint = Checkpoint {
            name: subscription,
            read,
            position,
        };
        let stored = self.documents.commit(&Writes::new(), Some(checkpoint)).await;
        if stored.is_ok() {
            *self.read_position() = Some(position);
        }
        if stored.is_ok() || stored.as_ref().is_err_and(Error::is_conflict) {
            let mut skipped = self.skipped();
            if skipped.is_some_and(|(p, _)| p == position) {
                *skipped = None;
            }
        }
        stored
    }
}

impl CheckpointStore for UnitOfWork {
    /// Reads the checkpoint and starts afresh from it: writes not committed are dropped. When
    /// nobody moved it since this unit read it, the catch-up resumes from where it got to
    /// without writing (the events in between wrote nothing, and would write nothing again).
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<u64>> {
        let position = self.documents.checkpoint(subscription).await?;
        let mut read = self.read_position();
        let mut skipped = self.skipped();
        let moved = *read != position;
        let resume = match *skipped {
            Some((ahead, _)) if !moved && position.is_some() => Some(ahead),
            _ => {
                *skipped = None;
                position
            }
        };
        *read = position;
        drop((read, skipped));
        let mut overlay = self.overlay();
        overlay.current.clear();
        overlay.committed.clear();
        if moved {
            // Another runner committed: what this one stored and found may have changed since.
            overlay.forget();
        }
        Ok(resume)
    }

    /// Commits the writes since the last checkpoint with the new position. A page that wrote
    /// nothing costs no commit: the position is remembered (and announced to the waiters, who
    /// only need to know what the projection has applied), and stored with the next page that
    /// writes, or by [`UnitOfWork::store_skipped`].
    async fn save_checkpoint(&self, subscription: &str, position: u64) -> Result<()> {
        let writes = std::mem::take(&mut self.overlay().committed);
        let read = *self.read_position();
        if writes.is_empty() && read.is_some() {
            self.skipped()
                .get_or_insert_with(|| (position, std::time::Instant::now()))
                .0 = position;
            self.documents.applied(subscription, position);
            return Ok(());
        }
        let checkpoint = Checkpoint {
            name: subscription,
            read,
            position,
        };
        match self.documents.commit(&writes, Some(checkpoint)).await {
            Ok(()) => {
                *self.read_position() = Some(position);
                *self.skipped() = None;
                self.overlay().stored(writes);
                Ok(())
            }
            Err(error) if error.is_conflict() => {
                self.overlay().forget();
                Err(error)
            }
            Err(error) => {
                // Keep the writes: the next checkpoint commits them.
                let mut overlay = self.overlay();
                for (id, row) in writes {
                    overlay.committed.entry(id).or_insert(row);
                }
                Err(error)
            }
        }
    }
}

/// A handler whose writes count only if it succeeds (see [`UnitOfWork::wrap`]).
#[derive(Debug)]
pub struct PerEvent<H> {
    unit: UnitOfWork,
    handler: H,
}

impl<H: MessageHandler> MessageHandler for PerEvent<H> {
    async fn handle(&self, envelope: &Envelope) -> Result<()> {
        self.unit.overlay().current.clear();
        let result = self.handler.handle(envelope).await;
        let mut overlay = self.unit.overlay();
        let current = std::mem::take(&mut overlay.current);
        if result.is_ok() {
            overlay.committed.extend(current);
        }
        result
    }
}
