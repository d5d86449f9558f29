//! What this process knows of the read models' commits, so that waiting requests wake only when
//! something they wait for may have changed, and learn projections' progress without a query.
//!
//! A long poll for one order used to wake on every commit of every projection and read two
//! checkpoints from the database each time: with 64 waiting registrants that was thousands of
//! queries a second, all for nothing. Now:
//! - checkpoints are remembered as commits report them (read once from the database when this
//!   process has not seen them yet);
//! - a waiter watches the documents it shows, and a commit wakes only the waiters of the
//!   documents it wrote;
//! - a commit in another process (PostgreSQL's `NOTIFY`) is an [`Announcement`] naming its
//!   checkpoint and the documents it wrote, and wakes their waiters alone. Without the names
//!   (too many for a notification) every waiter wakes.
//!
//! On PostgreSQL the same knowledge keeps a cache of documents read ([`Cached`]): a document
//! stays cached until a commit of this process writes it or another process's announcement
//! names it (or names nothing), so the web process reads a conference once, not at every
//! long poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use tokio::sync::watch;

use super::Row;

/// The commits seen by this process: a counter, the checkpoints, and the watched documents.
#[derive(Debug)]
pub(super) struct Changes {
    /// Bumped on every commit, of this process or (on PostgreSQL) of another.
    commits: watch::Sender<u64>,
    /// Checkpoint name → the highest position known to have committed.
    checkpoints: RwLock<HashMap<String, u64>>,
    /// `"<model>/<key>"` → a counter bumped when a commit writes that document.
    watched: DashMap<String, watch::Sender<u64>>,
    /// Documents read, as the database held them after every commit known to have written
    /// them; `None` where not every commit is announced (SQLite).
    cached: Option<Mutex<Cached>>,
    /// Bumped when the publisher of another process (on PostgreSQL) announced that it
    /// published events.
    published_elsewhere: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            commits: watch::channel(0).0,
            checkpoints: RwLock::default(),
            watched: DashMap::new(),
            cached: None,
            published_elsewhere: watch::channel(0).0,
        }
    }
}

impl Changes {
    /// Changes that also keep the documents read: for a database whose every commit this
    /// process hears of, its own or announced (PostgreSQL).
    pub(super) fn caching() -> Self {
        Self {
            cached: Some(Mutex::default()),
            ..Self::default()
        }
    }
}

/// Documents read from the database, by watch key: each with the generation's name it was read
/// from and the row (`None`: there was none).
///
/// A read that began before a commit wrote its document may return the row from before; it
/// is cached only if nothing was dropped from the cache since the read began (`epoch`), and
/// whatever a commit drops afterwards goes with the rest. So a cached row is never older than
/// the last commit this process knows of: one that a waiter's checkpoint already counts is
/// always read again.
#[derive(Debug, Default)]
pub(super) struct Cached {
    rows: HashMap<String, (String, Option<Row>)>,
    /// Bumped whenever rows are dropped.
    epoch: u64,
}

impl Cached {
    /// The most documents kept; past it the cache starts again empty.
    const MAX_ROWS: usize = 16_384;

    fn drop_rows<'a>(&mut self, watch_keys: impl IntoIterator<Item = &'a str>) {
        self.epoch += 1;
        for key in watch_keys {
            self.rows.remove(key);
        }
    }

    fn clear(&mut self) {
        self.epoch += 1;
        self.rows.clear();
    }
}

/// What a commit on PostgreSQL tells the other processes, as a `NOTIFY` payload: the
/// schema, then the checkpoint's name and position when the commit moved one (empty lines
/// otherwise), then a `documents` line followed by the watch key of every document it wrote.
///
/// Without the `documents` line (a commit writing more than a notification holds, or an
/// announcement from before the documents were named) the documents are unknown, and every
/// waiter wakes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Announcement<'a> {
    checkpoint: Option<(&'a str, u64)>,
    /// The watch keys of the documents written; `None` when unknown.
    documents: Option<Vec<&'a str>>,
}

impl<'a> Announcement<'a> {
    /// The line before the documents' keys.
    const DOCUMENTS: &'static str = "documents";
    /// PostgreSQL refuses payloads of 8,000 bytes or more.
    const MAX_PAYLOAD: usize = 7_900;

