//! Platform events in, numbers out: once per event id, summed exactly, tenant by tenant.

use chrono::{Duration, Utc};
use flowgrid_domain::AgentId;
use flowgrid_domain::job::JobStatus;
use flowgrid_http::auth::Role;
use serde_json::Value;

use crate::{deliver, job_finished, start, tick};

#[tokio::test]
async fn usage_equals_the_sum_of_the_events_and_a_redelivery_changes_nothing() {
    let app = start().await;
    let (a, b) = (AgentId::new(), AgentId::new());
    let now = Utc::now();
    let events = vec![
        job_finished(
            "acme",
            a,
            "j1",
            now - Duration::minutes(5),
            JobStatus::Succeeded,
            100,
            1_500,
        ),
        job_finished(
            "acme",
            a,
            "j2",
            now - Duration::days(2),
            JobStatus::Failed,
            40,
            600,
        ),
        job_finished(
            "acme",
            b,
            "j3",
            now - Duration::days(3),
            JobStatus::Succeeded,
            10,
            7,
        ),
    ];
    for e in &events {
        deliver(&app, e).await;
    }
    tick(&app).await;
    let token = app.token("acme", Role::Viewer);
    let first = usage(&app, &token).await;
    let t = &first["totals"];
    assert_eq!(t["runs"], 3);
    assert_eq!(t["failures"], 1);
    assert_eq!(t["tokens"]["input"], 150);
    assert_eq!(t["tokens"]["output"], 50 + 20 + 5);
    assert_eq!(t["costMicroUsd"], 2_107);
    assert_eq!(t["integrationCalls"], 3);
    assert_eq!(t["integrationFailures"], 1);
    let day_runs: u64 = first["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| p["runs"].as_u64().expect("runs"))
        .sum();
    assert_eq!(day_runs, 3);

    // Every event delivered once more: the same numbers.
    for e in &events {
        let reply = deliver(&app, e).await;
        assert!(reply.text.contains("duplicate"), "{}", reply.text);
    }
    tick(&app).await;
    let second = usage(&app, &token).await;
    assert_eq!(second["totals"], first["totals"]);
    assert_eq!(second["series"], first["series"]);

    // Grouped by agent and by model.
    let by_agent = app
        .get(
            "/api/analytics/usage/acme?granularity=month&groupBy=agent",
            &token,
        )
        .await;
    assert_eq!(by_agent.status, 200, "{}", by_agent.text);
    let cost_of = |key: &str| -> u64 {
        by_agent.body["series"]
            .as_array()
            .expect("series")
            .iter()
            .filter(|p| p["key"] == key)
            .map(|p| p["costMicroUsd"].as_u64().expect("cost"))
            .sum()
    };
    assert_eq!(cost_of(&a.to_string()), 2_100);
    assert_eq!(cost_of(&b.to_string()), 7);
    let by_model = app
        .get(
            "/api/analytics/usage/acme?granularity=month&groupBy=model",
            &token,
        )
        .await;
    let models: Vec<&Value> = by_model.body["series"]
        .as_array()
        .expect("series")
        .iter()
        .collect();
    assert!(models.iter().all(|p| p["key"] == "openai/gpt-4o-mini"));
    assert_eq!(
        models
            .iter()
            .map(|p| p["llmCalls"].as_u64().expect("calls"))
            .sum::<u64>(),
        3
    );

    // The agent's metrics: runs, success rate, cost, per day.
    let m = app
        .get(&format!("/api/analytics/agents/{a}/metrics"), &token)
        .await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(m.body["runs"], 2);
    assert_eq!(m.body["successRate"], 0.5);
    assert_eq!(m.body["costMicroUsd"], 2_100);
    assert_eq!(m.body["durationMs"]["p50"], 2_000);
    assert_eq!(m.body["days"].as_array().expect("days").len(), 2);

    // The dashboard: today, 7 and 30 days, top agents by cost, the budget of the free plan.
    let d = app.get("/api/analytics/dashboard", &token).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["today"]["runs"], 1);
    assert_eq!(d.body["last7Days"]["runs"], 3);
    assert_eq!(d.body["last30Days"]["costMicroUsd"], 2_107);
    assert_eq!(d.body["topAgentsByCost"][0]["agentId"], a.to_string());
    assert_eq!(d.body["budget"]["plan"], "free");
    assert_eq!(d.body["budget"]["budgetMicroUsd"], 5_000_000);
}

#[tokio::test]
async fn a_late_event_reopens_its_day() {
    let app = start().await;
    let agent = AgentId::new();
    let at = Utc::now() - Duration::days(4);
    deliver(
        &app,
        &job_finished("acme", agent, "j1", at, JobStatus::Succeeded, 1, 10),
    )
    .await;
    tick(&app).await;
    deliver(
        &app,
        &job_finished("acme", agent, "late", at, JobStatus::Failed, 1, 5),
    )
    .await;
    tick(&app).await;
    let token = app.token("acme", Role::Viewer);
    let r = app
        .get("/api/analytics/usage/acme?granularity=month", &token)
        .await;
    assert_eq!(r.body["totals"]["runs"], 2);
    assert_eq!(r.body["totals"]["failures"], 1);
    assert_eq!(r.body["totals"]["costMicroUsd"], 15);
}

#[tokio::test]
async fn another_tenants_usage_and_agents_are_not_found_and_nothing_leaks() {
    let app = start().await;
    let agent = AgentId::new();
    deliver(
        &app,
        &job_finished("acme", agent, "j1", Utc::now(), JobStatus::Succeeded, 9, 99),
    )
    .await;
    tick(&app).await;
    let other = app.token("globex", Role::Owner);
    let r = app.get("/api/analytics/usage/acme", &other).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = app
        .get(&format!("/api/analytics/agents/{agent}/metrics"), &other)
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let d = app.get("/api/analytics/dashboard", &other).await;
    assert_eq!(d.body["last30Days"]["runs"], 0);
    let own = app.get("/api/analytics/usage/globex", &other).await;
    assert_eq!(own.body["totals"]["costMicroUsd"], 0);
}

#[tokio::test]
async fn bad_usage_parameters_are_422_naming_the_parameter() {
    let app = start().await;
    let token = app.token("acme", Role::Viewer);
    for (query, field) in [
        ("granularity=week", "granularity"),
        ("groupBy=color", "groupBy"),
        ("from=yesterday", "from"),
        (
            "granularity=hour&from=2026-01-01T00:00:00Z&to=2026-06-01T00:00:00Z",
            "from",
        ),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let r = app
            .get(&format!("/api/analytics/usage/acme?{query}"), &token)
            .await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert_eq!(r.body["errors"][0]["field"], field, "{query}: {}", r.text);
    }
    let r = app.get("/api/analytics/usage/acme", "not-a-token").await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_message_that_is_not_an_event_is_completed_unstored() {
    let app = start().await;
    let reply = deliver(&app, &serde_json::json!({"hello": "world"})).await;
    assert!(reply.text.contains("not a valid event"), "{}", reply.text);
}

async fn usage(
    app: &flowgrid_testkit::TestApp<flowgrid_analytics::AppState>,
    token: &str,
) -> Value {
    let r = app
        .get("/api/analytics/usage/acme?granularity=day", token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}
