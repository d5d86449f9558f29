//! `rebuild` of the priced-order read model while orders keep flowing: no request fails, the
//! rebuilt model equals the old one when it takes over, and what serves afterwards equals a
//! replay of the whole log.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use conference_app::read_models::models;
use conference_app::rebuild;
use conference_app::system::Backend;
use conference_domain::read_model::{MemoryReadModels, PricedOrderGenerator, PricedOrderStore};
use cqrs_core::{EventDispatcher, SharedClock};
use serde_json::json;
use support::{Harness, place, published_conference, sqlite};
use uuid::Uuid;

/// Places `n` orders one after the other, each followed by a wait for its price; every call
/// must succeed. Returns the order ids.
async fn order_flow<S: Backend>(h: Arc<Harness<S>>, seat_type: String, n: usize) -> Vec<Uuid> {
    let mut orders = Vec::new();
    for _ in 0..n {
        let (status, placed) = place(
            &h,
            "flowconf",
            json!([{ "seat_type_id": seat_type, "quantity": 1 }]),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{placed}");
        let order_id = placed["order_id"].as_str().unwrap().to_owned();
        let priced = h.order(&order_id, 0).await;
        assert_eq!(priced["total"], "100.00", "{priced}");
        orders.push(order_id.parse().unwrap());
    }
    orders
}

/// The priced orders a fresh replay of the whole log gives.
async fn replayed<S: Backend>(h: &Harness<S>, orders: &[Uuid]) -> BTreeMap<Uuid, serde_json::Value> {
    let memory = MemoryReadModels::new();
    let mut dispatcher = EventDispatcher::new();
    Arc::new(PricedOrderGenerator::new(
        memory.clone(),
        h.clock.clone() as SharedClock,
    ))
    .subscribe(&mut dispatcher)
    .unwrap();
    let names: Vec<&str> = dispatcher.names().collect();
    let mut after = 0;
    loop {
        let page = h.system.store.read_all(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page.iter().filter(|e| names.contains(&e.payload.name.as_str())) {
            dispatcher.dispatch(&event.to_envelope()).await.unwrap();
        }
    }
    let mut priced = BTreeMap::new();
    for id in orders {
        let order = memory.priced_order(*id).await.unwrap().unwrap();
        priced.insert(*id, serde_json::to_value(order).unwrap());
    }
    priced
}

async fn serving<S: Backend>(h: &Harness<S>, orders: &[Uuid]) -> BTreeMap<Uuid, serde_json::Value> {
    let mut priced = BTreeMap::new();
    for id in orders {
        let order = h.system.documents.priced_order(*id).await.unwrap().unwrap();
        priced.insert(*id, serde_json::to_value(order).unwrap());
    }
    priced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_the_priced_orders_while_orders_flow() {
    let h = Arc::new(sqlite().await);
    let (conference, seat_type, _) = published_conference(&h, "flowconf", 500).await;
    let before = order_flow(h.clone(), seat_type.clone(), 10).await;

    // Orders keep flowing while the model is rebuilt and switched.
    let flow = tokio::spawn(order_flow(h.clone(), seat_type.clone(), 30));
    let applied = AtomicUsize::new(0);
    let rebuilt = rebuild::rebuild(&h.system, "priced_order", || {
        applied.fetch_add(1, Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!(
        applied.into_inner(),
        rebuilt.events,
        "progress counts every event applied"
    );
    assert_eq!((rebuilt.from, rebuilt.to), (0, 1));
    assert!(rebuilt.events >= 20, "{rebuilt:?}");
    assert_eq!(h.system.documents.generation(models::PRICED_ORDER), 1);
    let during = flow.await.unwrap();

    // What serves now equals a replay of the whole log.
    let all: Vec<Uuid> = before.iter().chain(&during).copied().collect();
    h.audit(conference, &[]).await;
    assert_eq!(serving(&h, &all).await, replayed(&h, &all).await);

    // The old generation is dropped; reads are unaffected.
    let dropped = rebuild::drop_old(&h.system, "priced_order", &rebuilt)
        .await
        .unwrap();
    assert!(dropped >= before.len() as u64, "{dropped}");
    assert_eq!(serving(&h, &all).await.len(), all.len());

    // A rebuild of a settled model gives exactly the rows that served.
    let settled = h.system.documents.dump(models::PRICED_ORDER).await.unwrap();
    let again = rebuild::rebuild(&h.system, "priced_order", || {}).await.unwrap();
    assert_eq!(again.to, 2);
    let old = h.system.documents.pinned([(models::PRICED_ORDER.to_owned(), 1)]);
    assert_eq!(old.dump(models::PRICED_ORDER).await.unwrap(), settled);
    assert_eq!(
        h.system.documents.dump(models::PRICED_ORDER).await.unwrap(),
        settled
    );

    let err = rebuild::rebuild(&h.system, "no_such_model", || {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown read model"), "{err}");
    match Arc::try_unwrap(h) {
        Ok(h) => h.stop().await,
        Err(_) => panic!("the flow still holds the harness"),
    }
}
