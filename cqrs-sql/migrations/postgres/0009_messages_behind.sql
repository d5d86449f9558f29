-- A message enqueued behind an older message of its session is marked `behind`, and kept out of
-- the due index: a receive's walk of the due messages no longer meets the followers of a busy
-- session, which it could not take anyway. Sampled under load, the `commands` queue held up to
-- 660 due seat commands of one conference's session behind the one its holder was handling, and
-- every receive checked each of them against the session: 740 pages a receive.
--
-- The mark is only a hint about where a receive finds a message, never whether it may take it:
-- a receive also takes the oldest message of each session with messages behind, when that one
-- is the session's first (it may be marked behind: its predecessors completed since).
ALTER TABLE cqrs_messages ADD COLUMN behind BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX cqrs_messages_behind ON cqrs_messages (queue, session_id, id) WHERE behind;
DROP INDEX cqrs_messages_due;
CREATE INDEX cqrs_messages_due ON cqrs_messages (queue, visible_at, id) WHERE NOT behind;
