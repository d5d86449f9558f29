//! Every SQL statement of the PostgreSQL backend.

/// Serializes migrators of several processes.
pub(super) const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('cqrs_migrations'))";
pub(super) const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS cqrs_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())";
pub(super) const APPLIED_MIGRATIONS: &str = "SELECT version FROM cqrs_migrations ORDER BY version";
pub(super) const RECORD_MIGRATION: &str = "INSERT INTO cqrs_migrations (version, name) VALUES ($1, $2)";

/// The channel appends notify, so idle publishers wake at once.
pub(super) const CHANNEL: &str = "cqrs_appended";

/// One statement per batch of appends to distinct streams (a single append is a batch of
/// one): each append's expected version is checked (NULL: any), and the events of the appends
/// that pass are inserted (no outbox row: the outbox is a position, see [`UNPUBLISHED`]). The
/// caller gives each event its append's index and its place in that append (1, 2, …), so
/// nothing is numbered here. One row per append: its index and the stream's version before;
/// and the transaction's id, from which the caller derives the positions (the id shifted left
/// by 20 bits, plus the event's ordinal in the batch).
///
/// The events are inserted in the order of their streams' ids, whatever the batch's order: two
/// batches racing for the same streams then wait for each other's entries in the `(stream_id,
/// version)` key in the same order, and the later one fails on a unique violation once the
/// first commits. Inserted in each batch's own order, a batch with streams A then B and another
/// with B then A each waited for the other: a deadlock, which PostgreSQL breaks only after
/// `deadlock_timeout` (1 s) by failing one batch whole, every append in it with a transient
/// error (under load, once in 20,000 orders).
///
/// No NOTIFY here: a notifying transaction takes a cluster-wide lock at commit, which would
/// serialize concurrent appends (flushes included). The notification is sent apart, coalesced.
pub(super) const APPEND_BATCH: &str = "WITH appends AS (
        SELECT a.idx, a.stream_id, a.stream_type, a.expected,
               (SELECT COALESCE(MAX(ev.version), -1) FROM cqrs_events ev WHERE ev.stream_id = a.stream_id) AS v
        FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::int8[]) AS a(idx, stream_id, stream_type, expected)
    ), new AS (
        SELECT (pg_current_xact_id()::text::bigint << 20) + e.ord AS position, e.event_id, a.stream_id,
               a.stream_type, a.v + e.n AS version, e.name, e.schema_version, e.codec, e.payload, e.metadata
        FROM UNNEST($5::int4[], $6::int8[], $7::uuid[], $8::text[], $9::int4[], $10::text[], $11::bytea[], $12::text[])
             WITH ORDINALITY AS e(append_idx, n, event_id, name, schema_version, codec, payload, metadata, ord)
        JOIN appends a ON a.idx = e.append_idx
        WHERE a.expected IS NULL OR a.v = a.expected
    ), ins AS (
        INSERT INTO cqrs_events (position, event_id, stream_id, stream_type, version, name,
                                 schema_version, codec, payload, metadata, recorded_at)
        SELECT position, event_id, stream_id, stream_type, version, name, schema_version, codec, payload,
               metadata::jsonb, $13
        FROM new ORDER BY stream_id, version
    )
    SELECT idx, v AS actual, pg_current_xact_id()::text::bigint AS xact FROM appends ORDER BY idx";

pub(super) const STREAM_VERSION: &str =
    "SELECT COALESCE(MAX(version), -1) FROM cqrs_events WHERE stream_id = $1";

macro_rules! event_columns {
    () => {
        "position, event_id, stream_id, stream_type, version, name, schema_version, codec, payload, \
         metadata::text AS metadata, recorded_at"
    };
}

macro_rules! process_columns {
    () => {
        "process_type, id, version, completed, key, codec, schema_version, state"
    };
}

