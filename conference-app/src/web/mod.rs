//! The registration web site: server-rendered pages (askama templates) over the same handlers
//! as the JSON API, usable without JavaScript except for the reservation countdown.
//!
//! Each page calls the API handler of its operation in-process and renders what it answers: the
//! validation, the errors and the waits for the read models are the API's, so the site and the
//! API cannot drift apart. Forms post back to the page they came from; a field error is shown
//! beside its field, a 409 as a message at the top, and nothing changes.
//!
//! - `registrant`: the conference list, the register page, checkout, the simulated payment
//!   processor, the success and seat-assignment pages, "find my order", the expired order;
//! - `admin`: the organizer's pages, behind the admin token (kept in a `SameSite=Strict`
//!   cookie after the sign-in form).

mod admin;
mod registrant;

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::api::{ApiError, App};
use crate::system::Backend;

/// The site's stylesheet.
const STYLESHEET: &str = include_str!("../../static/site.css");

/// The site's routes; merged with the API's by [`crate::api::router`].
pub(crate) fn routes<S: Backend>() -> Router<App<S>> {
    Router::new()
        .route("/", get(registrant::home::<S>))
        .route("/static/site.css", get(stylesheet))
        .route(
            "/conferences/{code}",
            get(registrant::register_page::<S>).post(registrant::register::<S>),
        )
        .route(
            "/orders/{order_id}",
            get(registrant::checkout_page::<S>).post(registrant::checkout::<S>),
        )
        .route("/orders/{order_id}/done", get(registrant::done::<S>))
        .route("/orders/{order_id}/seats", get(registrant::seats_page::<S>))
        .route(
            "/orders/{order_id}/seats/{position}",
            post(registrant::assign_seat::<S>),
        )
        .route("/payments/{payment_id}", get(registrant::payment_page::<S>))
        .route(
            "/payments/{payment_id}/{answer}",
            post(registrant::answer_payment::<S>),
        )
        .route("/find", get(registrant::find_page).post(registrant::find::<S>))
        .route("/admin", get(admin::home::<S>))
        .route("/admin/sign-in", post(admin::sign_in::<S>))
        .route("/admin/sign-out", post(admin::sign_out))
        .route("/admin/conferences", post(admin::create_conference::<S>))
        .route("/admin/conferences/{code}", get(admin::conference_page::<S>))
        .route(
            "/admin/conferences/{code}/seat-types",
            post(admin::create_seat_type::<S>),
        )
        .route(
            "/admin/conferences/{code}/seat-types/{id}",
            post(admin::update_seat_type::<S>),
        )
        .route(
            "/admin/conferences/{code}/{action}",
            post(admin::set_published::<S>),
        )
        .layer(axum::middleware::map_response(rejections_as_pages))
}

/// An extractor's refusal (a malformed id in the address, a form without a field) is plain
/// text: shown as the site's error page instead.
async fn rejections_as_pages(response: Response) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !plain || !response.status().is_client_error() {
        return response;
    }
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), crate::api::BODY_LIMIT)
        .await
        .unwrap_or_default();
    PageError(ApiError::new(status, String::from_utf8_lossy(&bytes))).into_response()
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

/// A page that could not be shown: rendered as the error page with the API's status.
#[derive(Debug)]
pub(crate) struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<cqrs_core::Error> for PageError {
    fn from(error: cqrs_core::Error) -> Self {
        Self(ApiError::from(error))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::UNAUTHORIZED => "Sign-in needed",
            StatusCode::CONFLICT => "Not possible now",
            s if s.is_client_error() => "That did not work",
            _ => "Something went wrong",
        };
        let page = ErrorPage {
            title,
            message: self.0.message(),
        };
        (status, render(&page)).into_response()
    }
}

/// What a page handler answers.
pub(crate) type Page = Result<Response, PageError>;

/// The HTML of `template`; a template that fails to render is a bug, shown as a plain 500.
pub(crate) fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "a page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be shown.").into_response()
        }
    }
}

/// A page rendered with `status` (a form shown again with its errors).
pub(crate) fn render_with(status: StatusCode, template: &impl Template) -> Response {
    let mut response = render(template);
    if response.status().is_success() {
        *response.status_mut() = status;
    }
    response
}

/// After a successful post: see the result with a GET (303).
pub(crate) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// A page that refreshes itself after a second (waiting for the back end without JavaScript).
pub(crate) fn refreshing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::REFRESH, HeaderValue::from_static("1"));
    response
}

/// A form's errors: the message at the top, and one message per field.
#[derive(Debug, Default)]
pub(crate) struct FormErrors {
    pub(crate) message: Option<String>,
    pub(crate) fields: BTreeMap<String, String>,
}

impl FormErrors {
    /// The errors of a refused request.
    pub(crate) fn of(error: &ApiError) -> Self {
        Self {
            message: Some(error.message().to_owned()),
            fields: error.fields().clone(),
        }
    }

    /// The message of `field`, or an empty string.
    pub(crate) fn field(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", String::as_str)
    }
}

/// Reads an API handler's JSON answer into a page's view of it.
pub(crate) fn read<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, PageError> {
    serde_json::from_value(value).map_err(|error| PageError::from(cqrs_core::Error::permanent(error)))
}

/// Money as shown: `$1,234.50`-style without the currency sign, two decimals.
pub(crate) fn money(amount: Decimal) -> String {
    let amount = amount.round_dp(2);
    let text = format!("{amount:.2}");
    let (whole, cents) = text.split_once('.').unwrap_or((&text, "00"));
    let (sign, digits) = whole.strip_prefix('-').map_or(("", whole), |d| ("-", d));
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}.{cents}")
}

/// A date as shown: `10 March 2027`.
pub(crate) fn date(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_grouped_with_two_decimals() {
        assert_eq!(money(Decimal::new(123_456_789, 2)), "1,234,567.89");
        assert_eq!(money(Decimal::new(4530, 2)), "45.30");
        assert_eq!(money(Decimal::ZERO), "0.00");
        assert_eq!(money(Decimal::new(-100_000, 2)), "-1,000.00");
        assert_eq!(money(Decimal::new(19_900, 2)), "199.00");
    }
}
