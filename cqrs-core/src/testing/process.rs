use std::fmt;

use crate::envelope::{Envelope, Metadata};
use crate::error::Result;
use crate::message::Message;
use crate::process::{Process, ProcessState};

/// Given messages, when a message, then commands (with their envelope hints) and state — for a
/// process manager's handling logic, with no store. Each message is declared as the process's
/// cause ([`Process::caused_by`]) before the handler runs.
pub struct ProcessTest<P, F> {
    process: Process<P>,
    handler: F,
}

impl<P: ProcessState, F> fmt::Debug for ProcessTest<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessTest")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl<P, F> ProcessTest<P, F>
where
    P: ProcessState,
    F: FnMut(&mut Process<P>, &Envelope) -> Result<()>,
{
    /// Tests `process` with the message handler `handler`.
    pub fn new(process: Process<P>, handler: F) -> Self {
        Self { process, handler }
    }

    /// Handles earlier messages; their commands are discarded.
    ///
    /// # Panics
    /// If handling one of them fails.
    #[must_use]
    #[track_caller]
    pub fn given(mut self, messages: impl IntoIterator<Item = Envelope>) -> Self {
        for message in messages {
            self.process.caused_by(&message.metadata);
            if let Err(error) = (self.handler)(&mut self.process, &message) {
                panic!("given message {} failed: {error}", message.name());
            }
            self.process.take_outgoing();
        }
        self
    }

    /// Handles the message under test.
    pub fn when(mut self, message: &Envelope) -> ProcessOutcome<P> {
        self.process.caused_by(&message.metadata);
        let result = (self.handler)(&mut self.process, message);
        ProcessOutcome {
            process: self.process,
            result,
        }
    }
}

/// The result of [`ProcessTest::when`].
#[derive(Debug)]
pub struct ProcessOutcome<P> {
    process: Process<P>,
    result: Result<()>,
}

impl<P: ProcessState> ProcessOutcome<P> {
    /// Asserts success and that the commands sent have these names, in order.
    ///
    /// # Panics
    /// If handling failed or other commands were sent.
    #[must_use]
    #[track_caller]
    pub fn then_sent(self, names: &[&str]) -> Self {
        if let Err(error) = &self.result {
            panic!("expected commands, got the error {error}");
        }
        let sent: Vec<&str> = self.process.outgoing().iter().map(Envelope::name).collect();
        assert_eq!(sent, names, "commands sent differ");
        self
    }

    /// Asserts success with no command sent.
    ///
    /// # Panics
    /// If handling failed or a command was sent.
    #[must_use]
    #[track_caller]
    pub fn then_nothing_sent(self) -> Self {
        self.then_sent(&[])
    }

    /// The `index`-th command sent, decoded as a `C`, with its metadata (delay, time to live,
    /// correlation…).
    ///
    /// # Panics
    /// If there is no such command or it is not a `C`.
    #[track_caller]
    pub fn command<C: Message + Clone>(&self, index: usize) -> (C, &Metadata) {
        let envelope = self
            .process
            .outgoing()
            .get(index)
            .unwrap_or_else(|| panic!("no command #{index}; sent {:?}", self.process.outgoing()));
        let command = envelope
            .message
            .decode::<C>()
            .unwrap_or_else(|e| panic!("command #{index} is not a {}: {e}", C::NAME));
        (C::clone(&command), &envelope.metadata)
    }

    /// Asserts failure; returns the error.
    ///
    /// # Panics
    /// If handling succeeded.
    #[track_caller]
    pub fn then_error(self) -> crate::Error {
        match self.result {
            Ok(()) => panic!("expected an error, handling succeeded"),
            Err(error) => error,
        }
    }

    /// The process after handling.
    pub fn process(&self) -> &Process<P> {
        &self.process
    }

    /// The state after handling.
    pub fn state(&self) -> &P {
        self.process.state()
    }
}