/// Several streams at once, each from its own version: arrays of stream ids and versions.
/// Each row is an event (`event_columns!`, in its order) and the ordinal of the stream it
/// answers (from 1), at [`LOAD_STREAMS_REQUEST`]; rows come by ordinal, then version. `OFFSET
/// 0` keeps each stream a lookup of its own (a nested loop over the `(stream_id, version)`
/// key).
pub(super) const LOAD_STREAMS: &str = concat!(
    "SELECT e.*, l.idx FROM UNNEST($1::text[], $2::int8[]) WITH ORDINALITY AS l(stream_id, from_version, idx), \
     LATERAL (SELECT ",
    event_columns!(),
    " FROM cqrs_events ev WHERE ev.stream_id = l.stream_id AND ev.version >= l.from_version OFFSET 0) e \
     ORDER BY l.idx, e.version"
);
/// The column of [`LOAD_STREAMS`] that holds the request's ordinal.
pub(super) const LOAD_STREAMS_REQUEST: usize = 11;

/// The bound of the gap-safe reads: every transaction that could still commit an event below
/// it has ended (an event's position is its transaction's id shifted left by 20 bits).
macro_rules! safe_bound {
    () => {
        "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)"
    };
}

/// Only events of transactions older than every running one: no transaction that could still
/// commit an event below these positions exists.
pub(super) const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM cqrs_events WHERE position > $1 \
     AND position < ",
    safe_bound!(),
    " ORDER BY position LIMIT $2"
);
/// The oldest unpublished events. The outbox is a position (`cqrs_outbox_position`): every event
/// at or below it is published but for those still in `cqrs_outbox` (held back: the bus refused
/// their stream), and those above it are not, but for those in `cqrs_outbox_ahead` (streams
/// marked one at a time). So the answer is the held-back events, each looked up by its position,
/// then the events above the position, read as [`READ_ALL`] reads them: gap-safe, never one
/// while a transaction that could still commit an event below it runs.
///
/// One row has all its event columns NULL: its last column, `waiting` (at
/// [`UNPUBLISHED_WAITING`]), says whether committed events wait above the gap-safe bound for
/// older transactions to end, the publisher's cue to look again soon. In every other row, the
/// columns are `event_columns!`, in its order. `OFFSET 0` keeps each held-back lookup a nested loop: joined
/// plainly, the planner merges them with the whole log.
pub(super) const UNPUBLISHED: &str = concat!(
    "WITH mark AS (SELECT position FROM cqrs_outbox_position) \
     SELECT NULL::int8 AS position, NULL::uuid AS event_id, NULL AS stream_id, NULL AS stream_type, \
            NULL::int8 AS version, NULL AS name, NULL::int4 AS schema_version, NULL AS codec, \
            NULL::bytea AS payload, NULL AS metadata, NULL::timestamptz AS recorded_at, \
            EXISTS (SELECT 1 FROM cqrs_events x WHERE x.position >= ",
    safe_bound!(),
    ") AS waiting \
     UNION ALL \
     (SELECT e.position, e.event_id, e.stream_id, e.stream_type, e.version, e.name, e.schema_version, \
             e.codec, e.payload, e.metadata::text, e.recorded_at, NULL \
      FROM ((SELECT ev.* FROM (SELECT o.position FROM cqrs_outbox o \
                                WHERE o.position <= (SELECT position FROM mark) \
                                ORDER BY o.position LIMIT $1) o, \
                               LATERAL (SELECT * FROM cqrs_events ev WHERE ev.position = o.position OFFSET 0) ev) \
            UNION ALL \
            (SELECT ev.* FROM cqrs_events ev \
             WHERE ev.position > (SELECT position FROM mark) AND ev.position < ",
    safe_bound!(),
    " AND NOT EXISTS (SELECT 1 FROM cqrs_outbox_ahead a WHERE a.position = ev.position) \
             ORDER BY ev.position LIMIT $1)) e \
      ORDER BY e.position LIMIT $1)"
);

/// The column of [`UNPUBLISHED`] that says whether events wait for older transactions.
pub(super) const UNPUBLISHED_WAITING: usize = 11;

