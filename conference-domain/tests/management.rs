//! Conference management (DOMAIN.md §10) on the memory event store: validation, unique slugs,
//! the owner's login, and which events each operation publishes.

mod support;

use std::sync::Arc;

use chrono::TimeDelta;
use conference_domain::error::{DomainError, kind_of};
use conference_domain::management::{ConferenceDetails, ConferenceManagement, SeatTypeDetails};
use cqrs_core::{EventReader, StreamId};
use cqrs_memory::MemoryEventStore;
use support::{money, t0};
use uuid::Uuid;

fn details(slug: &str) -> ConferenceDetails {
    ConferenceDetails {
        name: "RustConf".into(),
        description: "All things Rust".into(),
        location: "Montréal".into(),
        slug: slug.into(),
        tagline: None,
        twitter_search: None,
        start_date: t0(),
        end_date: t0() + TimeDelta::days(2),
        owner: conference_domain::values::Owner {
            name: "Ferris".into(),
            email: "Ferris@Example.org".into(),
        },
    }
}

fn seat(name: &str, quantity: i32) -> SeatTypeDetails {
    SeatTypeDetails {
        name: name.into(),
        description: "A pass".into(),
        quantity,
        price: money("199.99"),
    }
}

async fn names(store: &MemoryEventStore, conference: Uuid) -> Vec<String> {
    store
        .load(&StreamId::for_aggregate("Conference", conference), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload.name)
        .collect()
}

#[test]
fn forms_report_every_field_at_fault() {
    let mut bad = details("rust conf");
    bad.name = " ".into();
    bad.owner.email = "ferris".into();
    bad.end_date = t0() - TimeDelta::days(1);
    let fields: Vec<String> = bad
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| match e {
            DomainError::Validation { field, .. } => field,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(fields, ["name", "slug", "owner_email", "end_date"]);
    assert!(details("rust_conf").validate().is_ok());

    let fields = |s: SeatTypeDetails| -> Vec<String> {
        s.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| match e {
                DomainError::Validation { field, .. } => field,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert!(fields(seat("VIP", 100_000)).is_empty());
    assert_eq!(fields(seat("V", -1)), ["name", "quantity"]);
    let mut expensive = seat("VIP", 1);
    expensive.price = money("50000.01");
    expensive.description = "x".repeat(251);
    assert_eq!(fields(expensive), ["description", "price"]);
}

#[tokio::test]
async fn slugs_are_unique_among_live_conferences() {
    let store = Arc::new(MemoryEventStore::new());
    let admin = ConferenceManagement::new(store.clone());
    let first = admin.create(details("rustconf")).await.unwrap();
    assert_eq!(first.access_code().len(), 6);
    assert!(!first.is_published());
    let err = admin.create(details("rustconf")).await.unwrap_err();
    assert_eq!(kind_of(&err), Some("duplicate"));
    assert_eq!(err.to_string(), "The chosen conference slug is already taken.");
    let err = admin.create(details("rust conf")).await.unwrap_err();
    assert_eq!(kind_of(&err), Some("validation"));

    // Renaming frees the old slug.
    admin.update(first.id(), details("rustconf26")).await.unwrap();
    assert_eq!(admin.find_by_slug("rustconf").await.unwrap(), None);
    assert_eq!(
        admin.find_by_slug("rustconf26").await.unwrap().unwrap().id(),
        first.id()
    );
    let second = admin.create(details("rustconf")).await.unwrap();
    assert_eq!(
        admin.find_by_slug("rustconf").await.unwrap().unwrap().id(),
        second.id()
    );
    let err = admin
        .update(second.id(), details("rustconf26"))
        .await
        .unwrap_err();
    assert_eq!(kind_of(&err), Some("duplicate"));

    // The owner's login: email in any case, and the access code.
    let found = admin
        .find_by_owner("ferris@example.ORG", first.access_code())
        .await
        .unwrap();
    assert_eq!(found.map(|c| c.id()), Some(first.id()));
    assert_eq!(
        admin.find_by_owner("ferris@example.org", "XXXXXX").await.unwrap(),
        None
    );

    let err = admin.update(Uuid::now_v7(), details("other")).await.unwrap_err();
    assert_eq!(kind_of(&err), Some("not-found"));
}

#[tokio::test]
async fn publication_announces_seat_types() {
    let store = Arc::new(MemoryEventStore::new());
    let admin = ConferenceManagement::new(store.clone());
    let id = admin.create(details("rustconf")).await.unwrap().id();
    let early = admin.create_seat_type(id, seat("Early bird", 100)).await.unwrap();
    let doomed = admin.create_seat_type(id, seat("Doomed", 5)).await.unwrap();
    admin
        .update_seat_type(id, early, seat("Early bird", 120))
        .await
        .unwrap();
    admin.delete_seat_type(id, doomed).await.unwrap();
    assert_eq!(
        names(&store, id).await,
        [
            "ConferenceCreated",
            "SeatTypeDrafted",
            "SeatTypeDrafted",
            "SeatTypeDrafted",
            "SeatTypeDeleted"
        ],
        "nothing reaches the registration side before publication"
    );

    admin.publish(id).await.unwrap();
    admin.unpublish(id).await.unwrap();
    admin.publish(id).await.unwrap();
    let vip = admin.create_seat_type(id, seat("VIP", 10)).await.unwrap();
    admin.update_seat_type(id, vip, seat("VIP", 12)).await.unwrap();
    admin.update(id, details("rustconf")).await.unwrap();
    assert_eq!(
        names(&store, id).await[5..],
        [
            "SeatCreated",
            "ConferencePublished",
            "ConferenceUnpublished",
            "ConferencePublished",
            "SeatCreated",
            "SeatUpdated",
            "ConferenceUpdated"
        ]
    );
    let events = store
        .load(&StreamId::for_aggregate("Conference", id), 5)
        .await
        .unwrap();
    let created = events[0]
        .payload
        .decode::<conference_domain::management::SeatCreated>()
        .unwrap();
    assert_eq!((created.seat_type_id, created.conference_id), (early, id));
    assert_eq!(created.details.quantity, 120);

    let conference = admin.find(id).await.unwrap().unwrap();
    assert!(conference.is_published() && conference.was_ever_published());
    assert_eq!(conference.seat_types().len(), 2);

    let err = admin.delete_seat_type(id, vip).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Can't delete seats from a conference that has been published at least once."
    );
    for err in [
        admin
            .create_seat_type(Uuid::now_v7(), seat("VIP", 1))
            .await
            .unwrap_err(),
        admin
            .update_seat_type(id, Uuid::now_v7(), seat("VIP", 1))
            .await
            .unwrap_err(),
        admin.publish(Uuid::now_v7()).await.unwrap_err(),
    ] {
        assert_eq!(kind_of(&err), Some("not-found"), "{err}");
    }
}
