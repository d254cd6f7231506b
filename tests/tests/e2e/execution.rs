//! End to end through `flowgrid dev` with the real Agents and Execution apps: a run goes through
//! the local Service Bus queue to the worker; a worker killed mid-run is redelivered and the run
//! finishes once. A local HTTP server plays the outside world and applies each idempotency key's
//! side effect once, as a well-behaved API does.

use std::collections::{HashMap, HashSet};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use flowgrid_e2e::Dev;
use flowgrid_testkit::free_port;
use serde_json::{Value, json};
use std::process::Command;

use crate::upstream;

/// Requests per path and idempotency key, and the keys whose effect was applied.
#[derive(Default)]
struct World {
    requests: HashMap<(String, String), usize>,
    effects: HashSet<String>,
    hold: bool,
}

type Shared = Arc<Mutex<World>>;

async fn effect(
    State(world): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> axum::Json<Value> {
    let key = upstream::header(&headers, "idempotency-key");
    let hold = {
        let mut w = world.lock().expect("lock");
        *w.requests
            .entry((uri.path().to_owned(), key.clone()))
            .or_default() += 1;
        w.hold && uri.path() == "/hold"
    };
    if hold {
        // Never answers while held: the worker is killed while waiting here.
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    let first = world.lock().expect("lock").effects.insert(key);
    axum::Json(json!({"applied": first}))
}

/// Starts the world (its `/hold` held when `hold`) and `flowgrid dev` with the Agents and
/// Execution apps, allowed to call the world, with `settings` added.
async fn start(hold: bool, settings: &[(&str, &str)]) -> (Shared, String, Dev) {
    let world: Shared = Arc::default();
    world.lock().expect("lock").hold = hold;
    let addr = upstream::serve(
        Router::new()
            .route("/effect", post(effect))
            .route("/hold", post(effect))
            .with_state(world.clone()),
    )
    .await;
    let mut envs = vec![("FLOWGRID_OUTBOUND_ALLOWLIST", addr.as_str())];
    envs.extend_from_slice(settings);
    let dev = Dev::start(&["agents", "execution"], &envs).await;
    (world, addr, dev)
}

async fn create_agent(dev: &Dev, token: &str, steps: Value) -> String {
    dev.create_agent(
        token,
        &json!({"name": format!("e2e-{}", free_port()), "definition": {"instructions": "e2e", "steps": steps}}),
    )
    .await
}

/// Waits (30 s at most, else fails with `what`) until the world has received a call of `path`
/// with idempotency key `key`.
async fn wait_for_call(world: &Shared, path: &str, key: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !world
        .lock()
        .expect("lock")
        .requests
        .contains_key(&(path.to_owned(), key.to_owned()))
    {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_run_through_flowgrid_dev_succeeds_with_step_records_and_one_effect_per_step() {
    let (world, addr, dev) = start(false, &[]).await;
    let token = dev.token("acme", "editor");
    let agent = create_agent(
        &dev,
        &token,
        json!([
            {"id": "greet", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}},
            {"id": "call", "kind": "http", "method": "POST", "url": format!("http://{addr}/effect"), "body": "{{ steps.greet.output }}"},
            {"id": "done", "kind": "transform", "output": {"applied": "{{ steps.call.output.body.applied }}"}}
        ]),
    )
    .await;
    let job = dev.submit(&token, &agent, json!({"name": "Ada"})).await;
    let done = dev
        .wait_finished(&token, &job, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], json!({"applied": true}));
    let steps = done["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert!(
        steps
            .iter()
            .all(|s| s["status"] == "succeeded" && s["startedAt"].is_string())
    );
    let calls = world
        .lock()
        .expect("lock")
        .requests
        .get(&("/effect".into(), format!("{job}:call")))
        .copied();
    assert_eq!(calls, Some(1));
    // Another tenant cannot see it.
    let other = reqwest::Client::new()
        .get(format!("{}/api/execute/jobs/{job}", dev.url))
        .bearer_auth(dev.token("globex", "owner"))
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn a_worker_killed_mid_run_is_redelivered_and_the_run_finishes_once() {
    let (world, addr, dev) = start(true, &[("FLOWGRID_JOB_LEASE_SECS", "5")]).await;
    let token = dev.token("acme", "editor");
    let agent = create_agent(
        &dev,
        &token,
        json!([
            {"id": "first", "kind": "http", "method": "POST", "url": format!("http://{addr}/effect")},
            {"id": "second", "kind": "http", "method": "POST", "url": format!("http://{addr}/hold"), "timeoutMs": 120000},
            {"id": "third", "kind": "http", "method": "POST", "url": format!("http://{addr}/effect")}
        ]),
    )
    .await;
    let job = dev.submit(&token, &agent, json!({})).await;
    // Wait until the second step's call is in flight, then kill the worker's process.
    wait_for_call(
        &world,
        "/hold",
        &format!("{job}:second"),
        "the second step never called out",
    )
    .await;
    let health = dev.health().await.expect("health");
    let pid = health["apps"]["execution"]["pid"]
        .as_u64()
        .expect("the execution handler's pid");
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    world.lock().expect("lock").hold = false;
    // The host restarts the handler; the reaper re-enqueues the job once its lease has expired,
    // and a new worker resumes at the second step with the same idempotency key.
    let done = dev
        .wait_finished(&token, &job, Duration::from_secs(90))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["attempts"], 2,
        "claimed twice: before and after the kill"
    );
    let w = world.lock().expect("lock");
    let count = |path: &str, step: &str| {
        w.requests
            .get(&(path.to_owned(), format!("{job}:{step}")))
            .copied()
    };
    assert_eq!(
        count("/effect", "first"),
        Some(1),
        "a completed step is not repeated"
    );
    assert_eq!(
        count("/hold", "second"),
        Some(2),
        "the interrupted call is retried with the same key"
    );
    assert_eq!(count("/effect", "third"), Some(1));
    let effects: Vec<&String> = w.effects.iter().filter(|k| k.starts_with(&job)).collect();
    assert_eq!(effects.len(), 3, "one effect per step: {effects:?}");
    let steps = done["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["attempts"], 2);
}

#[tokio::test]
async fn cancelling_a_run_through_flowgrid_dev_aborts_its_call_within_the_bound() {
    let (world, addr, dev) = start(true, &[]).await;
    let token = dev.token("acme", "editor");
    let agent = create_agent(
        &dev,
        &token,
        json!([
            {"id": "wait", "kind": "http", "method": "POST", "url": format!("http://{addr}/hold"), "timeoutMs": 120000},
            {"id": "after", "kind": "http", "method": "POST", "url": format!("http://{addr}/effect")}
        ]),
    )
    .await;
    let job = dev.submit(&token, &agent, json!({})).await;
    wait_for_call(
        &world,
        "/hold",
        &format!("{job}:wait"),
        "the step never called out",
    )
    .await;
    let asked = Instant::now();
    let reply = reqwest::Client::new()
        .post(format!("{}/api/execute/cancel/{job}", dev.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(reply.status(), 202);
    let done = dev
        .wait_finished(&token, &job, Duration::from_secs(30))
        .await;
    let took = asked.elapsed();
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["steps"][0]["status"], "cancelled");
    // Stated bound: 1 s (a 250 ms poll, a read and a write); generous here for a loaded machine.
    assert!(took < Duration::from_secs(5), "cancelled after {took:?}");
    assert!(
        !world
            .lock()
            .expect("lock")
            .effects
            .iter()
            .any(|k| k.starts_with(&job)),
        "no step ran after the cancel"
    );
}

#[tokio::test]
async fn a_flooding_tenant_does_not_hold_back_another_tenants_run_through_flowgrid_dev() {
    let (_world, addr, dev) = start(true, &[("FLOWGRID_TENANT_MAX_RUNNING", "1")]).await;
    let flood = dev.token("flood", "editor");
    let calm = dev.token("calm", "editor");
    let held = create_agent(
        &dev,
        &flood,
        json!([{"id": "wait", "kind": "http", "method": "POST", "url": format!("http://{addr}/hold"), "timeoutMs": 120000}]),
    )
    .await;
    let quick = json!([{"id": "t", "kind": "transform", "output": {"ok": true}}]);
    let flood_quick = create_agent(&dev, &flood, quick.clone()).await;
    let calm_quick = create_agent(&dev, &calm, quick).await;
    let first = dev.submit(&flood, &held, json!({})).await;
    dev.wait_job(&flood, &first, Duration::from_secs(30), |j| {
        j["status"] == "running"
    })
    .await;
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(dev.submit(&flood, &flood_quick, json!({})).await);
    }
    let other = dev.submit(&calm, &calm_quick, json!({})).await;
    let done = dev
        .wait_finished(&calm, &other, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "succeeded", "the other tenant runs at once");
    for id in &waiting {
        let job = dev
            .wait_job(&flood, id, Duration::from_secs(5), |_| true)
            .await;
        assert_eq!(
            job["status"], "queued",
            "the flooding tenant waits at its limit of 1"
        );
    }
    // Its held job is cancelled: the slot frees and its waiting jobs run, one at a time.
    reqwest::Client::new()
        .post(format!("{}/api/execute/cancel/{first}", dev.url))
        .bearer_auth(&flood)
        .send()
        .await
        .expect("cancel");
    for id in &waiting {
        let job = dev.wait_finished(&flood, id, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
}

#[tokio::test]
async fn ssrf_targets_are_refused_and_a_reused_idempotency_key_is_checked_through_flowgrid_dev() {
    let dev = Dev::start(&["agents", "execution"], &[]).await;
    let token = dev.token("acme", "editor");
    let agent = create_agent(
        &dev,
        &token,
        json!([{"id": "evil", "kind": "http", "url": "{{ input.url }}", "retry": {"maxAttempts": 3, "backoffMs": 10}}]),
    )
    .await;
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1:7071/api/health",
        "https://[::ffff:10.0.0.1]/",
        "https://0x7f.0.0.1/",
        "http://example.org/",
    ] {
        let job = dev.submit(&token, &agent, json!({"url": url})).await;
        let done = dev
            .wait_finished(&token, &job, Duration::from_secs(30))
            .await;
        assert_eq!(done["status"], "failed", "{url}: {done}");
        assert_eq!(
            done["steps"][0]["attempts"], 1,
            "{url}: refusals are not retried"
        );
    }
    let client = reqwest::Client::new();
    let send = |input: Value| {
        client
            .post(format!("{}/api/execute/agent/{agent}", dev.url))
            .bearer_auth(&token)
            .header("idempotency-key", "order-42")
            .json(&json!({"input": input}))
            .send()
    };
    let first: Value = send(json!({"url": "https://example.org/"}))
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let again: Value = send(json!({"url": "https://example.org/"}))
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    assert_eq!(first["jobId"], again["jobId"]);
    let other = send(json!({"url": "https://example.com/"}))
        .await
        .expect("submit");
    assert_eq!(other.status(), 422);
}
