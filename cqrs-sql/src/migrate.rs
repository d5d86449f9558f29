//! Embedded, versioned migrations.

/// One migration: applied once, in version order, inside a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "transport",
        sql: include_str!("../migrations/postgres/0002_transport.sql"),
    },
    Migration {
        version: 3,
        name: "checkpoints",
        sql: include_str!("../migrations/postgres/0003_checkpoints.sql"),
    },
    Migration {
        version: 4,
        name: "due_messages",
        sql: include_str!("../migrations/postgres/0004_due_messages.sql"),
    },
    Migration {
        version: 5,
        name: "outbox_without_stream_index",
        sql: include_str!("../migrations/postgres/0005_outbox_without_stream_index.sql"),
    },
    Migration {
        version: 6,
        name: "no_vacuum_truncate",
        sql: include_str!("../migrations/postgres/0006_no_vacuum_truncate.sql"),
    },
    Migration {
        version: 7,
        name: "due_messages_in_order",
        sql: include_str!("../migrations/postgres/0007_due_messages_in_order.sql"),
    },
    Migration {
        version: 8,
        name: "locked_messages_not_due",
        sql: include_str!("../migrations/postgres/0008_locked_messages_not_due.sql"),
    },
    Migration {
        version: 9,
        name: "messages_behind",
        sql: include_str!("../migrations/postgres/0009_messages_behind.sql"),
    },
    Migration {
        version: 10,
        name: "process_saves_in_place",
        sql: include_str!("../migrations/postgres/0010_process_saves_in_place.sql"),
    },
    Migration {
        version: 11,
        name: "messages_updated_in_their_page",
        sql: include_str!("../migrations/postgres/0011_messages_updated_in_their_page.sql"),
    },
    Migration {
        version: 12,
        name: "outbox_as_a_position",
        sql: include_str!("../migrations/postgres/0012_outbox_as_a_position.sql"),
    },
];

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "transport",
        sql: include_str!("../migrations/sqlite/0002_transport.sql"),
    },
    Migration {
        version: 3,
        name: "checkpoints",
        sql: include_str!("../migrations/sqlite/0003_checkpoints.sql"),
    },
    Migration {
        version: 4,
        name: "due_messages",
        sql: include_str!("../migrations/sqlite/0004_due_messages.sql"),
    },
    Migration {
        version: 5,
        name: "outbox_without_stream_index",
        sql: include_str!("../migrations/sqlite/0005_outbox_without_stream_index.sql"),
    },
];
