//! The API's errors: `{"error": "...", "fields": {"name": "message"}}` with the right status,
//! and never a 500 for bad input.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use conference_domain::DomainError;
use serde::Serialize;
use serde_json::Value;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    fields: BTreeMap<String, String>,
    extra: Option<(&'static str, Value)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: &'a BTreeMap<String, String>,
}

impl ApiError {
    /// An error with `status` and a message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            fields: BTreeMap::new(),
            extra: None,
        }
    }

    /// 400: the request is malformed.
    pub fn malformed(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    /// 404: no such thing (or not reachable this way).
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error)
    }

    /// 422 with one message per field at fault.
    pub fn invalid(fields: impl IntoIterator<Item = (String, String)>) -> Self {
        let fields: BTreeMap<String, String> = fields.into_iter().collect();
        let error = match fields.len() {
            1 => "One field is not valid.".to_owned(),
            n => format!("{n} fields are not valid."),
        };
        Self {
            fields,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, error)
        }
    }

    /// 422 for one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid([(field.to_owned(), message.into())])
    }

    /// Adds a member to the body (e.g. `"available"` of a 409).
    #[must_use]
    pub fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra = Some((key, value));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.error
    }

    /// The message of each field at fault, by field name.
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    /// The member added with [`with`](Self::with) under `key`.
    pub fn extra(&self, key: &str) -> Option<&Value> {
        self.extra.as_ref().filter(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::to_value(Body {
            error: &self.error,
            fields: &self.fields,
        })
        .unwrap_or_default();
        if let (Some((key, value)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.insert(key.to_owned(), value);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<cqrs_core::Error> for ApiError {
    fn from(error: cqrs_core::Error) -> Self {
        if let Some(domain) = error.as_domain::<DomainError>() {
            return Self::from(domain.clone());
        }
        match error {
            cqrs_core::Error::NotFound { .. } => Self::not_found(error.to_string()),
            cqrs_core::Error::Conflict { .. } => {
                Self::conflict("Someone else changed this at the same moment; try again.")
            }
            other => {
                tracing::error!(error = %other, "request failed");
                let status = if other.is_transient() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                Self::new(status, "The service could not complete the request.")
            }
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Validation { field, message } => Self::invalid([(field, message)]),
            DomainError::InvalidArgument { argument, message } => Self::invalid([(argument, message)]),
            DomainError::NotFound { .. } => Self::not_found(error.to_string()),
            DomainError::Duplicate(message) | DomainError::InvalidState(message) => Self::conflict(message),
            other => Self::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        }
    }
}

/// Every field error of a form.
pub(super) fn fields_of(errors: Vec<DomainError>) -> ApiError {
    ApiError::invalid(errors.into_iter().map(|e| match e {
        DomainError::Validation { field, message } => (field, message),
        other => (other.kind().to_owned(), other.to_string()),
    }))
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::malformed(format!(
            "The request body is not valid JSON for this call: {}",
            rejection.body_text()
        ))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::not_found(format!("No such resource: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::malformed(format!(
            "The query string is not valid: {}",
            rejection.body_text()
        ))
    }
}
