//! Event-sourced aggregates, their roots (id, version, pending events) and mementos.
//!
//! An [`Aggregate`] is plain state plus `apply`. Its domain methods *decide*: they check the
//! rules against `&self` and return the events to record. A [`Root`] carries the aggregate with
//! its id, its version and the events recorded but not yet saved, so an aggregate is testable
//! with no store at all: build a root from history, call a method, look at
//! [`Root::pending`].

use std::fmt;
use std::ops::Deref;

use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::codec::{Codec, CodecError};
use crate::error::{Error, Result};
use crate::message::Payload;
use crate::store::StoredEvent;

/// The closed set of events of one aggregate type, usually an enum of event structs built with
/// [`event_set!`](crate::event_set).
pub trait EventSet: fmt::Debug + Clone + Send + Sync + Sized + 'static {
    /// The names of all members.
    const NAMES: &'static [&'static str];

    /// The stable name of this event.
    fn name(&self) -> &'static str;

    /// Serializes this event.
    ///
    /// # Errors
    /// When the event cannot be represented with `codec`.
    fn encode(&self, codec: Codec) -> Result<Payload, CodecError>;

    /// Deserializes a member of the set.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] for a name outside the set; [`Error::Codec`] for bytes that
    /// do not decode.
    fn decode(payload: &Payload) -> Result<Self>;
}

/// Declares an enum of event types that implements [`EventSet`], with a `From` conversion from
/// each member. Each variant is named after, and wraps, one [`Message`](crate::Message) type.
///
/// ```
/// use cqrs_core::{event_set, EventSet, Message};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// pub struct Opened { pub owner: String }
/// impl Message for Opened { const NAME: &'static str = "AccountOpened"; }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// pub struct Deposited { pub amount: i64 }
/// impl Message for Deposited { const NAME: &'static str = "MoneyDeposited"; }
///
/// event_set! {
///     #[derive(Debug, Clone, PartialEq)]
///     pub enum AccountEvent { Opened(Opened), Deposited(Deposited) }
/// }
///
/// let e: AccountEvent = Deposited { amount: 5 }.into();
/// assert_eq!(e.name(), "MoneyDeposited");
/// assert_eq!(AccountEvent::NAMES, ["AccountOpened", "MoneyDeposited"]);
/// ```
#[macro_export]
macro_rules! event_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($variant:ident($ty:ty)),+ $(,)? }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                #[doc = concat!("A `", stringify!($ty), "` event.")]
                $variant($ty),
            )+
        }

        $(
            impl ::core::convert::From<$ty> for $name {
                fn from(event: $ty) -> Self {
                    Self::$variant(event)
                }
            }
        )+

        impl $crate::EventSet for $name {
            const NAMES: &'static [&'static str] = &[$(<$ty as $crate::Message>::NAME),+];

            fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$ty as $crate::Message>::NAME,)+
                }
            }

            fn encode(&self, codec: $crate::Codec) -> ::core::result::Result<$crate::Payload, $crate::CodecError> {
                match self {
                    $(Self::$variant(event) => $crate::Payload::encode(event, codec),)+
                }
            }

            fn decode(payload: &$crate::Payload) -> $crate::Result<Self> {
                $(
                    if payload.name == <$ty as $crate::Message>::NAME {
                        return payload.decode::<$ty>().map(Self::$variant);
                    }
                )+
                Err($crate::Error::UnknownMessage(payload.name.clone()))
            }
        }
    };
}

/// An event-sourced aggregate: state rebuilt by applying its events in order.
pub trait Aggregate: fmt::Debug + Send + Sync + Sized + 'static {
    /// The stable name of the aggregate type, e.g. `"Order"`; it prefixes stream ids and names
    /// the type in not-found errors.
    const TYPE: &'static str;

    /// The events of this aggregate.
    type Event: EventSet;

    /// A blank aggregate, before its first event.
    fn new(id: Uuid) -> Self;

    /// Evolves the state by one event. Must not fail: events are facts already decided.
    fn apply(&mut self, event: &Self::Event);
}

/// An aggregate with its id, version and the events recorded since it was loaded.
#[derive(Debug, Clone)]
pub struct Root<A: Aggregate> {
    id: Uuid,
    version: i64,
    state: A,
    pending: Vec<A::Event>,
}

impl<A: Aggregate> Root<A> {
    /// A new aggregate at version −1.
    pub fn new(id: Uuid) -> Self {
        Self {
            id,
            version: -1,
            state: A::new(id),
            pending: Vec::new(),
        }
    }

    /// An aggregate rebuilt from its history, versioned 0, 1, 2, … in order.
    pub fn from_history(id: Uuid, events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut root = Self::new(id);
        for event in events {
            root.state.apply(&event);
            root.version += 1;
        }
        root
    }

    /// Restores an aggregate captured at `version`.
    pub fn from_parts(id: Uuid, version: i64, state: A) -> Self {
        Self {
            id,
            version,
            state,
            pending: Vec::new(),
        }
    }

