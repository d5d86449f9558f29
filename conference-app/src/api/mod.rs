//! The JSON API: the registrant's routes, the simulated payment processor, and the admin
//! routes behind a bearer token. [`router`] builds it from a [`System`]; tests call it
//! without a socket.

pub(crate) mod admin;
mod error;
pub(crate) mod orders;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post, put};

pub use self::error::ApiError;
use crate::system::{Backend, System};

/// How long a read-model wait may hold a request.
pub const LONG_POLL: Duration = Duration::from_secs(5);

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the handlers share.
pub struct AppState<S: Backend> {
    /// The system.
    pub system: Arc<System<S>>,
    /// The admin's bearer token.
    pub admin_token: String,
    /// The order events this process has read, for the long polls.
    pub(crate) known_events: orders::KnownEvents,
}

impl<S: Backend> std::fmt::Debug for AppState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The shared state as handlers receive it.
pub type App<S> = Arc<AppState<S>>;

impl<S: Backend> AppState<S> {
    /// Checks the `Authorization: Bearer <token>` header.
    ///
    /// # Errors
    /// 401 without the right token.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "The admin token is missing or wrong.",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds `GET /metrics`: the Prometheus text of `handle`'s recorder (commands sent and their
/// latency, messages handled, retried and dead-lettered per queue, events published, dead
/// letters waiting).
pub fn with_metrics(router: Router, handle: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    router.route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    )
}

/// An unknown address: a JSON error under `/api/`, the site's page elsewhere.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let error = ApiError::not_found("No such page.");
    if uri.path().starts_with("/api/") {
        error.into_response()
    } else {
        crate::web::PageError::from(error).into_response()
    }
}

/// The API's routes over `system`, with `admin_token` guarding the admin routes, and the web
/// site's pages (see [`crate::web`]) on the same state.
pub fn router<S: Backend>(system: Arc<System<S>>, admin_token: String) -> Router {
    let state: App<S> = Arc::new(AppState {
        system,
        admin_token,
        known_events: orders::KnownEvents::default(),
    });
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/conferences", get(orders::conferences::<S>))
        .route("/api/conferences/{code}", get(orders::conference::<S>))
        .route("/api/conferences/{code}/orders", post(orders::place::<S>))
        .route("/api/orders/locate", post(orders::locate::<S>))
        .route("/api/orders/{order_id}", get(orders::order::<S>))
        .route("/api/orders/{order_id}/registrant", put(orders::registrant::<S>))
        .route("/api/orders/{order_id}/payment", post(orders::pay::<S>))
        .route("/api/orders/{order_id}/seats", get(orders::seats::<S>))
        .route(
            "/api/orders/{order_id}/seats/{position}",
            put(orders::assign_seat::<S>).delete(orders::unassign_seat::<S>),
        )
        .route(
            "/api/payments/{payment_id}/accept",
            post(orders::accept_payment::<S>),
        )
        .route(
            "/api/payments/{payment_id}/reject",
            post(orders::reject_payment::<S>),
        )
        .route("/api/admin/conferences", post(admin::create_conference::<S>))
        .route(
            "/api/admin/conferences/{code}",
            get(admin::conference_details::<S>),
        )
        .route(
            "/api/admin/conferences/{code}/seat-types",
            post(admin::create_seat_type::<S>),
        )
        .route(
            "/api/admin/conferences/{code}/seat-types/{id}",
            put(admin::update_seat_type::<S>),
        )
        .route("/api/admin/conferences/{code}/publish", post(admin::publish::<S>))
        .route(
            "/api/admin/conferences/{code}/unpublish",
            post(admin::unpublish::<S>),
        )
        .route("/api/admin/conferences/{code}/orders", get(admin::orders::<S>))
        .route("/api/admin/refunds", get(admin::refunds::<S>))
        .merge(crate::web::routes::<S>())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
