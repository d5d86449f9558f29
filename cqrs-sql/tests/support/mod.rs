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
    postgres_with(test, |options| options).await
}

/// A store on a fresh schema ([`PgStore::schema`]) with the options `configure` sets, or
/// `None` when PostgreSQL tests are skipped.
#[cfg(feature = "postgres")]
pub(crate) async fn postgres_with(
    test: &str,
    configure: impl FnOnce(PgOptions) -> PgOptions,
) -> Option<PgStore> {
    let url = postgres_url()?;
    let store = PgStore::connect_with(configure(PgOptions::new(url).schema(fresh_schema(test))))
        .await
        .expect("the test database is reachable");
    Some(store)
}

/// One event to append, its seat type `n`.
///
/// # Panics
/// Never: the sample event encodes.
pub(crate) fn one_event(n: u32) -> Vec<cqrs_core::NewEvent> {
    use cqrs_core::EventSet;
    let event: cqrs_core::testing::sample::InventoryEvent = cqrs_core::testing::sample::SeatsAdded {
        seat_type: n,
        quantity: 1,
    }
    .into();
    vec![cqrs_core::NewEvent {
        event_id: cqrs_core::uuid::Uuid::now_v7(),
        payload: event.encode(cqrs_core::Codec::Json).unwrap(),
        metadata: cqrs_core::EventMetadata::default(),
    }]
}

/// Inserts, in another writer's transaction, an event of `stream` at `version` as an append
/// would: at the transaction's position (its id shifted left by 20 bits, plus 1). Until that
/// transaction commits, a gap-safe reader answers no event after it.
///
/// # Panics
/// When the insert fails.
#[cfg(feature = "postgres")]
pub(crate) async fn insert_in_transaction(transaction: &mut sqlx::PgConnection, stream: &str, version: i64) {
    use cqrs_core::EventSet;
    let event: cqrs_core::testing::sample::InventoryEvent = cqrs_core::testing::sample::SeatsAdded {
        seat_type: 0,
        quantity: 1,
    }
    .into();
    sqlx::query(
        "INSERT INTO cqrs_events (position, event_id, stream_id, stream_type, version, name, schema_version, \
         codec, payload, metadata, recorded_at) \
         VALUES ((pg_current_xact_id()::text::bigint << 20) + 1, $1, $2, 'Test', $3, $4, 1, 'json', $5, '{}', now())",
    )
    .bind(cqrs_core::uuid::Uuid::now_v7())
    .bind(stream)
    .bind(version)
    .bind(event.name())
    .bind(event.encode(cqrs_core::Codec::Json).unwrap().bytes.to_vec())
    .execute(transaction)
    .await
    .unwrap();
}

/// Stored events that cannot be read: `(case, name, codec tag, payload)`.
pub(crate) const CORRUPT_ROWS: [(&str, &str, &str, &[u8]); 3] = [
    ("bad-json", "sample.SeatsAdded", "json", b"{not json"),
    ("unknown-name", "sample.Unheard", "json", b"{}"),
    ("unknown-codec", "sample.SeatsAdded", "yaml", b"{}"),
];

/// What loading each of [`CORRUPT_ROWS`] must fail with: a clear, permanent error.
///
/// # Panics
/// When the error is another one.
pub(crate) fn assert_unreadable(case: &str, error: &cqrs_core::Error) {
    use cqrs_core::Error;
    match case {
        "bad-json" => assert!(matches!(error, Error::Codec(_)), "{case}: {error}"),
        "unknown-name" => assert!(
            matches!(error, Error::UnknownMessage(n) if n == "sample.Unheard"),
            "{error}"
        ),
        _ => assert!(error.to_string().contains("codec tag"), "{case}: {error}"),
    }
    assert!(!error.is_retryable(), "{case}: bad data is not worth retrying");
}
