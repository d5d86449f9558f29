//! Dispatch: commands to exactly one handler, events to any number, by message type.
//!
//! A dispatch is a type-keyed lookup and a call. Typed messages are found by their Rust
//! [`TypeId`]; raw messages (from a store or a transport) by their name, and decoded once.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::envelope::{Envelope, Metadata};
use crate::error::{Error, Result};
use crate::message::{AnyMessage, Command, Message};

/// Handles one command type.
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// Handles `command`; `metadata` is its envelope's (ids, correlation, headers).
    fn handle(&self, command: &C, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send;
}

/// Handles one event type. Every handler receives the envelope's metadata (message id,
/// correlation id, the event's stream and version).
pub trait EventHandler<E: Message>: Send + Sync + 'static {
    /// Handles `event`.
    fn handle(&self, event: &E, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send;
}

impl<C: Command, H: CommandHandler<C>> CommandHandler<C> for Arc<H> {
    fn handle(&self, command: &C, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send {
        (**self).handle(command, metadata)
    }
}

impl<E: Message, H: EventHandler<E>> EventHandler<E> for Arc<H> {
    fn handle(&self, event: &E, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send {
        (**self).handle(event, metadata)
    }
}

/// A handler made from a closure that takes the message by value (a clone), for tests and
/// small programs. See [`handler_fn`].
pub struct FnHandler<F, M> {
    f: F,
    _message: PhantomData<fn(M)>,
}

impl<F, M> fmt::Debug for FnHandler<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler").finish_non_exhaustive()
    }
}

/// Makes a command or event handler from `async |message, metadata| -> Result<()>`.
pub fn handler_fn<M, F, Fut>(f: F) -> FnHandler<F, M>
where
    M: Message + Clone,
    F: Fn(M, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    FnHandler {
        f,
        _message: PhantomData,
    }
}

impl<C, F, Fut> CommandHandler<C> for FnHandler<F, C>
where
    C: Command + Clone,
    F: Fn(C, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    fn handle(&self, command: &C, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send {
        (self.f)(command.clone(), metadata.clone())
    }
}

impl<E, F, Fut> EventHandler<E> for FnHandler<F, E>
where
    E: Message + Clone,
    F: Fn(E, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    fn handle(&self, event: &E, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send {
        (self.f)(event.clone(), metadata.clone())
    }
}

/// What handling a batch of messages came to: the first `handled` messages were handled; if
/// `error` is set, the message after them failed with it. Messages past those were not tried:
/// a handler may stop early, and is handed the rest again.
#[derive(Debug)]
#[must_use]
pub struct BatchOutcome {
    /// How many messages, from the first, were handled.
    pub handled: usize,
    /// Why the message after the handled ones failed, if one did.
    pub error: Option<Error>,
}

impl BatchOutcome {
    /// The first `handled` messages were handled, and the rest not tried.
    pub fn handled(handled: usize) -> Self {
        Self { handled, error: None }
    }

    /// The first `handled` messages were handled, and the next one failed with `error`.
    pub fn failed(handled: usize, error: Error) -> Self {
        Self {
            handled,
            error: Some(error),
        }
    }

    /// Handles the first of `envelopes` alone with `handler`: what a handler that cannot do a
    /// run together answers.
    pub async fn first_alone<H: MessageHandler + ?Sized>(handler: &H, envelopes: &[&Envelope]) -> Self {
        match envelopes.first() {
            Some(envelope) => match handler.handle(envelope).await {
                Ok(()) => Self::handled(1),
                Err(error) => Self::failed(0, error),
            },
            None => Self::handled(0),
        }
    }
}

/// Handles any message given in an envelope: what processors drive.
pub trait MessageHandler: Send + Sync {
    /// Handles one envelope.
    fn handle(&self, envelope: &Envelope) -> impl Future<Output = Result<()>> + Send;

    /// Handles consecutive messages of one session, in order, as far as it goes: a handler
    /// that can do a run of them together (one aggregate load and one save, say) answers for
    /// the whole run; the processor hands the messages it did not try over again. It must stop
    /// at the first message that fails: the ones after it wait for that one's retry.
    ///
    /// The default handles the first message alone.
    fn handle_batch<'a>(
        &'a self,
        envelopes: &'a [&'a Envelope],
    ) -> impl Future<Output = BatchOutcome> + Send + 'a {
        BatchOutcome::first_alone(self, envelopes)
    }
}

impl<T: MessageHandler> MessageHandler for Arc<T> {
    fn handle(&self, envelope: &Envelope) -> impl Future<Output = Result<()>> + Send {
        (**self).handle(envelope)
    }
    fn handle_batch<'a>(
        &'a self,
        envelopes: &'a [&'a Envelope],
    ) -> impl Future<Output = BatchOutcome> + Send + 'a {
        (**self).handle_batch(envelopes)
    }
}