/// Marks streams published up to a version (arrays of stream ids and versions). For each, the
/// walk goes down the events' (stream_id, version) key from the marked version while the event
/// it stands on is unpublished (above the outbox's position and not ahead, or at or below it and
/// held back), and stops on the first one published: a stream is published in order, so the
/// versions under it were published before it. The walked events above the position are
/// recorded as published ahead of it; the held-back ones (and any outbox row a writer of the
/// schema before the position wrote) are deleted.
///
/// Each step is a lookup the planner cannot turn into a join: a `LATERAL` subquery with a
/// `LIMIT`, and scalar subqueries. Written as plain joins, PostgreSQL hashed the whole events
/// table at every mark (it guesses the walk long), a sequential scan growing with the log.
pub(super) const MARK_PUBLISHED: &str = "WITH RECURSIVE mark AS (SELECT position FROM cqrs_outbox_position),
    walk(stream_id, version, position) AS (
        SELECT e.stream_id, e.version, e.position
        FROM UNNEST($1::text[], $2::int8[]) AS m(stream_id, version),
             LATERAL (SELECT ev.stream_id, ev.version, ev.position FROM cqrs_events ev
                      WHERE ev.stream_id = m.stream_id AND ev.version <= m.version
                      ORDER BY ev.version DESC LIMIT 1) e
        UNION ALL
        SELECT e.stream_id, e.version, e.position
        FROM walk w,
             LATERAL (SELECT ev.stream_id, ev.version, ev.position FROM cqrs_events ev
                      WHERE ev.stream_id = w.stream_id AND ev.version = w.version - 1 LIMIT 1) e
        WHERE CASE WHEN w.position > (SELECT position FROM mark)
                   THEN NOT EXISTS (SELECT 1 FROM cqrs_outbox_ahead a WHERE a.position = w.position)
                   ELSE EXISTS (SELECT 1 FROM cqrs_outbox o WHERE o.position = w.position) END
    ), ahead AS (
        INSERT INTO cqrs_outbox_ahead (position)
        SELECT position FROM walk WHERE position > (SELECT position FROM mark)
        ON CONFLICT (position) DO NOTHING
    )
    DELETE FROM cqrs_outbox WHERE position = ANY (ARRAY(SELECT position FROM walk))";

/// Records that the events at these positions (an array: a publisher's pass, each stream's a run
/// of its oldest unpublished events) were published, in one statement. The outbox's position
/// moves up to the highest of them, and remembers where it was (`previous`, set from the row's
/// latest version even when another publisher moved it meanwhile). The events it moves past that
/// are neither among them nor published ahead are held back: a row each in `cqrs_outbox`. The
/// positions it moved past leave `cqrs_outbox_ahead`, and the held-back events among these leave
/// `cqrs_outbox`. Every event it moves past has committed: each is below an event the pass read
/// gap-safe. The usual pass writes one row (a heap-only update), where a row an event was
/// inserted, indexed and deleted before.
pub(super) const ADVANCE_PUBLISHED: &str = "WITH marked AS (
        SELECT position FROM UNNEST($1::int8[]) AS m(position)
    ), moved AS (
        UPDATE cqrs_outbox_position
        SET previous = position, position = GREATEST(position, (SELECT MAX(position) FROM marked))
        RETURNING previous, position
    ), held AS (
        INSERT INTO cqrs_outbox (position, stream_id, version)
        SELECT ev.position, ev.stream_id, ev.version FROM moved, cqrs_events ev
        WHERE ev.position > moved.previous AND ev.position <= moved.position
          AND NOT EXISTS (SELECT 1 FROM marked m WHERE m.position = ev.position)
          AND NOT EXISTS (SELECT 1 FROM cqrs_outbox_ahead a WHERE a.position = ev.position)
        ON CONFLICT (position) DO NOTHING
    ), passed AS (
        DELETE FROM cqrs_outbox_ahead a USING moved WHERE a.position <= moved.position
    )
    DELETE FROM cqrs_outbox o USING marked m WHERE o.position = m.position";

