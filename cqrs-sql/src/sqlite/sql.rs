//! Every SQL statement of the SQLite backend.
//!
//! A `LIMIT` bound to a parameter is written `LIMIT +?`. SQLite reads a plain `LIMIT ?`'s bound
//! value into the plan, and so compiles the statement again each time the parameter is bound:
//! the queue's receive, compiled at every call, took a quarter of the writer thread's time under
//! load. The unary plus hides the value from the planner; the plans are otherwise the same.

pub(super) const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS cqrs_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)";
pub(super) const MIGRATION_APPLIED: &str = "SELECT EXISTS (SELECT 1 FROM cqrs_migrations WHERE version = ?)";
pub(super) const RECORD_MIGRATION: &str =
    "INSERT INTO cqrs_migrations (version, name, applied_at) VALUES (?, ?, ?)";

pub(super) const STREAM_VERSION: &str =
    "SELECT COALESCE(MAX(version), -1) FROM cqrs_events WHERE stream_id = ?";

/// The head of a multi-row insert; [`EVENT_ROW`] is repeated once per event.
pub(super) const INSERT_EVENTS: &str = "INSERT INTO cqrs_events (event_id, stream_id, stream_type, version, \
     name, schema_version, codec, payload, metadata, recorded_at) VALUES ";
pub(super) const EVENT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(super) const RETURNING_POSITION: &str = " RETURNING position";

/// The head of a one-statement batch append: `appends(idx, stream_id, stream_type, expected)`
/// rows follow, then [`BATCH_APPEND_ROWS`], the event rows, and [`BATCH_APPEND_TAIL`]. The
/// versions are read (MATERIALIZED) before any row is inserted; an append whose expected version
/// (NULL: any) does not match inserts nothing.
pub(super) const BATCH_APPEND_HEAD: &str = "WITH appends(idx, stream_id, stream_type, expected) AS (VALUES ";
pub(super) const BATCH_APPEND_ROW: &str = "(?, ?, ?, ?)";
pub(super) const BATCH_APPEND_ROWS: &str = "), cur AS MATERIALIZED (
        SELECT a.idx, a.stream_id, a.stream_type, a.expected,
               COALESCE((SELECT MAX(e.version) FROM cqrs_events e WHERE e.stream_id = a.stream_id), -1) AS v
        FROM appends a
    ), input(idx, n, event_id, name, schema_version, codec, payload, metadata) AS (VALUES ";
pub(super) const BATCH_EVENT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?)";
pub(super) const BATCH_APPEND_TAIL: &str = ")
    INSERT INTO cqrs_events (event_id, stream_id, stream_type, version, name, schema_version, codec,
                             payload, metadata, recorded_at)
    SELECT i.event_id, c.stream_id, c.stream_type, c.v + i.n, i.name, i.schema_version, i.codec,
           i.payload, i.metadata, ?
    FROM input i JOIN cur c ON c.idx = i.idx
    WHERE c.expected IS NULL OR c.v = c.expected
    ORDER BY i.idx, i.n
    RETURNING position, stream_id, version";

macro_rules! event_columns {
    () => {
        "position, event_id, stream_id, stream_type, version, name, schema_version, codec, payload, \
         metadata, recorded_at"
    };
}

macro_rules! process_columns {
    () => {
        "process_type, id, version, completed, key, codec, schema_version, state"
    };
}

pub(super) const LOAD_STREAM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM cqrs_events WHERE stream_id = ? AND version >= ? ORDER BY version"
);
pub(super) const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM cqrs_events WHERE position > ? ORDER BY position LIMIT +?"
);
pub(super) const UNPUBLISHED: &str = "SELECT e.position, e.event_id, e.stream_id, e.stream_type, e.version, \
     e.name, e.schema_version, e.codec, e.payload, e.metadata, e.recorded_at \
     FROM cqrs_outbox o JOIN cqrs_events e ON e.position = o.position ORDER BY o.position LIMIT +?";
/// Removes a stream's events up to version `?2` from the outbox. A stream's events leave the
/// outbox oldest first, so those left are the stream's last versions: the walk goes down the
/// events' (stream_id, version) key from the marked version and stops below the first one no
/// longer in the outbox, never scanning the outbox itself.
pub(super) const MARK_PUBLISHED: &str = "WITH RECURSIVE walk(version, position) AS (
        SELECT * FROM (SELECT version, position FROM cqrs_events
                       WHERE stream_id = ?1 AND version <= ?2 ORDER BY version DESC LIMIT 1)
        UNION ALL
        SELECT e.version, e.position FROM walk w
        JOIN cqrs_events e ON e.stream_id = ?1 AND e.version = w.version - 1
        WHERE EXISTS (SELECT 1 FROM cqrs_outbox o WHERE o.position = w.position)
    )
    DELETE FROM cqrs_outbox WHERE position IN (SELECT position FROM walk)";

/// Removes one published event from the outbox, by its position.
pub(super) const REMOVE_PUBLISHED: &str = "DELETE FROM cqrs_outbox WHERE position = ?";