/// Handles runs of consecutive commands together, of one or several command types: the
/// commands of one aggregate's session, say, decided on one load of it and saved in one append.
/// Registered with [`CommandDispatcher::register_batch`] beside the commands' own handlers,
/// which still handle each command sent alone.
pub trait CommandBatchHandler: Send + Sync + 'static {
    /// Handles `commands`, in order, each one of the names it was registered for, and stops at
    /// the first that fails (see [`MessageHandler::handle_batch`]).
    fn handle_batch<'a>(
        &'a self,
        commands: &'a [&'a Envelope],
    ) -> impl Future<Output = BatchOutcome> + Send + 'a;
}

impl<H: CommandBatchHandler> CommandBatchHandler for Arc<H> {
    fn handle_batch<'a>(
        &'a self,
        commands: &'a [&'a Envelope],
    ) -> impl Future<Output = BatchOutcome> + Send + 'a {
        (**self).handle_batch(commands)
    }
}

trait ErasedBatchHandler: Send + Sync {
    fn call<'a>(&'a self, commands: &'a [&'a Envelope]) -> BoxFuture<'a, BatchOutcome>;
}

impl<H: CommandBatchHandler> ErasedBatchHandler for H {
    fn call<'a>(&'a self, commands: &'a [&'a Envelope]) -> BoxFuture<'a, BatchOutcome> {
        Box::pin(self.handle_batch(commands))
    }
}

/// A hasher for keys that are already hashes ([`TypeId`]) or short names (FNV-1a).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Type-keyed index over a list of entries: by Rust type for typed messages, by name for raw.
struct Index<T> {
    by_type: FastMap<TypeId, usize>,
    by_name: FastMap<&'static str, usize>,
    entries: Vec<T>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self {
            by_type: FastMap::default(),
            by_name: FastMap::default(),
            entries: Vec::new(),
        }
    }
}

impl<T> Index<T> {
    fn find(&self, message: &AnyMessage) -> Option<&T> {
        let slot = match message.type_id() {
            Some(type_id) => self.by_type.get(&type_id),
            None => self.by_name.get(message.name()),
        };
        slot.map(|&i| &self.entries[i])
    }

    fn slot<M: Message>(&self) -> Result<Option<usize>> {
        match (self.by_type.get(&TypeId::of::<M>()), self.by_name.get(M::NAME)) {
            (Some(&i), _) => Ok(Some(i)),
            (None, Some(_)) => Err(Error::AlreadyRegistered(format!(
                "{} (by another Rust type than {})",
                M::NAME,
                std::any::type_name::<M>()
            ))),
            (None, None) => Ok(None),
        }
    }

    fn insert<M: Message>(&mut self, entry: T) -> usize {
        let i = self.entries.len();
        self.entries.push(entry);
        self.by_type.insert(TypeId::of::<M>(), i);
        self.by_name.insert(M::NAME, i);
        i
    }

    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }
}

trait ErasedCommandHandler: Send + Sync {
    fn call<'a>(&'a self, message: &'a AnyMessage, metadata: &'a Metadata) -> BoxFuture<'a, Result<()>>;
}

struct TypedCommandHandler<C, H> {
    handler: H,
    _command: PhantomData<fn(C)>,
}

impl<C: Command, H: CommandHandler<C>> ErasedCommandHandler for TypedCommandHandler<C, H> {
    fn call<'a>(&'a self, message: &'a AnyMessage, metadata: &'a Metadata) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let command = message.decode::<C>()?;
            self.handler.handle(&command, metadata).await
        })
    }
}

/// Maps each command type to exactly one handler.
#[derive(Default)]
pub struct CommandDispatcher {
    index: Index<Box<dyn ErasedCommandHandler>>,
    /// Handlers of runs of commands, and which one takes each command name.
    batches: Vec<Box<dyn ErasedBatchHandler>>,
    batch_of: FastMap<&'static str, usize>,
}

impl CommandDispatcher {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler of command type `C`.
    ///
    /// # Errors
    /// [`Error::AlreadyRegistered`] if `C` (or its name) already has a handler.
    pub fn register<C: Command, H: CommandHandler<C>>(&mut self, handler: H) -> Result<&mut Self> {
        if self.index.slot::<C>()?.is_some() {
            return Err(Error::AlreadyRegistered(C::NAME.to_owned()));
        }
        self.index.insert::<C>(Box::new(TypedCommandHandler {
            handler,
            _command: PhantomData,
        }));
        Ok(self)
    }

