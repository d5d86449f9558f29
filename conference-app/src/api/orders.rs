//! The registrant's routes and the simulated payment processor.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use conference_domain::commands::{
    AssignRegistrantDetails, AssignSeat, CancelThirdPartyProcessorPayment,
    CompleteThirdPartyProcessorPayment, ConfirmOrder, InitiateThirdPartyProcessorPayment, MAX_SEATS_PER_TYPE,
    RegisterToConference, UnassignSeat, selectable_maximum,
};
use conference_domain::order::Order;
use conference_domain::payments::ThirdPartyProcessorPayment;
use conference_domain::read_model::{
    ConferenceQueries, ConferenceView, ConferenceViewStore, DraftOrder, DraftOrderState, DraftOrderStore,
    OrderSeatsStore, PaymentStore, PricedOrder, PricedOrderStore,
};
use conference_domain::values::{INVALID_EMAIL, PersonalInfo, SeatQuantity, is_valid_email};
use cqrs_core::{Aggregate, Command, CommandBus, Envelope, EventReader, Repository, StreamId};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::fields_of;
use super::{ApiError, App, LONG_POLL};
use crate::read_models::models;
use crate::system::{Backend, checkpoint_name, projection_models};

type Answer<T> = Result<T, ApiError>;

async fn send<S: Backend>(app: &App<S>, command: impl Command) -> Answer<()> {
    app.system.bus.send(Envelope::command(command)).await?;
    Ok(())
}

/// A published conference in the list.
#[derive(Debug, Serialize)]
pub(crate) struct ConferenceSummary {
    pub(crate) code: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) location: String,
    pub(crate) start_date: DateTime<Utc>,
}

/// `GET /api/conferences`.
pub(crate) async fn conferences<S: Backend>(
    State(app): State<App<S>>,
) -> Answer<Json<Vec<ConferenceSummary>>> {
    let published = app.system.conferences.published_conferences().await?;
    Ok(Json(
        published
            .into_iter()
            .map(|c| ConferenceSummary {
                code: c.code,
                name: c.name,
                description: c.description,
                location: c.location,
                start_date: c.start_date,
            })
            .collect(),
    ))
}

/// The published conference `code`, through the public cache.
async fn published_conference<S: Backend>(app: &App<S>, code: &str) -> Answer<ConferenceView> {
    app.system
        .conferences
        .conference_details(code)
        .await?
        .filter(|c| c.is_published)
        .ok_or_else(|| ApiError::not_found(format!("No published conference `{code}`.")))
}

/// `GET /api/conferences/{code}`.
pub(crate) async fn conference<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<String>, PathRejection>,
) -> Answer<Json<Value>> {
    let Path(code) = path?;
    let conference = published_conference(&app, &code).await?;
    let seat_types: Vec<Value> = app
        .system
        .conferences
        .published_seat_types(conference.id)
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "id": t.id, "name": t.name, "description": t.description,
                "price": t.price, "available": t.available_quantity.max(0),
            })
        })
        .collect();
    Ok(Json(json!({
        "code": conference.code, "name": conference.name, "description": conference.description,
        "location": conference.location, "tagline": conference.tagline,
        "start_date": conference.start_date, "seat_types": seat_types,
    })))
}

/// One line of an order request.
#[derive(Debug, Deserialize)]
pub(crate) struct SeatRequest {
    pub(crate) seat_type_id: Uuid,
    pub(crate) quantity: i32,
}

/// `POST /api/conferences/{code}/orders` body.
#[derive(Debug, Deserialize)]
pub(crate) struct PlaceOrder {
    pub(crate) order_id: Option<Uuid>,
    pub(crate) seats: Vec<SeatRequest>,
}

/// The `(version, position)` of the events of each order that this process has read, from
/// version 0 on: a long poll starts from them instead of reading the order's stream from the
/// start again. Stored events never change, so what is known stays true.
#[derive(Debug, Default)]
pub(crate) struct KnownEvents {
    orders: DashMap<Uuid, Vec<(i64, u64)>>,
}

