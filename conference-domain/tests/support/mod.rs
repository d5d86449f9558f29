//! Shared fixtures of the domain tests.
#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use conference_domain::pricing::{PriceList, SeatTypePrice};
use conference_domain::values::{Money, SeatQuantity};
use cqrs_core::{Command, CommandHandler, Envelope, Message, Metadata, Source, StreamId};
use uuid::Uuid;

/// Parses a decimal.
pub fn money(s: &str) -> Money {
    Money::from_str(s).unwrap()
}

/// A fixed "now".
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

/// `quantity` of `seat_type`.
pub fn seats(lines: &[(Uuid, i32)]) -> Vec<SeatQuantity> {
    lines.iter().map(|&(t, q)| SeatQuantity::new(t, q)).collect()
}

/// A conference with two seat types priced 100.00 and 0.125.
pub struct Prices {
    pub conference: Uuid,
    pub full: Uuid,
    pub cheap: Uuid,
    pub list: PriceList,
}

impl Prices {
    pub fn new() -> Self {
        let (conference, full, cheap) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let list = PriceList::new(
            conference,
            vec![
                SeatTypePrice {
                    id: full,
                    price: money("100.00"),
                },
                SeatTypePrice {
                    id: cheap,
                    price: money("0.125"),
                },
            ],
        );
        Self {
            conference,
            full,
            cheap,
            list,
        }
    }
}

/// An envelope of `event` as published from `<stream_type>-<source>` at `version`, correlated
/// with `correlation`.
pub fn published<E: Message>(
    event: E,
    stream_type: &str,
    source: Uuid,
    version: i64,
    correlation: Option<String>,
) -> Envelope {
    let stream = StreamId::for_aggregate(stream_type, source);
    let metadata = Metadata {
        message_id: format!("{stream}:{version}"),
        correlation_id: correlation,
        session_id: Some(stream.to_string()),
        source: Some(Source {
            stream_id: stream,
            version,
            position: 0,
        }),
        ..Metadata::default()
    };
    Envelope::from_parts(event.into(), metadata)
}

/// Hands `command` to `handler` in the envelope the bus would give it.
pub async fn send<C: Command + Clone>(handler: &impl CommandHandler<C>, command: C) -> cqrs_core::Result<()> {
    let envelope = Envelope::command(command.clone());
    handler.handle(&command, &envelope.metadata).await
}
