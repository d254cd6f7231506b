//! Login: passwords, identical failures, throttling, and what never leaks.

use std::time::Duration;

use axum::http::StatusCode;
use flowgrid_auth::throttle::Policy;
use serde_json::json;

use crate::common;
use crate::common::{AuthApp, PASSWORD, access};

#[tokio::test]
async fn the_owner_logs_in_with_the_one_time_password_and_gets_both_tokens() {
    let app = AuthApp::new().await;
    let tokens = app.owner().await;
    assert_eq!(tokens["tokenType"], "Bearer");
    assert_eq!(tokens["expiresIn"], 900);
    assert_eq!(tokens["tenantId"], app.tenant.as_str());
    assert_eq!(tokens["roles"], json!(["owner"]));
    assert!(tokens["refreshToken"].as_str().unwrap().starts_with("fgr_"));
    let claims = app
        .auth
        .state()
        .verifier
        .authenticate(&access(&tokens))
        .await
        .expect("the access token verifies");
    assert_eq!(claims.tid, app.tenant);
    assert_eq!(claims.iss, "http://localhost:7071/api/auth");
    assert!(claims.sid.is_some());
    assert_eq!(claims.exp - claims.iat, 900);
}

#[tokio::test]
async fn emails_match_case_insensitively() {
    let app = AuthApp::new().await;
    let reply = app.login("OWNER@Acme.TEST", &app.owner_password).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn wrong_email_and_wrong_password_get_identical_answers_after_the_same_work() {
    let app = AuthApp::new().await;
    let before = app.auth.state().passwords.verifications();
    let wrong_password = app.login(&app.owner_email, "not the password at all").await;
    let after_password = app.auth.state().passwords.verifications();
    let wrong_email = app
        .login("nobody@acme.test", "not the password at all")
        .await;
    let after_email = app.auth.state().passwords.verifications();
    assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_email.status, StatusCode::UNAUTHORIZED);
    // One argon2 verification each, with the same parameters (the dummy hash uses them too).
    assert_eq!(after_password - before, 1);
    assert_eq!(after_email - after_password, 1);
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("correlationId");
        v
    };
    assert_eq!(
        strip(wrong_password.body.clone()),
        strip(wrong_email.body.clone())
    );
    assert_eq!(
        wrong_password.headers.get("www-authenticate"),
        wrong_email.headers.get("www-authenticate")
    );
    assert_eq!(
        wrong_password.body["type"],
        "urn:flowgrid:problem:invalid-credentials"
    );
}

