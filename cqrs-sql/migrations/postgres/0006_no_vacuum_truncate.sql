-- The tables a running system churns through are never truncated by VACUUM (autovacuum's or
-- the store's own). Truncating the empty pages at a table's end takes an ACCESS EXCLUSIVE
-- lock, retried for up to five seconds while the table is busy, and every receive, enqueue and
-- completion queues behind it once it is taken: under load, a queue that emptied its last
-- pages stalled the whole system for a second. The pages are reused by the next messages.
ALTER TABLE cqrs_messages SET (vacuum_truncate = false);
ALTER TABLE cqrs_outbox SET (vacuum_truncate = false);
ALTER TABLE cqrs_process_commands SET (vacuum_truncate = false);
ALTER TABLE cqrs_processes SET (vacuum_truncate = false);
