//! End-to-end through `flowgrid dev` with the real Agents app: the local Functions host started
//! as a user starts it, requests through its one port, tokens from `flowgrid token`.

use std::time::{Duration, Instant};

use flowgrid_e2e::Dev;
use serde_json::{Value, json};

#[tokio::test]
async fn an_agent_created_through_flowgrid_dev_can_be_read_back_with_the_correlation_id_echoed() {
    let dev = Dev::start(&["agents"], &[]).await;
    let token = dev.token("acme", "admin");
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/api/agents", dev.url))
        .bearer_auth(&token)
        .header("x-correlation-id", "e2e-create-1")
        .json(&json!({"name": "Incident triage", "definition": {"instructions": "Triage new incidents."}}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-correlation-id"], "e2e-create-1");
    let agent: Value = created.json().await.expect("json");
    let id = agent["id"].as_str().expect("an id");
    let read = client
        .get(format!("{}/api/agents/{id}", dev.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 200);
    assert!(
        read.headers().contains_key("x-correlation-id"),
        "a generated correlation id comes back"
    );
    let body: Value = read.json().await.expect("json");
    assert_eq!(body["name"], "Incident triage");
    let other = dev.token("globex", "admin");
    let hidden = client
        .get(format!("{}/api/agents/{id}", dev.url))
        .bearer_auth(&other)
        .send()
        .await
        .expect("read");
    assert_eq!(hidden.status(), 404, "another tenant does not see it");
}

#[tokio::test]
async fn flowgrid_dev_answers_unknown_routes_and_methods_with_problem_json() {
    let dev = Dev::start(&["agents"], &[]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/api/no-such-thing", dev.url))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = client
        .patch(format!("{}/api/agents", dev.url))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
}

#[tokio::test]
async fn flowgrid_dev_health_shows_the_agents_app_ready_with_its_deep_health() {
    let dev = Dev::start(&["agents"], &[]).await;
    let v = dev.health().await.expect("health");
    let agents = &v["apps"]["agents"];
    assert_eq!(agents["state"], "ready");
    assert_eq!(agents["restarts"], 0);
    assert_eq!(agents["health"]["status"], 200, "{v}");
    let live = reqwest::get(format!("{}/api/health/agents/live", dev.url))
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn the_rate_limit_of_flowgrid_dev_is_per_verified_tenant() {
    let dev = Dev::start(
        &["agents"],
        &[
            ("FLOWGRID_RATE_LIMIT_RPS", "0.2"),
            ("FLOWGRID_RATE_LIMIT_BURST", "3"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let list = |token: &str| {
        client
            .get(format!("{}/api/agents", dev.url))
            .bearer_auth(token)
            .send()
    };
    let busy = dev.token("busy", "viewer");
    let calm = dev.token("calm", "viewer");
    for _ in 0..3 {
        let r = list(&busy).await.expect("list");
        assert_eq!(r.status(), 200);
    }
    let limited = list(&busy).await.expect("list");
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    let other = list(&calm).await.expect("list");
    assert_eq!(other.status(), 200, "another tenant has its own bucket");
    // A forged token does not get a tenant's bucket: it falls into the anonymous one, and the app answers 401.
    let forged = list("e30.e30.sig").await.expect("list");
    assert_eq!(forged.status(), 401);
}

#[tokio::test]
async fn stopping_flowgrid_dev_stops_every_handler_it_started() {
    let dev = Dev::start(&["agents"], &[]).await;
    let v = dev.health().await.expect("health");
    let pids: Vec<u64> = v["apps"]
        .as_object()
        .expect("apps")
        .values()
        .filter_map(|a| a["pid"].as_u64())
        .collect();
    assert!(!pids.is_empty(), "{v}");
    drop(dev);
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        // Gone, or a zombie about to be reaped: never a running handler.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                Instant::now() < deadline,
                "handler {pid} outlived flowgrid dev"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
