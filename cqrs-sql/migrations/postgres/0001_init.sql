-- The event log. `position` is the appending transaction's id times 2^20 plus the event's
-- ordinal in it: increasing in an order consistent with every stream, and, read only below the
-- oldest running transaction (see `read_all`), never skipping an event that commits late.
CREATE TABLE cqrs_events (
    position       BIGINT      PRIMARY KEY,
    event_id       UUID        NOT NULL UNIQUE,
    stream_id      TEXT        NOT NULL,
    stream_type    TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    name           TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    codec          TEXT        NOT NULL,
    payload        BYTEA       NOT NULL, -- JSON events: convert_from(payload, 'UTF8')::jsonb
    metadata       JSONB       NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (stream_id, version)
);

-- Events not yet published, written by the append's own statement.
CREATE TABLE cqrs_outbox (
    position  BIGINT PRIMARY KEY,
    stream_id TEXT   NOT NULL,
    version   BIGINT NOT NULL
);
CREATE INDEX cqrs_outbox_stream ON cqrs_outbox (stream_id, version);

CREATE TABLE cqrs_snapshots (
    stream_id      TEXT        PRIMARY KEY,
    version        BIGINT      NOT NULL,
    schema_version INTEGER     NOT NULL,
    codec          TEXT        NOT NULL,
    bytes          BYTEA       NOT NULL,
    taken_at       TIMESTAMPTZ NOT NULL
);

CREATE SEQUENCE cqrs_process_saves;

CREATE TABLE cqrs_processes (
    process_type   TEXT    NOT NULL,
    id             UUID    NOT NULL,
    version        BIGINT  NOT NULL,
    completed      BOOLEAN NOT NULL,
    key            TEXT,
    codec          TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    state          BYTEA   NOT NULL,
    saved_seq      BIGINT  NOT NULL DEFAULT nextval('cqrs_process_saves'),
    PRIMARY KEY (process_type, id)
);
CREATE INDEX cqrs_processes_key ON cqrs_processes (process_type, key, completed, saved_seq);

CREATE TABLE cqrs_process_commands (
    seq            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    process_type   TEXT        NOT NULL,
    id             UUID        NOT NULL,
    message_id     TEXT        NOT NULL,
    name           TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    codec          TEXT        NOT NULL,
    payload        BYTEA       NOT NULL,
    metadata       JSONB       NOT NULL,
    stored_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (process_type, id, message_id)
);
CREATE INDEX cqrs_process_commands_age ON cqrs_process_commands (stored_at);

CREATE TABLE cqrs_inbox (
    handler      TEXT        NOT NULL,
    message_id   TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (handler, message_id)
);