pub(super) const LOAD_SNAPSHOT: &str = "SELECT version, schema_version, codec, bytes, taken_at \
     FROM cqrs_snapshots WHERE stream_id = $1";
pub(super) const SAVE_SNAPSHOT: &str = "INSERT INTO cqrs_snapshots \
     (stream_id, version, schema_version, codec, bytes, taken_at) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
     schema_version = excluded.schema_version, codec = excluded.codec, bytes = excluded.bytes, \
     taken_at = excluded.taken_at";

/// The pending commands of the process in `p`, each column as an array in the order they were
/// stored (NULL when there are none): read in the statement that reads the process, so that
/// both come from one snapshot.
macro_rules! with_pending_commands {
    () => {
        " LEFT JOIN LATERAL (SELECT array_agg(k.message_id ORDER BY k.seq) AS message_ids, \
             array_agg(k.name ORDER BY k.seq) AS names, \
             array_agg(k.schema_version ORDER BY k.seq) AS schema_versions, \
             array_agg(k.codec ORDER BY k.seq) AS codecs, array_agg(k.payload ORDER BY k.seq) AS payloads, \
             array_agg(k.metadata::text ORDER BY k.seq) AS metadata, \
             array_agg(k.stored_at ORDER BY k.seq) AS stored_ats \
           FROM cqrs_process_commands k WHERE k.process_type = p.process_type AND k.id = p.id) c ON true"
    };
}

pub(super) const LOAD_PROCESS: &str = concat!(
    "SELECT p.*, c.* FROM (SELECT ",
    process_columns!(),
    " FROM cqrs_processes WHERE process_type = $1 AND id = $2) p",
    with_pending_commands!()
);
/// The newest process of each type and key (the one not completed first, unless completed
/// processes do not count), for several: arrays of process types, keys and whether completed
/// processes count. Each row is a process found, its pending commands and the
/// ordinal of its request (from 1) in `idx`.
pub(super) const FIND_PROCESSES_BY_KEY: &str = concat!(
    "SELECT p.*, c.*, q.idx FROM UNNEST($1::text[], $2::text[], $3::bool[]) \
     WITH ORDINALITY AS q(process_type, key, include_completed, idx), \
     LATERAL (SELECT ",
    process_columns!(),
    " FROM cqrs_processes WHERE process_type = q.process_type AND key = q.key \
     AND (NOT completed OR q.include_completed) ORDER BY completed ASC, saved_seq DESC LIMIT 1) p",
    with_pending_commands!()
);
pub(super) const PROCESS_VERSION: &str =
    "SELECT version FROM cqrs_processes WHERE process_type = $1 AND id = $2";
