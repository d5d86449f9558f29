//! `GET /metrics` serves the Prometheus text of what the system recorded.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conference_app::api;
use conference_app::documents::Documents;
use conference_app::system::System;
use conference_domain::commands::RegisterToConference;
use conference_domain::values::SeatQuantity;
use cqrs_core::{CommandBus, Envelope, SystemClock};
use cqrs_sql::SqliteStore;
use http_body_util::BodyExt;
use tower::ServiceExt;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_show_in_the_metrics() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("events.db")).await.unwrap();
    let documents = Documents::open_sqlite(&dir.path().join("read_models.db"))
        .await
        .unwrap();
    let system = Arc::new(System::new(store, documents, SystemClock::shared()).unwrap());
    // An order for a conference nobody knows: pricing fails in-process, so the command is
    // forwarded to the queue; both count.
    let unknown_seat = SeatQuantity::new(Uuid::now_v7(), 1);
    let command = RegisterToConference::new(Uuid::now_v7(), Uuid::now_v7(), vec![unknown_seat]);
    system.bus.send(Envelope::command(command)).await.unwrap();

    conference_app::system::record_queue_metrics(&system.store, &mut Default::default())
        .await
        .unwrap();
    let router = api::with_metrics(api::router(system, "token".into()), handle);
    let response = router
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("cqrs_bus_messages_total"), "{text}");
    assert!(text.contains("name=\"RegisterToConference\""), "{text}");
    assert!(text.contains("cqrs_bus_send_seconds"), "{text}");
    assert!(
        text.contains("conference_queue_depth{queue=\"commands\"} 1"),
        "{text}"
    );
    assert!(text.contains("conference_dead_letters 0"), "{text}");
}
