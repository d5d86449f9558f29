-- The event log: one row per event, the global position gap-free under the single writer.
CREATE TABLE cqrs_events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    stream_id      TEXT    NOT NULL,
    stream_type    TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    name           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    codec          TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
    UNIQUE (stream_id, version)
);

-- Events not yet published: filled by a trigger in the append's own transaction.
CREATE TABLE cqrs_outbox (
    position  INTEGER PRIMARY KEY,
    stream_id TEXT    NOT NULL,
    version   INTEGER NOT NULL
);
CREATE INDEX cqrs_outbox_stream ON cqrs_outbox (stream_id, version);

CREATE TRIGGER cqrs_events_to_outbox AFTER INSERT ON cqrs_events
BEGIN
    INSERT INTO cqrs_outbox (position, stream_id, version) VALUES (NEW.position, NEW.stream_id, NEW.version);
END;

-- The latest snapshot (serialized memento) of each stream.
CREATE TABLE cqrs_snapshots (
    stream_id      TEXT    PRIMARY KEY,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    codec          TEXT    NOT NULL,
    bytes          BLOB    NOT NULL,
    taken_at       INTEGER NOT NULL
);

-- Process-manager state documents, with optimistic concurrency on `version`.
CREATE TABLE cqrs_processes (
    process_type   TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    completed      INTEGER NOT NULL,
    key            TEXT,
    codec          TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    state          BLOB    NOT NULL,
    saved_seq      INTEGER NOT NULL, -- increases with every save, for "most recently saved"
    PRIMARY KEY (process_type, id)
);
CREATE INDEX cqrs_processes_key ON cqrs_processes (process_type, key, completed);
CREATE INDEX cqrs_processes_saved ON cqrs_processes (saved_seq);

-- Commands a process produced and has not sent yet (its outbox), in order.
CREATE TABLE cqrs_process_commands (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    process_type   TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    codec          TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    metadata       TEXT    NOT NULL,
    stored_at      INTEGER NOT NULL,
    UNIQUE (process_type, id, message_id)
);
CREATE INDEX cqrs_process_commands_age ON cqrs_process_commands (stored_at);

-- Message ids each handler has processed (the inbox decorator).
CREATE TABLE cqrs_inbox (
    handler      TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (handler, message_id)
) WITHOUT ROWID;