impl KnownEvents {
    /// The most orders remembered; past it the memory starts again empty.
    const MAX_ORDERS: usize = 65_536;

    fn of(&self, order_id: Uuid) -> Vec<(i64, u64)> {
        self.orders.get(&order_id).map(|e| e.clone()).unwrap_or_default()
    }

    /// Remembers `events` (the order's from version 0) if they are more than is known.
    fn learned(&self, order_id: Uuid, events: &[(i64, u64)]) {
        if events.is_empty() {
            return;
        }
        if self.orders.len() >= Self::MAX_ORDERS {
            self.orders.clear();
        }
        let mut known = self.orders.entry(order_id).or_default();
        if known.len() < events.len() {
            known.clear();
            known.extend_from_slice(events);
        }
    }
}

/// Reads the order's events after `events` (its events from version 0, as far as known) onto
/// them, and remembers them.
async fn read_on<S: Backend>(app: &App<S>, order_id: Uuid, events: &mut Vec<(i64, u64)>) -> Answer<()> {
    let stream = StreamId::for_aggregate(Order::TYPE, order_id);
    let from = events.last().map_or(0, |&(version, _)| version + 1);
    let tail = EventReader::load(&app.system.store, &stream, from).await?;
    if !tail.is_empty() {
        events.extend(tail.iter().map(|e| (e.version, e.position)));
        app.known_events.learned(order_id, events);
    }
    Ok(())
}

/// The version the client waits past: the version of the order before the change it caused.
async fn order_version<S: Backend>(app: &App<S>, order_id: Uuid) -> Answer<i64> {
    let mut events = app.known_events.of(order_id);
    read_on(app, order_id, &mut events).await?;
    Ok(events.last().map_or(-1, |&(version, _)| version - 1))
}

/// `POST /api/conferences/{code}/orders`: validates, checks the cached availability, sends
/// `RegisterToConference` (handled in-process) and answers once the order is saved.
pub(crate) async fn place<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<PlaceOrder>, JsonRejection>,
) -> Answer<(StatusCode, Json<Value>)> {
    let Path(code) = path?;
    let Json(request) = body?;
    let conference = published_conference(&app, &code).await?;
    let seat_types = app.system.conferences.published_seat_types(conference.id).await?;

    let mut fields = Vec::new();
    for (i, line) in request.seats.iter().enumerate() {
        if line.quantity < 0 {
            fields.push((
                format!("seats[{i}].quantity"),
                "A quantity cannot be negative.".to_owned(),
            ));
        } else if line.quantity > MAX_SEATS_PER_TYPE {
            fields.push((
                format!("seats[{i}].quantity"),
                format!("At most {MAX_SEATS_PER_TYPE} seats of one type per order."),
            ));
        }
        if !seat_types.iter().any(|t| t.id == line.seat_type_id) {
            fields.push((
                format!("seats[{i}].seat_type_id"),
                "No such seat type at this conference.".to_owned(),
            ));
        }
        if request.seats[..i]
            .iter()
            .any(|earlier| earlier.seat_type_id == line.seat_type_id)
        {
            fields.push((
                format!("seats[{i}].seat_type_id"),
                "Each seat type at most once.".to_owned(),
            ));
        }
    }
    if !fields.is_empty() {
        return Err(ApiError::invalid(fields));
    }
    let seats: Vec<SeatQuantity> = request
        .seats
        .iter()
        .map(|s| SeatQuantity::new(s.seat_type_id, s.quantity))
        .collect();
    // An id made here is a new order's: it holds nothing, and no draft need be read.
    let (order_id, existing) = match request.order_id {
        Some(id) => (id, true),
        None => (Uuid::now_v7(), false),
    };
    let command = RegisterToConference::new(order_id, conference.id, seats);
    command.validate()?;

    // What this order already holds counts as available to it.
    let held: HashMap<Uuid, i32> = if existing {
        app.system
            .documents
            .draft_order(order_id)
            .await?
            .map(|d| d.lines.iter().map(|l| (l.seat_type, l.reserved_seats)).collect())
            .unwrap_or_default()
    } else {
        HashMap::new()
    };
    let short = request.seats.iter().any(|line| {
        let available = seat_types
            .iter()
            .find(|t| t.id == line.seat_type_id)
            .map_or(0, |t| t.available_quantity);
        line.quantity > selectable_maximum(available, held.get(&line.seat_type_id).copied().unwrap_or(0))
    });
    if short {
        let available: Vec<Value> = seat_types
            .iter()
            .map(|t| {
                let held = held.get(&t.id).copied().unwrap_or(0);
                json!({ "seat_type_id": t.id, "available": selectable_maximum(t.available_quantity, held) })
            })
            .collect();
        return Err(ApiError::conflict("Not enough seats are left for this request.")
            .with("available", Value::Array(available)));
    }
    send(&app, command).await?;
    let version = order_version(&app, order_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": order_id, "order_version": version })),
    ))
}

