//! The admin routes, behind the bearer token.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use conference_domain::management::{Conference, ConferenceDetails, SeatTypeDetails};
use conference_domain::read_model::{AdminOrderStore, PaymentStore};
use conference_domain::values::{Money, Owner};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::fields_of;
use super::{ApiError, App};
use crate::system::Backend;

type Answer<T> = Result<T, ApiError>;

/// `POST /api/admin/conferences` body.
#[derive(Debug, Deserialize)]
pub(crate) struct NewConference {
    pub(crate) code: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) location: String,
    pub(crate) tagline: Option<String>,
    pub(crate) start_date: DateTime<Utc>,
    pub(crate) end_date: DateTime<Utc>,
    pub(crate) owner_name: String,
    pub(crate) owner_email: String,
}

/// `POST /api/admin/conferences`: creates an unpublished conference.
pub(crate) async fn create_conference<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    body: Result<Json<NewConference>, JsonRejection>,
) -> Answer<(StatusCode, Json<Value>)> {
    app.authorize(&headers)?;
    let Json(form) = body?;
    let details = checked_details(form)?;
    let conference = app.system.management.create(details).await?;
    let code = conference.details().map(|d| d.slug.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": conference.id(), "code": code })),
    ))
}

/// The conference's details from the form, validated (every field at fault reported).
///
/// # Errors
/// 422 with the message of each field at fault.
pub(crate) fn checked_details(form: NewConference) -> Answer<ConferenceDetails> {
    let details = ConferenceDetails {
        name: form.name.trim().to_owned(),
        description: form.description.trim().to_owned(),
        location: form.location.trim().to_owned(),
        slug: form.code.trim().to_owned(),
        tagline: form.tagline.filter(|t| !t.trim().is_empty()),
        twitter_search: None,
        start_date: form.start_date,
        end_date: form.end_date,
        owner: Owner {
            name: form.owner_name.trim().to_owned(),
            email: form.owner_email.trim().to_owned(),
        },
    };
    details
        .validate()
        .map_err(|errors| fields_of(errors.into_iter().map(|e| rename(e, "slug", "code")).collect()))?;
    Ok(details)
}

/// The API calls the slug `code`.
fn rename(error: conference_domain::DomainError, from: &str, to: &str) -> conference_domain::DomainError {
    match error {
        conference_domain::DomainError::Validation { field, message } if field == from => {
            conference_domain::DomainError::validation(to, message)
        }
        other => other,
    }
}

async fn conference<S: Backend>(app: &App<S>, code: &str) -> Answer<Conference> {
    app.system
        .management
        .find_by_slug(code)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No conference `{code}`.")))
}

/// `GET /api/admin/conferences/{code}`: the conference as its organizer sees it, published
/// or not, with every seat type.
pub(crate) async fn conference_details<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer<Json<Value>> {
    app.authorize(&headers)?;
    let Path(code) = path?;
    let conference = conference(&app, &code).await?;
    let details = conference
        .details()
        .ok_or_else(|| ApiError::not_found(format!("No conference `{code}`.")))?;
    let seat_types: Vec<Value> = conference
        .seat_types()
        .iter()
        .map(|(id, t)| {
            json!({
                "id": id, "name": t.name, "description": t.description,
                "quantity": t.quantity, "price": t.price,
            })
        })
        .collect();
    Ok(Json(json!({
        "id": conference.id(), "code": details.slug, "name": details.name,
        "description": details.description, "location": details.location,
        "tagline": details.tagline, "start_date": details.start_date, "end_date": details.end_date,
        "owner_name": details.owner.name, "owner_email": details.owner.email,
        "is_published": conference.is_published(), "seat_types": seat_types,
    })))
}

/// A seat type form.
#[derive(Debug, Deserialize)]
pub(crate) struct SeatTypeForm {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) price: Money,
    pub(crate) quantity: i32,
}

impl SeatTypeForm {
    fn details(self) -> Answer<SeatTypeDetails> {
        let details = SeatTypeDetails {
            name: self.name.trim().to_owned(),
            description: self.description.trim().to_owned(),
            quantity: self.quantity,
            price: self.price,
        };
        details.validate().map_err(fields_of)?;
        Ok(details)
    }
}

/// `POST /api/admin/conferences/{code}/seat-types`.
pub(crate) async fn create_seat_type<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<SeatTypeForm>, JsonRejection>,
) -> Answer<(StatusCode, Json<Value>)> {
    app.authorize(&headers)?;
    let Path(code) = path?;
    let Json(form) = body?;
    let details = form.details()?;
    let conference = conference(&app, &code).await?;
    let id = app
        .system
        .management
        .create_seat_type(conference.id(), details)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// `PUT /api/admin/conferences/{code}/seat-types/{id}`.
pub(crate) async fn update_seat_type<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<(String, Uuid)>, PathRejection>,
    body: Result<Json<SeatTypeForm>, JsonRejection>,
) -> Answer<StatusCode> {
    app.authorize(&headers)?;
    let Path((code, id)) = path?;
    let Json(form) = body?;
    let details = form.details()?;
    let conference = conference(&app, &code).await?;
    app.system
        .management
        .update_seat_type(conference.id(), id, details)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Opens or closes a conference for registration.
async fn set_published<S: Backend>(
    app: &App<S>,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
    published: bool,
) -> Answer<StatusCode> {
    app.authorize(headers)?;
    let Path(code) = path?;
    let id = conference(app, &code).await?.id();
    let management = &app.system.management;
    if published {
        management.publish(id).await?;
    } else {
        management.unpublish(id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/admin/conferences/{code}/publish`.
pub(crate) async fn publish<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer<StatusCode> {
    set_published(&app, &headers, path, true).await
}

/// `POST /api/admin/conferences/{code}/unpublish`.
pub(crate) async fn unpublish<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer<StatusCode> {
    set_published(&app, &headers, path, false).await
}

/// `GET /api/admin/conferences/{code}/orders`.
pub(crate) async fn orders<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer<Json<Value>> {
    app.authorize(&headers)?;
    let Path(code) = path?;
    let conference = conference(&app, &code).await?;
    let orders = app.system.documents.admin_orders(conference.id()).await?;
    Ok(Json(
        serde_json::to_value(orders).map_err(cqrs_core::Error::permanent)?,
    ))
}

/// `GET /api/admin/refunds`: payments to refund (project decision 7).
pub(crate) async fn refunds<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
) -> Answer<Json<Value>> {
    app.authorize(&headers)?;
    let refunds = app.system.documents.payments_requiring_refund().await?;
    Ok(Json(
        serde_json::to_value(refunds).map_err(cqrs_core::Error::permanent)?,
    ))
}