    /// Registers `handler` for runs of two or more consecutive commands named in `names`
    /// (see [`MessageHandler::handle_batch`]); each of them keeps the handler it was
    /// registered with for a command alone.
    ///
    /// # Errors
    /// [`Error::NoHandler`] for a name without a handler of its own;
    /// [`Error::AlreadyRegistered`] for a name another batch handler takes.
    pub fn register_batch<H: CommandBatchHandler>(
        &mut self,
        names: impl IntoIterator<Item = &'static str>,
        handler: H,
    ) -> Result<&mut Self> {
        let names: Vec<&'static str> = names.into_iter().collect();
        for name in &names {
            if !self.index.by_name.contains_key(name) {
                return Err(Error::NoHandler(format!(
                    "{name} (a batch handler needs the command's own)"
                )));
            }
            if self.batch_of.contains_key(name) {
                return Err(Error::AlreadyRegistered(format!("{name} (in a batch)")));
            }
        }
        let slot = self.batches.len();
        self.batches.push(Box::new(handler));
        self.batch_of.extend(names.into_iter().map(|name| (name, slot)));
        Ok(self)
    }

    /// Handles a run of consecutive commands: the leading ones one batch handler takes
    /// together, or else the first alone.
    pub async fn dispatch_batch(&self, envelopes: &[&Envelope]) -> BatchOutcome {
        if let Some(&slot) = envelopes
            .first()
            .and_then(|first| self.batch_of.get(first.name()))
        {
            let run = envelopes
                .iter()
                .take_while(|e| self.batch_of.get(e.name()) == Some(&slot))
                .count();
            if run > 1 {
                return self.batches[slot].call(&envelopes[..run]).await;
            }
        }
        BatchOutcome::first_alone(self, envelopes).await
    }

    /// Whether a handler is registered for this message.
    pub fn handles(&self, message: &AnyMessage) -> bool {
        self.index.find(message).is_some()
    }

    /// The names of the command types this dispatcher handles.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.index.names()
    }

    /// Calls the handler of the envelope's command, if there is one: `None` when there is none.
    pub fn try_dispatch<'a>(&'a self, envelope: &'a Envelope) -> Option<BoxFuture<'a, Result<()>>> {
        self.index
            .find(&envelope.message)
            .map(|handler| handler.call(&envelope.message, &envelope.metadata))
    }

    /// Calls the handler of the envelope's command.
    ///
    /// # Errors
    /// [`Error::NoHandler`] when none is registered; otherwise the handler's error.
    pub async fn dispatch(&self, envelope: &Envelope) -> Result<()> {
        match self.try_dispatch(envelope) {
            Some(call) => call.await,
            None => Err(Error::NoHandler(envelope.name().to_owned())),
        }
    }
}

impl MessageHandler for CommandDispatcher {
    fn handle(&self, envelope: &Envelope) -> impl Future<Output = Result<()>> + Send {
        self.dispatch(envelope)
    }
    fn handle_batch<'a>(
        &'a self,
        envelopes: &'a [&'a Envelope],
    ) -> impl Future<Output = BatchOutcome> + Send + 'a {
        self.dispatch_batch(envelopes)
    }
}

impl fmt::Debug for CommandDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("CommandDispatcher")
            .field("commands", &names)
            .finish()
    }
}

trait ErasedEventGroup: Send + Sync {
    fn call<'a>(&'a self, message: &'a AnyMessage, metadata: &'a Metadata) -> BoxFuture<'a, Result<()>>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn len(&self) -> usize;
}

trait DynEventHandler<E>: Send + Sync {
    fn call<'a>(&'a self, event: &'a E, metadata: &'a Metadata) -> BoxFuture<'a, Result<()>>;
}

impl<E: Message, H: EventHandler<E>> DynEventHandler<E> for H {
    fn call<'a>(&'a self, event: &'a E, metadata: &'a Metadata) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.handle(event, metadata))
    }
}

struct EventGroup<E> {
    handlers: Vec<Box<dyn DynEventHandler<E>>>,
}

impl<E: Message> ErasedEventGroup for EventGroup<E> {
    fn call<'a>(&'a self, message: &'a AnyMessage, metadata: &'a Metadata) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let event = message.decode::<E>()?;
            for handler in &self.handlers {
                handler.call(&event, metadata).await?;
            }
            Ok(())
        })
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn len(&self) -> usize {
        self.handlers.len()
    }
}

/// Maps each event type to any number of handlers, called in registration order.
///
/// An event nobody handles is a no-op. Handlers of one event run one after the other; the
/// first failure stops the dispatch and is returned, so a redelivery runs the earlier handlers
/// again: handlers must tolerate duplicates (see [`Inbox`](crate::inbox::Inbox)).
#[derive(Default)]
pub struct EventDispatcher {
    index: Index<Box<dyn ErasedEventGroup>>,
}

