-- A receive walks a queue's due messages in the order they came due, ties in the order they
-- were enqueued, and stops once it has locked as many as it asked for. With the id in the
-- index the walk needs no sort, so it can stop early; without it every due message of the
-- queue was read and sorted at each receive.
DROP INDEX cqrs_messages_due;
CREATE INDEX cqrs_messages_due ON cqrs_messages (queue, visible_at, id);