/// Saves several processes (distinct ones) and appends their commands in one statement: a
/// process's commands are written only when the process was. Processes: arrays `$1`…`$8`
/// (type, id, completed, key, codec, schema version, state, version expected: -1 for a new
/// process), counted from 1 by their order. Commands: arrays `$9`…`$15`, and the process each
/// belongs to `$16`, in the order to store them. One row per process: its ordinal `idx` and
/// the version written, or NULL on a conflict. Only the save of a completed process moves its
/// `saved_seq` (the order of completed ones in a lookup by key): the save of a running one
/// changes no indexed column, and rewrites the row in place (migration 10).
pub(super) const SAVE_PROCESSES: &str = "WITH p AS (
        SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::bool[], $4::text[], $5::text[], $6::int4[], $7::bytea[],
                             $8::int8[])
            WITH ORDINALITY AS p(process_type, id, completed, key, codec, schema_version, state, expected, idx)
    ), inserted AS (
        INSERT INTO cqrs_processes (process_type, id, version, completed, key, codec, schema_version, state)
        SELECT process_type, id, 0, completed, key, codec, schema_version, state FROM p WHERE expected = -1
        ON CONFLICT DO NOTHING RETURNING process_type, id, version
    ), updated AS (
        UPDATE cqrs_processes c SET version = c.version + 1, completed = p.completed, key = p.key, codec = p.codec,
            schema_version = p.schema_version, state = p.state,
            saved_seq = CASE WHEN p.completed THEN nextval('cqrs_process_saves') ELSE c.saved_seq END
        FROM p
        WHERE p.expected <> -1 AND c.process_type = p.process_type AND c.id = p.id AND c.version = p.expected
        RETURNING c.process_type, c.id, c.version
    ), saved AS (
        SELECT p.idx, s.version FROM p
        JOIN (SELECT * FROM inserted UNION ALL SELECT * FROM updated) s ON s.process_type = p.process_type AND s.id = p.id
    ), commands AS (
        INSERT INTO cqrs_process_commands
            (process_type, id, message_id, name, schema_version, codec, payload, metadata, stored_at)
        SELECT p.process_type, p.id, c.message_id, c.name, c.schema_version, c.codec, c.payload, c.metadata::jsonb,
               c.stored_at
        FROM UNNEST($9::text[], $10::text[], $11::int4[], $12::text[], $13::bytea[], $14::text[], $15::timestamptz[],
                    $16::int8[])
             WITH ORDINALITY AS c(message_id, name, schema_version, codec, payload, metadata, stored_at, owner, ord)
        JOIN p ON p.idx = c.owner
        WHERE EXISTS (SELECT 1 FROM saved WHERE saved.idx = c.owner)
        ORDER BY c.ord
    )
    SELECT p.idx, s.version AS saved FROM p LEFT JOIN saved s ON s.idx = p.idx";
/// The sent commands of several processes: `(process_type, id, message_id)` as three arrays.
pub(super) const REMOVE_SENT_COMMANDS: &str = "DELETE FROM cqrs_process_commands c \
     USING UNNEST($1::text[], $2::uuid[], $3::text[]) AS d(process_type, id, message_id) \
     WHERE c.process_type = d.process_type AND c.id = d.id AND c.message_id = d.message_id";
pub(super) const PROCESSES_WITH_PENDING: &str = "SELECT process_type, id FROM cqrs_process_commands \
     WHERE stored_at < $1 GROUP BY process_type, id ORDER BY MIN(seq) LIMIT $2";

pub(super) const INBOX_CONTAINS: &str =
    "SELECT EXISTS (SELECT 1 FROM cqrs_inbox WHERE handler = $1 AND message_id = $2)";
pub(super) const INBOX_RECORD: &str = "INSERT INTO cqrs_inbox (handler, message_id, processed_at) \
     VALUES ($1, $2, now()) ON CONFLICT DO NOTHING";

/// The channel enqueues notify, with the queue name as payload.
pub(super) const MESSAGES_CHANNEL: &str = "cqrs_messages";
/// Several notifications in one statement: arrays of channels and payloads.
pub(super) const NOTIFY_MANY: &str =
    "SELECT pg_notify(n.channel, n.payload) FROM UNNEST($1::text[], $2::text[]) AS n(channel, payload)";

macro_rules! message_columns {
    () => {
        "m.id, m.queue, m.name, m.schema_version, m.codec, m.payload, m.metadata::text AS metadata, \
         m.enqueued_at, m.expires_at, m.delivery_count"
    };
}

/// Whether the message `e` of session `e.session_id`, enqueued to `$queue` in the order `e.ord`,
/// goes behind an older message of its session (migration 9): one was there before this
/// statement, or comes before it in the statement's own messages. A scalar subquery, so that it
/// stays one lookup of the session index.
macro_rules! behind {
    ($queue:literal, $partition:literal) => {
        concat!(
            "e.session_id IS NOT NULL AND (row_number() OVER (PARTITION BY ",
            $partition,
            ", e.session_id ORDER BY e.ord) > 1 \
             OR (SELECT true FROM cqrs_messages o WHERE o.queue = ",
            $queue,
            " AND o.session_id = e.session_id LIMIT 1) IS NOT NULL)"
        )
    };
}

