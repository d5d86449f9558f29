//! The web site through its router, without a browser: every page renders, and bad input comes
//! back as the form with its errors (or an error page) and changes nothing.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use support::{Harness, TOKEN, published_conference, sqlite};
use tower::ServiceExt;
use uuid::Uuid;

/// A page: its status, its `Location` (after a post) and its HTML.
async fn page<S: conference_app::system::Backend>(
    h: &Harness<S>,
    method: &str,
    uri: &str,
    form: Option<&str>,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let body = match form {
        Some(form) => {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let response = h
        .router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {uri}");
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, location, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn events<S: conference_app::system::Backend>(h: &Harness<S>) -> usize {
    h.system.store.read_all(0, 100_000).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_and_bad_input_changes_nothing() {
    let h = sqlite().await;
    let (_, full, _) = published_conference(&h, "webconf", 5).await;
    let admin = format!("conference_admin={TOKEN}");

    let (status, _, html) = page(&h, "GET", "/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("/conferences/webconf"), "{html}");
    let (status, _, html) = page(&h, "GET", "/conferences/webconf", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!("name=\"qty-{full}\"")), "{html}");
    let (_, _, css) = page(&h, "GET", "/static/site.css", None, None).await;
    assert!(css.contains("--accent"));

    let before = events(&h).await;
    let order_id = Uuid::now_v7();
    let register = "/conferences/webconf";
    for (form, expected, message) in [
        (
            format!("order_id={order_id}&qty-{full}=two"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter a whole number",
        ),
        (
            format!("order_id={order_id}&qty-{full}=0"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at least one type",
        ),
        (
            format!("order_id={order_id}&qty-{full}=-3"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot be negative",
        ),
        (
            format!("order_id={order_id}&qty-{full}=21"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "At most 20",
        ),
        (
            format!("order_id={order_id}&qty-{full}=6"),
            StatusCode::CONFLICT,
            "Only 5 available",
        ),
    ] {
        let (status, _, html) = page(&h, "POST", register, Some(&form), None).await;
        assert_eq!(status, expected, "{form}: {html}");
        assert!(html.contains(message), "{form}: expected `{message}` in {html}");
    }
    for (method, uri, form, expected) in [
        ("GET", "/conferences/nope".to_owned(), None, StatusCode::NOT_FOUND),
        (
            "GET",
            format!("/orders/{}", Uuid::now_v7()),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/orders/not-an-id".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            format!("/orders/{}", Uuid::now_v7()),
            Some("first_name=A&last_name=B&email=a@example.org"),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            format!("/payments/{}/bogus", Uuid::now_v7()),
            Some("order_id=00000000-0000-0000-0000-000000000000"),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            format!("/payments/{}/accept", Uuid::now_v7()),
            Some(&*format!("order_id={order_id}")),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/find".to_owned(),
            Some("email=a@example.org&access_code=ZZZZZZ"),
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/no/such/page".to_owned(), None, StatusCode::NOT_FOUND),
        // The organizer's pages want the token.
        ("GET", "/admin".to_owned(), None, StatusCode::UNAUTHORIZED),
        (
            "GET",
            "/admin/conferences/webconf".to_owned(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/admin/conferences/webconf/unpublish".to_owned(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/admin/sign-in".to_owned(),
            Some("token=wrong"),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let (status, _, html) = page(&h, method, &uri, form, None).await;
        assert_eq!(status, expected, "{method} {uri}: {html}");
        assert!(
            html.starts_with("<!doctype html>"),
            "{method} {uri} answers a page: {html}"
        );
    }
    let (status, _, json) = page(&h, "GET", "/api/no/such/route", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json.starts_with('{'), "the API answers JSON: {json}");

    // The organizer's forms, with bad input.
    let (status, location, _) = page(
        &h,
        "POST",
        "/admin/sign-in",
        Some(&format!("token={TOKEN}")),
        None,
    )
    .await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin"))
    );
    let (status, _, html) = page(&h, "GET", "/admin", None, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let (status, _, html) = page(
        &h,
        "POST",
        "/admin/conferences",
        Some("name=X&code=bad%20code&start_date=soon&end_date=2027-01-01&owner_email=nope"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    for field in [
        "error-start_date",
        "error-code",
        "error-owner_email",
        "error-description",
    ] {
        assert!(html.contains(field), "{field} shown inline: {html}");
    }
    let seat_types = "/admin/conferences/webconf/seat-types";
    for form in [
        "name=Pass&description=Desc&price=cheap&quantity=3",
        "name=Pass&description=Desc&price=10&quantity=lots",
        "name=P&description=Desc&price=10&quantity=3",
        "name=Pass&description=Desc&price=-1&quantity=3",
    ] {
        let (status, _, html) = page(&h, "POST", seat_types, Some(form), Some(&admin)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{form}: {html}");
        assert!(html.contains("seat-type-error"), "{form}: {html}");
    }
    let (status, _, html) = page(
        &h,
        "POST",
        &format!("{seat_types}/{full}"),
        Some("name=Full&description=Desc&price=10&quantity=-4"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert_eq!(events(&h).await, before, "no bad request wrote an event");
    assert_eq!(h.available(&full).await, 5, "nothing was reserved");

    // A good order through the pages: the post answers with checkout, which shows the price.
    let (status, location, _) = page(
        &h,
        "POST",
        register,
        Some(&format!("order_id={order_id}&qty-{full}=2")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let checkout = location.unwrap();
    assert!(
        checkout.starts_with(&format!("/orders/{order_id}?after=")),
        "{checkout}"
    );
    let (status, _, html) = page(&h, "GET", &checkout, None, None).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"total\">200.00<"), "{html}");
    let (status, _, html) = page(
        &h,
        "POST",
        &format!("/orders/{order_id}"),
        Some("first_name=Ada&last_name=&email=not-an-email"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("error-email") && html.contains("error-last_name"),
        "{html}"
    );
    assert!(
        html.contains("value=\"not-an-email\""),
        "what was typed is kept: {html}"
    );
    let (_, _, html) = page(&h, "GET", "/admin/conferences/webconf", None, Some(&admin)).await;
    assert!(html.contains("Full pass"), "{html}");
    h.stop().await;
}
