-- Outbox marks walk each stream's versions down from the published one through the events'
-- (stream_id, version) key, and stop at the first version already published: the outbox needs
-- no index of its own beyond its position. Every event appended wrote an entry of that index.
DROP INDEX IF EXISTS cqrs_outbox_stream;
