-- Receiving reads the messages that are due now. Without this index it walked every message of
-- the queue in id order, delayed ones included (a registration queues a timer 15 minutes ahead
-- per order), so each receive cost grew with the number of timers waiting.
CREATE INDEX cqrs_messages_due ON cqrs_messages (queue, visible_at);
