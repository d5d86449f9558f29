//! Session batches handled concurrently across the independent things they touch.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use futures::future::join_all;

use crate::dispatch::{BatchOutcome, MessageHandler};
use crate::envelope::Envelope;
use crate::error::Result;

/// A handler decorator for a session whose messages mostly touch different things: the events
/// of one aggregate's stream, each for another process manager, say. Each message of a batch
/// gets a key (the process it goes to); messages with different keys run concurrently, those
/// with the same key one after the other, in order. Their writes then meet in the store's group
/// commit instead of waiting for each other's.
///
/// The outcome is the batch's handled prefix: when a message fails, the messages after it
/// that went through concurrently are delivered again with the rest, so the handler must
/// tolerate duplicates, as at-least-once delivery asks anyway. A message without a key (`None`)
/// is handled alone, after everything before it.
///
/// ```
/// use cqrs_core::{EventDispatcher, Partitioned};
///
/// // Events of one stream, each routed to the process named in its correlation id.
/// let handler = Partitioned::new(EventDispatcher::new(), |envelope: &cqrs_core::Envelope| {
///     envelope.metadata.correlation_id.clone()
/// });
/// # drop(handler);
/// ```
pub struct Partitioned<H, F> {
    handler: H,
    key: F,
}

impl<H, F> Partitioned<H, F>
where
    H: MessageHandler,
    F: Fn(&Envelope) -> Option<String> + Send + Sync,
{
    /// Runs `handler` on batches partitioned by `key`.
    pub fn new(handler: H, key: F) -> Self {
        Self { handler, key }
    }

    /// The decorated handler.
    pub fn get_ref(&self) -> &H {
        &self.handler
    }

    /// Handles the messages at `indexes` of `envelopes`, in order, up to the first failure:
    /// its index and error.
    async fn run(&self, envelopes: &[&Envelope], indexes: &[usize]) -> Option<(usize, crate::Error)> {
        for &i in indexes {
            if let Err(error) = self.handler.handle(envelopes[i]).await {
                return Some((i, error));
            }
        }
        None
    }
}

impl<H, F> fmt::Debug for Partitioned<H, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partitioned").finish_non_exhaustive()
    }
}

impl<H, F> MessageHandler for Partitioned<H, F>
where
    H: MessageHandler,
    F: Fn(&Envelope) -> Option<String> + Send + Sync,
{
    fn handle(&self, envelope: &Envelope) -> impl Future<Output = Result<()>> + Send {
        self.handler.handle(envelope)
    }

    async fn handle_batch<'a>(&'a self, envelopes: &'a [&'a Envelope]) -> BatchOutcome {
        let mut partitions: Vec<Vec<usize>> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut keyed = 0;
        for envelope in envelopes {
            let Some(key) = (self.key)(envelope) else { break };
            let slot = *by_key.entry(key).or_insert_with(|| {
                partitions.push(Vec::new());
                partitions.len() - 1
            });
            partitions[slot].push(keyed);
            keyed += 1;
        }
        if keyed <= 1 {
            return BatchOutcome::first_alone(&self.handler, envelopes).await;
        }
        let failures = join_all(partitions.iter().map(|indexes| self.run(envelopes, indexes))).await;
        match failures.into_iter().flatten().min_by_key(|(i, _)| *i) {
            Some((i, error)) => BatchOutcome::failed(i, error),
            None => BatchOutcome::handled(keyed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::Error;
    use crate::envelope::Metadata;
    use crate::message::{AnyMessage, Payload};

    /// Logs `start:<id>` and `end:<id>` around a short sleep; fails `fail` once.
    struct Log {
        log: Mutex<Vec<String>>,
        fail: &'static str,
    }

    impl MessageHandler for Log {
        async fn handle(&self, envelope: &Envelope) -> Result<()> {
            let id = envelope.metadata.message_id.clone();
            self.log.lock().unwrap().push(format!("start:{id}"));
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.log.lock().unwrap().push(format!("end:{id}"));
            if id == self.fail {
                return Err(Error::transient("fails"));
            }
            Ok(())
        }
    }

    fn envelope(id: &str, key: Option<&str>) -> Envelope {
        let payload = Payload {
            name: "Noted".into(),
            schema_version: 1,
            codec: crate::Codec::Json,
            bytes: bytes::Bytes::from_static(b"{}"),
        };
        let mut metadata = Metadata::with_id(id);
        metadata.correlation_id = key.map(str::to_owned);
        Envelope::from_parts(AnyMessage::raw(payload), metadata)
    }

    fn partitioned(
        fail: &'static str,
    ) -> Partitioned<Log, impl Fn(&Envelope) -> Option<String> + Send + Sync> {
        Partitioned::new(
            Log {
                log: Mutex::default(),
                fail,
            },
            |e: &Envelope| e.metadata.correlation_id.clone(),
        )
    }

    #[tokio::test]
    async fn keys_run_concurrently_in_order_within_a_key_up_to_a_message_without_one() {
        let handler = partitioned("none");
        let batch = [
            envelope("a1", Some("a")),
            envelope("b1", Some("b")),
            envelope("a2", Some("a")),
            envelope("x", None),
            envelope("c1", Some("c")),
        ];
        let refs: Vec<&Envelope> = batch.iter().collect();
        let outcome = handler.handle_batch(&refs).await;
        assert_eq!(
            (outcome.handled, outcome.error.is_none()),
            (3, true),
            "stops before x"
        );
        let log = handler.get_ref().log.lock().unwrap().clone();
        let at = |entry: &str| log.iter().position(|e| e == entry).unwrap();
        assert!(at("start:b1") < at("end:a1"), "a and b overlap: {log:?}");
        assert!(at("end:a1") < at("start:a2"), "a in order: {log:?}");
        assert!(!log.iter().any(|e| e.ends_with(":x") || e.ends_with(":c1")));

        let alone = handler.handle_batch(&refs[3..]).await;
        assert_eq!(alone.handled, 1, "a message without a key goes alone");
    }

    #[tokio::test]
    async fn the_outcome_is_the_prefix_before_the_first_failure() {
        let handler = partitioned("b1");
        let batch = [
            envelope("a1", Some("a")),
            envelope("b1", Some("b")),
            envelope("b2", Some("b")),
            envelope("c1", Some("c")),
        ];
        let refs: Vec<&Envelope> = batch.iter().collect();
        let outcome = handler.handle_batch(&refs).await;
        assert_eq!(outcome.handled, 1);
        assert!(outcome.error.is_some_and(|e| e.is_transient()));
        let log = handler.get_ref().log.lock().unwrap().clone();
        assert!(
            !log.contains(&"start:b2".to_owned()),
            "b stops at its failure: {log:?}"
        );
        assert!(
            log.contains(&"end:c1".to_owned()),
            "c went through, and will again: {log:?}"
        );
    }
}
