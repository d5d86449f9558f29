-- Queued messages. A received message is locked until `locked_until` (its lease); settling is
-- fenced by `delivery_count`, so a consumer whose lease ran out settles nothing. Consumers of
-- several processes compete with FOR UPDATE SKIP LOCKED; a session's messages go one at a time,
-- oldest first, whichever process holds it.
CREATE TABLE cqrs_messages (
    id             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue          TEXT        NOT NULL,
    message_id     TEXT        NOT NULL,
    session_id     TEXT,
    name           TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    codec          TEXT        NOT NULL,
    payload        BYTEA       NOT NULL,
    metadata       JSONB       NOT NULL,
    enqueued_at    TIMESTAMPTZ NOT NULL,
    visible_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ,
    delivery_count INTEGER     NOT NULL DEFAULT 0,
    locked_until   TIMESTAMPTZ
);
CREATE INDEX cqrs_messages_queue ON cqrs_messages (queue, id);
CREATE INDEX cqrs_messages_session ON cqrs_messages (queue, session_id, id) WHERE session_id IS NOT NULL;

CREATE TABLE cqrs_dead_letters (
    id               BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            TEXT        NOT NULL,
    message_id       TEXT        NOT NULL,
    name             TEXT        NOT NULL,
    schema_version   INTEGER     NOT NULL,
    codec            TEXT        NOT NULL,
    payload          BYTEA       NOT NULL,
    metadata         JSONB       NOT NULL,
    reason           TEXT        NOT NULL,
    delivery_count   INTEGER     NOT NULL,
    dead_lettered_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX cqrs_dead_letters_queue ON cqrs_dead_letters (queue, id);

-- Topic subscriptions: `names` lists the message names received, NULL for every message.
CREATE TABLE cqrs_subscriptions (
    topic        TEXT NOT NULL,
    subscription TEXT NOT NULL,
    names        TEXT[],
    PRIMARY KEY (topic, subscription)
);