    /// The aggregate's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The version including pending events: −1 for a new aggregate, then the version of the
    /// last event recorded.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The version of the last saved event (−1 if none).
    pub fn committed_version(&self) -> i64 {
        self.version - self.pending.len() as i64
    }

    /// The state.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The events recorded but not yet saved, in order. The first one has version
    /// [`committed_version`](Self::committed_version) + 1.
    pub fn pending(&self) -> &[A::Event] {
        &self.pending
    }

    /// Records one event: applies it and adds it to the pending list with the next version.
    pub fn record(&mut self, event: impl Into<A::Event>) {
        let event = event.into();
        self.state.apply(&event);
        self.version += 1;
        self.pending.push(event);
    }

    /// Records events in order.
    pub fn record_all(&mut self, events: impl IntoIterator<Item = A::Event>) {
        for event in events {
            self.record(event);
        }
    }

    /// Runs a deciding domain method and records the events it returns; on error nothing is
    /// recorded.
    ///
    /// # Errors
    /// The domain method's error.
    pub fn execute<E>(&mut self, decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>) -> Result<(), E> {
        let events = decide(&self.state)?;
        self.record_all(events);
        Ok(())
    }

    /// Marks the pending events as saved and returns them.
    pub fn take_pending(&mut self) -> Vec<A::Event> {
        std::mem::take(&mut self.pending)
    }

    /// Applies a stored event read from this aggregate's stream.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when its version does not follow; [`Error::UnknownMessage`] or
    /// [`Error::Codec`] when it does not decode as one of this aggregate's events.
    pub fn apply_stored(&mut self, event: &StoredEvent) -> Result<()> {
        if event.version != self.version + 1 {
            return Err(Error::Corrupt {
                stream: event.stream_id.to_string(),
                reason: format!("version {} follows version {}", event.version, self.version),
            });
        }
        let decoded = A::Event::decode(&event.payload)?;
        self.state.apply(&decoded);
        self.version = event.version;
        Ok(())
    }
}

impl<A: Aggregate> Deref for Root<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.state
    }
}

/// An aggregate that can capture its state in a separate, serializable memento and be restored
/// from it (the memento pattern). Mementos are snapshots: a cache, never the truth.
pub trait Originator: Aggregate {
    /// The captured state. Owns its data: restoring must not share references.
    type Memento: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The memento type's schema version. Bump it when the memento's shape changes: stored
    /// snapshots of another version are then ignored and the stream replayed.
    const MEMENTO_VERSION: u32;

    /// Captures the state.
    fn to_memento(&self) -> Self::Memento;

    /// Restores the state captured in `memento`.
    fn from_memento(id: Uuid, memento: Self::Memento) -> Self;
}

impl<A: Originator> Root<A> {
    /// The memento of the state at [`version`](Self::version).
    pub fn memento(&self) -> A::Memento {
        self.state.to_memento()
    }

    /// Restores an aggregate from a memento captured at `version`; events after it can then be
    /// applied with [`apply_stored`](Self::apply_stored).
    pub fn restore(id: Uuid, version: i64, memento: A::Memento) -> Self {
        Self::from_parts(id, version, A::from_memento(id, memento))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample::{Inventory, InventoryEvent, SeatsAdded, SeatsReserved};

    fn added(qty: i32) -> InventoryEvent {
        SeatsAdded {
            seat_type: 1,
            quantity: qty,
        }
        .into()
    }

    #[test]
    fn versions_start_at_minus_one_and_count_events() {
        let id = Uuid::now_v7();
        let mut root = Root::<Inventory>::new(id);
        assert_eq!(root.version(), -1);
        root.record(added(10));
        assert_eq!((root.version(), root.committed_version()), (0, -1));
        root.take_pending();
        assert_eq!(root.committed_version(), 0);
        let rebuilt = Root::<Inventory>::from_history(id, [added(10), added(5)]);
        assert_eq!(rebuilt.version(), 1);
        assert_eq!(rebuilt.available(1), 15);
    }

    #[test]
    fn execute_records_nothing_on_error() {
        let mut root = Root::<Inventory>::from_history(Uuid::nil(), [added(2)]);
        let err = root.execute(|inv| inv.reserve(7, 1, 5)).unwrap_err();
        assert!(err.to_string().contains("only 2"));
        assert!(root.pending().is_empty());
        root.execute(|inv| inv.reserve(7, 1, 2)).unwrap();
        assert!(matches!(
            root.pending(),
            [InventoryEvent::SeatsReserved(SeatsReserved { quantity: 2, .. })]
        ));
    }

    #[test]
    fn memento_restores_an_equal_state() {
        let root = Root::<Inventory>::from_history(Uuid::nil(), [added(2), added(3)]);
        let restored = Root::<Inventory>::restore(root.id(), root.version(), root.memento());
        assert_eq!(restored.version(), 1);
        assert_eq!(restored.state(), root.state());
    }
}