impl EventDispatcher {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler of event type `E`, after the ones already registered.
    ///
    /// # Errors
    /// [`Error::AlreadyRegistered`] if `E`'s name is claimed by another Rust type.
    pub fn subscribe<E: Message, H: EventHandler<E>>(&mut self, handler: H) -> Result<&mut Self> {
        let slot = match self.index.slot::<E>()? {
            Some(slot) => slot,
            None => self
                .index
                .insert::<E>(Box::new(EventGroup::<E> { handlers: Vec::new() })),
        };
        let group = self.index.entries[slot]
            .as_any_mut()
            .downcast_mut::<EventGroup<E>>()
            .expect("an event slot holds the group of its own type");
        group.handlers.push(Box::new(handler));
        Ok(self)
    }

    /// The names of the event types with at least one handler: the filter a subscription of
    /// this dispatcher needs.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.index.names()
    }

    /// The number of handlers of the event with this name.
    pub fn handler_count(&self, name: &str) -> usize {
        self.index
            .by_name
            .get(name)
            .map_or(0, |&i| self.index.entries[i].len())
    }

    /// Calls every handler of the envelope's event, in registration order.
    ///
    /// # Errors
    /// [`Error::Codec`] when a raw event does not decode; otherwise the first handler error.
    pub async fn dispatch(&self, envelope: &Envelope) -> Result<()> {
        match self.index.find(&envelope.message) {
            Some(group) => group.call(&envelope.message, &envelope.metadata).await,
            None => Ok(()),
        }
    }
}

impl MessageHandler for EventDispatcher {
    fn handle(&self, envelope: &Envelope) -> impl Future<Output = Result<()>> + Send {
        self.dispatch(envelope)
    }
}

impl fmt::Debug for EventDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("EventDispatcher").field("events", &names).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use serde::{Deserialize, Serialize};
    use std::sync::Mutex;
    use uuid::Uuid;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Ping {
        id: Uuid,
    }
    impl Message for Ping {
        const NAME: &'static str = "Ping";
    }
    impl Command for Ping {
        fn command_id(&self) -> Uuid {
            self.id
        }
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Pinged(u32);
    impl Message for Pinged {
        const NAME: &'static str = "Pinged";
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Impostor(u32);
    impl Message for Impostor {
        const NAME: &'static str = "Pinged";
    }

    #[tokio::test]
    async fn exactly_one_command_handler() {
        let mut d = CommandDispatcher::new();
        d.register::<Ping, _>(handler_fn(|_: Ping, _| async { Ok(()) }))
            .unwrap();
        let again = d.register::<Ping, _>(handler_fn(|_: Ping, _| async { Ok(()) }));
        assert!(matches!(again, Err(Error::AlreadyRegistered(_))));
        let env = Envelope::command(Ping { id: Uuid::nil() });
        d.dispatch(&env).await.unwrap();
        let raw = Envelope::from_parts(
            AnyMessage::raw(env.message.to_payload(Codec::Json).unwrap()),
            env.metadata.clone(),
        );
        d.dispatch(&raw).await.unwrap();
        let unknown = Envelope::message(Pinged(1));
        assert!(matches!(d.dispatch(&unknown).await, Err(Error::NoHandler(n)) if n == "Pinged"));
    }

    #[tokio::test]
    async fn event_handlers_run_in_registration_order_with_metadata() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut d = EventDispatcher::new();
        for tag in ["first", "second", "third"] {
            let seen = Arc::clone(&seen);
            d.subscribe(handler_fn(move |e: Pinged, md: Metadata| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock()
                        .unwrap()
                        .push(format!("{tag}:{}:{}", e.0, md.message_id));
                    Ok(())
                }
            }))
            .unwrap();
        }
        assert_eq!(d.handler_count("Pinged"), 3);
        assert!(matches!(
            d.subscribe(handler_fn(|_: Impostor, _| async { Ok(()) })),
            Err(Error::AlreadyRegistered(_))
        ));
        let mut env = Envelope::message(Pinged(7));
        env.metadata.message_id = "m".into();
        d.dispatch(&env).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["first:7:m", "second:7:m", "third:7:m"]);
        // Nobody handles Ping events: a no-op.
        d.dispatch(&Envelope::message(Ping { id: Uuid::nil() }))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn undecodable_raw_event_is_a_codec_error() {
        let mut d = EventDispatcher::new();
        d.subscribe(handler_fn(|_: Pinged, _| async { Ok(()) })).unwrap();
        let payload = crate::Payload {
            name: "Pinged".into(),
            schema_version: 1,
            codec: Codec::Json,
            bytes: bytes::Bytes::from_static(b"not json"),
        };
        let env = Envelope::from_parts(AnyMessage::raw(payload), Metadata::with_id("x"));
        let err = d.dispatch(&env).await.unwrap_err();
        assert!(err.is_undeliverable(), "{err}");
    }
}
