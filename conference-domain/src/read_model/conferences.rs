//! The conference and seat-type views (§12.3), their lookups (§12.5), and the registration of
//! seat types with SeatsAvailability.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_core::{
    CommandBus, Envelope, EventDispatcher, Metadata, Process, ProcessRepository, ProcessState, ProcessStore,
    Result, SharedClock,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::route;
use crate::commands::{AddSeats, RemoveSeats};
use crate::management::{
    ConferenceCreated, ConferenceDetails, ConferencePublished, ConferenceUnpublished, ConferenceUpdated,
    SeatCreated, SeatUpdated,
};
use crate::pricing::{SeatTypePrice, SeatTypeSource};
use crate::seats_availability::{AvailableSeatsChanged, SeatsReservationCancelled, SeatsReserved};
use crate::values::{Money, SeatQuantity};
use crate::{DomainError, Sourced};

/// A conference as the public site shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConferenceView {
    /// The conference.
    pub id: Uuid,
    /// Its public code (the slug).
    pub code: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Location.
    pub location: String,
    /// Tagline.
    pub tagline: Option<String>,
    /// Twitter search.
    pub twitter_search: Option<String>,
    /// First day.
    pub start_date: DateTime<Utc>,
    /// Open for registration.
    pub is_published: bool,
}

impl ConferenceView {
    fn refresh(&mut self, details: &ConferenceDetails) {
        self.code.clone_from(&details.slug);
        self.name.clone_from(&details.name);
        self.description.clone_from(&details.description);
        self.location.clone_from(&details.location);
        self.tagline.clone_from(&details.tagline);
        self.twitter_search.clone_from(&details.twitter_search);
        self.start_date = details.start_date;
    }
}

/// A seat type as the public site and pricing see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatTypeView {
    /// The seat type.
    pub id: Uuid,
    /// Its conference (no foreign key: a seat type may arrive first).
    pub conference_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price.
    pub price: Money,
    /// Seats on sale.
    pub quantity: i32,
    /// Seats left, as SeatsAvailability last said.
    pub available_quantity: i32,
    /// The SeatsAvailability version `available_quantity` reflects (−1 initially).
    pub seats_availability_version: i64,
}

/// A conference's name and code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConferenceAlias {
    /// The conference.
    pub id: Uuid,
    /// Its code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Its tagline.
    pub tagline: Option<String>,
}

/// A seat type's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatTypeName {
    /// The seat type.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

/// The lookups of the public site (§12.5), cached by [`CachedConferenceQueries`](super::CachedConferenceQueries).
pub trait ConferenceQueries: Send + Sync {
    /// The conference whose code is `code`.
    fn conference_details(&self, code: &str) -> impl Future<Output = Result<Option<ConferenceView>>> + Send;
    /// The name and code of the conference whose code is `code`.
    fn conference_alias(&self, code: &str) -> impl Future<Output = Result<Option<ConferenceAlias>>> + Send;
    /// Published conferences.
    fn published_conferences(&self) -> impl Future<Output = Result<Vec<ConferenceView>>> + Send;
    /// The seat types of a conference that exists and is published; otherwise none
    /// (project decision 6).
    fn published_seat_types(
        &self,
        conference_id: Uuid,
    ) -> impl Future<Output = Result<Vec<SeatTypeView>>> + Send;
    /// The names of these seat types (distinct; none for no ids).
    fn seat_type_names(&self, ids: &[Uuid]) -> impl Future<Output = Result<Vec<SeatTypeName>>> + Send;
}

/// Stores the conference and seat-type views.
pub trait ConferenceViewStore: Send + Sync {
    /// The conference `id`.
    fn conference(&self, id: Uuid) -> impl Future<Output = Result<Option<ConferenceView>>> + Send;
    /// Inserts or replaces a conference.
    fn save_conference(&self, conference: ConferenceView) -> impl Future<Output = Result<()>> + Send;
    /// The seat type `id`.
    fn seat_type(&self, id: Uuid) -> impl Future<Output = Result<Option<SeatTypeView>>> + Send;
    /// All seat types of a conference, published or not.
    fn seat_types(&self, conference_id: Uuid) -> impl Future<Output = Result<Vec<SeatTypeView>>> + Send;
    /// Inserts or replaces seat types, all at once.
    fn save_seat_types(&self, seat_types: Vec<SeatTypeView>) -> impl Future<Output = Result<()>> + Send;
}

/// Pricing reads the conference view's seat types, published or not (project decision 6).
impl<T: ConferenceViewStore> SeatTypeSource for T {
    async fn seat_type_prices(&self, conference_id: Uuid) -> Result<Vec<SeatTypePrice>> {
        Ok(self
            .seat_types(conference_id)
            .await?
            .into_iter()
            .map(|t| SeatTypePrice {
                id: t.id,
                price: t.price,
            })
            .collect())
    }
}

