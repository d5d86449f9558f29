//! The registrant's pages: from the conference list to an assigned seat.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use conference_domain::commands::MAX_SEATS_PER_TYPE;
use conference_domain::read_model::OrderSeatsStore;
use conference_domain::values::PersonalInfo;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{FormErrors, Page, PageError, date, money, read, refreshing, render, render_with, see_other};
use crate::api::orders::{
    self, Attendee, ConferenceSummary, Locate, PlaceOrder, Registrant, SeatRequest, Wait,
};
use crate::api::{ApiError, App, LONG_POLL};
use crate::read_models::models;
use crate::system::Backend;

// ---------------------------------------------------------------------------------------------
// The conference list

#[derive(Template)]
#[template(path = "conferences.html")]
struct ConferencesPage {
    conferences: Vec<ConferenceSummary>,
}

impl ConferencesPage {
    fn when(conference: &ConferenceSummary) -> String {
        date(conference.start_date)
    }
}

/// `GET /`: the published conferences.
pub(super) async fn home<S: Backend>(State(app): State<App<S>>) -> Page {
    let axum::Json(conferences) = orders::conferences(State(app)).await?;
    Ok(render(&ConferencesPage { conferences }))
}

// ---------------------------------------------------------------------------------------------
// Registering

#[derive(Debug, Deserialize)]
struct ConferenceJson {
    code: String,
    name: String,
    description: String,
    location: String,
    tagline: Option<String>,
    start_date: DateTime<Utc>,
    seat_types: Vec<SeatTypeJson>,
}

#[derive(Debug, Deserialize)]
struct SeatTypeJson {
    id: Uuid,
    name: String,
    description: String,
    price: Decimal,
    available: i32,
}

/// One seat type's row of the register form.
#[derive(Debug)]
struct SeatRow {
    id: Uuid,
    name: String,
    description: String,
    price: String,
    available: i32,
    /// What the registrant typed.
    quantity: String,
    error: String,
    /// When a request could not be met: how many can be had.
    can_have: Option<i32>,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    conference: ConferenceJson,
    when: String,
    rows: Vec<SeatRow>,
    order_id: Uuid,
    errors: FormErrors,
    max_per_type: i32,
}

async fn conference_json<S: Backend>(app: &App<S>, code: String) -> Result<ConferenceJson, PageError> {
    let axum::Json(value) = orders::conference(State(app.clone()), Ok(Path(code))).await?;
    read(value)
}

fn register_form(
    conference: ConferenceJson,
    order_id: Uuid,
    entered: &HashMap<Uuid, String>,
) -> RegisterPage {
    let rows = conference
        .seat_types
        .iter()
        .map(|t| SeatRow {
            id: t.id,
            name: t.name.clone(),
            description: t.description.clone(),
            price: money(t.price),
            available: t.available,
            quantity: entered.get(&t.id).cloned().unwrap_or_default(),
            error: String::new(),
            can_have: None,
        })
        .collect();
    RegisterPage {
        when: date(conference.start_date),
        conference,
        rows,
        order_id,
        errors: FormErrors::default(),
        max_per_type: MAX_SEATS_PER_TYPE,
    }
}

impl SeatRow {
    fn left(&self) -> String {
        if self.available > 0 {
            self.available.to_string()
        } else {
            "Sold out".to_owned()
        }
    }

    fn can_have_label(&self) -> Option<String> {
        self.can_have.map(|n| match n {
            0 => "None available".to_owned(),
            n => format!("Only {n} available"),
        })
    }
}

/// `?order_id=`: the order being changed, if any.
#[derive(Debug, Deserialize)]
pub(super) struct Changing {
    order_id: Option<Uuid>,
}