pub(super) const LOAD_SNAPSHOT: &str = "SELECT stream_id, version, schema_version, codec, bytes, taken_at \
     FROM cqrs_snapshots WHERE stream_id = ?";
pub(super) const SAVE_SNAPSHOT: &str = "INSERT INTO cqrs_snapshots \
     (stream_id, version, schema_version, codec, bytes, taken_at) VALUES (?, ?, ?, ?, ?, ?) \
     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
     schema_version = excluded.schema_version, codec = excluded.codec, bytes = excluded.bytes, \
     taken_at = excluded.taken_at";

pub(super) const LOAD_PROCESS: &str = concat!(
    "SELECT ",
    process_columns!(),
    " FROM cqrs_processes WHERE process_type = ? AND id = ?"
);
pub(super) const FIND_PROCESS_BY_KEY: &str = concat!(
    "SELECT ",
    process_columns!(),
    " FROM cqrs_processes WHERE process_type = ? AND key = ? AND (completed = 0 OR ?) \
     ORDER BY completed ASC, saved_seq DESC LIMIT 1"
);
pub(super) const PROCESS_VERSION: &str =
    "SELECT version FROM cqrs_processes WHERE process_type = ? AND id = ?";
pub(super) const INSERT_PROCESS: &str = "INSERT INTO cqrs_processes \
     (process_type, id, version, completed, key, codec, schema_version, state, saved_seq) \
     VALUES (?, ?, 0, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(saved_seq), 0) + 1 FROM cqrs_processes))";
pub(super) const UPDATE_PROCESS: &str = "UPDATE cqrs_processes SET version = version + 1, completed = ?, \
     key = ?, codec = ?, schema_version = ?, state = ?, \
     saved_seq = (SELECT MAX(saved_seq) + 1 FROM cqrs_processes) \
     WHERE process_type = ? AND id = ? AND version = ?";
pub(super) const INSERT_PROCESS_COMMAND: &str = "INSERT INTO cqrs_process_commands \
     (process_type, id, message_id, name, schema_version, codec, payload, metadata, stored_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(super) const PROCESS_COMMANDS: &str = "SELECT message_id, name, schema_version, codec, payload, metadata, \
     stored_at FROM cqrs_process_commands WHERE process_type = ? AND id = ? ORDER BY seq";
pub(super) const REMOVE_PROCESS_COMMAND: &str =
    "DELETE FROM cqrs_process_commands WHERE process_type = ? AND id = ? AND message_id = ?";
pub(super) const PROCESSES_WITH_PENDING: &str = "SELECT process_type, id FROM cqrs_process_commands \
     WHERE stored_at < ? GROUP BY process_type, id ORDER BY MIN(seq) LIMIT +?";

pub(super) const INBOX_CONTAINS: &str =
    "SELECT EXISTS (SELECT 1 FROM cqrs_inbox WHERE handler = ? AND message_id = ?)";
pub(super) const INBOX_RECORD: &str =
    "INSERT OR IGNORE INTO cqrs_inbox (handler, message_id, processed_at) VALUES (?, ?, ?)";

/// The head of a multi-row enqueue; [`MESSAGE_ROW`] is repeated once per message.
pub(super) const ENQUEUE: &str = "INSERT INTO cqrs_messages (queue, message_id, session_id, name, \
     schema_version, codec, payload, metadata, enqueued_at, visible_at, expires_at) VALUES ";
pub(super) const MESSAGE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Locks up to `?4` due messages of queue `?1` at time `?2` until `?3`: only a session's oldest
/// message, and only when it is neither locked nor waiting for a retry.
pub(super) const RECEIVE: &str = "UPDATE cqrs_messages
    SET locked_until = ?3, delivery_count = delivery_count + 1
    WHERE id IN (
        SELECT m.id FROM cqrs_messages m
        WHERE m.queue = ?1 AND m.visible_at <= ?2 AND (m.locked_until IS NULL OR m.locked_until <= ?2)
          AND (m.session_id IS NULL OR m.id = (
                SELECT MIN(s.id) FROM cqrs_messages s WHERE s.queue = m.queue AND s.session_id = m.session_id))
        ORDER BY m.id LIMIT +?4)
    RETURNING id, queue, name, schema_version, codec, payload, metadata, enqueued_at, expires_at, delivery_count";

/// Locks up to `?5` of the leading messages of session `?4` of queue `?1` at time `?2` until
/// `?3`: from the oldest, those due and neither locked nor waiting for a retry, up to the first
/// that is not.
pub(super) const RECEIVE_IN_SESSION: &str = "UPDATE cqrs_messages
    SET locked_until = ?3, delivery_count = delivery_count + 1
    WHERE id IN (
        SELECT s.id FROM cqrs_messages s
        WHERE s.queue = ?1 AND s.session_id = ?4
          AND s.id < (SELECT COALESCE(MIN(b.id), 9223372036854775807) FROM cqrs_messages b
                      WHERE b.queue = ?1 AND b.session_id = ?4
                        AND (b.visible_at > ?2 OR b.locked_until > ?2))
        ORDER BY s.id LIMIT +?5)
    RETURNING id, queue, name, schema_version, codec, payload, metadata, enqueued_at, expires_at, delivery_count";

