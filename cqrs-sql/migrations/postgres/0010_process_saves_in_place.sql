-- A running process's save rewrites its row in place: a heap-only (HOT) update, which writes no
-- index entry. It could not be one while every save moved `saved_seq`, a column of the key
-- index: now only the save of a completed process moves it (what "the most recently saved
-- completed one" of a lookup by key orders by; which running process of a key comes first was
-- never specified). A page keeps room for the next versions of its rows: sampled under load,
-- none of the 60,000 updates of a 20,000-order run was heap-only before.
ALTER TABLE cqrs_processes SET (fillfactor = 70);
-- Each command a process sends is inserted and, once sent, deleted; its key is what every
-- statement reads it by: the process (to load and remove it) and the message id. The primary
-- key on `seq` and the index on `stored_at` were read by no statement but the relay's sweep,
-- which scans the few commands not yet sent (the store vacuums the table every few seconds),
-- and each command wrote an entry to both.
ALTER TABLE cqrs_process_commands DROP CONSTRAINT cqrs_process_commands_pkey;
DROP INDEX cqrs_process_commands_age;
