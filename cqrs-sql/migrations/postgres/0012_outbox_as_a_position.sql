-- The outbox becomes a position. Every event at or below `cqrs_outbox_position.position` is
-- published, except the ones `cqrs_outbox` still holds: events held back because the bus
-- refused their stream. `cqrs_outbox_ahead` holds the events above the position that were
-- published already (streams marked one at a time). An append now writes no outbox row, and a
-- publisher's pass moves the position in one update, where before every event cost an insert,
-- an index entry and a delete (30 WAL records an order of the conference's load, an eighth of
-- all it wrote).
CREATE TABLE cqrs_outbox_position (
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    position BIGINT NOT NULL,
    -- The position before the last move, so that one statement can move it and know from where.
    previous BIGINT NOT NULL
);
-- The position starts at the last event committed. Every event at or below it is published
-- unless it has its outbox row: the earlier schema wrote one with each event, in the event's
-- own transaction, so an event whose transaction is still running gets its row too. (No writer
-- of this schema runs yet: every store applies the migrations before it appends.)
INSERT INTO cqrs_outbox_position (position, previous)
SELECT COALESCE(MAX(position), 0), COALESCE(MAX(position), 0) FROM cqrs_events;
CREATE TABLE cqrs_outbox_ahead (position BIGINT PRIMARY KEY);
ALTER TABLE cqrs_outbox_position SET (vacuum_truncate = false);
ALTER TABLE cqrs_outbox_ahead SET (vacuum_truncate = false);
