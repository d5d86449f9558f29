//! The local-first decorator against scripted inner buses, and the retry decorator.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_core::testing::{BusCall, RecordingBus};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Backoff, BusBuilder, Command, CommandBus, CommandDispatcher, Envelope, Error, LocalFirst, Message,
    Metadata, Result, Retry, handler_fn,
};
use serde::{Deserialize, Serialize};

macro_rules! command {
    ($name:ident, $tag:literal) => {
        #[derive(Debug, Clone, Serialize, Deserialize)]
        struct $name {
            id: Uuid,
            fail: bool,
        }
        impl $name {
            fn ok() -> Envelope {
                Envelope::command(Self {
                    id: Uuid::now_v7(),
                    fail: false,
                })
            }
            #[allow(dead_code, reason = "only A is ever made to fail")]
            fn failing() -> Envelope {
                Envelope::command(Self {
                    id: Uuid::now_v7(),
                    fail: true,
                })
            }
        }
        impl Message for $name {
            const NAME: &'static str = $tag;
        }
        impl Command for $name {
            fn command_id(&self) -> Uuid {
                self.id
            }
        }
    };
}

command!(A, "test.A");
command!(B, "test.B");
command!(C, "test.C");

/// Local handlers for A and B (not C), counting what they handle; a `fail` command fails.
fn local() -> (Arc<CommandDispatcher>, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let mut d = CommandDispatcher::new();
    let h = Arc::clone(&handled);
    d.register::<A, _>(handler_fn(move |a: A, _: Metadata| {
        let h = Arc::clone(&h);
        async move {
            if a.fail {
                return Err(Error::domain("A refused"));
            }
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }))
    .unwrap();
    let h = Arc::clone(&handled);
    d.register::<B, _>(handler_fn(move |_: B, _: Metadata| {
        let h = Arc::clone(&h);
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }))
    .unwrap();
    (Arc::new(d), handled)
}

fn ids(envelopes: &[Envelope]) -> Vec<String> {
    envelopes.iter().map(|e| e.metadata.message_id.clone()).collect()
}

#[tokio::test]
async fn a_batch_is_forwarded_from_the_first_unhandled_command_on() {
    let (dispatcher, handled) = local();
    let inner = RecordingBus::new();
    let bus = LocalFirst::new(dispatcher, inner.clone());
    let batch = vec![A::ok(), A::ok(), C::ok(), A::ok(), B::ok(), A::ok()];
    let expected = ids(&batch[2..]);
    bus.send_batch(batch).await.unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        2,
        "the two leading A's were handled locally"
    );
    assert_eq!(
        inner.calls(),
        [BusCall::Batch(expected)],
        "[C, A, B, A] forwarded as one batch"
    );
}

#[tokio::test]
async fn a_failing_local_handler_forwards_that_command_and_all_after_it() {
    let (dispatcher, handled) = local();
    let inner = RecordingBus::new();
    let bus = LocalFirst::new(dispatcher, inner.clone());
    let batch = vec![B::ok(), A::failing(), A::ok(), B::ok()];
    let expected = ids(&batch[1..]);
    bus.send_batch(batch).await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!(inner.calls(), [BusCall::Batch(expected)]);

    // Single sends: handled locally, forwarded when unhandled or failing.
    inner.clear();
    let (c, failing) = (C::ok(), A::failing());
    let forwarded = ids(&[c.clone(), failing.clone()]);
    bus.send(A::ok()).await.unwrap();
    bus.send(c).await.unwrap();
    bus.send(failing).await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 2);
    assert_eq!(inner.sent_ids(), forwarded);
    assert!(inner.calls().iter().all(|c| matches!(c, BusCall::Send(_))));
}

#[tokio::test]
async fn a_fully_local_batch_never_touches_the_inner_bus_and_delayed_commands_always_do() {
    let (dispatcher, handled) = local();
    let inner = RecordingBus::new();
    let bus = LocalFirst::new(dispatcher, inner.clone());
    bus.send_batch(vec![A::ok(), B::ok(), A::ok()]).await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    assert!(inner.calls().is_empty());
    let delayed = A::ok().with_delay(Duration::from_secs(60));
    let id = delayed.metadata.message_id.clone();
    bus.send(delayed).await.unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        3,
        "a delay cannot be honoured in-process"
    );
    assert_eq!(inner.sent_ids(), [id]);
}

#[tokio::test]
async fn forwarding_failures_reach_the_caller() {
    let (dispatcher, _) = local();
    let inner = RecordingBus::new();
    inner.fail_if(|_| true);
    let bus = LocalFirst::new(dispatcher, inner);
    assert!(bus.send(C::ok()).await.unwrap_err().is_transient());
}

#[tokio::test(start_paused = true)]
async fn retry_retries_only_retryable_errors() {
    let inner = RecordingBus::new();
    let bus = Retry::new(
        inner.clone(),
        Backoff {
            max_retries: 3,
            ..Backoff::default()
        },
    );
    inner.fail_attempt(1);
    inner.fail_attempt(2);
    bus.send(A::ok()).await.unwrap();
    assert_eq!(inner.attempts(), 3);
    assert_eq!(inner.sent().len(), 1);

    inner.fail_if(|_| true);
    assert!(bus.send(A::ok()).await.unwrap_err().is_transient());
    assert_eq!(inner.attempts(), 3 + 4, "one try and three retries");

    // A permanent error is returned at once.
    let (dispatcher, _) = local();
    let no_route = Retry::new(Arc::clone(&dispatcher), Backoff::default());
    let error = no_route.send(C::ok()).await.unwrap_err();
    assert!(matches!(error, Error::NoHandler(_)));
}

#[tokio::test]
async fn the_builder_stacks_layers_outermost_first() -> Result<()> {
    let (dispatcher, handled) = local();
    let inner = RecordingBus::new();
    let bus = BusBuilder::new()
        .trace()
        .metrics()
        .local_first(dispatcher)
        .retry(Backoff::none())
        .build(inner.clone());
    inner.fail_attempt(1);
    bus.send_batch(vec![A::ok(), C::ok(), B::ok()]).await?;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        inner.attempts(),
        3,
        "the forwarded [C, B] failed once and was retried whole"
    );
    assert_eq!(inner.sent().len(), 2);
    // The layers are reachable through get_ref.
    let _retry: &Retry<RecordingBus> = bus.get_ref().get_ref().get_ref();
    Ok(())
}
