//! `flowgrid-auth-bench`: what authentication costs here.
//!
//! Prints (1) token verification per request in a handler, in µs: the shared `Caller` path
//! (signature, claims, cached revocation check) measured in process; (2) login latency p50/p99
//! through the app's router with the production argon2id parameters, for a right password, a
//! wrong password and an unknown email. Run: `cargo run --release -p flowgrid-auth --bin
//! flowgrid-auth-bench [logins]`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowgrid_auth::Stores;
use flowgrid_auth::throttle::Policy;
use flowgrid_auth::{AppState, PasswordParams, admin, router};
use flowgrid_domain::config::Config;
use flowgrid_http::auth::TokenVerifier;
use tower::ServiceExt;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let logins: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    let dir = std::env::temp_dir().join(format!("flowgrid-auth-bench-{}", std::process::id()));
    let data_dir = dir.display().to_string();
    let config =
        Config::from_lookup(|name| (name == "FLOWGRID_DATA_DIR").then(|| data_dir.clone()))?;
    let stores = Stores::open(&config).await?;
    let unlimited = Policy {
        max_failures: u32::MAX,
        window: Duration::from_secs(1),
    };
    let state = AppState::new(
        &config,
        stores.clone(),
        PasswordParams::PRODUCTION,
        unlimited,
        unlimited,
    )
    .await?;
    let created = admin::create_tenant(&stores, "Bench", "bench@example.com").await?;
    let app = router(state.clone());

    let login = |email: &str, password: &str| {
        let body = serde_json::json!({ "email": email, "password": password }).to_string();
        Request::post("/api/auth/login")
            .header("content-type", "application/json")
            .body(Body::from(body))
    };
    let mut token = String::new();
    let cases = [
        (
            "right password",
            created.email.clone(),
            created.password.clone(),
        ),
        (
            "wrong password",
            created.email.clone(),
            "not the password at all".to_owned(),
        ),
        (
            "unknown email",
            "nobody@example.com".to_owned(),
            "not the password at all".to_owned(),
        ),
    ];
    println!(
        "login through the router, argon2id {:?}, {logins} logins each:",
        PasswordParams::PRODUCTION
    );
    for (label, email, password) in &cases {
        let mut times = Vec::with_capacity(logins);
        for _ in 0..logins {
            let started = Instant::now();
            let response = app.clone().oneshot(login(email, password)?).await?;
            times.push(started.elapsed());
            let status = response.status();
            if status == StatusCode::OK && token.is_empty() {
                let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
                let value: serde_json::Value = serde_json::from_slice(&body)?;
                token = value["accessToken"].as_str().unwrap_or_default().to_owned();
            }
        }
        times.sort();
        println!(
            "  {label:15} p50 {:7.1} ms  p99 {:7.1} ms",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
    }

    let verifier = TokenVerifier::from_stores(
        &config,
        stores.signing_keys.clone(),
        stores.revocations.clone(),
    )
    .await?;
    let rounds = 20_000u32;
    verifier.authenticate(&token).await?;
    let started = Instant::now();
    for _ in 0..rounds {
        verifier.authenticate(&token).await?;
    }
    let per = started.elapsed() / rounds;
    println!(
        "token verification per request (signature + claims + cached revocation check): {:.1} µs",
        per.as_secs_f64() * 1e6
    );
    let started = Instant::now();
    for _ in 0..rounds {
        verifier.verify(&token)?;
    }
    let per = started.elapsed() / rounds;
    println!(
        "  of which signature + claims only: {:.1} µs",
        per.as_secs_f64() * 1e6
    );
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