#[tokio::test]
async fn a_disabled_user_with_the_right_password_gets_the_same_answer_as_a_wrong_password() {
    let app = AuthApp::new().await;
    let id = app.user("ed@acme.test", "editor").await;
    let owner = access(&app.owner().await);
    let reply = app
        .auth
        .send(
            "PATCH",
            &format!("/api/auth/users/{id}"),
            &owner,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let disabled = app.login("ed@acme.test", PASSWORD).await;
    let wrong = app.login("ed@acme.test", "wrong wrong wrong").await;
    assert_eq!(disabled.status, StatusCode::UNAUTHORIZED);
    assert_eq!(disabled.body["detail"], wrong.body["detail"]);
    assert_eq!(disabled.body["type"], wrong.body["type"]);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_with_429_and_retry_after_even_for_the_right_password() {
    let account = Policy {
        max_failures: 3,
        window: Duration::from_secs(600),
    };
    let app = AuthApp::with(&[], account, common::LOOSE).await;
    for _ in 0..3 {
        let reply = app.login(&app.owner_email, "not the password at all").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let locked = app.login(&app.owner_email, &app.owner_password).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.text
    );
    let retry: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&retry), "{retry}");
    assert_eq!(
        locked.body["type"],
        "urn:flowgrid:problem:too-many-requests"
    );
    // Unknown emails are throttled alike, so the lock says nothing about existence.
    for _ in 0..3 {
        app.login("nobody@acme.test", "not the password at all")
            .await;
    }
    assert_eq!(
        app.login("nobody@acme.test", "x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn repeated_failures_from_one_caller_throttle_that_caller_across_accounts() {
    let caller = Policy {
        max_failures: 4,
        window: Duration::from_secs(600),
    };
    let app = AuthApp::with(&[], common::LOOSE, caller).await;
    let attempt = |email: String, from: &'static str| {
        let client = app.auth.client().clone();
        async move {
            client
                .send_with(
                    "POST",
                    "/api/auth/login",
                    "",
                    Some(json!({"email": email, "password": "not the password at all"})),
                    &[("x-forwarded-for", from)],
                )
                .await
        }
    };
    for i in 0..4 {
        let reply = attempt(format!("user{i}@acme.test"), "203.0.113.9").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let throttled = attempt("other@acme.test".into(), "203.0.113.9").await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers.contains_key("retry-after"));
    let elsewhere = attempt("other@acme.test".into(), "198.51.100.7").await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_successful_login_clears_the_account_failures() {
    let account = Policy {
        max_failures: 2,
        window: Duration::from_secs(600),
    };
    let app = AuthApp::with(&[], account, common::LOOSE).await;
    app.login(&app.owner_email, "not the password at all").await;
    app.owner().await;
    app.login(&app.owner_email, "not the password at all").await;
    assert_eq!(
        app.login(&app.owner_email, &app.owner_password)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_login_requests_are_problem_json_4xx_that_never_echo_the_password() {
    let app = AuthApp::new().await;
    let cases = [
        (json!({"email": "a@b.c"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"email": "a@b.c", "password": 123456789}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a@b.c", "password": "pw", "role": "owner"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a@b.c", "password": "pw", "tenantId": "../etc"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!("just a string"), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in cases {
        let reply = app
            .auth
            .post_json("/api/auth/login", "", body.clone())
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        assert!(!reply.text.contains("123456789"), "{}", reply.text);
    }
    let not_json = app
        .auth
        .request(
            axum::http::Request::post("/api/auth/login")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    "{\"email\": \"a@b.c\", \"password\": \"sec",
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert!(!not_json.text.contains("sec\""), "{}", not_json.text);
    let form = app
        .auth
        .request(
            axum::http::Request::post("/api/auth/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from("email=a&password=b"))
                .unwrap(),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn an_email_in_two_tenants_needs_the_tenant_named_once_the_password_is_right() {
    let app = AuthApp::new().await;
    let stores = &app.auth.state().stores;
    let other = flowgrid_auth::admin::create_tenant_with(
        stores,
        "Other",
        "owner@acme.test",
        flowgrid_auth::PasswordParams::TEST,
    )
    .await
    .unwrap();
    // Different passwords: the right one picks its own tenant.
    let first = app.login(&app.owner_email, &app.owner_password).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["tenantId"], app.tenant.as_str());
    let second = app.login(&app.owner_email, &other.password).await;
    assert_eq!(second.body["tenantId"], other.tenant_id.as_str());
    let named = app
        .auth
        .post_json(
            "/api/auth/login",
            "",
            json!({"email": app.owner_email, "password": other.password, "tenantId": app.tenant}),
        )
        .await;
    assert_eq!(named.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_user_and_tenant_routes_describe_the_caller() {
    let app = AuthApp::new().await;
    let token = access(&app.owner().await);
    let user = app.auth.get("/api/auth/user", &token).await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(user.body["email"], "owner@acme.test");
    assert_eq!(user.body["role"], "owner");
    assert!(!user.text.contains("argon2"), "{}", user.text);
    let tenant = app.auth.get("/api/auth/tenant", &token).await;
    assert_eq!(tenant.body["name"], "Acme");
    assert_eq!(tenant.body["id"], app.tenant.as_str());
    assert_eq!(
        app.auth.get("/api/auth/user", "").await.status,
        StatusCode::UNAUTHORIZED
    );
}