/// Enqueues messages, each to its own queue (`$1`, an array), at time `$2`, in the order given
/// (their ids rise in that order); each one behind an older message of its session is marked so.
pub(super) const ENQUEUE: &str = concat!(
    "INSERT INTO cqrs_messages (queue, message_id, session_id, name, schema_version,
        codec, payload, metadata, enqueued_at, visible_at, expires_at, behind)
    SELECT e.queue, e.message_id, e.session_id, e.name, e.schema_version, e.codec, e.payload, e.metadata::jsonb, $2,
           e.visible_at, e.expires_at, ",
    behind!("e.queue", "e.queue"),
    "
    FROM UNNEST($3::text[], $4::text[], $5::text[], $6::int4[], $7::text[], $8::bytea[], $9::text[],
                $10::timestamptz[], $11::timestamptz[], $1::text[])
         WITH ORDINALITY AS e(message_id, session_id, name, schema_version, codec, payload, metadata, visible_at,
                              expires_at, queue, ord)
    ORDER BY e.ord"
);

/// Copies each message to every subscription of topic `$1` whose filter names it, marking those
/// behind an older message of their session as [`ENQUEUE`] does.
pub(super) const PUBLISH: &str = concat!(
    "INSERT INTO cqrs_messages (queue, message_id, session_id, name, schema_version,
        codec, payload, metadata, enqueued_at, visible_at, expires_at, behind)
    SELECT $1 || '/' || s.subscription, e.message_id, e.session_id, e.name, e.schema_version, e.codec, e.payload,
           e.metadata::jsonb, $2, e.visible_at, e.expires_at, ",
    behind!("$1 || '/' || s.subscription", "s.subscription"),
    "
    FROM cqrs_subscriptions s,
         UNNEST($3::text[], $4::text[], $5::text[], $6::int4[], $7::text[], $8::bytea[], $9::text[],
                $10::timestamptz[], $11::timestamptz[])
         WITH ORDINALITY AS e(message_id, session_id, name, schema_version, codec, payload, metadata, visible_at,
                              expires_at, ord)
    WHERE s.topic = $1 AND (s.names IS NULL OR e.name = ANY (s.names))
    ORDER BY s.subscription, e.ord
    RETURNING queue"
);

