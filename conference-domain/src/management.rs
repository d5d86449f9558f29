//! Conference management, the admin side (`DOMAIN.md` §10): conferences and their seat types,
//! publication, and the events of §4.5 that the registration side consumes.
//!
//! `DOMAIN.md` describes a transaction script over its own tables that publishes events after
//! saving. Here each conference is an event-sourced aggregate (stream `Conference-<id>`), so
//! the change and its events are one append and the store's outbox publishes them: nothing is
//! lost between the save and the publication. Three details follow from that:
//!
//! - `SeatCreated` and `SeatUpdated` come from the conference's stream, so they name their
//!   seat type in `seat_type_id` (their `source_id` in `DOMAIN.md`). They are ordered with the
//!   conference's own events, which `DOMAIN.md` does not promise and nothing relies on.
//! - Seat types of a conference that was never published are recorded with the internal
//!   events `SeatTypeDrafted` and `SeatTypeDeleted`, which the registration side does not
//!   subscribe to; the first publication announces them as `SeatCreated`.
//! - Unique slugs, and the owner's login by email and access code, are kept with *key
//!   streams*: the first append to `ConferenceKey-<uuid5(key)>` claims the key, and a claim
//!   counts only while the conference it names still has that slug (or owner and code), so a
//!   renamed conference frees its old slug and a crash between claim and creation leaks
//!   nothing.

use chrono::{DateTime, Utc};
use cqrs_core::{Aggregate, EventStore, Repository, Result, Root, event_set};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use uuid::{Uuid, uuid};

use crate::error::DomainError;
use crate::messages;
use crate::values::{INVALID_EMAIL, Money, Owner, is_valid_email, is_valid_slug, new_access_code};

/// The editable details of a conference (the admin form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConferenceDetails {
    /// Name (required).
    pub name: String,
    /// Description (required).
    pub description: String,
    /// Location (required).
    pub location: String,
    /// Public code, `^\w+$`, unique.
    pub slug: String,
    /// Tagline.
    pub tagline: Option<String>,
    /// Twitter search.
    pub twitter_search: Option<String>,
    /// First day.
    pub start_date: DateTime<Utc>,
    /// Last day.
    pub end_date: DateTime<Utc>,
    /// Who runs it (name required, a valid email).
    pub owner: Owner,
}

/// The editable details of a seat type (the admin form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatTypeDetails {
    /// Name, 2–70 characters.
    pub name: String,
    /// Description, at most 250 characters (required).
    pub description: String,
    /// Seats, 0–100000.
    pub quantity: i32,
    /// Price, 0–50000.
    pub price: Money,
}

messages! {
    /// A conference was created (unpublished).
    ConferenceCreated {
        /// Its details.
        #[serde(flatten)]
        details: ConferenceDetails,
        /// The owner's access code (6 characters).
        access_code: String,
    }
    /// A conference's details changed.
    ConferenceUpdated {
        /// Its details.
        #[serde(flatten)]
        details: ConferenceDetails,
    }
    /// A conference is open for registration.
    ConferencePublished {}
    /// A conference is closed for registration.
    ConferenceUnpublished {}
    /// A seat type is on sale (or was, when the conference was first published).
    SeatCreated {
        /// The seat type.
        seat_type_id: Uuid,
        /// The conference.
        conference_id: Uuid,
        /// Its details.
        #[serde(flatten)]
        details: SeatTypeDetails,
    }
    /// A seat type on sale changed.
    SeatUpdated {
        /// The seat type.
        seat_type_id: Uuid,
        /// The conference.
        conference_id: Uuid,
        /// Its details.
        #[serde(flatten)]
        details: SeatTypeDetails,
    }
    /// Internal: a seat type of a never-published conference was created or changed.
    SeatTypeDrafted {
        /// The seat type.
        seat_type_id: Uuid,
        /// Its details.
        #[serde(flatten)]
        details: SeatTypeDetails,
    }
    /// Internal: a seat type of a never-published conference was deleted.
    SeatTypeDeleted {
        /// The seat type.
        seat_type_id: Uuid,
    }
}

