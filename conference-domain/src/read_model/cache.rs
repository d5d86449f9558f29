//! The public site's cache over the conference lookups (§13.1): an absolute expiry per entry,
//! `None` and empty results never cached, and a lifetime for seat types that shortens as seats
//! run out.

use std::hash::Hash;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::{Result, SharedClock};
use dashmap::DashMap;
use uuid::Uuid;

use super::{ConferenceAlias, ConferenceQueries, ConferenceView, SeatTypeName, SeatTypeView};

const CONFERENCE_DETAILS: TimeDelta = TimeDelta::minutes(10);
const CONFERENCE_ALIAS: TimeDelta = TimeDelta::minutes(20);
const PUBLISHED_CONFERENCES: TimeDelta = TimeDelta::seconds(10);

/// How long a `published_seat_types` answer may be cached; the first rule that matches wins:
/// nothing for an empty list; 5 minutes when every type has more than 200 seats left or none;
/// not at all when some type has 1–29 left; 20 seconds when some type has 1–99 left;
/// 1 minute otherwise.
pub fn published_seat_types_lifetime(seat_types: &[SeatTypeView]) -> Option<TimeDelta> {
    let available = || seat_types.iter().map(|t| t.available_quantity);
    if seat_types.is_empty() {
        None
    } else if available().all(|n| n > 200 || n <= 0) {
        Some(TimeDelta::minutes(5))
    } else if available().any(|n| 0 < n && n < 30) {
        None
    } else if available().any(|n| 0 < n && n < 100) {
        Some(TimeDelta::seconds(20))
    } else {
        Some(TimeDelta::minutes(1))
    }
}

/// Entries with an absolute expiry.
#[derive(Debug)]
struct Entries<K: Eq + Hash, V> {
    map: DashMap<K, (V, DateTime<Utc>)>,
}

impl<K: Eq + Hash, V: Clone> Entries<K, V> {
    fn new() -> Self {
        Self { map: DashMap::new() }
    }

    fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q, now: DateTime<Utc>) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get(key).filter(|e| e.1 > now).map(|e| e.0.clone())
    }

    fn put(&self, key: K, value: V, until: DateTime<Utc>) {
        self.map.insert(key, (value, until));
    }
}

/// [`ConferenceQueries`] cached as `DOMAIN.md` §13.1 says. `seat_type_names` is never cached,
/// and neither are the details of an unpublished conference (in the spirit of project
/// decision 6: a publication shows at once).
#[derive(Debug)]
pub struct CachedConferenceQueries<Q> {
    inner: Q,
    clock: SharedClock,
    details: Entries<String, ConferenceView>,
    aliases: Entries<String, ConferenceAlias>,
    published: Entries<(), Vec<ConferenceView>>,
    seat_types: Entries<Uuid, Vec<SeatTypeView>>,
}

impl<Q: ConferenceQueries> CachedConferenceQueries<Q> {
    /// Caches `inner`, timed by `clock`.
    pub fn new(inner: Q, clock: SharedClock) -> Self {
        Self {
            inner,
            clock,
            details: Entries::new(),
            aliases: Entries::new(),
            published: Entries::new(),
            seat_types: Entries::new(),
        }
    }

    /// The wrapped lookups.
    pub fn get_ref(&self) -> &Q {
        &self.inner
    }

    /// Unwraps the lookups.
    pub fn into_inner(self) -> Q {
        self.inner
    }
}

impl<Q: ConferenceQueries> ConferenceQueries for CachedConferenceQueries<Q> {
    async fn conference_details(&self, code: &str) -> Result<Option<ConferenceView>> {
        let now = self.clock.now();
        if let Some(hit) = self.details.get(code, now) {
            return Ok(Some(hit));
        }
        let found = self.inner.conference_details(code).await?;
        // An unpublished conference is not cached either: like an empty seat-type list
        // (project decision 6), it would hide a fresh publication for the whole lifetime.
        if let Some(view) = found.as_ref().filter(|view| view.is_published) {
            self.details
                .put(code.to_owned(), view.clone(), now + CONFERENCE_DETAILS);
        }
        Ok(found)
    }

    async fn conference_alias(&self, code: &str) -> Result<Option<ConferenceAlias>> {
        let now = self.clock.now();
        if let Some(hit) = self.aliases.get(code, now) {
            return Ok(Some(hit));
        }
        let found = self.inner.conference_alias(code).await?;
        if let Some(alias) = &found {
            self.aliases
                .put(code.to_owned(), alias.clone(), now + CONFERENCE_ALIAS);
        }
        Ok(found)
    }

    async fn published_conferences(&self) -> Result<Vec<ConferenceView>> {
        let now = self.clock.now();
        if let Some(hit) = self.published.get(&(), now) {
            return Ok(hit);
        }
        let found = self.inner.published_conferences().await?;
        self.published.put((), found.clone(), now + PUBLISHED_CONFERENCES);
        Ok(found)
    }

    async fn published_seat_types(&self, conference_id: Uuid) -> Result<Vec<SeatTypeView>> {
        let now = self.clock.now();
        if let Some(hit) = self.seat_types.get(&conference_id, now) {
            return Ok(hit);
        }
        let found = self.inner.published_seat_types(conference_id).await?;
        if let Some(lifetime) = published_seat_types_lifetime(&found) {
            self.seat_types.put(conference_id, found.clone(), now + lifetime);
        }
        Ok(found)
    }

    async fn seat_type_names(&self, ids: &[Uuid]) -> Result<Vec<SeatTypeName>> {
        self.inner.seat_type_names(ids).await
    }
}