/// Locks up to `$4` due messages of queue `$1` at time `$2` until `$3`: only a session's oldest
/// message, and only when it is neither locked nor waiting for a retry. Competing consumers skip
/// each other's rows. A message locked here (or by `COMPLETE_AND_NEXT`) is due again at the
/// lease's end, and not before (migration 8): the walk below never meets a held message, where
/// under load a subscription's queue had some 220 due, all held, read by every receive.
///
/// Two ways in, `heads` first:
/// - `heads`: the oldest message marked behind (migration 9) of each session that has some,
///   found by a skip scan of the `cqrs_messages_behind` index (a lookup a session), taken when
///   it has become its session's first. A session has messages behind when it is busy: a
///   conference's seat commands, an order's events published together. There are a few such
///   sessions, where there are hundreds of messages behind their heads.
/// - `walk`: the due messages not behind, in the order they came due (`cqrs_messages_due`,
///   migration 7), stopping once `$4` are locked: a receive reads about as many messages as it
///   takes, not the whole backlog. Under load hundreds of sessions wait with a free head while
///   each consumer has room for a few more: sampled with `auto_explain`, a receive that first
///   gathered every session's oldest due message, checked and sorted them all read 2,400 pages
///   for the 4 it took (447 free heads). A message not marked behind may still follow another
///   (two enqueued at once to an empty session, a follower given back untried): each is checked
///   against its session's older messages.
///
/// Each check is one lookup walking back from the message; written as a scalar subquery, it
/// stays that lookup (an `EXISTS` may become a join that reads the whole session index).
pub(super) const RECEIVE: &str = concat!(
    "WITH RECURSIVE behind(session_id, id) AS (
        (SELECT b.session_id, b.id FROM cqrs_messages b WHERE b.queue = $1 AND b.behind
         ORDER BY b.session_id, b.id LIMIT 1)
        UNION ALL
        SELECT n.session_id, n.id FROM behind w, LATERAL (
            SELECT b.session_id, b.id FROM cqrs_messages b WHERE b.queue = $1 AND b.behind AND b.session_id > w.session_id
            ORDER BY b.session_id, b.id LIMIT 1) n
    ), heads AS (
        SELECT c.id FROM behind w JOIN cqrs_messages c ON c.id = w.id
        WHERE c.visible_at <= $2 AND (c.locked_until IS NULL OR c.locked_until <= $2)
          AND (SELECT s.id FROM cqrs_messages s WHERE s.queue = $1 AND s.session_id = w.session_id AND s.id < w.id
               ORDER BY s.id DESC LIMIT 1) IS NULL
        ORDER BY c.visible_at, c.id LIMIT $4
        FOR UPDATE OF c SKIP LOCKED
    ), walk AS (
        SELECT c.id FROM cqrs_messages c
        WHERE c.queue = $1 AND NOT c.behind AND c.visible_at <= $2
          AND (c.locked_until IS NULL OR c.locked_until <= $2)
          AND (c.session_id IS NULL OR (
                SELECT s.id FROM cqrs_messages s WHERE s.queue = $1 AND s.session_id = c.session_id AND s.id < c.id
                ORDER BY s.id DESC LIMIT 1) IS NULL)
        ORDER BY c.visible_at, c.id LIMIT $4
        FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT id FROM heads UNION ALL SELECT id FROM walk LIMIT $4
    )
    UPDATE cqrs_messages m SET locked_until = $3, visible_at = $3, delivery_count = m.delivery_count + 1
    FROM picked WHERE m.id = picked.id
    RETURNING ",
    message_columns!()
);

/// Completes the deliveries of several consumers' requests and, for each request whose
/// deliveries were all still held, locks the next messages of its session. Requests: queues
/// `$1`, sessions `$2` (NULL: none, nothing is locked), how many to lock at most `$3`, counted
/// from 1 by their order. Deliveries: ids `$4`, delivery counts `$5` (each fenced), and the
/// request each belongs to `$6`. At time `$7`, locked until `$8`. Each row answers request `idx`.
///
/// A request's run is, from its session's oldest message left, those due and neither locked
/// nor waiting for a retry, up to the first that is not: of the session's first `max`
/// messages, those before the first that is not, so a session with hundreds waiting (a
/// conference's seat commands) is read no further than the run can go. One statement: its
/// parts all see the table as it was before the delete, so the runs leave the completed ids
/// out. Until it commits, the completed rows stay locked by the delete, so a competing
/// `RECEIVE`, which takes a session only at its oldest message, skips the session; after, the
/// session's oldest message is locked by this consumer. A session is held by one consumer at a
/// time, so two requests of a statement are of different sessions (or one of them, whose lease
/// ran out, completes nothing and takes nothing).
pub(super) const COMPLETE_AND_NEXT: &str = concat!(
    "WITH r AS (
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS r(queue, session_id, max, idx)
    ), d AS (
        SELECT * FROM UNNEST($4::int8[], $5::int4[], $6::int8[]) AS d(id, count, idx)
    ), done AS (
        DELETE FROM cqrs_messages m USING d
        WHERE m.id = d.id AND m.delivery_count = d.count AND m.locked_until IS NOT NULL
        RETURNING m.id, d.idx
    ), held AS (
        SELECT r.* FROM r
        WHERE r.session_id IS NOT NULL AND r.max > 0
          AND (SELECT count(*) FROM done WHERE done.idx = r.idx) = (SELECT count(*) FROM d WHERE d.idx = r.idx)
    ), run AS (
        SELECT n.id, h.idx FROM held h, LATERAL (
            SELECT t.id FROM (
                SELECT s.id, bool_or(s.visible_at > $7 OR COALESCE(s.locked_until > $7, false))
                                 OVER (ORDER BY s.id) AS stopped
                FROM (SELECT s.id, s.visible_at, s.locked_until FROM cqrs_messages s
                      WHERE s.queue = h.queue AND s.session_id = h.session_id AND s.id <> ALL ($4)
                      ORDER BY s.id LIMIT h.max) s
            ) t
            WHERE NOT t.stopped OFFSET 0) n
    )
    UPDATE cqrs_messages m SET locked_until = $8, visible_at = $8, delivery_count = m.delivery_count + 1
    FROM run WHERE m.id = run.id
    RETURNING run.idx, ",
    message_columns!()
);