event_set! {
    /// Every event of a conference's stream.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ConferenceEvent {
        Created(ConferenceCreated),
        Updated(ConferenceUpdated),
        Published(ConferencePublished),
        Unpublished(ConferenceUnpublished),
        SeatCreated(SeatCreated),
        SeatUpdated(SeatUpdated),
        SeatTypeDrafted(SeatTypeDrafted),
        SeatTypeDeleted(SeatTypeDeleted),
    }
}

/// A conference as the admin side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conference {
    id: Uuid,
    details: Option<ConferenceDetails>,
    access_code: String,
    is_published: bool,
    was_ever_published: bool,
    seat_types: IndexMap<Uuid, SeatTypeDetails>,
}

impl Aggregate for Conference {
    const TYPE: &'static str = "Conference";
    type Event = ConferenceEvent;

    fn new(id: Uuid) -> Self {
        Self {
            id,
            details: None,
            access_code: String::new(),
            is_published: false,
            was_ever_published: false,
            seat_types: IndexMap::new(),
        }
    }

    fn apply(&mut self, event: &ConferenceEvent) {
        match event {
            ConferenceEvent::Created(e) => {
                self.details = Some(e.details.clone());
                self.access_code.clone_from(&e.access_code);
            }
            ConferenceEvent::Updated(e) => self.details = Some(e.details.clone()),
            ConferenceEvent::Published(_) => {
                self.is_published = true;
                self.was_ever_published = true;
            }
            ConferenceEvent::Unpublished(_) => self.is_published = false,
            ConferenceEvent::SeatCreated(SeatCreated {
                seat_type_id,
                details,
                ..
            })
            | ConferenceEvent::SeatUpdated(SeatUpdated {
                seat_type_id,
                details,
                ..
            })
            | ConferenceEvent::SeatTypeDrafted(SeatTypeDrafted {
                seat_type_id,
                details,
            }) => {
                self.seat_types.insert(*seat_type_id, details.clone());
            }
            ConferenceEvent::SeatTypeDeleted(e) => {
                self.seat_types.shift_remove(&e.seat_type_id);
            }
        }
    }
}

fn required(errors: &mut Vec<DomainError>, field: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(DomainError::validation(field, "This field is required."));
    }
}

