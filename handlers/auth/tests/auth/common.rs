//! The Auth app in-process ([`TestApp`] of the test kit) with the Agents app on the same data
//! folder, a tenant whose owner can log in, and what only the Auth tests need.

use std::time::Duration;

use axum::http::StatusCode;
use flowgrid_auth::throttle::Policy;
use flowgrid_auth::{AppState, PasswordParams, Stores, admin, router};
use flowgrid_domain::config::Config;
use flowgrid_testkit::{Client, Reply, TestApp};
use serde_json::{Value, json};

pub const PASSWORD: &str = "a long enough password";

/// Throttles loose enough never to trip unless a test means them to.
pub const LOOSE: Policy = Policy {
    max_failures: 1000,
    window: Duration::from_secs(60),
};

/// The Auth app with cheap password hashing, the Agents app on the same data folder, and the
/// tenant "Acme" made as `flowgrid admin create-tenant` makes it.
pub struct AuthApp {
    /// The Auth app.
    pub auth: TestApp<AppState>,
    /// The Agents app, trusting the same keys.
    pub agents: Client,
    /// Acme's id.
    pub tenant: String,
    /// Acme's owner.
    pub owner_email: String,
    /// The owner's one-time password.
    pub owner_password: String,
}

impl AuthApp {
    pub async fn new() -> AuthApp {
        Self::with(&[], LOOSE, LOOSE).await
    }

    pub async fn with(settings: &[(&str, &str)], account: Policy, caller: Policy) -> AuthApp {
        let auth = TestApp::builder()
            .settings(settings)
            .start(
                async |config: &Config| {
                    let stores = Stores::open(config).await?;
                    AppState::new(config, stores, PasswordParams::TEST, account, caller).await
                },
                router,
            )
            .await;
        let created = admin::create_tenant_with(
            &auth.state().stores,
            "Acme",
            "owner@acme.test",
            PasswordParams::TEST,
        )
        .await
        .expect("tenant");
        let agents = flowgrid_agents::AppState::from_config(auth.config())
            .await
            .expect("agents state");
        AuthApp {
            auth,
            agents: Client::new(flowgrid_agents::router(agents)),
            tenant: created.tenant_id,
            owner_email: created.email,
            owner_password: created.password,
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.auth
            .post_json(
                "/api/auth/login",
                "",
                json!({"email": email, "password": password}),
            )
            .await
    }

    /// Logs in as the owner; returns the token response.
    pub async fn owner(&self) -> Value {
        let reply = self.login(&self.owner_email, &self.owner_password).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body
    }

    /// Creates a user with `role` and the shared test password as the owner; returns its id.
    pub async fn user(&self, email: &str, role: &str) -> String {
        let owner = self.owner().await;
        let token = owner["accessToken"].as_str().expect("token");
        let reply = self
            .auth
            .post_json(
                "/api/auth/users",
                token,
                json!({"email": email, "role": role, "password": PASSWORD}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// Logs in as `email` with the shared test password; returns the token response.
    pub async fn session(&self, email: &str) -> Value {
        let reply = self.login(email, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body
    }
}

pub fn access(tokens: &Value) -> String {
    tokens["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned()
}

pub fn refresh_token(tokens: &Value) -> String {
    tokens["refreshToken"]
        .as_str()
        .expect("refreshToken")
        .to_owned()
}
