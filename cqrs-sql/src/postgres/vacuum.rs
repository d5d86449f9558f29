//! Vacuuming the tables a running system churns through.
//!
//! Every message enqueued is deleted when completed, every event held back in the outbox (or
//! published ahead of its position) when the position passes it, every process command when
//! sent; every process save updates its row, and every publisher's pass the outbox's position.
//! The dead rows stay in the tables and their indexes until VACUUM, and autovacuum looks at a
//! database once a minute at best (`autovacuum_naptime`), then only past a fifth of the table's
//! size. Meanwhile a queue's receive walks every dead entry of its due messages: under 200
//! orders a second, a receive grew from a fraction of a millisecond to 2.6 ms on average, and
//! the outbox's walk (when it held a row an event) likewise.
//! A store vacuums these tables itself, every few seconds: each vacuum is cheap when little
//! is dead, and `SKIP_LOCKED` lets one that another process is running go by.
//!
//! None of them truncates the table (`TRUNCATE false`, and `vacuum_truncate = false` on the
//! tables for autovacuum): cutting the empty pages off a table's end takes an `ACCESS
//! EXCLUSIVE` lock, and every statement on the table waits behind it. Under 300 orders a second
//! one such vacuum of `cqrs_messages` took five seconds, and no order completed for a second.

use std::time::Duration;

use sqlx::PgPool;

/// The tables vacuumed, each with its statement.
const CHURNED: [&str; 6] = [
    "VACUUM (SKIP_LOCKED, TRUNCATE false) cqrs_messages",
    "VACUUM (SKIP_LOCKED, TRUNCATE false) cqrs_outbox",
    "VACUUM (SKIP_LOCKED, TRUNCATE false) cqrs_outbox_ahead",
    "VACUUM (SKIP_LOCKED, TRUNCATE false) cqrs_outbox_position",
    "VACUUM (SKIP_LOCKED, TRUNCATE false) cqrs_process_commands",
    "VACUUM (SKIP_LOCKED, TRUNCATE false) cqrs_processes",
];

/// Vacuums the churned tables every `every`, forever (the store aborts the task).
pub(super) async fn run(pool: PgPool, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the tables were vacuumed or are new.
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(error) = vacuum(&pool).await {
            tracing::warn!(%error, "vacuum failed; trying again later");
        }
    }
}

async fn vacuum(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // A table skipped because another process is vacuuming it is expected, not worth the
    // warning PostgreSQL sends (and sqlx logs) for it.
    sqlx::raw_sql("SET client_min_messages = error")
        .execute(&mut *conn)
        .await?;
    let mut vacuumed = Ok(());
    for statement in CHURNED {
        // VACUUM cannot run as a prepared statement: the simple protocol.
        vacuumed = vacuumed.and(sqlx::raw_sql(statement).execute(&mut *conn).await.map(drop));
    }
    sqlx::raw_sql("RESET client_min_messages")
        .execute(&mut *conn)
        .await?;
    vacuumed
}
