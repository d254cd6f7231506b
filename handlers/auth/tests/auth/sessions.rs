//! Refresh-token rotation, reuse detection, logout, and revocation as every app sees it.

use std::time::Duration;

use axum::http::StatusCode;
use flowgrid_testkit::{Client, Reply, eventually};
use serde_json::{Value, json};

use crate::common;
use crate::common::{AuthApp, access, refresh_token};

async fn refresh(app: &AuthApp, token: &str) -> Reply {
    app.auth
        .post_json("/api/auth/refresh", "", json!({"refreshToken": token}))
        .await
}

#[tokio::test]
async fn a_refresh_token_is_single_use_and_rotated() {
    let app = AuthApp::new().await;
    let first = app.owner().await;
    let next = refresh(&app, &refresh_token(&first)).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    assert_ne!(refresh_token(&next.body), refresh_token(&first));
    assert_eq!(next.body["sessionId"], first["sessionId"]);
    let claims = app
        .auth
        .state()
        .verifier
        .authenticate(&access(&next.body))
        .await
        .unwrap();
    assert_eq!(claims.sid.as_deref(), first["sessionId"].as_str());
    // The successor rotates in turn.
    let third = refresh(&app, &refresh_token(&next.body)).await;
    assert_eq!(third.status, StatusCode::OK);
}

#[tokio::test]
async fn refresh_tokens_are_stored_hashed_never_in_clear() {
    let app = AuthApp::new().await;
    let tokens = app.owner().await;
    let token = refresh_token(&tokens);
    let db = std::fs::read(app.auth.dir().path().join("flowgrid.db")).unwrap();
    let wal = std::fs::read(app.auth.dir().path().join("flowgrid.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_family_and_the_sessions_access_tokens() {
    // No grace window, so the second use is a reuse whatever the timing.
    let app = AuthApp::new().await;
    let mut state = app.auth.state().clone();
    state.lifetimes.reuse_grace = Duration::ZERO;
    let auth = Client::new(flowgrid_auth::router(state));
    let post = |token: String| {
        let auth = auth.clone();
        async move {
            auth.post_json("/api/auth/refresh", "", json!({"refreshToken": token}))
                .await
        }
    };
    let first = app.owner().await;
    let rotated = post(refresh_token(&first)).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let current_access = access(&rotated.body);
    assert_eq!(
        app.agents.get("/api/agents", &current_access).await.status,
        StatusCode::OK
    );

    let replay = post(refresh_token(&first)).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        replay.body["type"],
        "urn:flowgrid:problem:invalid-credentials"
    );
    // The newest refresh token of the family is dead too.
    assert_eq!(
        post(refresh_token(&rotated.body)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // And the session's access tokens fail in the Auth app at once ...
    assert_eq!(
        app.auth.get("/api/auth/user", &current_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    // ... and in the Agents app within the revocation bound.
    let bound = Duration::from_secs(app.auth.config().revocation_cache_secs);
    let took = eventually(bound + Duration::from_secs(3), || async {
        app.agents.get("/api/agents", &current_access).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        took.is_some(),
        "the Agents app still accepts a token of a revoked family"
    );
    // Another login of the same user is a separate family and still works.
    let other = app.owner().await;
    assert_eq!(
        app.agents.get("/api/agents", &access(&other)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn two_concurrent_refreshes_with_one_token_both_succeed() {
    let app = AuthApp::new().await;
    let first = app.owner().await;
    let token = refresh_token(&first);
    let (a, b) = tokio::join!(refresh(&app, &token), refresh(&app, &token));
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(b.status, StatusCode::OK, "{}", b.text);
    assert_ne!(refresh_token(&a.body), refresh_token(&b.body));
    for reply in [&a, &b] {
        assert_eq!(
            refresh(&app, &refresh_token(&reply.body)).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn an_unknown_or_malformed_refresh_token_is_refused_without_echoing_it() {
    let app = AuthApp::new().await;
    let reply = refresh(&app, "fgr_made-up-token-value").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!reply.text.contains("made-up-token-value"));
    let wrong_type = app
        .auth
        .post_json(
            "/api/auth/refresh",
            "",
            json!({"refreshToken": 424242424242u64}),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !wrong_type.text.contains("424242424242"),
        "{}",
        wrong_type.text
    );
}

#[tokio::test]
async fn a_token_from_login_works_against_the_agents_app() {
    let app = AuthApp::new().await;
    let token = access(&app.owner().await);
    let created = app
        .agents
        .post_json(
            "/api/agents",
            &token,
            json!({"name": "from-login", "definition": {"instructions": "help"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
}

#[tokio::test]
async fn a_logged_out_session_is_refused_by_the_agents_app_within_the_stated_bound() {
    let app = AuthApp::with(
        &[("FLOWGRID_REVOCATION_CACHE_SECS", "1")],
        common::LOOSE,
        common::LOOSE,
    )
    .await;
    let tokens = app.owner().await;
    let token = access(&tokens);
    // Warm the Agents app's cache with a "not revoked" answer.
    assert_eq!(
        app.agents.get("/api/agents", &token).await.status,
        StatusCode::OK
    );
    let logout = app
        .auth
        .send("POST", "/api/auth/logout", &token, None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.text);
    let bound = Duration::from_secs(app.auth.config().revocation_cache_secs);
    let took = eventually(bound + Duration::from_secs(3), || async {
        app.agents.get("/api/agents", &token).await.status == StatusCode::UNAUTHORIZED
    })
    .await
    .expect("the Agents app refuses the revoked session");
    println!("revoked session refused by the Agents app after {took:?} (bound {bound:?})");
    // The refresh token of the session is dead as well.
    assert_eq!(
        refresh(&app, &refresh_token(&tokens)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_everywhere_revokes_every_session_of_the_user() {
    let app = AuthApp::new().await;
    let one = app.owner().await;
    let two = app.owner().await;
    let reply = app
        .auth
        .post_json(
            "/api/auth/logout",
            &access(&one),
            json!({"allSessions": true}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    for tokens in [&one, &two] {
        assert_eq!(
            app.auth.get("/api/auth/user", &access(tokens)).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refresh(&app, &refresh_token(tokens)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn validate_returns_the_claims_of_a_live_token_and_401_for_a_revoked_one() {
    let app = AuthApp::new().await;
    let token = access(&app.owner().await);
    let ok = app
        .auth
        .post_json("/api/auth/validate", "", json!({"token": token}))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["active"], true);
    assert_eq!(ok.body["claims"]["tid"], app.tenant.as_str());
    app.auth
        .send("POST", "/api/auth/logout", &token, None)
        .await;
    let revoked = app
        .auth
        .post_json("/api/auth/validate", "", json!({"token": token}))
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    let garbage = app
        .auth
        .post_json("/api/auth/validate", "", json!({"token": "a.b.c"}))
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert!(!garbage.text.contains("a.b.c"));
}

#[tokio::test]
async fn a_development_token_has_no_session_to_log_out_of() {
    let app = AuthApp::new().await;
    let token = app
        .auth
        .dir()
        .token(&app.tenant, flowgrid_http::auth::Role::Admin);
    let reply = app
        .auth
        .send("POST", "/api/auth/logout", &token, None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let _: Value = reply.body;
}
