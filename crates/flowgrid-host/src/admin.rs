//! The host's admin endpoints (`/admin/...`, outside the route prefix, as the Functions host's
//! admin API): canaries of an app — start, weight, promote, roll back, status. Every call needs
//! the host admin key (`host-admin.key` in the data folder, 0600) in `x-functions-key`, compared
//! in constant time and never logged; bad input is a problem+json 4xx that changes nothing.
//! `flowgrid canary` calls these (docs/scaling.md, "Canary and cutover").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use flowgrid_domain::Error;
use flowgrid_http::ErrorResponse as _;
use serde_json::{Value, json};

use crate::canary::Canary;
use crate::config::scaling::{check_binary, parse_weight};
use crate::instances::{Pool, PoolSettings};
use crate::runtime::Shared;
use crate::supervisor::State;

/// Largest admin request body.
const BODY_LIMIT: usize = 64 * 1024;

/// Whether two secrets are equal, in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `/admin/<rest...>`: the key first (401 for any path without it), then the route.
pub(crate) async fn serve(
    sh: &Arc<Shared>,
    rest: &[&str],
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let given = headers
        .get(crate::devstate::ADMIN_KEY_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(given, sh.admin_key.as_bytes()) {
        return Error::Unauthorized(format!(
            "the admin endpoints need the host admin key (the data folder's {}) in {}",
            crate::devstate::ADMIN_KEY_FILE,
            crate::devstate::ADMIN_KEY_HEADER
        ))
        .into_response();
    }
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
        body, BODY_LIMIT,
    ))
    .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Error::PayloadTooLarge {
                limit_bytes: BODY_LIMIT,
            }
            .into_response();
        }
    };
    let answer = match (rest, method) {
        (["canary"], &Method::GET) => Ok((StatusCode::OK, status_all(sh))),
        (["canary"], _) => Err(Error::MethodNotAllowed),
        (["canary", app], &Method::POST) => start(sh, app, &body).await,
        (["canary", app], &Method::GET) => app_index(sh, app).map(|ai| {
            let a = &sh.apps[ai];
            (StatusCode::OK, a.canary.json(&a.pool.program()))
        }),
        (["canary", app, "weight"], &Method::PUT) => weight(sh, app, &body),
        (["canary", app, "promote"], &Method::POST) => promote(sh, app).await,
        (["canary", app, "rollback"], &Method::POST) => rollback(sh, app).await,
        (["canary", _], _) | (["canary", _, "weight" | "promote" | "rollback"], _) => {
            Err(Error::MethodNotAllowed)
        }
        _ => Err(Error::NotFound),
    };
    match answer {
        Ok((status, value)) => (status, axum::Json(value)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every app's canary object.
fn status_all(sh: &Shared) -> Value {
    let apps: serde_json::Map<String, Value> = sh
        .apps
        .iter()
        .map(|a| (a.name.clone(), a.canary.json(&a.pool.program())))
        .collect();
    json!({ "apps": apps })
}

fn app_index(sh: &Shared, app: &str) -> Result<usize, Error> {
    sh.apps
        .iter()
        .position(|a| a.name == app)
        .ok_or(Error::NotFound)
}

/// The JSON object of an admin request body.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Error::BadRequest("the body must be a JSON object".into())),
        Err(e) => Err(Error::BadRequest(format!("the body is not JSON: {e}"))),
    }
}

/// The `weight` field: a whole number from 0 to 100.
fn weight_field(o: &serde_json::Map<String, Value>) -> Result<u8, Error> {
    match o.get("weight") {
        Some(Value::Number(n)) => parse_weight(&n.to_string()).map_err(Error::BadRequest),
        Some(_) => Err(Error::BadRequest(
            "weight must be a whole number from 0 to 100".into(),
        )),
        None => Err(Error::BadRequest(
            "weight is required (a whole number from 0 to 100)".into(),
        )),
    }
}

/// How long a new build has to get ready: four times the initialization timeout.
fn ready_wait(sh: &Shared) -> Duration {
    sh.config.host.initialization_timeout * 4
}

/// `POST /admin/canary/{app}` `{"binary": "/path", "weight": 10}`: starts the canary and
/// answers once its instances are ready (nothing changes when they do not get ready).
async fn start(sh: &Arc<Shared>, app: &str, body: &[u8]) -> Result<(StatusCode, Value), Error> {
    let ai = app_index(sh, app)?;
    let o = object(body)?;
    let weight = weight_field(&o)?;
    let binary = match o.get("binary") {
        Some(Value::String(b)) if !b.trim().is_empty() => PathBuf::from(b.trim()),
        _ => {
            return Err(Error::BadRequest(
                "binary is required: the absolute path of the canary's handler binary".into(),
            ));
        }
    };
    if !binary.is_absolute() {
        return Err(Error::BadRequest(format!(
            "binary {} must be an absolute path",
            binary.display()
        )));
    }
    check_binary(&binary).map_err(Error::BadRequest)?;
    start_canary(sh, ai, binary, weight, Some(ready_wait(sh))).await?;
    let a = &sh.apps[ai];
    Ok((StatusCode::CREATED, a.canary.json(&a.pool.program())))
}

