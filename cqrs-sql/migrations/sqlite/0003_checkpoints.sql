-- Where each catch-up subscription (projection) has got to in the global log. A SQL projection
-- updates its row in the same transaction as its own rows.
CREATE TABLE cqrs_checkpoints (
    subscription TEXT    PRIMARY KEY,
    position     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