/// `?wait_for_version=N`.
#[derive(Debug, Deserialize)]
pub(crate) struct Wait {
    pub(crate) wait_for_version: Option<i64>,
}

/// The order as the API shows it, from the draft and priced read models.
struct OrderView {
    draft: DraftOrder,
    priced: Option<PricedOrder>,
}

/// How far the order's read models (draft and priced) have got: the last event of the order's
/// stream at or below both projections' checkpoints. Each model handles only some of the
/// order's events, so neither model's own version says this. The checkpoints come from what this
/// process knows of the commits (no query); the stream is read again only once the projections
/// have passed all of it that is known ([`KnownEvents`] included).
struct Progress {
    order_id: Uuid,
    /// (version, position) of the order's events read so far.
    events: Vec<(i64, u64)>,
}

impl Progress {
    fn new<S: Backend>(app: &App<S>, order_id: Uuid) -> Self {
        Self {
            order_id,
            events: app.known_events.of(order_id),
        }
    }

    /// The version both models have applied, and whether they have applied every event of
    /// the order known so far (then only a new event, which writes one of the order's
    /// documents, can move the version; otherwise a checkpoint's progress can).
    async fn version<S: Backend>(&mut self, app: &App<S>) -> Answer<(i64, bool)> {
        let documents = &app.system.documents;
        let mut reached = u64::MAX;
        for projection in ORDER_PROJECTIONS {
            let models = projection_models(projection)?;
            let name = checkpoint_name(projection, documents.generation(models[0]));
            reached = reached.min(documents.known_checkpoint(&name).await?.unwrap_or(0));
        }
        let passed = |events: &[(i64, u64)]| events.last().is_none_or(|&(_, position)| position <= reached);
        if passed(&self.events) {
            read_on(app, self.order_id, &mut self.events).await?;
        }
        let version = self
            .events
            .iter()
            .take_while(|&&(_, position)| position <= reached)
            .last()
            .map_or(-1, |&(version, _)| version);
        Ok((version, passed(&self.events)))
    }
}

/// The projections whose models an order's view shows.
const ORDER_PROJECTIONS: [&str; 2] = ["draft_order", "priced_order"];

async fn order_view<S: Backend>(app: &App<S>, order_id: Uuid) -> Answer<Option<OrderView>> {
    let documents = &app.system.documents;
    let Some(draft) = documents.draft_order(order_id).await? else {
        return Ok(None);
    };
    let priced = documents.priced_order(order_id).await?;
    Ok(Some(OrderView { draft, priced }))
}

fn state_name(view: &OrderView, now: DateTime<Utc>) -> &'static str {
    if view.draft.state == DraftOrderState::Confirmed {
        return "confirmed";
    }
    let expired = match &view.priced {
        None => true,
        Some(priced) => priced.reservation_expiration_date.is_some_and(|at| at <= now),
    };
    if expired {
        return "expired";
    }
    match view.draft.state {
        DraftOrderState::PartiallyReserved => "partially_reserved",
        DraftOrderState::ReservationCompleted => "reservation_completed",
        _ => "pending_reservation",
    }
}