/// What SeatsAvailability was told about one seat type: the quantity registered with it, and
/// the version of the conference event that set it. Stored as a process so that the
/// `AddSeats` / `RemoveSeats` a seat event causes go through the process store's outbox: a
/// redelivery neither loses nor repeats the command, and a rebuild of the view (which replays
/// events the registration has already seen) sends nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatTypeRegistration {
    /// The conference.
    pub conference_id: Uuid,
    /// The quantity registered with SeatsAvailability.
    pub quantity: i32,
    /// The version (in the conference's stream) of the last seat event registered.
    pub version: i64,
}

impl ProcessState for SeatTypeRegistration {
    const TYPE: &'static str = "SeatTypeRegistration";

    fn is_completed(&self) -> bool {
        false
    }
}

/// Builds the conference and seat-type views from conference-management and
/// SeatsAvailability events, and registers seat types with SeatsAvailability.
#[derive(Debug)]
pub struct ConferenceViewGenerator<S, P, B> {
    store: S,
    registrations: ProcessRepository<SeatTypeRegistration, P, B>,
}

impl<S, P, B> ConferenceViewGenerator<S, P, B>
where
    S: ConferenceViewStore + 'static,
    P: ProcessStore + 'static,
    B: CommandBus + 'static,
{
    /// A generator writing to `store`, keeping registrations in `processes` and sending seat
    /// commands on `bus`.
    pub fn new(store: S, processes: P, bus: B, clock: SharedClock) -> Self {
        Self {
            store,
            registrations: ProcessRepository::new(processes, bus, clock),
        }
    }

    /// Subscribes to its events on `dispatcher`.
    ///
    /// # Errors
    /// When a handler type is registered twice.
    pub fn subscribe(self: Arc<Self>, dispatcher: &mut EventDispatcher) -> Result<()> {
        dispatcher
            .subscribe::<ConferenceCreated, _>(self.clone())?
            .subscribe::<ConferenceUpdated, _>(self.clone())?
            .subscribe::<ConferencePublished, _>(self.clone())?
            .subscribe::<ConferenceUnpublished, _>(self.clone())?
            .subscribe::<SeatCreated, _>(self.clone())?
            .subscribe::<SeatUpdated, _>(self.clone())?
            .subscribe::<AvailableSeatsChanged, _>(self.clone())?
            .subscribe::<SeatsReserved, _>(self.clone())?
            .subscribe::<SeatsReservationCancelled, _>(self)?;
        Ok(())
    }

    async fn existing(&self, metadata: &Metadata) -> Result<ConferenceView> {
        let id = Sourced::of(metadata)?.id;
        self.store
            .conference(id)
            .await?
            .ok_or_else(|| DomainError::invalid_state(format!("no conference view {id}")).into())
    }

    async fn created(&self, event: &ConferenceCreated, metadata: &Metadata) -> Result<()> {
        let id = Sourced::of(metadata)?.id;
        if self.store.conference(id).await?.is_some() {
            tracing::warn!(conference_id = %id, "duplicate ConferenceCreated ignored");
            return Ok(());
        }
        let mut view = ConferenceView {
            id,
            code: String::new(),
            name: String::new(),
            description: String::new(),
            location: String::new(),
            tagline: None,
            twitter_search: None,
            start_date: event.details.start_date,
            is_published: false,
        };
        view.refresh(&event.details);
        self.store.save_conference(view).await
    }

    async fn updated(&self, event: &ConferenceUpdated, metadata: &Metadata) -> Result<()> {
        let mut view = self.existing(metadata).await?;
        view.refresh(&event.details);
        self.store.save_conference(view).await
    }

    async fn set_published(&self, metadata: &Metadata, published: bool) -> Result<()> {
        let mut view = self.existing(metadata).await?;
        view.is_published = published;
        self.store.save_conference(view).await
    }

    async fn published(&self, _: &ConferencePublished, metadata: &Metadata) -> Result<()> {
        self.set_published(metadata, true).await
    }

    async fn unpublished(&self, _: &ConferenceUnpublished, metadata: &Metadata) -> Result<()> {
        self.set_published(metadata, false).await
    }

    /// Sends the seat command that brings SeatsAvailability to `quantity`, with the
    /// registration, through the outbox; an event the registration has seen sends nothing.
    async fn register(
        &self,
        registration: Option<Process<SeatTypeRegistration>>,
        (seat_type, conference_id, quantity): (Uuid, Uuid, i32),
        cause: &Metadata,
    ) -> Result<()> {
        let version = Sourced::of(cause)?.version;
        let mut registration = match registration {
            Some(known) if known.version >= version => {
                tracing::info!(%seat_type, version, "seat event already registered");
                return Ok(());
            }
            Some(known) => known,
            None => Process::new(
                seat_type,
                SeatTypeRegistration {
                    conference_id,
                    quantity: 0,
                    version: -1,
                },
            ),
        };
        let conference_id = registration.conference_id;
        let diff = quantity - registration.quantity;
        registration.caused_by(cause);
        if diff > 0 || registration.version() < 0 {
            registration.send(Envelope::command(AddSeats::new(conference_id, seat_type, diff)));
        } else if diff < 0 {
            registration.send(Envelope::command(RemoveSeats::new(
                conference_id,
                seat_type,
                -diff,
            )));
        }
        registration.quantity = quantity;
        registration.version = version;
        self.registrations.save(&mut registration).await
    }

    async fn seat_created(&self, event: &SeatCreated, metadata: &Metadata) -> Result<()> {
        // The row first, so that it exists before the AvailableSeatsChanged that follows.
        if self.store.seat_type(event.seat_type_id).await?.is_none() {
            let d = &event.details;
            let row = SeatTypeView {
                id: event.seat_type_id,
                conference_id: event.conference_id,
                name: d.name.clone(),
                description: d.description.clone(),
                price: d.price,
                quantity: d.quantity,
                available_quantity: 0,
                seats_availability_version: -1,
            };
            self.store.save_seat_types(vec![row]).await?;
        }
        let registration = self.registrations.load(event.seat_type_id).await?;
        let seat = (event.seat_type_id, event.conference_id, event.details.quantity);
        self.register(registration, seat, metadata).await
    }

    async fn seat_updated(&self, event: &SeatUpdated, metadata: &Metadata) -> Result<()> {
        let id = event.seat_type_id;
        let Some(mut row) = self.store.seat_type(id).await? else {
            return Err(DomainError::invalid_state(format!("no seat type view {id}")).into());
        };
        let Some(registration) = self.registrations.load(id).await? else {
            return Err(DomainError::invalid_state(format!("seat type {id} was never registered")).into());
        };
        let d = &event.details;
        row.name.clone_from(&d.name);
        row.description.clone_from(&d.description);
        row.price = d.price;
        row.quantity = d.quantity;
        self.store.save_seat_types(vec![row]).await?;
        let seat = (id, event.conference_id, d.quantity);
        self.register(Some(registration), seat, metadata).await
    }

    async fn availability_changed(&self, metadata: &Metadata, deltas: &[SeatQuantity]) -> Result<()> {
        let source = Sourced::of(metadata)?;
        let mut rows = self.store.seat_types(source.id).await?;
        if rows.is_empty() {
            tracing::error!(conference_id = %source.id, "availability of a conference with no seat types");
            return Ok(());
        }
        let stored = rows
            .iter()
            .map(|r| r.seats_availability_version)
            .max()
            .unwrap_or(-1);
        if !super::is_newer("seat availability", source.id, stored, source.version) {
            return Ok(());
        }
        let mut changed = Vec::new();
        for delta in deltas {
            match rows.iter_mut().position(|r| r.id == delta.seat_type) {
                Some(i) => {
                    rows[i].available_quantity += delta.quantity;
                    rows[i].seats_availability_version = source.version;
                    changed.push(i);
                }
                None => tracing::warn!(seat_type = %delta.seat_type, "availability of an unknown seat type"),
            }
        }
        changed.sort_unstable();
        changed.dedup();
        let rows = changed.into_iter().map(|i| rows[i].clone()).collect::<Vec<_>>();
        if rows.is_empty() {
            return Ok(());
        }
        self.store.save_seat_types(rows).await
    }

    async fn available_seats_changed(
        &self,
        event: &AvailableSeatsChanged,
        metadata: &Metadata,
    ) -> Result<()> {
        self.availability_changed(metadata, &event.seats).await
    }

    async fn seats_reserved(&self, event: &SeatsReserved, metadata: &Metadata) -> Result<()> {
        self.availability_changed(metadata, &event.available_seats_changed)
            .await
    }

    async fn reservation_cancelled(
        &self,
        event: &SeatsReservationCancelled,
        metadata: &Metadata,
    ) -> Result<()> {
        self.availability_changed(metadata, &event.available_seats_changed)
            .await
    }
}

route!([S: ConferenceViewStore + 'static, P: ProcessStore + 'static, B: CommandBus + 'static] ConferenceViewGenerator<S, P, B> {
    ConferenceCreated => created,
    ConferenceUpdated => updated,
    ConferencePublished => published,
    ConferenceUnpublished => unpublished,
    SeatCreated => seat_created,
    SeatUpdated => seat_updated,
    AvailableSeatsChanged => available_seats_changed,
    SeatsReserved => seats_reserved,
    SeatsReservationCancelled => reservation_cancelled,
});
