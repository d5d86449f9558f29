//! The demo conference created on first start, so that a new install has something to sell.

use chrono::{Datelike, TimeDelta, TimeZone, Utc};
use conference_domain::management::{ConferenceDetails, SeatTypeDetails};
use conference_domain::values::{Money, Owner};
use cqrs_core::Result;

use crate::system::{Backend, System};

/// The demo conference's code.
pub const DEMO_CODE: &str = "demo";

/// Creates and publishes the demo conference with three seat types, unless it exists.
/// Returns whether it created it.
///
/// # Errors
/// Store failures.
pub async fn seed<S: Backend>(system: &System<S>) -> Result<bool> {
    let management = &system.management;
    if management.find_by_slug(DEMO_CODE).await?.is_some() {
        return Ok(false);
    }
    let now = system.clock.now();
    let start = Utc
        .with_ymd_and_hms(now.year() + 1, 3, 10, 9, 0, 0)
        .single()
        .unwrap_or(now + TimeDelta::days(120));
    let conference = management
        .create(ConferenceDetails {
            name: "RustConf Demo".into(),
            description: "Two days of talks and workshops about Rust, CQRS and event sourcing.".into(),
            location: "Lyon".into(),
            slug: DEMO_CODE.into(),
            tagline: Some("Fearless registration".into()),
            twitter_search: None,
            start_date: start,
            end_date: start + TimeDelta::days(2),
            owner: Owner {
                name: "Demo Organizer".into(),
                email: "organizer@example.org".into(),
            },
        })
        .await?;
    for (name, description, quantity, price) in [
        ("Conference pass", "Both days of talks", 500, Money::new(19900, 2)),
        ("Workshop", "A full-day workshop", 60, Money::new(4530, 2)),
        ("Student pass", "Both days, for students", 100, Money::ZERO),
    ] {
        management
            .create_seat_type(
                conference.id(),
                SeatTypeDetails {
                    name: name.into(),
                    description: description.into(),
                    quantity,
                    price,
                },
            )
            .await?;
    }
    management.publish(conference.id()).await?;
    Ok(true)
}