/// `GET /api/orders/{order_id}?wait_for_version=N`: waits (at most 5 s) for the order's read
/// model to pass version N, woken by the projections' commits.
pub(crate) async fn order<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<Wait>, QueryRejection>,
) -> Answer<Json<Value>> {
    let Path(order_id) = path?;
    let Query(wait) = query?;
    let documents = &app.system.documents;
    let mut commits = documents.commits();
    let mut order_documents = documents.watch(
        &[models::DRAFT_ORDER, models::PRICED_ORDER],
        &order_id.to_string(),
    );
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    let mut progress = Progress::new(&app, order_id);
    let (view, version) = loop {
        commits.borrow_and_update();
        order_documents.mark_seen();
        let (version, caught_up) = progress.version(&app).await?;
        if wait.wait_for_version.is_none_or(|after| version > after) {
            break (order_view(&app, order_id).await?, version);
        }
        // Caught up, only the order's next event can help, and it writes one of its
        // documents; otherwise wait for the projections' progress.
        let woken = if caught_up {
            tokio::time::timeout_at(deadline, order_documents.changed()).await
        } else {
            tokio::time::timeout_at(deadline, async { drop(commits.changed().await) }).await
        };
        if woken.is_err() {
            break (order_view(&app, order_id).await?, version);
        }
    };
    let view = view.ok_or_else(|| ApiError::not_found(format!("No order {order_id}.")))?;
    let conference = app.system.documents.conference(view.draft.conference_id).await?;
    let payment = app.system.documents.payments_of_order(order_id).await?.pop();
    let now = app.system.clock.now();
    let priced_lines = view
        .priced
        .as_ref()
        .map(|p| p.lines.as_slice())
        .unwrap_or_default();
    let lines: Vec<Value> = view
        .draft
        .lines
        .iter()
        .map(|line| {
            let priced = priced_lines.iter().find(|p| p.seat_type == Some(line.seat_type));
            json!({
                "seat_type_id": line.seat_type,
                "description": priced.and_then(|p| p.description.clone()),
                "requested": line.requested_seats,
                "reserved": line.reserved_seats,
                "unit_price": priced.and_then(|p| p.unit_price),
                "line_total": priced.map(|p| p.line_total),
            })
        })
        .collect();
    let priced = view.priced.as_ref();
    let state = state_name(&view, now);
    // A confirmed order has no expiry; before pricing the draft knows the reservation's.
    let expires_at = match (state, priced) {
        ("confirmed", _) => None,
        (_, Some(p)) => p.reservation_expiration_date,
        (_, None) => view.draft.reservation_expiration_date,
    };
    Ok(Json(json!({
        "order_id": order_id,
        "conference_code": conference.map(|c| c.code),
        "state": state,
        "version": version,
        "access_code": view.draft.access_code,
        "reservation_expires_at": expires_at,
        "registrant": view.draft.registrant_email.as_ref().map(|email| json!({ "email": email })),
        "lines": lines,
        "total": priced.map(|p| p.total),
        "is_free_of_charge": priced.is_some_and(|p| p.is_free_of_charge),
        "payment": payment.map(|p| json!({ "payment_id": p.id, "state": format!("{:?}", p.state), "total_amount": p.total_amount })),
        "seat_assignments_id": priced.and_then(|p| p.assignments_id),
    })))
}

/// `PUT /api/orders/{order_id}/registrant` body.
#[derive(Debug, Deserialize)]
pub(crate) struct Registrant {
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) email: String,
}

