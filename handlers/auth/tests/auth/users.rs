//! User management: admin-only routes, tenant isolation, role rules, invitations and resets.

use axum::http::StatusCode;
use serde_json::json;

use crate::common;
use crate::common::{AuthApp, PASSWORD, access};

#[tokio::test]
async fn admin_routes_are_refused_to_editors_and_viewers() {
    let app = AuthApp::new().await;
    let target = app.user("target@acme.test", "viewer").await;
    for (email, role) in [("ed@acme.test", "editor"), ("vi@acme.test", "viewer")] {
        app.user(email, role).await;
        let token = access(&app.session(email).await);
        let calls = [
            ("GET", "/api/auth/users".to_owned(), None),
            (
                "POST",
                "/api/auth/users".to_owned(),
                Some(json!({"email": "x@acme.test", "role": "viewer"})),
            ),
            ("GET", format!("/api/auth/users/{target}"), None),
            (
                "PATCH",
                format!("/api/auth/users/{target}"),
                Some(json!({"disabled": true})),
            ),
            (
                "POST",
                format!("/api/auth/users/{target}/reset-password"),
                None,
            ),
        ];
        for (method, uri, body) in calls {
            let reply = app.auth.send(method, &uri, &token, body).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{role} {method} {uri}: {}",
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn another_tenants_user_ids_are_not_found() {
    let app = AuthApp::new().await;
    let mine = app.user("mine@acme.test", "editor").await;
    let other = flowgrid_auth::admin::create_tenant_with(
        &app.auth.state().stores,
        "Other",
        "boss@other.test",
        flowgrid_auth::PasswordParams::TEST,
    )
    .await
    .unwrap();
    let theirs = access(&app.login(&other.email, &other.password).await.body);
    for (method, uri, body) in [
        ("GET", format!("/api/auth/users/{mine}"), None),
        (
            "PATCH",
            format!("/api/auth/users/{mine}"),
            Some(json!({"disabled": true})),
        ),
        (
            "POST",
            format!("/api/auth/users/{mine}/reset-password"),
            None,
        ),
    ] {
        let reply = app.auth.send(method, &uri, &theirs, body).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            reply.text
        );
    }
    let listed = app.auth.get("/api/auth/users", &theirs).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    // And the user is untouched.
    assert_eq!(
        app.login("mine@acme.test", PASSWORD).await.status,
        StatusCode::OK
    );
    let bad_id = app.auth.get("/api/auth/users/not-a-uuid", &theirs).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn nobody_can_raise_their_own_role_or_grant_one_above_their_own() {
    let app = AuthApp::new().await;
    let admin_id = app.user("admin@acme.test", "admin").await;
    let admin = access(&app.session("admin@acme.test").await);
    let own = app
        .auth
        .send(
            "PATCH",
            &format!("/api/auth/users/{admin_id}"),
            &admin,
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN);
    let grant = app
        .auth
        .post_json(
            "/api/auth/users",
            &admin,
            json!({"email": "boss@acme.test", "role": "owner", "password": PASSWORD}),
        )
        .await;
    assert_eq!(grant.status, StatusCode::FORBIDDEN);
    let viewer = app.user("vi@acme.test", "viewer").await;
    let promote = app
        .auth
        .send(
            "PATCH",
            &format!("/api/auth/users/{viewer}"),
            &admin,
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!(promote.status, StatusCode::FORBIDDEN);
    let fine = app
        .auth
        .send(
            "PATCH",
            &format!("/api/auth/users/{viewer}"),
            &admin,
            Some(json!({"role": "editor"})),
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.text);
    assert_eq!(fine.body["role"], "editor");
    // An admin cannot touch the owner.
    let owner_id = app.owner().await["userId"].as_str().unwrap().to_owned();
    let demote = app
        .auth
        .send(
            "PATCH",
            &format!("/api/auth/users/{owner_id}"),
            &admin,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(demote.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn mass_assignment_fields_are_rejected() {
    let app = AuthApp::new().await;
    let id = app.user("ed@acme.test", "editor").await;
    let owner = access(&app.owner().await);
    for body in [
        json!({"tenantId": "other"}),
        json!({"passwordHash": "x"}),
        json!({"email": "new@acme.test"}),
        json!({"id": "x"}),
    ] {
        let reply = app
            .auth
            .send(
                "PATCH",
                &format!("/api/auth/users/{id}"),
                &owner,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn disabling_a_user_revokes_their_sessions_at_once() {
    let app = AuthApp::new().await;
    let id = app.user("ed@acme.test", "editor").await;
    let tokens = app.session("ed@acme.test").await;
    let token = access(&tokens);
    assert_eq!(
        app.auth.get("/api/auth/user", &token).await.status,
        StatusCode::OK
    );
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
    assert_eq!(reply.body["disabled"], true);
    assert_eq!(
        app.auth.get("/api/auth/user", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let refresh = app
        .auth
        .post_json(
            "/api/auth/refresh",
            "",
            json!({"refreshToken": common::refresh_token(&tokens)}),
        )
        .await;
    assert_eq!(refresh.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_invited_user_sets_a_password_with_the_one_time_token_once() {
    let app = AuthApp::new().await;
    let owner = access(&app.owner().await);
    let invited = app
        .auth
        .post_json(
            "/api/auth/users",
            &owner,
            json!({"email": "new@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.text);
    assert_eq!(invited.body["hasPassword"], false);
    let token = invited.body["inviteToken"].as_str().unwrap().to_owned();
    // No password yet: login fails like any wrong password.
    assert_eq!(
        app.login("new@acme.test", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let set = app
        .auth
        .post_json(
            "/api/auth/password",
            "",
            json!({"token": token, "password": PASSWORD}),
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text);
    assert_eq!(
        app.login("new@acme.test", PASSWORD).await.status,
        StatusCode::OK
    );
    let again = app
        .auth
        .post_json(
            "/api/auth/password",
            "",
            json!({"token": token, "password": "another long password"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    let short = app
        .auth
        .post_json(
            "/api/auth/password",
            "",
            json!({"token": token, "password": "short"}),
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_password_reset_revokes_sessions_and_the_reset_token_sets_a_new_password() {
    let app = AuthApp::new().await;
    let id = app.user("ed@acme.test", "editor").await;
    let session = access(&app.session("ed@acme.test").await);
    let owner = access(&app.owner().await);
    let reset = app
        .auth
        .send(
            "POST",
            &format!("/api/auth/users/{id}/reset-password"),
            &owner,
            None,
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    assert_eq!(
        app.auth.get("/api/auth/user", &session).await.status,
        StatusCode::UNAUTHORIZED
    );
    let token = reset.body["resetToken"].as_str().unwrap();
    let set = app
        .auth
        .post_json(
            "/api/auth/password",
            "",
            json!({"token": token, "password": "a brand new password"}),
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.login("ed@acme.test", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("ed@acme.test", "a brand new password")
            .await
            .status,
        StatusCode::OK
    );
    let direct = app
        .auth
        .post_json(
            &format!("/api/auth/users/{id}/reset-password"),
            &owner,
            json!({"password": "set by the admin here"}),
        )
        .await;
    assert_eq!(direct.status, StatusCode::OK);
    assert!(direct.body.get("resetToken").is_none());
    assert_eq!(
        app.login("ed@acme.test", "set by the admin here")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn users_are_listed_in_pages_without_hashes() {
    let app = AuthApp::new().await;
    for i in 0..4 {
        app.user(&format!("u{i}@acme.test"), "viewer").await;
    }
    let owner = access(&app.owner().await);
    let first = app.auth.get("/api/auth/users?limit=3", &owner).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 3);
    let next = first.body["continuationToken"].as_str().unwrap();
    let second = app
        .auth
        .get(
            &format!("/api/auth/users?limit=3&continuationToken={next}"),
            &owner,
        )
        .await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 2);
    assert!(!first.text.contains("argon2") && !second.text.contains("argon2"));
    let forged = app
        .auth
        .get("/api/auth/users?continuationToken=garbage!", &owner)
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_duplicate_email_in_the_tenant_conflicts() {
    let app = AuthApp::new().await;
    app.user("ed@acme.test", "editor").await;
    let owner = access(&app.owner().await);
    let reply = app
        .auth
        .post_json(
            "/api/auth/users",
            &owner,
            json!({"email": "ED@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}
