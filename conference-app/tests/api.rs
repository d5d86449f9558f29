//! The JSON API through the router, without a socket, over the real system with its workers:
//! SQLite always, PostgreSQL when `CQRS_TEST_POSTGRES_URL` is set (required in CI).

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conference_app::api;
use conference_app::system::Backend;
use conference_domain::read_model::ConferenceQueries;
use serde_json::{Value, json};
use support::{Harness, conference_form, place, postgres, published_conference, sqlite};
use uuid::Uuid;

async fn full_flow<S: Backend>(h: Harness<S>) {
    let (conference, full, student) = published_conference(&h, "rustconf", 10).await;
    let (status, details) = h.call("GET", "/api/conferences/rustconf", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(details["seat_types"][0]["price"], "100.00");
    assert_eq!(details["seat_types"][0]["available"], 10);
    let (_, list) = h.call("GET", "/api/conferences", None, false).await;
    assert_eq!(list[0]["code"], "rustconf");

    // Order, price, registrant, payment, confirmation.
    let (status, placed) = place(&h, "rustconf", json!([{ "seat_type_id": full, "quantity": 3 }])).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{placed}");
    assert_eq!(placed["order_version"], 0);
    let order_id = placed["order_id"].as_str().unwrap().to_owned();
    let priced = h.order(&order_id, 0).await;
    assert_eq!(priced["total"], "300.00");
    assert_eq!(priced["lines"][0]["unit_price"], "100.00");
    let reserved = h.order_in(&order_id, "reservation_completed").await;
    assert_eq!(reserved["lines"][0]["reserved"], 3);
    let registrant = json!({ "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org" });
    let (status, assigned) = h
        .call(
            "PUT",
            &format!("/api/orders/{order_id}/registrant"),
            Some(registrant),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let after = assigned["order_version"].as_i64().unwrap();
    assert!(after >= reserved["version"].as_i64().unwrap(), "{assigned}");
    let shown = h.order(&order_id, after).await;
    assert_eq!(shown["registrant"]["email"], "ada@example.org", "{shown}");
    let (status, payment) = h
        .call("POST", &format!("/api/orders/{order_id}/payment"), None, false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{payment}");
    let payment_id = payment["payment_id"].as_str().unwrap();
    let (status, _) = h
        .call("POST", &format!("/api/payments/{payment_id}/accept"), None, false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let confirmed = h.order_in(&order_id, "confirmed").await;
    assert_eq!(confirmed["reservation_expires_at"], Value::Null);
    let access_code = confirmed["access_code"].as_str().unwrap().to_owned();
    h.audit(conference, &[(&full, 3)]).await;

    // Seats, and finding the order again.
    let seats_uri = format!("/api/orders/{order_id}/seats");
    h.eventually("seat assignments", || async {
        h.call("GET", &seats_uri, None, false).await.0 == StatusCode::OK
    })
    .await;
    let (_, seats) = h.call("GET", &seats_uri, None, false).await;
    assert_eq!(seats.as_array().unwrap().len(), 3);
    assert_eq!(seats[0]["seat_name"], "Full pass");
    let attendee = json!({ "first_name": "Grace", "last_name": "Hopper", "email": "grace@example.org" });
    let (status, _) = h
        .call("PUT", &format!("{seats_uri}/1"), Some(attendee.clone()), false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    h.eventually("the seat assigned", || async {
        h.call("GET", &seats_uri, None, false).await.1[1]["attendee"]["email"] == "grace@example.org"
    })
    .await;
    let (status, _) = h
        .call("PUT", &format!("{seats_uri}/9"), Some(attendee), false)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call("DELETE", &format!("{seats_uri}/1"), None, false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let locate = json!({ "email": "ADA@example.org", "access_code": access_code });
    let (status, found) = h.call("POST", "/api/orders/locate", Some(locate), false).await;
    assert_eq!(
        (status, found["order_id"].as_str()),
        (StatusCode::OK, Some(order_id.as_str()))
    );
    let (_, orders) = h
        .call("GET", "/api/admin/conferences/rustconf/orders", None, true)
        .await;
    assert_eq!(orders[0]["status"], "Paid");

    // Posting again with the same order id changes that order; a rejected payment changes
    // nothing but the payment.
    let (_, first) = place(&h, "rustconf", json!([{ "seat_type_id": full, "quantity": 1 }])).await;
    let changing = first["order_id"].as_str().unwrap().to_owned();
    h.order_in(&changing, "reservation_completed").await;
    let again = json!({ "order_id": changing, "seats": [{ "seat_type_id": full, "quantity": 2 }] });
    let (status, answer) = h
        .call("POST", "/api/conferences/rustconf/orders", Some(again), false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let version = answer["order_version"].as_i64().unwrap();
    assert!(version > 0, "{answer}");
    let updated = h.order(&changing, version).await;
    assert_eq!(
        (&updated["lines"][0]["requested"], &updated["total"]),
        (&json!(2), &json!("200.00"))
    );
    let reserved = h.order_in(&changing, "reservation_completed").await;
    assert_eq!(reserved["lines"][0]["reserved"], 2);
    let (_, payment) = h
        .call("POST", &format!("/api/orders/{changing}/payment"), None, false)
        .await;
    let rejected = payment["payment_id"].as_str().unwrap().to_owned();
    let (status, _) = h
        .call("POST", &format!("/api/payments/{rejected}/reject"), None, false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    h.eventually("the payment rejected", || async {
        h.order(&changing, -1).await["payment"]["state"] == "Rejected"
    })
    .await;
    assert_eq!(h.order(&changing, -1).await["state"], "reservation_completed");

    // A free order is confirmed without payment.
    let (_, free) = place(
        &h,
        "rustconf",
        json!([{ "seat_type_id": student, "quantity": 1 }]),
    )
    .await;
    let free_id = free["order_id"].as_str().unwrap().to_owned();
    h.order_in(&free_id, "reservation_completed").await;
    let (status, answer) = h
        .call("POST", &format!("/api/orders/{free_id}/payment"), None, false)
        .await;
    assert_eq!(
        (status, &answer["confirmed"]),
        (StatusCode::ACCEPTED, &json!(true))
    );
    h.order_in(&free_id, "confirmed").await;

    // An order left unpaid expires: its seats return, a late payment is flagged for refund.
    let (_, late) = place(&h, "rustconf", json!([{ "seat_type_id": full, "quantity": 5 }])).await;
    let late_id = late["order_id"].as_str().unwrap().to_owned();
    h.order_in(&late_id, "reservation_completed").await;
    assert_eq!(
        h.available(&full).await,
        0,
        "3 sold, 2 held by the changed order, 5 held here"
    );
    let (_, payment) = h
        .call("POST", &format!("/api/orders/{late_id}/payment"), None, false)
        .await;
    let late_payment = payment["payment_id"].as_str().unwrap().to_owned();
    h.clock.advance(Duration::from_secs(30 * 60));
    h.order_in(&late_id, "expired").await;
    h.eventually("seats returned", || async { h.available(&full).await == 7 })
        .await;
    let (status, _) = h
        .call("POST", &format!("/api/orders/{late_id}/payment"), None, false)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "an expired order cannot be paid");
    let (status, _) = h
        .call(
            "POST",
            &format!("/api/payments/{late_payment}/accept"),
            None,
            false,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    h.eventually("the refund flag", || async {
        h.call("GET", "/api/admin/refunds", None, true).await.1[0]["id"] == late_payment.as_str()
    })
    .await;
    h.audit(conference, &[(&full, 3), (&student, 1)]).await;
    h.stop().await;
}

async fn bad_input<S: Backend>(h: Harness<S>) {
    let (_, full, _) = published_conference(&h, "badconf", 5).await;
    let cases: Vec<(&str, String, Option<Value>, bool, StatusCode)> = vec![
        (
            "GET",
            "/api/conferences/nope".into(),
            None,
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/nothing/here".into(),
            None,
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/orders/not-a-uuid".into(),
            None,
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            format!("/api/orders/{}", Uuid::now_v7()),
            None,
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            format!("/api/orders/{}?wait_for_version=x", Uuid::now_v7()),
            None,
            false,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/admin/conferences".into(),
            Some(conference_form("x")),
            false,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            "/api/admin/refunds".into(),
            None,
            false,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/api/orders/locate".into(),
            Some(json!({"email": "a@b.c", "access_code": "XXXXXX"})),
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/orders/locate".into(),
            Some(json!({"email": 3})),
            false,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            format!("/api/payments/{}/accept", Uuid::now_v7()),
            None,
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            format!("/api/orders/{}/payment", Uuid::now_v7()),
            None,
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "PUT",
            format!("/api/orders/{}/registrant", Uuid::now_v7()),
            Some(json!({"first_name": "A", "last_name": "B", "email": "not-an-email"})),
            false,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            format!("/api/orders/{}/registrant", Uuid::now_v7()),
            Some(json!({"first_name": "A", "last_name": "B", "email": "a@b.co"})),
            false,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/admin/conferences".into(),
            Some(conference_form("badconf")),
            true,
            StatusCode::CONFLICT,
        ),
        (
            "POST",
            "/api/admin/conferences".into(),
            Some(conference_form("bad code")),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/admin/conferences/nope/publish".into(),
            None,
            true,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/admin/conferences/badconf/seat-types".into(),
            Some(json!({"name": "X", "description": "", "price": "-1", "quantity": 5})),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, uri, body, admin, expected) in cases {
        let (status, answer) = h.call(method, &uri, body, admin).await;
        assert_eq!(status, expected, "{method} {uri}: {answer}");
        assert!(answer["error"].is_string(), "{method} {uri}: {answer}");
    }
    let (_, errors) = h
        .call(
            "POST",
            "/api/admin/conferences/badconf/seat-types",
            Some(json!({"name": "X", "description": "", "price": "-1", "quantity": 5})),
            true,
        )
        .await;
    let fields: Vec<&String> = errors["fields"].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["description", "name", "price"]);

    // Orders: every rule, and nothing placed.
    for (seats, field) in [
        (
            json!([{ "seat_type_id": full, "quantity": -1 }]),
            "seats[0].quantity",
        ),
        (
            json!([{ "seat_type_id": full, "quantity": 21 }]),
            "seats[0].quantity",
        ),
        (
            json!([{ "seat_type_id": Uuid::now_v7(), "quantity": 1 }]),
            "seats[0].seat_type_id",
        ),
        (json!([{ "seat_type_id": full, "quantity": 0 }]), "seats"),
        (json!([]), "seats"),
    ] {
        let (status, answer) = place(&h, "badconf", seats).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert!(answer["fields"][field].is_string(), "{field}: {answer}");
    }
    let (status, answer) = place(&h, "badconf", json!([{ "seat_type_id": full, "quantity": 6 }])).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["available"][0]["available"], 5);
    let malformed = Request::builder()
        .method("POST")
        .uri("/api/conferences/badconf/orders")
        .header("content-type", "application/json")
        .body(Body::from("{\"seats\": [ oops"))
        .unwrap();
    let (status, answer) = h.send(malformed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let huge = Request::builder()
        .method("POST")
        .uri("/api/orders/locate")
        .header("content-type", "application/json")
        .body(Body::from(format!(
            "{{\"email\": \"{}\", \"access_code\": \"x\"}}",
            "a".repeat(api::BODY_LIMIT)
        )))
        .unwrap();
    let (status, _) = h.send(huge).await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(h.available(&full).await, 5, "nothing was reserved");

    // Seat types change, and unknown ones are 404; every admin route wants the token.
    let form = json!({ "name": "Full pass", "description": "Both days", "price": "120.00", "quantity": 8 });
    let uri = format!("/api/admin/conferences/badconf/seat-types/{full}");
    assert_eq!(
        h.call("PUT", &uri, Some(form.clone()), false).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.call("PUT", &uri, Some(form.clone()), true).await.0,
        StatusCode::NO_CONTENT
    );
    h.eventually("the new quantity", || async { h.available(&full).await == 8 })
        .await;
    let unknown = format!("/api/admin/conferences/badconf/seat-types/{}", Uuid::now_v7());
    assert_eq!(
        h.call("PUT", &unknown, Some(form), true).await.0,
        StatusCode::NOT_FOUND
    );
    for route in ["orders", "unpublish", "publish"] {
        let method = if route == "orders" { "GET" } else { "POST" };
        let uri = format!("/api/admin/conferences/badconf/{route}");
        assert_eq!(
            h.call(method, &uri, None, false).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
    // Unpublished, the conference leaves the public API once its cache entry expires (§13:
    // details are cached for 10 minutes).
    let (status, _) = h
        .call("POST", "/api/admin/conferences/badconf/unpublish", None, true)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    h.eventually("the unpublication projected", || async {
        let view = h.system.documents.conference_details("badconf").await.unwrap();
        !view.unwrap().is_published
    })
    .await;
    let (status, _) = h.call("GET", "/api/conferences/badconf", None, false).await;
    assert_eq!(status, StatusCode::OK, "still cached");
    h.clock.advance(Duration::from_secs(10 * 60 + 1));
    h.eventually("the conference hidden", || async {
        h.call("GET", "/api/conferences/badconf", None, false).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    let (status, _) = place(&h, "badconf", json!([{ "seat_type_id": full, "quantity": 1 }])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_flow() {
    full_flow(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bad_input_changes_nothing() {
    bad_input(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_full_flow() {
    if let Some(h) = postgres().await {
        full_flow(h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bad_input_changes_nothing() {
    if let Some(h) = postgres().await {
        bad_input(h).await;
    }
}
