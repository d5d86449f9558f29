//! Shared helpers of the cqrs-sql integration tests.

#![allow(dead_code, reason = "each test file uses a part")]

#[cfg(feature = "postgres")]
use cqrs_sql::{PgOptions, PgStore};

/// The variable naming the PostgreSQL database the tests may use.
pub(crate) const POSTGRES_URL: &str = "CQRS_TEST_POSTGRES_URL";
/// When set (as in CI), a missing `CQRS_TEST_POSTGRES_URL` fails the tests instead of
/// skipping them.
pub(crate) const POSTGRES_REQUIRED: &str = "CQRS_TEST_POSTGRES_REQUIRED";

/// The test database URL, or `None` (with a printed notice) when PostgreSQL tests are skipped.
///
/// # Panics
/// When the URL is missing but PostgreSQL tests are required.
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os(POSTGRES_REQUIRED).is_some() => {
            panic!("{POSTGRES_REQUIRED} is set but {POSTGRES_URL} is not")
        }
        _ => {
            eprintln!("notice: {POSTGRES_URL} is not set; skipping this PostgreSQL test");
            None
        }
    }
}

/// A unique schema name for one test.
pub(crate) fn fresh_schema(test: &str) -> String {
    format!("cqrs_test_{test}_{}", cqrs_core::uuid::Uuid::now_v7().simple())
}

/// A store on a fresh schema, or `None` when PostgreSQL tests are skipped.
#[cfg(feature = "postgres")]
pub(crate) async fn postgres(test: &str) -> Option<PgStore> {
    let url = postgres_url()?;
    let store = PgStore::connect_with(PgOptions::new(url).schema(fresh_schema(test)))
        .await
        .expect("the test database is reachable");
    Some(store)
}
