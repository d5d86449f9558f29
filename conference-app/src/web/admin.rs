//! The organizer's pages, behind the admin token: sign in once, then create a conference, add
//! and edit its seat types, publish or unpublish it, and see its orders and the refunds needed.
//!
//! The token is kept in an `HttpOnly`, `SameSite=Strict` cookie, so another site cannot post
//! these forms with it; each page hands it to the API handler as the bearer token.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use conference_domain::read_model::AdminOrder;
use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use super::{FormErrors, Page, PageError, date, money, read, render, render_with, see_other};
use crate::api::admin::{self, NewConference, SeatTypeForm};
use crate::api::{ApiError, App};
use crate::system::Backend;

const COOKIE: &str = "conference_admin";

/// The token of the admin cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            pair.trim()
                .strip_prefix(COOKIE)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
}

/// The headers the API's admin handlers check: the cookie's token as the bearer token.
fn bearer(headers: &HeaderMap) -> HeaderMap {
    let mut api = HeaderMap::new();
    if let Some(value) =
        cookie_token(headers).and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
    {
        api.insert(header::AUTHORIZATION, value);
    }
    api
}

#[derive(Template)]
#[template(path = "admin_sign_in.html")]
struct SignInPage {
    errors: FormErrors,
}

/// Sends a visitor without a valid token to the sign-in form.
fn sign_in_page(error: Option<&ApiError>) -> Response {
    let page = SignInPage {
        errors: error.map(FormErrors::of).unwrap_or_default(),
    };
    render_with(StatusCode::UNAUTHORIZED, &page)
}

/// Runs an admin page: the sign-in form when the API refuses the token.
fn signed_in(page: Result<Response, PageError>) -> Page {
    match page {
        Err(PageError(error)) if error.status() == StatusCode::UNAUTHORIZED => Ok(sign_in_page(None)),
        other => other,
    }
}

/// The new-conference form, as typed (a missing field is empty, and reported as such).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ConferenceForm {
    code: String,
    name: String,
    description: String,
    location: String,
    tagline: String,
    start_date: String,
    end_date: String,
    owner_name: String,
    owner_email: String,
}

