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
pub(super) struct NewConference {
    code: String,
    name: String,
    description: String,
    location: String,
    tagline: Option<String>,
    start_date: DateTime<Utc>,
    end_date: DateTime<Utc>,
    owner_name: String,
    owner_email: String,
}

/// `POST /api/admin/conferences`: creates an unpublished conference.
pub(super) async fn create_conference<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    body: Result<Json<NewConference>, JsonRejection>,
) -> Answer<(StatusCode, Json<Value>)> {
    app.authorize(&headers)?;
    let Json(form) = body?;
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
    let conference = app.system.management.create(details).await?;
    let code = conference.details().map(|d| d.slug.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": conference.id(), "code": code })),
    ))
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

/// A seat type form.
#[derive(Debug, Deserialize)]
pub(super) struct SeatTypeForm {
    name: String,
    description: String,
    price: Money,
    quantity: i32,
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
pub(super) async fn create_seat_type<S: Backend>(
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
pub(super) async fn update_seat_type<S: Backend>(
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
pub(super) async fn publish<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer<StatusCode> {
    set_published(&app, &headers, path, true).await
}

/// `POST /api/admin/conferences/{code}/unpublish`.
pub(super) async fn unpublish<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer<StatusCode> {
    set_published(&app, &headers, path, false).await
}

/// `GET /api/admin/conferences/{code}/orders`.
pub(super) async fn orders<S: Backend>(
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
pub(super) async fn refunds<S: Backend>(
    State(app): State<App<S>>,
    headers: HeaderMap,
) -> Answer<Json<Value>> {
    app.authorize(&headers)?;
    let refunds = app.system.documents.payments_requiring_refund().await?;
    Ok(Json(
        serde_json::to_value(refunds).map_err(cqrs_core::Error::permanent)?,
    ))
}