/// `PUT /api/orders/{order_id}/registrant`: answers, like placing an order, the version to
/// wait past for the order's view to show the registrant.
pub(crate) async fn registrant<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<Registrant>, JsonRejection>,
) -> Answer<(StatusCode, Json<Value>)> {
    let Path(order_id) = path?;
    let Json(registrant) = body?;
    let command = AssignRegistrantDetails::new(
        order_id,
        registrant.first_name.trim().to_owned(),
        registrant.last_name.trim().to_owned(),
        registrant.email.trim().to_owned(),
    );
    command.validate().map_err(fields_of)?;
    if app.system.documents.draft_order(order_id).await?.is_none() {
        return Err(ApiError::not_found(format!("No order {order_id}.")));
    }
    send(&app, command).await?;
    let version = order_version(&app, order_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "order_version": version }))))
}

/// `POST /api/orders/{order_id}/payment`: confirms a free order, or starts a payment.
pub(crate) async fn pay<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Answer<(StatusCode, Json<Value>)> {
    let Path(order_id) = path?;
    let view = order_view(&app, order_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No order {order_id}.")))?;
    match state_name(&view, app.system.clock.now()) {
        "reservation_completed" => {}
        "expired" => return Err(ApiError::conflict("The order has expired.")),
        "confirmed" => return Err(ApiError::conflict("The order is already confirmed.")),
        _ => return Err(ApiError::conflict("The order's seats are not reserved.")),
    }
    let priced = view
        .priced
        .as_ref()
        .ok_or_else(|| ApiError::conflict("The order has expired."))?;
    if priced.is_free_of_charge {
        send(&app, ConfirmOrder::new(order_id)).await?;
        return Ok((StatusCode::ACCEPTED, Json(json!({ "confirmed": true }))));
    }
    let name = app
        .system
        .documents
        .conference(view.draft.conference_id)
        .await?
        .map_or_else(|| "the conference".to_owned(), |c| c.name);
    let payment_id = Uuid::now_v7();
    send(
        &app,
        InitiateThirdPartyProcessorPayment::new(
            payment_id,
            order_id,
            view.draft.conference_id,
            format!("Registration for {name}"),
            priced.total,
            vec![],
        ),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "payment_id": payment_id }))))
}