impl ConferenceForm {
    /// (name, label, value, input type) of each field, in form order.
    fn fields(&self) -> [(&'static str, &'static str, &str, &'static str); 9] {
        [
            ("name", "Name", &self.name, "text"),
            ("code", "Code (in the address)", &self.code, "text"),
            ("description", "Description", &self.description, "text"),
            ("location", "Location", &self.location, "text"),
            ("tagline", "Tagline (optional)", &self.tagline, "text"),
            ("start_date", "Starts", &self.start_date, "date"),
            ("end_date", "Ends", &self.end_date, "date"),
            ("owner_name", "Owner's name", &self.owner_name, "text"),
            ("owner_email", "Owner's email", &self.owner_email, "email"),
        ]
    }
}

#[derive(Template)]
#[template(path = "admin_home.html")]
struct HomePage {
    form: ConferenceForm,
    errors: FormErrors,
    refunds: Vec<RefundRow>,
}

#[derive(Debug)]
struct RefundRow {
    payment_id: Uuid,
    order_id: Uuid,
    amount: String,
    description: String,
}

#[derive(Debug, Deserialize)]
struct RefundJson {
    id: Uuid,
    payment_source_id: Uuid,
    description: String,
    total_amount: Decimal,
}

async fn refunds<S: Backend>(app: &App<S>, headers: &HeaderMap) -> Result<Vec<RefundRow>, PageError> {
    let axum::Json(value) = admin::refunds(State(app.clone()), bearer(headers)).await?;
    let refunds: Vec<RefundJson> = read(value)?;
    Ok(refunds
        .into_iter()
        .map(|r| RefundRow {
            payment_id: r.id,
            order_id: r.payment_source_id,
            amount: money(r.total_amount),
            description: r.description,
        })
        .collect())
}

/// `GET /admin`: the new-conference form and the refunds needed.
pub(super) async fn home<S: Backend>(State(app): State<App<S>>, headers: HeaderMap) -> Page {
    signed_in(
        async {
            let page = HomePage {
                form: ConferenceForm::default(),
                errors: FormErrors::default(),
                refunds: refunds(&app, &headers).await?,
            };
            Ok(render(&page))
        }
        .await,
    )
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(super) struct SignIn {
    token: String,
}

/// `POST /admin/sign-in`: checks the token and keeps it in the cookie.
pub(super) async fn sign_in<S: Backend>(State(app): State<App<S>>, Form(form): Form<SignIn>) -> Page {
    let token = form.token.trim();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, value);
    }
    if let Err(error) = app.authorize(&headers) {
        return Ok(sign_in_page(Some(&error)));
    }
    let cookie = format!("{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict");
    let mut response = see_other("/admin");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /admin/sign-out`.
pub(super) async fn sign_out() -> impl IntoResponse {
    let mut response = see_other("/admin");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("conference_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// A date field (`YYYY-MM-DD`, what `<input type="date">` sends) as midnight UTC.
fn day(field: &str, text: &str, errors: &mut FormErrors) -> DateTime<Utc> {
    match NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        Ok(day) => day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
        Err(_) => {
            errors
                .fields
                .insert(field.to_owned(), "Enter a date (YYYY-MM-DD).".to_owned());
            DateTime::<Utc>::UNIX_EPOCH
        }
    }
}

/// `POST /admin/conferences`: creates an unpublished conference and shows it.
pub(super) async fn create_conference<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Form(form): Form<ConferenceForm>,
) -> Page {
    signed_in(
        async {
            let mut errors = FormErrors::default();
            let start_date = day("start_date", &form.start_date, &mut errors);
            let end_date = day("end_date", &form.end_date, &mut errors);
            let request = NewConference {
                code: form.code.clone(),
                name: form.name.clone(),
                description: form.description.clone(),
                location: form.location.clone(),
                tagline: Some(form.tagline.clone()),
                start_date,
                end_date,
                owner_name: form.owner_name.clone(),
                owner_email: form.owner_email.clone(),
            };
            let created = if errors.fields.is_empty() {
                admin::create_conference(State(app.clone()), bearer(&headers), Ok(axum::Json(request)))
                    .await
                    .map(|(_, axum::Json(created))| created)
            } else {
                // The dates are unreadable: report them with whatever else is at fault.
                let mut fields = match admin::checked_details(request) {
                    Err(error) => error.fields().clone(),
                    Ok(_) => Default::default(),
                };
                fields.append(&mut errors.fields);
                Err(ApiError::invalid(fields))
            };
            match created {
                Ok(created) => {
                    let code = created["code"].as_str().unwrap_or(&form.code).to_owned();
                    Ok(see_other(&format!("/admin/conferences/{code}")))
                }
                Err(error) if error.status() == StatusCode::UNAUTHORIZED => Err(error.into()),
                Err(error) if error.status().is_client_error() => {
                    let page = HomePage {
                        errors: FormErrors::of(&error),
                        form,
                        refunds: refunds(&app, &headers).await?,
                    };
                    Ok(render_with(error.status(), &page))
                }
                Err(error) => Err(error.into()),
            }
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct ConferenceJson {
    code: String,
    name: String,
    description: String,
    location: String,
    start_date: DateTime<Utc>,
    end_date: DateTime<Utc>,
    is_published: bool,
    seat_types: Vec<SeatTypeJson>,
}

#[derive(Debug, Deserialize)]
struct SeatTypeJson {
    id: Uuid,
    name: String,
    description: String,
    quantity: i32,
    price: Decimal,
}

/// A seat type's edit form, as stored or as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct SeatTypeFields {
    name: String,
    description: String,
    price: String,
    quantity: String,
}

#[derive(Debug)]
struct SeatTypeRow {
    id: Uuid,
    fields: SeatTypeFields,
    errors: FormErrors,
}

#[derive(Debug)]
struct OrderRow {
    access_code: String,
    registrant: String,
    total: String,
    status: String,
    seats: usize,
}

#[derive(Template)]
#[template(path = "admin_conference.html")]
struct ConferencePage {
    conference: ConferenceJson,
    dates: String,
    seat_types: Vec<SeatTypeRow>,
    new_seat_type: SeatTypeFields,
    new_errors: FormErrors,
    orders: Vec<OrderRow>,
    refunds: Vec<RefundRow>,
}

async fn conference_page_of<S: Backend>(
    app: &App<S>,
    headers: &HeaderMap,
    code: &str,
) -> Result<ConferencePage, PageError> {
    let api = bearer(headers);
    let axum::Json(value) =
        admin::conference_details(State(app.clone()), api.clone(), Ok(Path(code.to_owned()))).await?;
    let conference: ConferenceJson = read(value)?;
    let axum::Json(value) = admin::orders(State(app.clone()), api, Ok(Path(code.to_owned()))).await?;
    let orders: Vec<AdminOrder> = read(value)?;
    let order_ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let refunds = refunds(app, headers)
        .await?
        .into_iter()
        .filter(|r| order_ids.contains(&r.order_id))
        .collect();
    Ok(ConferencePage {
        dates: format!("{} – {}", date(conference.start_date), date(conference.end_date)),
        seat_types: conference
            .seat_types
            .iter()
            .map(|t| SeatTypeRow {
                id: t.id,
                fields: SeatTypeFields {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    price: t.price.round_dp(2).to_string(),
                    quantity: t.quantity.to_string(),
                },
                errors: FormErrors::default(),
            })
            .collect(),
        conference,
        new_seat_type: SeatTypeFields::default(),
        new_errors: FormErrors::default(),
        orders: orders
            .into_iter()
            .map(|o| OrderRow {
                access_code: o.access_code,
                registrant: match (o.registrant_name, o.registrant_email) {
                    (Some(name), Some(email)) => format!("{name} <{email}>"),
                    (name, email) => name.or(email).unwrap_or_default(),
                },
                total: money(o.total_amount),
                status: format!("{:?}", o.status),
                seats: o.seats.len(),
            })
            .collect(),
        refunds,
    })
}

/// `GET /admin/conferences/{code}`.
pub(super) async fn conference_page<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Page {
    signed_in(
        conference_page_of(&app, &headers, &code)
            .await
            .map(|page| render(&page)),
    )
}

/// A typed seat-type form as the API's body; a number that does not parse is a field error.
fn seat_type_form(fields: &SeatTypeFields) -> Result<SeatTypeForm, ApiError> {
    let mut errors = Vec::new();
    let price = fields.price.trim().parse::<Decimal>().unwrap_or_else(|_| {
        errors.push(("price".to_owned(), "Enter a price such as 199.00.".to_owned()));
        Decimal::ZERO
    });
    let quantity = fields.quantity.trim().parse::<i32>().unwrap_or_else(|_| {
        errors.push(("quantity".to_owned(), "Enter a whole number of seats.".to_owned()));
        0
    });
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(SeatTypeForm {
        name: fields.name.clone(),
        description: fields.description.clone(),
        price,
        quantity,
    })
}

/// Shows the conference again after a seat-type form was refused.
async fn refused<S: Backend>(
    app: &App<S>,
    headers: &HeaderMap,
    code: &str,
    error: &ApiError,
    place: impl FnOnce(&mut ConferencePage, FormErrors),
) -> Page {
    let mut page = conference_page_of(app, headers, code).await?;
    place(&mut page, FormErrors::of(error));
    Ok(render_with(error.status(), &page))
}

/// `POST /admin/conferences/{code}/seat-types`.
pub(super) async fn create_seat_type<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Form(fields): Form<SeatTypeFields>,
) -> Page {
    signed_in(
        async {
            let created = match seat_type_form(&fields) {
                Ok(form) => admin::create_seat_type(
                    State(app.clone()),
                    bearer(&headers),
                    Ok(Path(code.clone())),
                    Ok(axum::Json(form)),
                )
                .await
                .map(drop),
                Err(error) => Err(error),
            };
            match created {
                Ok(()) => Ok(see_other(&format!("/admin/conferences/{code}"))),
                Err(error) if is_form_error(&error) => {
                    refused(&app, &headers, &code, &error, |page, errors| {
                        page.new_seat_type = fields;
                        page.new_errors = errors;
                    })
                    .await
                }
                Err(error) => Err(error.into()),
            }
        }
        .await,
    )
}

/// `POST /admin/conferences/{code}/seat-types/{id}`.
pub(super) async fn update_seat_type<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path((code, id)): Path<(String, Uuid)>,
    Form(fields): Form<SeatTypeFields>,
) -> Page {
    signed_in(
        async {
            let updated = match seat_type_form(&fields) {
                Ok(form) => admin::update_seat_type(
                    State(app.clone()),
                    bearer(&headers),
                    Ok(Path((code.clone(), id))),
                    Ok(axum::Json(form)),
                )
                .await
                .map(drop),
                Err(error) => Err(error),
            };
            match updated {
                Ok(()) => Ok(see_other(&format!("/admin/conferences/{code}"))),
                Err(error) if is_form_error(&error) => {
                    refused(&app, &headers, &code, &error, |page, errors| {
                        if let Some(row) = page.seat_types.iter_mut().find(|r| r.id == id) {
                            row.fields = fields;
                            row.errors = errors;
                        }
                    })
                    .await
                }
                Err(error) => Err(error.into()),
            }
        }
        .await,
    )
}

/// A refusal shown on the form (not a missing conference or a bad token).
fn is_form_error(error: &ApiError) -> bool {
    matches!(
        error.status(),
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT | StatusCode::BAD_REQUEST
    )
}

/// `POST /admin/conferences/{code}/publish|unpublish`.
pub(super) async fn set_published<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path((code, action)): Path<(String, String)>,
) -> Page {
    signed_in(
        async {
            let api = bearer(&headers);
            let path = Ok(Path(code.clone()));
            match action.as_str() {
                "publish" => admin::publish(State(app.clone()), api, path).await?,
                "unpublish" => admin::unpublish(State(app.clone()), api, path).await?,
                _ => return Err(ApiError::not_found("No such action: publish or unpublish.").into()),
            };
            Ok(see_other(&format!("/admin/conferences/{code}")))
        }
        .await,
    )
}

impl ConferencePage {
    fn published_label(&self) -> &'static str {
        if self.conference.is_published {
            "Published: open for registration"
        } else {
            "Not published"
        }
    }
}