pub(super) const COMPLETE: &str =
    "DELETE FROM cqrs_messages WHERE id = ? AND delivery_count = ? AND locked_until IS NOT NULL";
/// Gives a message back untried: unlocked, and its delivery not counted.
pub(super) const RELEASE: &str = "UPDATE cqrs_messages SET locked_until = NULL, delivery_count = delivery_count - 1 \
     WHERE id = ? AND delivery_count = ? AND locked_until IS NOT NULL";
pub(super) const ABANDON: &str = "UPDATE cqrs_messages SET locked_until = NULL, visible_at = ? \
     WHERE id = ? AND delivery_count = ? AND locked_until IS NOT NULL";
pub(super) const DEAD_LETTER: &str = "INSERT INTO cqrs_dead_letters (queue, message_id, name, schema_version, \
     codec, payload, metadata, reason, delivery_count, dead_lettered_at) \
     SELECT queue, message_id, name, schema_version, codec, payload, metadata, ?, delivery_count, ? \
     FROM cqrs_messages WHERE id = ? AND delivery_count = ? AND locked_until IS NOT NULL";
pub(super) const DEAD_LETTERS: &str = "SELECT id, queue, name, schema_version, codec, payload, metadata, \
     reason, delivery_count, dead_lettered_at FROM cqrs_dead_letters \
     WHERE (?1 IS NULL OR queue = ?1) ORDER BY id LIMIT +?2";
pub(super) const DEAD_LETTER_BY_ID: &str = "SELECT id, queue, name, schema_version, codec, payload, metadata, \
     reason, delivery_count, dead_lettered_at FROM cqrs_dead_letters WHERE id = ?";
pub(super) const REMOVE_DEAD_LETTER: &str = "DELETE FROM cqrs_dead_letters WHERE id = ?";

pub(super) const SUBSCRIBE: &str = "INSERT INTO cqrs_subscriptions (topic, subscription, names) VALUES (?, ?, ?) \
     ON CONFLICT (topic, subscription) DO UPDATE SET names = excluded.names";
pub(super) const SUBSCRIPTIONS: &str = "SELECT subscription, names FROM cqrs_subscriptions WHERE topic = ?";

pub(super) const LOAD_CHECKPOINT: &str = "SELECT position FROM cqrs_checkpoints WHERE subscription = ?";
pub(super) const SAVE_CHECKPOINT: &str = "INSERT INTO cqrs_checkpoints (subscription, position, updated_at) \
     VALUES (?, ?, ?) ON CONFLICT (subscription) DO UPDATE SET position = excluded.position, \
     updated_at = excluded.updated_at";

/// Appends `n` copies of a placeholder row, comma-separated: the variable part of a multi-row
/// statement.
pub(super) fn push_rows(sql: &mut String, row: &str, n: usize) {
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
}

pub(super) const QUEUE_DEPTHS: &str =
    "SELECT queue, count(*) FROM cqrs_messages GROUP BY queue ORDER BY queue";

pub(super) const DEAD_LETTER_COUNT: &str = "SELECT count(*) FROM cqrs_dead_letters";

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, Params, StatementStatus};

    use super::*;
    use crate::migrate::SQLITE as MIGRATIONS;

    /// Runs `sql` as a cached statement with each of `runs`' parameters, and answers how many
    /// times SQLite compiled it again.
    fn reprepares<P: Params>(db: &Connection, sql: &str, runs: impl IntoIterator<Item = P>) -> i32 {
        let mut statement = db.prepare_cached(sql).unwrap();
        for params in runs {
            let mut rows = statement.query(params).unwrap();
            while rows.next().unwrap().is_some() {}
        }
        statement.get_status(StatementStatus::RePrepare)
    }

    /// A statement whose `LIMIT` is a plain bound parameter is compiled again at every
    /// binding: SQLite folds a bound `LIMIT` into the plan, and marks the statement expired
    /// when the parameter is bound anew. The queue's receive took a quarter of the writer
    /// thread's time that way.
    #[test]
    fn statements_with_a_limit_are_compiled_once() {
        let db = Connection::open_in_memory().unwrap();
        for migration in MIGRATIONS {
            db.execute_batch(migration.sql).unwrap();
        }
        let limits = [1_i64, 32, 500];
        assert_eq!(reprepares(&db, READ_ALL, limits.map(|n| (0, n))), 0);
        assert_eq!(reprepares(&db, UNPUBLISHED, limits.map(|n| (n,))), 0);
        assert_eq!(reprepares(&db, PROCESSES_WITH_PENDING, limits.map(|n| (0, n))), 0);
        assert_eq!(reprepares(&db, RECEIVE, limits.map(|n| ("q", 0, 1, n))), 0);
        assert_eq!(
            reprepares(&db, RECEIVE_IN_SESSION, limits.map(|n| ("q", 0, 1, "s", n))),
            0
        );
        assert_eq!(reprepares(&db, DEAD_LETTERS, limits.map(|n| ("q", n))), 0);
    }
}