/// Sends the processor's answer about an existing payment.
async fn answer_payment<S: Backend, C: Command>(
    app: &App<S>,
    path: Result<Path<Uuid>, PathRejection>,
    answer: impl FnOnce(Uuid) -> C,
) -> Answer<StatusCode> {
    let Path(payment_id) = path?;
    let payments = Repository::<ThirdPartyProcessorPayment, _>::new(app.system.store.clone());
    if payments.find(payment_id).await?.is_none() {
        return Err(ApiError::not_found(format!("No payment {payment_id}.")));
    }
    send(app, answer(payment_id)).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/payments/{payment_id}/accept`: the processor took the money.
pub(crate) async fn accept_payment<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Answer<StatusCode> {
    answer_payment(&app, path, CompleteThirdPartyProcessorPayment::new).await
}

/// `POST /api/payments/{payment_id}/reject`: the processor refused.
pub(crate) async fn reject_payment<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Answer<StatusCode> {
    answer_payment(&app, path, CancelThirdPartyProcessorPayment::new).await
}

/// `POST /api/orders/locate` body.
#[derive(Debug, Deserialize)]
pub(crate) struct Locate {
    pub(crate) email: String,
    pub(crate) access_code: String,
}

/// `POST /api/orders/locate`: email + access code → order id.
pub(crate) async fn locate<S: Backend>(
    State(app): State<App<S>>,
    body: Result<Json<Locate>, JsonRejection>,
) -> Answer<Json<Value>> {
    let Json(locate) = body?;
    let found = app
        .system
        .documents
        .locate_order(locate.email.trim(), locate.access_code.trim())
        .await?;
    let order_id = found.ok_or_else(|| ApiError::not_found("No order with this email and access code."))?;
    Ok(Json(json!({ "order_id": order_id })))
}

/// The seat-assignments id of a confirmed order.
pub(crate) async fn assignments_of<S: Backend>(app: &App<S>, order_id: Uuid) -> Answer<Uuid> {
    app.system
        .documents
        .priced_order(order_id)
        .await?
        .and_then(|p| p.assignments_id)
        .ok_or_else(|| ApiError::not_found(format!("Order {order_id} has no seats to assign yet.")))
}

/// `GET /api/orders/{order_id}/seats`.
pub(crate) async fn seats<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Answer<Json<Value>> {
    let Path(order_id) = path?;
    let assignments = assignments_of(&app, order_id).await?;
    let document = app
        .system
        .documents
        .order_seats(assignments)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Order {order_id} has no seats to assign yet.")))?;
    Ok(Json(Value::Array(
        document
            .seats
            .into_iter()
            .map(|s| {
                json!({
                    "position": s.position, "seat_type_id": s.seat_type,
                    "seat_name": s.seat_name, "attendee": s.attendee,
                })
            })
            .collect(),
    )))
}

/// `PUT /api/orders/{order_id}/seats/{position}` body.
#[derive(Debug, Deserialize)]
pub(crate) struct Attendee {
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) email: String,
}

/// Checks that `position` is a seat of the order; returns its seat-assignments id.
async fn seat_of<S: Backend>(app: &App<S>, order_id: Uuid, position: i32) -> Answer<Uuid> {
    let assignments = assignments_of(app, order_id).await?;
    let document = app.system.documents.order_seats(assignments).await?;
    if !document.is_some_and(|d| d.seats.iter().any(|s| s.position == position)) {
        return Err(ApiError::not_found(format!(
            "Order {order_id} has no seat {position}."
        )));
    }
    Ok(assignments)
}

/// `PUT /api/orders/{order_id}/seats/{position}`: assigns the seat to an attendee.
pub(crate) async fn assign_seat<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<(Uuid, i32)>, PathRejection>,
    body: Result<Json<Attendee>, JsonRejection>,
) -> Answer<StatusCode> {
    let Path((order_id, position)) = path?;
    let Json(attendee) = body?;
    let mut fields = Vec::new();
    for (field, value) in [
        ("first_name", &attendee.first_name),
        ("last_name", &attendee.last_name),
    ] {
        if value.trim().is_empty() {
            fields.push((field.to_owned(), "This field is required.".to_owned()));
        }
    }
    if !is_valid_email(attendee.email.trim()) {
        fields.push(("email".to_owned(), INVALID_EMAIL.to_owned()));
    }
    if !fields.is_empty() {
        return Err(ApiError::invalid(fields));
    }
    let assignments = seat_of(&app, order_id, position).await?;
    let info = PersonalInfo::new(
        attendee.first_name.trim(),
        attendee.last_name.trim(),
        attendee.email.trim(),
    );
    send(&app, AssignSeat::new(assignments, position, info)).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /api/orders/{order_id}/seats/{position}`: frees the seat.
pub(crate) async fn unassign_seat<S: Backend>(
    State(app): State<App<S>>,
    path: Result<Path<(Uuid, i32)>, PathRejection>,
) -> Answer<StatusCode> {
    let Path((order_id, position)) = path?;
    let assignments = seat_of(&app, order_id, position).await?;
    send(&app, UnassignSeat::new(assignments, position)).await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_events_keep_the_longest_prefix_read() {
        let known = KnownEvents::default();
        let order = Uuid::now_v7();
        assert!(known.of(order).is_empty());
        known.learned(order, &[(0, 10), (1, 11), (2, 40)]);
        // A poll that began earlier reports less: what is known stays.
        known.learned(order, &[(0, 10), (1, 11)]);
        assert_eq!(known.of(order), [(0, 10), (1, 11), (2, 40)]);
        known.learned(order, &[(0, 10), (1, 11), (2, 40), (3, 52)]);
        assert_eq!(known.of(order).last(), Some(&(3, 52)));
        assert!(known.of(Uuid::now_v7()).is_empty());
    }
}