    /// The payload announcing a commit in `schema` that moved `checkpoint` and wrote
    /// `documents` (model, key).
    pub(super) fn write<'d>(
        schema: &str,
        checkpoint: Option<(&str, u64)>,
        documents: impl IntoIterator<Item = (&'d str, &'d str)>,
    ) -> String {
        let mut payload = match checkpoint {
            Some((name, position)) => format!("{schema}\n{name}\n{position}\n"),
            None => format!("{schema}\n\n\n"),
        };
        let header = payload.len();
        payload.push_str(Self::DOCUMENTS);
        for (model, key) in documents {
            let key = watch_key(model, key);
            if key.contains('\n') || payload.len() + 1 + key.len() > Self::MAX_PAYLOAD {
                // Documents unknown: every waiter wakes.
                payload.truncate(header);
                return payload;
            }
            payload.push('\n');
            payload.push_str(&key);
        }
        payload
    }

    /// Reads a payload: `None` when it is another schema's.
    pub(super) fn read(payload: &'a str, schema: &str) -> Option<Self> {
        let mut lines = payload.split('\n');
        if lines.next() != Some(schema) {
            return None;
        }
        let checkpoint = match (lines.next(), lines.next().map(str::parse::<u64>)) {
            (Some(name), Some(Ok(position))) if !name.is_empty() => Some((name, position)),
            _ => None,
        };
        let documents = (lines.next() == Some(Self::DOCUMENTS)).then(|| lines.collect());
        Some(Self {
            checkpoint,
            documents,
        })
    }
}

/// The watch key of a document; `model` may name a generation (`model@n`): waiters watch the
/// model, whichever generation serves.
fn watch_key(model: &str, key: &str) -> String {
    let model = model.split_once('@').map_or(model, |(logical, _)| logical);
    format!("{model}/{key}")
}

impl Changes {
    pub(super) fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    pub(super) fn publications_elsewhere(&self) -> watch::Receiver<u64> {
        self.published_elsewhere.subscribe()
    }

    /// Another process's publisher announced that it published events.
    pub(super) fn published_elsewhere(&self) {
        self.published_elsewhere.send_modify(|n| *n += 1);
    }

    pub(super) fn checkpoint(&self, name: &str) -> Option<u64> {
        self.checkpoints
            .read()
            .expect("the checkpoints lock is never poisoned")
            .get(name)
            .copied()
    }

    /// Remembers that checkpoint `name` reached `position` (positions only move forward).
    pub(super) fn checkpoint_reached(&self, name: &str, position: u64) {
        let mut checkpoints = self
            .checkpoints
            .write()
            .expect("the checkpoints lock is never poisoned");
        let known = checkpoints.entry(name.to_owned()).or_insert(position);
        *known = (*known).max(position);
    }

    /// A commit of this process: the documents it wrote leave the cache, then its checkpoint,
    /// then the waiters of those documents, then everyone on the commit counter.
    pub(super) fn committed<'a>(
        &self,
        checkpoint: Option<(&str, u64)>,
        documents: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let keys: Vec<String> = if self.cached.is_some() || !self.watched.is_empty() {
            documents
                .into_iter()
                .map(|(model, key)| watch_key(model, key))
                .collect()
        } else {
            Vec::new()
        };
        if !keys.is_empty()
            && let Some(mut cache) = self.cache()
        {
            cache.drop_rows(keys.iter().map(String::as_str));
        }
        if let Some((name, position)) = checkpoint {
            self.checkpoint_reached(name, position);
        }
        for key in &keys {
            self.wake(key);
        }
        self.commits.send_modify(|n| *n += 1);
    }

    /// A commit of another process: the documents it names leave the cache (every document,
    /// when it names none), then its checkpoint, then their waiters (every waiter), then
    /// everyone on the commit counter.
    pub(super) fn committed_elsewhere(&self, announcement: &Announcement<'_>) {
        if let Some(mut cache) = self.cache() {
            match &announcement.documents {
                Some(keys) => cache.drop_rows(keys.iter().copied()),
                None => cache.clear(),
            }
        }
        if let Some((name, position)) = announcement.checkpoint {
            self.checkpoint_reached(name, position);
        }
        match &announcement.documents {
            Some(keys) => {
                for key in keys {
                    self.wake(key);
                }
                self.commits.send_modify(|n| *n += 1);
            }
            None => self.wake_all(),
        }
    }

    fn cache(&self) -> Option<std::sync::MutexGuard<'_, Cached>> {
        self.cached.as_ref().map(|cached| {
            cached
                .lock()
                .expect("the document cache's lock is never poisoned")
        })
    }

    /// The cached row of the document `key` of the generation `model`: `Some(None)` when it
    /// was read absent, `None` when it is not cached (or nothing is).
    pub(super) fn cached(&self, model: &str, key: &str) -> Option<Option<Row>> {
        let cache = self.cache()?;
        let (read_from, row) = cache.rows.get(&watch_key(model, key))?;
        (read_from == model).then(|| row.clone())
    }

    /// What a read beginning now passes to [`remember`](Self::remember); `None` when nothing
    /// is cached.
    pub(super) fn epoch(&self) -> Option<u64> {
        self.cache().map(|cache| cache.epoch)
    }

    /// Caches what a read that began at `epoch` found, unless rows were dropped since.
    pub(super) fn remember(&self, epoch: u64, model: &str, key: &str, row: Option<Row>) {
        let Some(mut cache) = self.cache() else {
            return;
        };
        if cache.epoch != epoch {
            return;
        }
        if cache.rows.len() >= Cached::MAX_ROWS {
            cache.rows.clear();
        }
        cache.rows.insert(watch_key(model, key), (model.to_owned(), row));
    }

    /// Empties the cache: a checkpoint read from the database may count commits whose
    /// announcements have not arrived yet.
    pub(super) fn forget_documents(&self) {
        if let Some(mut cache) = self.cache() {
            cache.clear();
        }
    }

    fn wake(&self, watch_key: &str) {
        if let Some(waiters) = self.watched.get(watch_key) {
            waiters.send_modify(|n| *n += 1);
        }
    }

    /// What was known may be stale (notifications were lost, a generation switched): forget
    /// the checkpoints, so they are read again, and wake every waiter.
    pub(super) fn forget(&self) {
        self.forget_documents();
        self.checkpoints
            .write()
            .expect("the checkpoints lock is never poisoned")
            .clear();
        self.wake_all();
    }

    fn wake_all(&self) {
        for waiters in &self.watched {
            waiters.send_modify(|n| *n += 1);
        }
        self.commits.send_modify(|n| *n += 1);
    }

    /// Starts watching the documents `key` of each of `models`.
    pub(super) fn watch(self: &Arc<Self>, models: &[&str], key: &str) -> DocumentWatch {
        let receivers = models
            .iter()
            .map(|model| {
                let name = watch_key(model, key);
                let receiver = self
                    .watched
                    .entry(name.clone())
                    .or_insert_with(|| watch::channel(0).0)
                    .subscribe();
                (name, receiver)
            })
            .collect();
        DocumentWatch {
            changes: Arc::clone(self),
            receivers,
        }
    }
}