pub(super) const COMPLETE: &str =
    "DELETE FROM cqrs_messages WHERE id = $1 AND delivery_count = $2 AND locked_until IS NOT NULL";
/// Gives deliveries back untried (ids `$1`, delivery counts `$2`): unlocked, due at `$3`, their
/// delivery not counted.
pub(super) const RELEASE: &str = "UPDATE cqrs_messages m SET locked_until = NULL, visible_at = $3, \
     delivery_count = m.delivery_count - 1 \
     FROM UNNEST($1::int8[], $2::int4[]) AS d(id, count) \
     WHERE m.id = d.id AND m.delivery_count = d.count AND m.locked_until IS NOT NULL";
pub(super) const ABANDON: &str = "UPDATE cqrs_messages SET locked_until = NULL, visible_at = $3 \
     WHERE id = $1 AND delivery_count = $2 AND locked_until IS NOT NULL";
pub(super) const DEAD_LETTER: &str = "WITH moved AS (
        DELETE FROM cqrs_messages WHERE id = $1 AND delivery_count = $2 AND locked_until IS NOT NULL
        RETURNING queue, message_id, name, schema_version, codec, payload, metadata, delivery_count
    )
    INSERT INTO cqrs_dead_letters (queue, message_id, name, schema_version, codec, payload, metadata, reason,
        delivery_count, dead_lettered_at)
    SELECT queue, message_id, name, schema_version, codec, payload, metadata, $3, delivery_count, $4 FROM moved";

macro_rules! dead_letter_columns {
    () => {
        "id, queue, name, schema_version, codec, payload, metadata::text AS metadata, reason, delivery_count, \
         dead_lettered_at"
    };
}

pub(super) const DEAD_LETTERS: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM cqrs_dead_letters WHERE ($1::text IS NULL OR queue = $1) ORDER BY id LIMIT $2"
);
pub(super) const TAKE_DEAD_LETTER: &str = concat!(
    "DELETE FROM cqrs_dead_letters WHERE id = $1 RETURNING ",
    dead_letter_columns!()
);

pub(super) const SUBSCRIBE: &str = "INSERT INTO cqrs_subscriptions (topic, subscription, names) VALUES ($1, $2, $3) \
     ON CONFLICT (topic, subscription) DO UPDATE SET names = excluded.names";

pub(super) const LOAD_CHECKPOINT: &str = "SELECT position FROM cqrs_checkpoints WHERE subscription = $1";
pub(super) const SAVE_CHECKPOINT: &str = "INSERT INTO cqrs_checkpoints (subscription, position, updated_at) \
     VALUES ($1, $2, now()) ON CONFLICT (subscription) DO UPDATE SET position = excluded.position, \
     updated_at = excluded.updated_at";

pub(super) const QUEUE_DEPTHS: &str =
    "SELECT queue, count(*) FROM cqrs_messages GROUP BY queue ORDER BY queue";

pub(super) const DEAD_LETTER_COUNT: &str = "SELECT count(*) FROM cqrs_dead_letters";