/// `GET /conferences/{code}`: seat types with price and seats left, and the quantities.
pub(super) async fn register_page<S: Backend>(
    State(app): State<App<S>>,
    Path(code): Path<String>,
    Query(changing): Query<Changing>,
) -> Page {
    let conference = conference_json(&app, code).await?;
    // A fresh order id per form: posting it twice changes one order, never places two.
    let order_id = changing.order_id.unwrap_or_else(Uuid::now_v7);
    Ok(render(&register_form(conference, order_id, &HashMap::new())))
}

/// `POST /conferences/{code}`: places (or changes) the order, then shows checkout.
pub(super) async fn register<S: Backend>(
    State(app): State<App<S>>,
    Path(code): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Page {
    let conference = conference_json(&app, code.clone()).await?;
    let order_id = form
        .iter()
        .find(|(k, _)| k == "order_id")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(Uuid::now_v7);
    let entered: HashMap<Uuid, String> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("qty-")?.parse().ok()?, v.trim().to_owned())))
        .collect();
    let mut page = register_form(conference, order_id, &entered);
    let mut seats = Vec::new();
    for row in &mut page.rows {
        match row.quantity.as_str() {
            "" | "0" => {}
            text => match text.parse::<i32>() {
                Ok(quantity) => seats.push((row.id, quantity)),
                Err(_) => row.error = "Enter a whole number of seats.".to_owned(),
            },
        }
    }
    if page.rows.iter().any(|r| !r.error.is_empty()) {
        page.errors.message = Some("Some quantities are not valid.".to_owned());
        return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    if seats.is_empty() {
        page.errors.message = Some("Choose how many seats you want of at least one type.".to_owned());
        return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let request = PlaceOrder {
        order_id: Some(order_id),
        seats: seats
            .iter()
            .map(|&(seat_type_id, quantity)| SeatRequest {
                seat_type_id,
                quantity,
            })
            .collect(),
    };
    match orders::place(State(app), Ok(Path(code)), Ok(axum::Json(request))).await {
        Ok((_, axum::Json(placed))) => {
            let version = placed["order_version"].as_i64().unwrap_or(-1);
            Ok(see_other(&format!("/orders/{order_id}?after={version}")))
        }
        Err(error) if error.status().is_client_error() && error.status() != StatusCode::NOT_FOUND => {
            page.errors = FormErrors::of(&error);
            // `seats[i].quantity` → the row of the i-th requested seat type.
            for (field, message) in error.fields() {
                let index = field
                    .strip_prefix("seats[")
                    .and_then(|rest| rest.split(']').next())
                    .and_then(|i| i.parse::<usize>().ok());
                if let Some(&(id, _)) = index.and_then(|i| seats.get(i))
                    && let Some(row) = page.rows.iter_mut().find(|r| r.id == id)
                {
                    row.error.clone_from(message);
                }
            }
            if let Some(Value::Array(available)) = error.extra("available") {
                for entry in available {
                    let id = entry["seat_type_id"]
                        .as_str()
                        .and_then(|s| s.parse::<Uuid>().ok());
                    let can_have = entry["available"].as_i64().and_then(|n| i32::try_from(n).ok());
                    if let (Some(id), Some(can_have)) = (id, can_have)
                        && let Some(row) = page.rows.iter_mut().find(|r| r.id == id)
                    {
                        row.can_have = Some(can_have.max(0));
                        row.available = can_have.max(0);
                    }
                }
            }
            Ok(render_with(error.status(), &page))
        }
        Err(error) => Err(error.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Checkout

#[derive(Debug, Deserialize)]
struct OrderJson {
    order_id: Uuid,
    conference_code: Option<String>,
    state: String,
    version: i64,
    access_code: Option<String>,
    reservation_expires_at: Option<DateTime<Utc>>,
    registrant: Option<RegistrantJson>,
    lines: Vec<LineJson>,
    total: Option<Decimal>,
    is_free_of_charge: bool,
    payment: Option<PaymentJson>,
}

#[derive(Debug, Deserialize)]
struct RegistrantJson {
    email: String,
}

#[derive(Debug, Deserialize)]
struct LineJson {
    description: Option<String>,
    requested: i32,
    reserved: i32,
    unit_price: Option<Decimal>,
    line_total: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
struct PaymentJson {
    state: String,
}

/// An order line as shown.
#[derive(Debug)]
struct Line {
    description: String,
    quantity: i32,
    requested: i32,
    unit_price: String,
    line_total: String,
}

/// What the checkout, payment and success pages show of an order.
#[derive(Debug)]
struct Summary {
    order_id: Uuid,
    conference_code: String,
    lines: Vec<Line>,
    total: String,
    priced: bool,
    free: bool,
    partial: bool,
    access_code: String,
    email: String,
    /// Seconds until the reservation expires; the countdown starts there.
    seconds_left: i64,
    expires_at: String,
}

impl Summary {
    fn of(order: &OrderJson, now: DateTime<Utc>) -> Self {
        let reserved_known = order.state != "pending_reservation";
        let lines = order
            .lines
            .iter()
            .map(|l| Line {
                description: l.description.clone().unwrap_or_else(|| "Seat".to_owned()),
                quantity: if reserved_known { l.reserved } else { l.requested },
                requested: l.requested,
                unit_price: l.unit_price.map(money).unwrap_or_default(),
                line_total: l.line_total.map(money).unwrap_or_default(),
            })
            .collect();
        Self {
            order_id: order.order_id,
            conference_code: order.conference_code.clone().unwrap_or_default(),
            lines,
            total: order.total.map(money).unwrap_or_default(),
            priced: order.total.is_some(),
            free: order.is_free_of_charge,
            partial: order.state == "partially_reserved",
            access_code: order.access_code.clone().unwrap_or_default(),
            email: order
                .registrant
                .as_ref()
                .map(|r| r.email.clone())
                .unwrap_or_default(),
            seconds_left: order
                .reservation_expires_at
                .map_or(0, |at| (at - now).num_seconds().max(0)),
            expires_at: order
                .reservation_expires_at
                .map(|at| at.to_rfc3339())
                .unwrap_or_default(),
        }
    }

    fn countdown(&self) -> String {
        format!("{}:{:02}", self.seconds_left / 60, self.seconds_left % 60)
    }
}

/// The order's answer from the API, waiting past `after` when given.
async fn order_json<S: Backend>(
    app: &App<S>,
    order_id: Uuid,
    after: Option<i64>,
) -> Result<OrderJson, PageError> {
    let wait = Wait {
        wait_for_version: after,
    };
    let axum::Json(value) = orders::order(State(app.clone()), Ok(Path(order_id)), Ok(Query(wait))).await?;
    read(value)
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    order: Summary,
    reserving: bool,
    notice: Option<String>,
    first_name: String,
    last_name: String,
    email: String,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "expired.html")]
struct ExpiredPage {
    conference_code: String,
}

/// `?after=N&payment=rejected`.
#[derive(Debug, Deserialize)]
pub(super) struct CheckoutQuery {
    after: Option<i64>,
    payment: Option<String>,
}

fn checkout_view(order: &OrderJson, now: DateTime<Utc>) -> CheckoutPage {
    let summary = Summary::of(order, now);
    CheckoutPage {
        reserving: order.state == "pending_reservation",
        notice: summary.partial.then(|| {
            "Not all the seats you asked for could be reserved: the order holds the seats shown. \
             Change the order, or continue with these."
                .to_owned()
        }),
        email: summary.email.clone(),
        order: summary,
        first_name: String::new(),
        last_name: String::new(),
        errors: FormErrors::default(),
    }
}

/// Shows `order` where it stands: expired, confirmed (the success page) or checkout.
fn order_stage(order: &OrderJson, page: &CheckoutPage) -> axum::response::Response {
    match order.state.as_str() {
        "expired" => render_with(
            StatusCode::GONE,
            &ExpiredPage {
                conference_code: order.conference_code.clone().unwrap_or_default(),
            },
        ),
        "confirmed" => see_other(&format!("/orders/{}/done", order.order_id)),
        _ if page.reserving || !page.order.priced => refreshing(render(page)),
        _ => render(page),
    }
}

/// `GET /orders/{order_id}`: the priced order with the countdown, and the registrant form.
pub(super) async fn checkout_page<S: Backend>(
    State(app): State<App<S>>,
    Path(order_id): Path<Uuid>,
    Query(query): Query<CheckoutQuery>,
) -> Page {
    let order = order_json(&app, order_id, query.after).await?;
    let mut page = checkout_view(&order, app.system.clock.now());
    if query.payment.as_deref() == Some("rejected") {
        page.notice = Some("The payment was rejected. You can try again.".to_owned());
    }
    Ok(order_stage(&order, &page))
}

/// The registrant (or attendee) form; a missing field is empty, and reported as such.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RegistrantForm {
    first_name: String,
    last_name: String,
    email: String,
}

/// `POST /orders/{order_id}`: the registrant's details, then payment (or, for a free order,
/// the confirmation).
pub(super) async fn checkout<S: Backend>(
    State(app): State<App<S>>,
    Path(order_id): Path<Uuid>,
    Form(form): Form<RegistrantForm>,
) -> Page {
    let registrant = Registrant {
        first_name: form.first_name.clone(),
        last_name: form.last_name.clone(),
        email: form.email.clone(),
    };
    let assigned =
        orders::registrant(State(app.clone()), Ok(Path(order_id)), Ok(axum::Json(registrant))).await;
    let refused = |error: ApiError, order: &OrderJson, now| {
        let mut page = checkout_view(order, now);
        page.errors = FormErrors::of(&error);
        (page.first_name, page.last_name, page.email) = (
            form.first_name.clone(),
            form.last_name.clone(),
            form.email.clone(),
        );
        render_with(error.status(), &page)
    };
    let now = app.system.clock.now();
    if let Err(error) = assigned {
        if error.status() == StatusCode::UNPROCESSABLE_ENTITY {
            let order = order_json(&app, order_id, None).await?;
            return Ok(refused(error, &order, now));
        }
        return Err(error.into());
    }
    // Payment needs the seats reserved: wait for the reservation (it usually is already).
    let mut order = order_json(&app, order_id, None).await?;
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    while order.state == "pending_reservation" && tokio::time::Instant::now() < deadline {
        order = order_json(&app, order_id, Some(order.version)).await?;
    }
    match orders::pay(State(app.clone()), Ok(Path(order_id))).await {
        Ok((_, axum::Json(answer))) => {
            if let Some(payment_id) = answer["payment_id"].as_str() {
                Ok(see_other(&format!("/payments/{payment_id}?order_id={order_id}")))
            } else {
                Ok(see_other(&format!("/orders/{order_id}/done")))
            }
        }
        Err(error) if error.status() == StatusCode::CONFLICT => {
            let mut page = checkout_view(&order, now);
            page.errors = FormErrors::of(&error);
            Ok(order_stage(&order, &page))
        }
        Err(error) => Err(error.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated payment processor

#[derive(Template)]
#[template(path = "payment.html")]
struct PaymentPage {
    payment_id: Uuid,
    order: Summary,
}

/// `?order_id=`.
#[derive(Debug, Deserialize)]
pub(super) struct OfOrder {
    order_id: Uuid,
}

/// `GET /payments/{payment_id}?order_id=`: the third-party processor's page.
pub(super) async fn payment_page<S: Backend>(
    State(app): State<App<S>>,
    Path(payment_id): Path<Uuid>,
    Query(of): Query<OfOrder>,
) -> Page {
    let order = order_json(&app, of.order_id, None).await?;
    if order.state == "expired" {
        return Ok(order_stage(
            &order,
            &checkout_view(&order, app.system.clock.now()),
        ));
    }
    Ok(render(&PaymentPage {
        payment_id,
        order: Summary::of(&order, app.system.clock.now()),
    }))
}

/// `POST /payments/{payment_id}/accept|reject` (form: `order_id`).
pub(super) async fn answer_payment<S: Backend>(
    State(app): State<App<S>>,
    Path((payment_id, answer)): Path<(Uuid, String)>,
    Form(of): Form<OfOrder>,
) -> Page {
    let order_id = of.order_id;
    match answer.as_str() {
        "accept" => {
            orders::accept_payment(State(app), Ok(Path(payment_id))).await?;
            Ok(see_other(&format!("/orders/{order_id}/done")))
        }
        "reject" => {
            orders::reject_payment(State(app), Ok(Path(payment_id))).await?;
            Ok(see_other(&format!("/orders/{order_id}?payment=rejected")))
        }
        _ => Err(ApiError::not_found("No such answer: accept or reject.").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Success and seats

#[derive(Template)]
#[template(path = "done.html")]
struct DonePage {
    order: Summary,
    confirmed: bool,
    payment_state: String,
}

/// `GET /orders/{order_id}/done`: the access code and the summary once the order is
/// confirmed; until then a page that waits.
pub(super) async fn done<S: Backend>(State(app): State<App<S>>, Path(order_id): Path<Uuid>) -> Page {
    let mut order = order_json(&app, order_id, None).await?;
    if order.state != "confirmed" && order.state != "expired" {
        order = order_json(&app, order_id, Some(order.version)).await?;
    }
    if order.state == "expired" {
        return Ok(order_stage(
            &order,
            &checkout_view(&order, app.system.clock.now()),
        ));
    }
    let confirmed = order.state == "confirmed";
    let page = DonePage {
        payment_state: order
            .payment
            .as_ref()
            .map(|p| p.state.clone())
            .unwrap_or_default(),
        order: Summary::of(&order, app.system.clock.now()),
        confirmed,
    };
    Ok(if confirmed {
        render(&page)
    } else {
        refreshing(render(&page))
    })
}

#[derive(Debug, Deserialize)]
struct SeatJson {
    position: i32,
    seat_name: Option<String>,
    attendee: PersonalInfo,
}

/// A seat as shown, with its form.
#[derive(Debug)]
struct SeatForm {
    position: i32,
    seat_name: String,
    first_name: String,
    last_name: String,
    email: String,
    errors: FormErrors,
    saved: bool,
}

#[derive(Template)]
#[template(path = "seats.html")]
struct SeatsPage {
    order_id: Uuid,
    seats: Vec<SeatForm>,
    ready: bool,
}

/// `?saved=position`.
#[derive(Debug, Deserialize)]
pub(super) struct Saved {
    saved: Option<i32>,
}

async fn seat_rows<S: Backend>(app: &App<S>, order_id: Uuid) -> Result<Option<Vec<SeatForm>>, PageError> {
    let value = match orders::seats(State(app.clone()), Ok(Path(order_id))).await {
        Ok(axum::Json(value)) => value,
        Err(error) if error.status() == StatusCode::NOT_FOUND => {
            // No seats yet: an order not confirmed, or one whose seats are being prepared.
            order_json(app, order_id, None).await?;
            return Ok(None);
        }
        Err(error) => return Err(error.into()),
    };
    let seats: Vec<SeatJson> = read(value)?;
    Ok(Some(
        seats
            .into_iter()
            .map(|s| SeatForm {
                position: s.position,
                seat_name: s.seat_name.unwrap_or_else(|| "Seat".to_owned()),
                first_name: s.attendee.first_name.unwrap_or_default(),
                last_name: s.attendee.last_name.unwrap_or_default(),
                email: s.attendee.email.unwrap_or_default(),
                errors: FormErrors::default(),
                saved: false,
            })
            .collect(),
    ))
}

/// `GET /orders/{order_id}/seats`: one form per seat.
pub(super) async fn seats_page<S: Backend>(
    State(app): State<App<S>>,
    Path(order_id): Path<Uuid>,
    Query(saved): Query<Saved>,
) -> Page {
    let Some(mut seats) = seat_rows(&app, order_id).await? else {
        let page = SeatsPage {
            order_id,
            seats: Vec::new(),
            ready: false,
        };
        return Ok(refreshing(render(&page)));
    };
    for seat in &mut seats {
        seat.saved = saved.saved == Some(seat.position);
    }
    Ok(render(&SeatsPage {
        order_id,
        seats,
        ready: true,
    }))
}

/// `POST /orders/{order_id}/seats/{position}`: assigns the seat, and shows the seats once
/// the assignment shows.
pub(super) async fn assign_seat<S: Backend>(
    State(app): State<App<S>>,
    Path((order_id, position)): Path<(Uuid, i32)>,
    Form(form): Form<RegistrantForm>,
) -> Page {
    let attendee = Attendee {
        first_name: form.first_name.clone(),
        last_name: form.last_name.clone(),
        email: form.email.clone(),
    };
    let documents = &app.system.documents;
    // No seats yet: the API's call below answers why.
    let assignments = orders::assignments_of(&app, order_id).await.ok();
    let mut watch = assignments.map(|id| documents.watch(&[models::ORDER_SEATS], &id.to_string()));
    if let Some(watch) = &mut watch {
        watch.mark_seen();
    }
    let answer = orders::assign_seat(
        State(app.clone()),
        Ok(Path((order_id, position))),
        Ok(axum::Json(attendee)),
    )
    .await;
    if let Err(error) = answer {
        if error.status() != StatusCode::UNPROCESSABLE_ENTITY {
            return Err(error.into());
        }
        let mut seats = seat_rows(&app, order_id).await?.unwrap_or_default();
        if let Some(seat) = seats.iter_mut().find(|s| s.position == position) {
            seat.errors = FormErrors::of(&error);
            (seat.first_name, seat.last_name, seat.email) = (form.first_name, form.last_name, form.email);
        }
        let page = SeatsPage {
            order_id,
            seats,
            ready: true,
        };
        return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    // Show the page once the assignment is in the read model (or after the long-poll limit).
    if let (Some(watch), Some(assignments)) = (&mut watch, assignments) {
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        loop {
            let shown = documents.order_seats(assignments).await?.is_some_and(|d| {
                d.seats.iter().any(|s| {
                    s.position == position
                        && s.attendee.email.as_deref().map(str::to_lowercase)
                            == Some(form.email.trim().to_lowercase())
                })
            });
            if shown || tokio::time::timeout_at(deadline, watch.changed()).await.is_err() {
                break;
            }
            watch.mark_seen();
        }
    }
    Ok(see_other(&format!("/orders/{order_id}/seats?saved={position}")))
}

// ---------------------------------------------------------------------------------------------
// Find my order

#[derive(Template)]
#[template(path = "find.html")]
struct FindPage {
    email: String,
    access_code: String,
    errors: FormErrors,
}

/// `GET /find`.
pub(super) async fn find_page() -> impl IntoResponse {
    render(&FindPage {
        email: String::new(),
        access_code: String::new(),
        errors: FormErrors::default(),
    })
}

/// `POST /find` (form: email, access code).
pub(super) async fn find<S: Backend>(State(app): State<App<S>>, Form(form): Form<Locate>) -> Page {
    let (email, access_code) = (form.email.clone(), form.access_code.clone());
    match orders::locate(State(app), Ok(axum::Json(form))).await {
        Ok(axum::Json(found)) => {
            let order_id = found["order_id"].as_str().unwrap_or_default();
            Ok(see_other(&format!("/orders/{order_id}/done")))
        }
        Err(error) if error.status() == StatusCode::NOT_FOUND => Ok(render_with(
            StatusCode::NOT_FOUND,
            &FindPage {
                email,
                access_code,
                errors: FormErrors::of(&error),
            },
        )),
        Err(error) => Err(error.into()),
    }
}