/// Starts a canary of app `ai` running `binary` with `weight` percent of its HTTP traffic: as
/// many instances as the app's minimum, HTTP only, not scaled. With `wait`, it is installed only
/// once every instance is ready (else stopped again: nothing changed); without, at once (at
/// start-up; traffic goes to the current version until it is ready).
pub(crate) async fn start_canary(
    sh: &Arc<Shared>,
    ai: usize,
    binary: PathBuf,
    weight: u8,
    wait: Option<Duration>,
) -> Result<Arc<Canary>, Error> {
    let app = &sh.apps[ai];
    let running = || {
        Error::Conflict(format!(
            "a canary of {} is already running; promote it or roll it back first",
            app.name
        ))
    };
    if app.canary.active().is_some() {
        return Err(running());
    }
    let mut launch = app.pool.launch();
    launch.program = binary.clone();
    launch.app = format!("{}@canary", app.name);
    let n = app.pool.rules().min.max(1);
    let mut rules = app.pool.rules().clone();
    rules.min = n;
    rules.max = n;
    let pool = Pool::start(
        launch,
        sh.client.clone(),
        PoolSettings {
            rules,
            strategy: app.pool.strategy(),
            fail: app.pool.fail_policy(),
        },
        sh.shutdown.clone(),
    );
    // Its instances stop with the host.
    let stopper = pool.clone();
    let mut stop = sh.shutdown.clone();
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        stopper.stop_all().await;
    });
    if let Some(wait) = wait
        && let Err(why) = all_ready(&pool, wait).await
    {
        pool.retire_all();
        return Err(Error::BadRequest(format!(
            "the canary {} did not get ready: {why}; nothing changed",
            binary.display()
        )));
    }
    let canary = Arc::new(Canary::new(binary.clone(), pool, weight));
    if let Err(c) = app.canary.install(canary.clone()) {
        c.pool.retire_all();
        return Err(running());
    }
    app.canary.note(
        &app.name,
        "started",
        json!({"binary": binary.display().to_string(), "weight": weight, "instances": n}),
    );
    Ok(canary)
}

/// Waits until every instance of `pool` is ready (an instance that stops or fails, or `wait`
/// passing, is an error).
async fn all_ready(pool: &Pool, wait: Duration) -> Result<(), String> {
    for inst in pool.instances() {
        let mut rx = inst.status.clone();
        let r = tokio::time::timeout(
            wait,
            rx.wait_for(|s| s.state == State::Ready || s.crashes > 0 || s.state == State::Failed),
        )
        .await;
        let s = inst.status.borrow().clone();
        if r.is_err() || s.state != State::Ready {
            return Err(format!(
                "instance {} is {:?} after {} s{}",
                inst.ordinal,
                s.state,
                wait.as_secs(),
                s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// The running canary of `app`, not being promoted.
fn changeable(sh: &Shared, ai: usize) -> Result<Arc<Canary>, Error> {
    let app = &sh.apps[ai];
    let c = app.canary.active().ok_or_else(|| {
        Error::Conflict(format!(
            "no canary of {} is running (start one with flowgrid canary start)",
            app.name
        ))
    })?;
    if c.promoting() {
        return Err(Error::Conflict(format!(
            "the canary of {} is being promoted",
            app.name
        )));
    }
    Ok(c)
}

/// `PUT /admin/canary/{app}/weight` `{"weight": 50}`.
fn weight(sh: &Shared, app: &str, body: &[u8]) -> Result<(StatusCode, Value), Error> {
    let ai = app_index(sh, app)?;
    let w = weight_field(&object(body)?)?;
    let c = changeable(sh, ai)?;
    let from = c.weight();
    c.set_weight(w);
    let a = &sh.apps[ai];
    a.canary
        .note(&a.name, "weight changed", json!({"from": from, "to": w}));
    Ok((StatusCode::OK, a.canary.json(&a.pool.program())))
}

/// `POST /admin/canary/{app}/promote`: the canary's binary becomes the app's: new instances of
/// it replace every current one once they are ready (the old ones finish what they hold, then
/// stop), queue and timer work moves to them, and the canary's own instances stop.
async fn promote(sh: &Arc<Shared>, app: &str) -> Result<(StatusCode, Value), Error> {
    let ai = app_index(sh, app)?;
    let c = changeable(sh, ai)?;
    if !c.begin_promotion() {
        return Err(Error::Conflict(format!(
            "the canary of {app} is being promoted"
        )));
    }
    let a = &sh.apps[ai];
    let from = a.pool.program();
    a.canary.note(
        &a.name,
        "promoting",
        json!({"binary": c.binary.display().to_string(), "instances": a.pool.len()}),
    );
    match a.pool.replace_all(c.binary.clone(), ready_wait(sh)).await {
        Ok(fresh) => {
            for inst in &fresh {
                crate::autoscale::start_receivers(sh, ai, inst);
            }
            a.canary.take();
            c.pool.retire_all();
            c.end_promotion();
            a.canary.note(
                &a.name,
                "promoted",
                json!({"from": from.display().to_string(), "to": c.binary.display().to_string()}),
            );
            Ok((StatusCode::OK, a.canary.json(&a.pool.program())))
        }
        Err(why) => {
            c.end_promotion();
            a.canary
                .note(&a.name, "promotion failed", json!({"reason": why}));
            Err(Error::Unavailable(format!(
                "promotion failed: {why}; nothing changed (the canary still runs)"
            )))
        }
    }
}

/// `POST /admin/canary/{app}/rollback`: every request goes to the current version at once; the
/// canary's instances stop once what they hold is done.
async fn rollback(sh: &Shared, app: &str) -> Result<(StatusCode, Value), Error> {
    let ai = app_index(sh, app)?;
    changeable(sh, ai)?;
    let a = &sh.apps[ai];
    let Some(c) = a.canary.take() else {
        return Err(Error::Conflict(format!("no canary of {app} is running")));
    };
    c.pool.retire_all();
    a.canary.note(
        &a.name,
        "rolled back",
        json!({"binary": c.binary.display().to_string(), "weight": c.weight()}),
    );
    Ok((StatusCode::OK, a.canary.json(&a.pool.program())))
}