/// Documents watched by one waiter; dropping it stops the watch.
#[derive(Debug)]
pub struct DocumentWatch {
    changes: Arc<Changes>,
    receivers: Vec<(String, watch::Receiver<u64>)>,
}

impl DocumentWatch {
    /// Marks every change so far as seen.
    pub fn mark_seen(&mut self) {
        for (_, receiver) in &mut self.receivers {
            receiver.borrow_and_update();
        }
    }

    /// Resolves when a commit wrote one of the watched documents (or may have) since the
    /// last [`mark_seen`](Self::mark_seen).
    pub async fn changed(&mut self) {
        let changes = self
            .receivers
            .iter_mut()
            .map(|(_, receiver)| Box::pin(receiver.changed()));
        // The senders live in the map as long as this watch does, so `changed` never fails.
        let _ = futures::future::select_all(changes).await;
    }
}

impl Drop for DocumentWatch {
    fn drop(&mut self) {
        for (name, receiver) in self.receivers.drain(..) {
            drop(receiver);
            self.changes
                .watched
                .remove_if(&name, |_, sender| sender.receiver_count() == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wakes(watch: &mut DocumentWatch, why: &str) {
        tokio::time::timeout(std::time::Duration::from_secs(1), watch.changed())
            .await
            .expect(why);
    }

    async fn sleeps(watch: &mut DocumentWatch, why: &str) {
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), watch.changed())
                .await
                .is_err(),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_commit_wakes_the_waiters_of_what_it_wrote_and_no_others() {
        let changes = Arc::new(Changes::default());
        let mut mine = changes.watch(&["draft_order", "priced_order"], "a");
        let mut other = changes.watch(&["draft_order"], "b");
        mine.mark_seen();
        other.mark_seen();
        changes.committed(Some(("draft_order@2", 7)), [("priced_order@2", "a")]);
        wakes(&mut mine, "the waiter of the written document wakes").await;
        sleeps(&mut other, "a waiter of another document sleeps on").await;
        assert_eq!(changes.checkpoint("draft_order@2"), Some(7));
        changes.checkpoint_reached("draft_order@2", 3);
        assert_eq!(
            changes.checkpoint("draft_order@2"),
            Some(7),
            "checkpoints never go back"
        );

        changes.forget();
        assert_eq!(changes.checkpoint("draft_order@2"), None);
    }

    #[tokio::test]
    async fn another_process_s_commit_wakes_the_waiters_of_what_it_names_or_every_waiter() {
        let changes = Arc::new(Changes::default());
        let mut mine = changes.watch(&["draft_order", "priced_order"], "a");
        let mut other = changes.watch(&["draft_order"], "b");
        let mut commits = changes.commits();
        mine.mark_seen();
        other.mark_seen();
        commits.borrow_and_update();

        let payload = Announcement::write("s1", Some(("priced_order@2", 9)), [("priced_order@2", "a")]);
        changes.committed_elsewhere(&Announcement::read(&payload, "s1").expect("this schema's"));
        wakes(&mut mine, "the waiter of the named document wakes").await;
        sleeps(&mut other, "a waiter of another document sleeps on").await;
        assert!(
            commits.has_changed().expect("the counter lives"),
            "the commit counter moves"
        );
        assert_eq!(changes.checkpoint("priced_order@2"), Some(9));

        changes
            .committed_elsewhere(&Announcement::read("s1\npriced_order@2\n10", "s1").expect("this schema's"));
        wakes(
            &mut other,
            "a commit whose documents are unknown wakes every waiter",
        )
        .await;
        assert_eq!(changes.checkpoint("priced_order@2"), Some(10));
    }

    #[test]
    fn announcements_name_their_schema_checkpoint_and_documents() {
        let both = Announcement::write(
            "s1",
            Some(("draft_order@2", 42)),
            [("draft_order@2", "a"), ("payment", "b")],
        );
        assert_eq!(
            Announcement::read(&both, "s1"),
            Some(Announcement {
                checkpoint: Some(("draft_order@2", 42)),
                documents: Some(vec!["draft_order/a", "payment/b"]),
            })
        );
        assert_eq!(Announcement::read(&both, "s2"), None, "another schema's");

        let progress = Announcement::write("s1", Some(("draft_order", 7)), []);
        let read = Announcement::read(&progress, "s1").expect("this schema's");
        assert_eq!(read.checkpoint, Some(("draft_order", 7)));
        assert_eq!(
            read.documents,
            Some(vec![]),
            "a commit that wrote nothing names nothing"
        );

        let write = Announcement::write("s1", None, [("conference", "c")]);
        let read = Announcement::read(&write, "s1").expect("this schema's");
        assert_eq!(
            (read.checkpoint, read.documents),
            (None, Some(vec!["conference/c"]))
        );

        let key = "k".repeat(100);
        let many = Announcement::write(
            "s1",
            Some(("draft_order", 8)),
            (0..100).map(|_| ("draft_order", key.as_str())),
        );
        assert!(many.len() < 8_000, "PostgreSQL takes it");
        let read = Announcement::read(&many, "s1").expect("this schema's");
        assert_eq!(
            read.checkpoint,
            Some(("draft_order", 8)),
            "the checkpoint still counts"
        );
        assert_eq!(read.documents, None, "too many to name: unknown");
        let odd = Announcement::write("s1", None, [("draft_order", "a\nb")]);
        assert_eq!(
            Announcement::read(&odd, "s1").expect("this schema's").documents,
            None
        );

        let before = Announcement::read("s1\nname\nnot-a-number", "s1").expect("this schema's");
        assert_eq!((before.checkpoint, before.documents), (None, None));
    }

    #[test]
    fn a_read_that_a_commit_overtook_is_not_cached_and_commits_drop_what_they_name() {
        let changes = Changes::caching();
        let row = |v: &str| Some(Row::new(&v.to_owned(), None, None).unwrap());
        let epoch = || changes.epoch().expect("a caching Changes has an epoch");
        // Read before a commit wrote the document, remembered after: not cached.
        let epoch_before = epoch();
        changes.committed(None, [("m", "a")]);
        changes.remember(epoch_before, "m", "a", row("old"));
        assert_eq!(changes.cached("m", "a"), None);
        // Read after it: cached, for the generation read only.
        changes.remember(epoch(), "m", "a", row("new"));
        changes.remember(epoch(), "m", "b", None);
        assert_eq!(changes.cached("m", "a"), Some(row("new")));
        assert_eq!(changes.cached("m", "b"), Some(None));
        assert_eq!(changes.cached("m@1", "a"), None);
        // This process's commit drops what it wrote; another's, what it names.
        changes.committed(Some(("p", 1)), [("m", "a")]);
        assert_eq!(changes.cached("m", "a"), None);
        assert_eq!(changes.cached("m", "b"), Some(None));
        let named = Announcement::write("s", None, [("m@1", "b")]);
        changes.committed_elsewhere(&Announcement::read(&named, "s").unwrap());
        assert_eq!(changes.cached("m", "b"), None);
        // An announcement without names drops everything.
        changes.remember(epoch(), "m", "c", row("c"));
        let unnamed = "s\n\n\n";
        changes.committed_elsewhere(&Announcement::read(unnamed, "s").unwrap());
        assert_eq!(changes.cached("m", "c"), None);
    }

    #[test]
    fn a_dropped_watch_leaves_nothing_behind_but_a_shared_one_stays() {
        let changes = Arc::new(Changes::default());
        let first = changes.watch(&["draft_order"], "a");
        let second = changes.watch(&["draft_order"], "a");
        drop(first);
        assert_eq!(changes.watched.len(), 1, "the second waiter still watches");
        drop(second);
        assert!(changes.watched.is_empty());
    }
}