fn refuse(errors: Vec<DomainError>) -> std::result::Result<(), Vec<DomainError>> {
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

impl ConferenceDetails {
    /// Checks the form (§10.1), reporting every field at fault.
    ///
    /// # Errors
    /// One `validation` error per field at fault.
    pub fn validate(&self) -> std::result::Result<(), Vec<DomainError>> {
        let mut errors = Vec::new();
        required(&mut errors, "name", &self.name);
        required(&mut errors, "description", &self.description);
        required(&mut errors, "location", &self.location);
        if !is_valid_slug(&self.slug) {
            errors.push(DomainError::validation(
                "slug",
                "The slug must be letters, digits or underscores, with no spaces.",
            ));
        }
        required(&mut errors, "owner_name", &self.owner.name);
        if !is_valid_email(&self.owner.email) {
            errors.push(DomainError::validation("owner_email", INVALID_EMAIL));
        }
        if self.end_date < self.start_date {
            errors.push(DomainError::validation(
                "end_date",
                "The conference cannot end before it starts.",
            ));
        }
        refuse(errors)
    }
}

impl SeatTypeDetails {
    /// Checks the form (§10.1), reporting every field at fault.
    ///
    /// # Errors
    /// One `validation` error per field at fault.
    pub fn validate(&self) -> std::result::Result<(), Vec<DomainError>> {
        let mut errors = Vec::new();
        if !(2..=70).contains(&self.name.trim().chars().count()) {
            errors.push(DomainError::validation(
                "name",
                "The name must have 2 to 70 characters.",
            ));
        }
        required(&mut errors, "description", &self.description);
        if self.description.chars().count() > 250 {
            errors.push(DomainError::validation(
                "description",
                "The description must have at most 250 characters.",
            ));
        }
        if !(0..=100_000).contains(&self.quantity) {
            errors.push(DomainError::validation(
                "quantity",
                "The quantity must be between 0 and 100000.",
            ));
        }
        if self.price < Money::ZERO || self.price > Money::from(50_000) {
            errors.push(DomainError::validation(
                "price",
                "The price must be between 0 and 50000.",
            ));
        }
        refuse(errors)
    }
}

impl Conference {
    /// The conference id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Its details (`None` before creation).
    pub fn details(&self) -> Option<&ConferenceDetails> {
        self.details.as_ref()
    }

    /// The owner's access code.
    pub fn access_code(&self) -> &str {
        &self.access_code
    }

    /// Whether it is open for registration.
    pub fn is_published(&self) -> bool {
        self.is_published
    }

    /// Whether it was ever published.
    pub fn was_ever_published(&self) -> bool {
        self.was_ever_published
    }

    /// Its seat types, in creation order.
    pub fn seat_types(&self) -> &IndexMap<Uuid, SeatTypeDetails> {
        &self.seat_types
    }

    fn seat_events(&self, seat_type_id: Uuid, details: SeatTypeDetails, is_new: bool) -> ConferenceEvent {
        let conference_id = self.id;
        match (self.was_ever_published, is_new) {
            (false, _) => SeatTypeDrafted {
                seat_type_id,
                details,
            }
            .into(),
            (true, true) => SeatCreated {
                seat_type_id,
                conference_id,
                details,
            }
            .into(),
            (true, false) => SeatUpdated {
                seat_type_id,
                conference_id,
                details,
            }
            .into(),
        }
    }

    /// Publishes; the first time, every seat type is announced first.
    pub fn publish(&self) -> Vec<ConferenceEvent> {
        let mut events = Vec::new();
        if !self.was_ever_published {
            for (&seat_type_id, details) in &self.seat_types {
                events.push(
                    SeatCreated {
                        seat_type_id,
                        conference_id: self.id,
                        details: details.clone(),
                    }
                    .into(),
                );
            }
        }
        events.push(ConferencePublished {}.into());
        events
    }
}

/// The namespace of key-stream ids.
const KEY_NAMESPACE: Uuid = uuid!("9c2b7c56-1d1e-5d1a-9f0b-8a2f3c9d4e11");

messages! {
    /// A unique key (a slug, an owner's login) was claimed for a conference.
    ConferenceKeyClaimed {
        /// The key.
        key: String,
        /// The conference claiming it.
        conference_id: Uuid,
    }
}

event_set! {
    /// Every event of a key stream.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ConferenceKeyEvent { Claimed(ConferenceKeyClaimed) }
}

/// A unique key and the conference that last claimed it.
#[derive(Debug, Clone, Default)]
pub struct ConferenceKey {
    holder: Option<Uuid>,
}

impl Aggregate for ConferenceKey {
    const TYPE: &'static str = "ConferenceKey";
    type Event = ConferenceKeyEvent;

    fn new(_id: Uuid) -> Self {
        Self::default()
    }

    fn apply(&mut self, event: &ConferenceKeyEvent) {
        let ConferenceKeyEvent::Claimed(e) = event;
        self.holder = Some(e.conference_id);
    }
}

fn slug_key(slug: &str) -> String {
    format!("slug:{slug}")
}

fn owner_key(email: &str, access_code: &str) -> String {
    format!("owner:{}:{access_code}", email.to_lowercase())
}

/// The admin side's operations over an event store.
#[derive(Debug)]
pub struct ConferenceManagement<S: EventStore> {
    conferences: Repository<Conference, S>,
    keys: Repository<ConferenceKey, S>,
}

impl<S: EventStore + Clone> ConferenceManagement<S> {
    /// The admin side over `store`.
    pub fn new(store: S) -> Self {
        Self {
            conferences: Repository::new(store.clone()),
            keys: Repository::new(store),
        }
    }

    /// The conference `id`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn find(&self, id: Uuid) -> Result<Option<Conference>> {
        Ok(self.conferences.find(id).await?.map(|root| root.state().clone()))
    }

    async fn get(&self, id: Uuid) -> Result<Root<Conference>> {
        self.conferences
            .find(id)
            .await?
            .ok_or_else(|| DomainError::not_found(Conference::TYPE, &id).into())
    }

    /// The conference holding `key` if its current values still match (`holds`).
    async fn holder(&self, key: &str, holds: impl Fn(&Conference) -> bool) -> Result<Option<Conference>> {
        let id = Uuid::new_v5(&KEY_NAMESPACE, key.as_bytes());
        let Some(claim) = self.keys.find(id).await? else {
            return Ok(None);
        };
        let Some(holder) = claim.holder else {
            return Ok(None);
        };
        Ok(self.find(holder).await?.filter(|c| holds(c)))
    }

    /// Claims `key` for `conference_id`.
    ///
    /// # Errors
    /// `duplicate` with `taken` when another live conference holds it; a conflict when another
    /// writer claimed it at the same moment (retrying then reports the duplicate).
    async fn claim(
        &self,
        key: &str,
        conference_id: Uuid,
        taken: &str,
        holds: impl Fn(&Conference) -> bool,
    ) -> Result<()> {
        if let Some(holder) = self.holder(key, holds).await? {
            if holder.id == conference_id {
                return Ok(());
            }
            return Err(DomainError::Duplicate(taken.to_owned()).into());
        }
        let id = Uuid::new_v5(&KEY_NAMESPACE, key.as_bytes());
        let mut claim = self.keys.find(id).await?.unwrap_or_else(|| Root::new(id));
        claim.record(ConferenceKeyClaimed {
            key: key.to_owned(),
            conference_id,
        });
        self.keys.save(&mut claim, None::<String>).await
    }

    async fn claim_slug(&self, slug: &str, conference_id: Uuid) -> Result<()> {
        self.claim(
            &slug_key(slug),
            conference_id,
            "The chosen conference slug is already taken.",
            |c| c.details.as_ref().is_some_and(|d| d.slug == slug),
        )
        .await
    }

    async fn claim_owner(&self, email: &str, access_code: &str, conference_id: Uuid) -> Result<()> {
        let key = owner_key(email, access_code);
        self.claim(&key, conference_id, "The access code is already in use.", |c| {
            c.details
                .as_ref()
                .is_some_and(|d| owner_key(&d.owner.email, &c.access_code) == key)
        })
        .await
    }

    /// Creates an unpublished conference; returns it (with its id and access code).
    ///
    /// # Errors
    /// `validation` for a bad form (the first field at fault); `duplicate` when the slug is
    /// taken; store failures.
    pub async fn create(&self, details: ConferenceDetails) -> Result<Conference> {
        details.validate().map_err(first)?;
        let id = Uuid::now_v7();
        self.claim_slug(&details.slug, id).await?;
        // An owner could already hold the code drawn (1 in 32⁶): draw again.
        let mut attempts = 0;
        let access_code = loop {
            let code = new_access_code();
            attempts += 1;
            match self.claim_owner(&details.owner.email, &code, id).await {
                Err(e) if attempts < 5 && (e.is_conflict() || e.as_domain::<DomainError>().is_some()) => {}
                other => break other.map(|()| code)?,
            }
        };
        let mut conference = Root::<Conference>::new(id);
        conference.record(ConferenceCreated { details, access_code });
        self.conferences.save(&mut conference, None::<String>).await?;
        Ok(conference.state().clone())
    }

    /// Changes a conference's details (published or not).
    ///
    /// # Errors
    /// `validation`, `not-found`, `duplicate` (slug), store failures.
    pub async fn update(&self, id: Uuid, details: ConferenceDetails) -> Result<()> {
        details.validate().map_err(first)?;
        let mut conference = self.get(id).await?;
        self.claim_slug(&details.slug, id).await?;
        self.claim_owner(&details.owner.email, &conference.access_code, id)
            .await?;
        conference.record(ConferenceUpdated { details });
        self.conferences.save(&mut conference, None::<String>).await
    }

    /// Adds a seat type; returns its id (UUID v7).
    ///
    /// # Errors
    /// `validation`, `not-found`, store failures.
    pub async fn create_seat_type(&self, conference_id: Uuid, details: SeatTypeDetails) -> Result<Uuid> {
        details.validate().map_err(first)?;
        let mut conference = self.get(conference_id).await?;
        let seat_type_id = Uuid::now_v7();
        conference.record(conference.seat_events(seat_type_id, details, true));
        self.conferences.save(&mut conference, None::<String>).await?;
        Ok(seat_type_id)
    }

    /// Changes a seat type.
    ///
    /// # Errors
    /// `validation`, `not-found` (conference or seat type), store failures.
    pub async fn update_seat_type(
        &self,
        conference_id: Uuid,
        seat_type_id: Uuid,
        details: SeatTypeDetails,
    ) -> Result<()> {
        details.validate().map_err(first)?;
        let mut conference = self.get(conference_id).await?;
        if !conference.seat_types.contains_key(&seat_type_id) {
            return Err(DomainError::not_found("SeatType", &seat_type_id).into());
        }
        conference.record(conference.seat_events(seat_type_id, details, false));
        self.conferences.save(&mut conference, None::<String>).await
    }

    /// Deletes a seat type of a conference never published.
    ///
    /// # Errors
    /// `not-found`; `invalid-state` once the conference was published; store failures.
    pub async fn delete_seat_type(&self, conference_id: Uuid, seat_type_id: Uuid) -> Result<()> {
        let mut conference = self.get(conference_id).await?;
        if !conference.seat_types.contains_key(&seat_type_id) {
            return Err(DomainError::not_found("SeatType", &seat_type_id).into());
        }
        if conference.was_ever_published {
            return Err(DomainError::invalid_state(
                "Can't delete seats from a conference that has been published at least once.",
            )
            .into());
        }
        conference.record(SeatTypeDeleted { seat_type_id });
        self.conferences.save(&mut conference, None::<String>).await
    }

    /// Publishes a conference (announcing its seat types the first time).
    ///
    /// # Errors
    /// `not-found`, store failures.
    pub async fn publish(&self, id: Uuid) -> Result<()> {
        let mut conference = self.get(id).await?;
        conference.record_all(conference.publish());
        self.conferences.save(&mut conference, None::<String>).await
    }

    /// Unpublishes a conference.
    ///
    /// # Errors
    /// `not-found`, store failures.
    pub async fn unpublish(&self, id: Uuid) -> Result<()> {
        let mut conference = self.get(id).await?;
        conference.record(ConferenceUnpublished {});
        self.conferences.save(&mut conference, None::<String>).await
    }

    /// The conference whose slug is `slug`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn find_by_slug(&self, slug: &str) -> Result<Option<Conference>> {
        self.holder(&slug_key(slug), |c| {
            c.details.as_ref().is_some_and(|d| d.slug == slug)
        })
        .await
    }

    /// The owner's login: the conference whose owner email (any letter case) and access code
    /// are these.
    ///
    /// # Errors
    /// Store failures.
    pub async fn find_by_owner(&self, email: &str, access_code: &str) -> Result<Option<Conference>> {
        let key = owner_key(email, access_code);
        self.holder(&key, |c| {
            c.details
                .as_ref()
                .is_some_and(|d| owner_key(&d.owner.email, &c.access_code) == key)
        })
        .await
    }
}

fn first(mut errors: Vec<DomainError>) -> cqrs_core::Error {
    errors.swap_remove(0).into()
}
