//! The shared harness of the app's tests: the real system with its workers, its router
//! called without a socket.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use conference_app::api;
use conference_app::documents::Documents;
use conference_app::system::{Backend, System};
use conference_domain::read_model::ConferenceViewStore;
use cqrs_core::{Clock, ManualClock, SharedClock};
use cqrs_sql::{PgOptions, PgStore, SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

pub const TOKEN: &str = "test-admin-token";

pub struct Harness<S: Backend> {
    pub router: Router,
    pub system: Arc<System<S>>,
    pub clock: Arc<ManualClock>,
    stop: watch::Sender<bool>,
    workers: Option<tokio::task::JoinHandle<cqrs_core::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl<S: Backend> Harness<S> {
    pub fn start(
        store: S,
        documents: Documents,
        clock: Arc<ManualClock>,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let system = Arc::new(System::new(store, documents, clock.clone() as SharedClock).unwrap());
        let (stop, stopped) = watch::channel(false);
        let workers = tokio::spawn({
            let system = system.clone();
            let mut stopped = stopped;
            async move {
                system
                    .run_workers(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            }
        });
        Self {
            router: api::router(system.clone(), TOKEN.to_owned()),
            system,
            clock,
            stop,
            workers: Some(workers),
            _dir: dir,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        admin: bool,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if admin {
            request = request.header("authorization", format!("Bearer {TOKEN}"));
        }
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{value}");
        (status, value)
    }

    /// Polls `check` until it holds (the workers run in the background); fails after 20 s.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..1000 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what} did not happen");
    }

    pub async fn order(&self, order_id: &str, after: i64) -> Value {
        let (status, order) = self
            .call(
                "GET",
                &format!("/api/orders/{order_id}?wait_for_version={after}"),
                None,
                false,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{order}");
        order
    }

    /// Waits until the order is in `state`.
    pub async fn order_in(&self, order_id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let order = self.order(order_id, -1).await;
            if order["state"] == state {
                return order;
            }
            last = order;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("order {order_id} never reached `{state}`: {last}");
    }

    /// The seats left of `seat_type` in the view (−1 before the view has the type).
    pub async fn available(&self, seat_type: &str) -> i64 {
        let id: Uuid = seat_type.parse().unwrap();
        let row = self.system.documents.seat_type(id).await.unwrap();
        row.map_or(-1, |r| r.available_quantity.into())
    }

    /// Runs `audit` until the workers have settled (views caught up, follow-ups done, `sold`
    /// seats sold). Seats are conserved at every run; the follow-ups may lag, not fail.
    pub async fn audit(&self, conference: Uuid, sold: &[(&str, i64)]) {
        let settled = |report: &conference_app::audit::AuditReport| {
            report.is_clean()
                && report.lagging_views == 0
                && sold.iter().all(|(seat_type, count)| {
                    report
                        .seats
                        .get(&(conference, seat_type.parse().unwrap()))
                        .map(|c| c.sold)
                        == Some(*count)
                })
        };
        let mut last = None;
        for _ in 0..250 {
            let report =
                conference_app::audit::audit(&self.system.store, &self.system.documents, self.clock.now())
                    .await
                    .unwrap();
            for violation in &report.violations {
                assert!(
                    violation.contains("no seat assignments") || violation.contains("not flagged for refund"),
                    "{report}"
                );
            }
            if settled(&report) {
                return;
            }
            last = Some(report);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the system never settled: {}", last.unwrap());
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(workers) = self.workers.take() {
            workers.await.unwrap().unwrap();
        }
    }
}

/// A fresh event store and read-model file in a temporary directory, on a manual clock.
pub async fn sqlite_files() -> (SqliteStore, Documents, Arc<ManualClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = SqliteStore::open_with(SqliteOptions::new(dir.path().join("events.db")).clock(clock.clone()))
        .await
        .unwrap();
    let documents = Documents::open_sqlite(&dir.path().join("read_models.db"))
        .await
        .unwrap();
    (store, documents, clock, dir)
}

pub async fn sqlite() -> Harness<SqliteStore> {
    let (store, documents, clock, dir) = sqlite_files().await;
    Harness::start(store, documents, clock, Some(dir))
}

/// A fresh schema on the test database, or `None` (with a notice) when no URL is set.
pub async fn postgres() -> Option<Harness<PgStore>> {
    let Ok(url) = std::env::var("CQRS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CQRS_TEST_POSTGRES_REQUIRED").is_none(),
            "CQRS_TEST_POSTGRES_REQUIRED is set but CQRS_TEST_POSTGRES_URL is not"
        );
        eprintln!("notice: CQRS_TEST_POSTGRES_URL is not set; PostgreSQL API tests skipped");
        return None;
    };
    let schema = format!("cqrs_test_app_{}", Uuid::new_v4().simple());
    let clock = Arc::new(ManualClock::starting_now());
    let store = PgStore::connect_with(
        PgOptions::new(url.clone())
            .schema(schema.clone())
            .clock(clock.clone()),
    )
    .await
    .unwrap();
    let documents = Documents::connect_postgres(&url, &schema).await.unwrap();
    Some(Harness::start(store, documents, clock, None))
}

pub fn conference_form(code: &str) -> Value {
    json!({
        "code": code, "name": "RustConf", "description": "All things Rust", "location": "Lyon",
        "tagline": "Fearless", "start_date": "2027-03-10T09:00:00Z", "end_date": "2027-03-12T18:00:00Z",
        "owner_name": "Ferris", "owner_email": "ferris@example.org",
    })
}

/// Creates and publishes a conference with a paid and a free seat type; returns their ids.
pub async fn published_conference<S: Backend>(
    h: &Harness<S>,
    code: &str,
    seats: i64,
) -> (Uuid, String, String) {
    let (status, created) = h
        .call(
            "POST",
            "/api/admin/conferences",
            Some(conference_form(code)),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let conference: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let mut ids = Vec::new();
    for (name, price) in [("Full pass", "100.00"), ("Student", "0")] {
        let form =
            json!({ "name": name, "description": format!("{name} seat"), "price": price, "quantity": seats });
        let (status, seat) = h
            .call(
                "POST",
                &format!("/api/admin/conferences/{code}/seat-types"),
                Some(form),
                true,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{seat}");
        ids.push(seat["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = h
        .call(
            "POST",
            &format!("/api/admin/conferences/{code}/publish"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for id in &ids {
        h.eventually("seat availability", || async { h.available(id).await == seats })
            .await;
    }
    (conference, ids[0].clone(), ids[1].clone())
}

pub async fn place<S: Backend>(h: &Harness<S>, code: &str, seats: Value) -> (StatusCode, Value) {
    h.call(
        "POST",
        &format!("/api/conferences/{code}/orders"),
        Some(json!({ "seats": seats })),
        false,
    )
    .await
}
