-- Outbox marks walk each stream's versions down from the published one through the events'
-- (stream_id, version) key, and stop at the first version already published: the outbox needs
-- no index of its own. Every append wrote a page of that index per stream, a third of the
-- pages a batch of appends to distinct streams wrote.
DROP INDEX IF EXISTS cqrs_outbox_stream;
