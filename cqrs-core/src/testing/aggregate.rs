use std::fmt;

use uuid::Uuid;

use crate::aggregate::{Aggregate, Root};

/// Given events, when a domain method, then events or an error — with no store.
#[derive(Debug)]
pub struct AggregateTest<A: Aggregate> {
    root: Root<A>,
}

impl<A: Aggregate> AggregateTest<A> {
    /// A new aggregate `id`.
    pub fn new(id: Uuid) -> Self {
        Self { root: Root::new(id) }
    }

    /// The aggregate's history.
    #[must_use]
    pub fn given(self, events: impl IntoIterator<Item = A::Event>) -> Self {
        Self {
            root: Root::from_history(self.root.id(), events),
        }
    }

    /// Runs the operation under test on the root.
    pub fn when<E>(
        mut self,
        operation: impl FnOnce(&mut Root<A>) -> Result<(), E>,
    ) -> AggregateOutcome<A, E> {
        let result = operation(&mut self.root);
        AggregateOutcome {
            root: self.root,
            result,
        }
    }
}

/// The result of [`AggregateTest::when`].
#[derive(Debug)]
pub struct AggregateOutcome<A: Aggregate, E> {
    root: Root<A>,
    result: Result<(), E>,
}

impl<A: Aggregate, E: fmt::Debug> AggregateOutcome<A, E> {
    /// Asserts success with exactly these new events, in order; returns the root.
    ///
    /// # Panics
    /// If the operation failed or recorded other events.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> Root<A>
    where
        A::Event: PartialEq,
    {
        if let Err(error) = &self.result {
            panic!("expected events, got the error {error:?}");
        }
        let expected: Vec<A::Event> = expected.into_iter().collect();
        assert_eq!(self.root.pending(), expected.as_slice(), "recorded events differ");
        self.root
    }

    /// Asserts success and hands the new events to `check`, for events with values the test
    /// cannot know in advance (generated ids, codes); returns the root.
    ///
    /// # Panics
    /// If the operation failed, or as `check` does.
    #[track_caller]
    pub fn then_with(self, check: impl FnOnce(&[A::Event])) -> Root<A> {
        if let Err(error) = &self.result {
            panic!("expected events, got the error {error:?}");
        }
        check(self.root.pending());
        self.root
    }

    /// Asserts success with no new event; returns the root.
    ///
    /// # Panics
    /// If the operation failed or recorded events.
    #[track_caller]
    pub fn then_nothing(self) -> Root<A> {
        if let Err(error) = &self.result {
            panic!("expected no events, got the error {error:?}");
        }
        assert!(
            self.root.pending().is_empty(),
            "expected no events, got {:?}",
            self.root.pending()
        );
        self.root
    }

    /// Asserts failure with no new event; returns the error.
    ///
    /// # Panics
    /// If the operation succeeded or recorded events.
    #[track_caller]
    pub fn then_error(self) -> E {
        assert!(
            self.root.pending().is_empty(),
            "a failed operation recorded {:?}",
            self.root.pending()
        );
        match self.result {
            Ok(()) => panic!("expected an error, the operation succeeded"),
            Err(error) => error,
        }
    }
}
