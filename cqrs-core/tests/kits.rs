//! The testing kits themselves: given/when/then for aggregates and process managers.

use std::time::Duration;

use cqrs_core::testing::sample::{Booking, Inventory, InventoryError, Remind, SeatsAdded, SeatsReserved};
use cqrs_core::testing::{AggregateTest, ProcessTest};
use cqrs_core::uuid::Uuid;
use cqrs_core::{Envelope, Error, Process, Result};

#[test]
fn aggregate_kit_checks_events_and_errors() {
    let root = AggregateTest::<Inventory>::new(Uuid::nil())
        .given([SeatsAdded {
            seat_type: 1,
            quantity: 3,
        }
        .into()])
        .when(|inv| inv.execute(|i| i.reserve(9, 1, 3)))
        .then([SeatsReserved {
            reservation: 9,
            seat_type: 1,
            quantity: 3,
        }
        .into()]);
    assert_eq!((root.version(), root.available(1)), (1, 0));

    let error = AggregateTest::<Inventory>::new(Uuid::nil())
        .given([SeatsAdded {
            seat_type: 1,
            quantity: 3,
        }
        .into()])
        .when(|inv| inv.execute(|i| i.reserve(9, 1, 4)))
        .then_error();
    assert_eq!(
        error,
        InventoryError::NotEnough {
            seat_type: 1,
            available: 3
        }
    );

    AggregateTest::<Inventory>::new(Uuid::nil())
        .when(|inv| {
            inv.record_all(inv.cancel(1));
            Ok::<_, InventoryError>(())
        })
        .then_nothing();
}

#[test]
#[should_panic(expected = "recorded events differ")]
fn aggregate_kit_fails_on_other_events() {
    AggregateTest::<Inventory>::new(Uuid::nil())
        .when(|inv| inv.execute(|i| i.add(1, 2)))
        .then([SeatsAdded {
            seat_type: 1,
            quantity: 3,
        }
        .into()]);
}

/// A booking handler: every message advances a step and schedules a reminder; the third
/// completes the booking; a message after completion is an error.
fn handle(process: &mut Process<Booking>, _message: &Envelope) -> Result<()> {
    if process.done {
        return Err(Error::domain("booking already completed"));
    }
    process.step += 1;
    process.done = process.step == 3;
    let reminder = Envelope::command(Remind::new(format!("step {}", process.step)))
        .with_delay(Duration::from_secs(15 * 60))
        .with_time_to_live(Duration::from_secs(60));
    process.send(reminder);
    Ok(())
}

fn message() -> Envelope {
    Envelope::command(Remind::new("input"))
}

#[test]
fn process_kit_checks_commands_hints_and_state() {
    let order = Uuid::now_v7();
    let trigger = message();
    let outcome = ProcessTest::new(
        Process::new(
            Uuid::now_v7(),
            Booking {
                order,
                step: 0,
                done: false,
            },
        ),
        handle,
    )
    .given([message(), message()])
    .when(&trigger)
    .then_sent(&["sample.Remind"]);
    let (reminder, metadata) = outcome.command::<Remind>(0);
    assert_eq!(reminder.note, "step 3");
    assert_eq!(metadata.delay, Some(Duration::from_secs(15 * 60)));
    assert_eq!(metadata.time_to_live, Some(Duration::from_secs(60)));
    assert_eq!(
        metadata.causation_id.as_deref(),
        Some(trigger.metadata.message_id.as_str())
    );
    assert_eq!(
        metadata.correlation_id.as_deref(),
        Some(trigger.metadata.message_id.as_str()),
        "the command correlates with the message that caused it"
    );
    assert!(outcome.state().done);
    assert_eq!(
        outcome.process().outgoing().len(),
        1,
        "commands of given messages are not kept"
    );

    let error = ProcessTest::new(
        Process::new(
            Uuid::now_v7(),
            Booking {
                order,
                step: 0,
                done: false,
            },
        ),
        handle,
    )
    .given([message(), message(), message()])
    .when(&message())
    .then_error();
    assert_eq!(error.to_string(), "booking already completed");
}
