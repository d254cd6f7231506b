//! Every source's events counted where the usage route shows them: Design's `llm.call`
//! (provider, model, tokens by kind, cost, latency), the per-minute API request counts every
//! app sends (`flowgrid.api.requests`: real requests, written into the app's store and sent by
//! its own `FlushApiRequests` timer), and
//! the Agents app's `agent.*` events; each redelivered once more changes nothing.

use chrono::{Duration, Utc};
use flowgrid_domain::events::{CloudEvent, PlatformEvent, TokenUsage};
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_http::auth::Role;
use serde_json::{Value, json};

use crate::{deliver, invoke, start, tick};

fn acme() -> TenantId {
    TenantId::parse("acme").expect("tenant")
}

fn llm_call(call: &str, agent: Option<AgentId>, model: &str, latency_ms: u64) -> Value {
    CloudEvent::new(
        "design",
        &acme(),
        Utc::now() - Duration::minutes(2),
        PlatformEvent::LlmCall {
            call_id: call.into(),
            agent_id: agent,
            provider: "anthropic".into(),
            model: model.into(),
            tokens: TokenUsage {
                input: 1_000,
                cached_input: 200,
                output: 300,
                reasoning: 40,
            },
            cost_micro_usd: 4_321,
            latency_ms,
        },
    )
    .to_json()
    .expect("json")
}

type App = flowgrid_testkit::TestApp<flowgrid_analytics::AppState>;

async fn usage(app: &App, query: &str) -> Value {
    usage_of(app, "acme", query).await
}

async fn usage_of(app: &App, tenant: &str, query: &str) -> Value {
    let token = app.token(tenant, Role::Viewer);
    let r = app
        .get(
            &format!("/api/analytics/usage/{tenant}?granularity=month{query}"),
            &token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn keyed<'a>(usage: &'a Value, key: &str) -> &'a Value {
    usage["series"]
        .as_array()
        .expect("series")
        .iter()
        .find(|p| p["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {usage}"))
}

#[tokio::test]
async fn design_llm_calls_count_tokens_by_kind_cost_and_latency_under_model_app_and_agent() {
    let app = start().await;
    let agent = AgentId::new();
    let events = [
        llm_call("c1", Some(agent), "claude-sonnet-4", 800),
        llm_call("c2", None, "claude-sonnet-4", 1_500),
        llm_call("c3", None, "claude-haiku-4", 90),
    ];
    for e in &events {
        deliver(&app, e).await;
    }
    tick(&app).await;
    let first = usage(&app, "").await;
    let t = &first["totals"];
    assert_eq!(t["llmCalls"], 3);
    assert_eq!(
        t["tokens"],
        json!({"input": 3_000, "cachedInput": 600, "output": 900, "reasoning": 120, "total": 4_620})
    );
    assert_eq!(t["costMicroUsd"], 3 * 4_321);
    assert_eq!(t["runs"], 0, "calls outside jobs are no runs");
    assert_eq!(t["latencyMs"]["p50"], 1_000);
    assert_eq!(t["latencyMs"]["p99"], 2_000);

    let by_model = usage(&app, "&groupBy=model").await;
    assert_eq!(keyed(&by_model, "anthropic/claude-sonnet-4")["llmCalls"], 2);
    assert_eq!(
        keyed(&by_model, "anthropic/claude-haiku-4")["costMicroUsd"],
        4_321
    );
    let by_app = usage(&app, "&groupBy=app").await;
    assert_eq!(keyed(&by_app, "design")["llmCalls"], 3);
    let by_agent = usage(&app, "&groupBy=agent").await;
    assert_eq!(keyed(&by_agent, &agent.to_string())["llmCalls"], 1);

    for e in &events {
        deliver(&app, e).await;
    }
    tick(&app).await;
    assert_eq!(usage(&app, "").await["totals"], first["totals"]);
}

#[tokio::test]
async fn api_requests_counted_by_the_kit_are_rolled_up_per_app_and_per_route_and_status() {
    let app = start().await;
    // A tenant of its own: the kit's counter is per process.
    let viewer = app.token("apicount", Role::Viewer);
    // Real requests through the app's router: three answered 200, two 404 (another tenant's
    // id), one 401 (no tenant: not counted).
    for _ in 0..3 {
        let r = app.get("/api/analytics/dashboard", &viewer).await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        let r = app.get("/api/analytics/usage/acme", &viewer).await;
        assert_eq!(r.status, 404);
    }
    let r = app.get("/api/analytics/dashboard", "not-a-token").await;
    assert_eq!(r.status, 401);

    // The serve loop's write once the minute is over (here: as if a minute later) into the
    // app's own store, then the app's `FlushApiRequests` timer as the host invokes it: what it
    // sends is what Analytics receives (two instances' counts are two events; a second
    // instance here reports the same counts again under its own id).
    let later = Utc::now() + Duration::minutes(1);
    flowgrid_http::api_requests::persist_registered(later, false).await;
    let timer = json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}});
    let reply = invoke(&app, "FlushApiRequests", timer.clone()).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let events: Vec<CloudEvent<PlatformEvent>> = reply.body["Outputs"]["events"]
        .as_array()
        .expect("the timer sends events")
        .iter()
        .map(|e| CloudEvent::from_slice(&serde_json::to_vec(e).expect("json")).expect("an event"))
        .filter(|e: &CloudEvent<PlatformEvent>| e.tenantid == "apicount")
        .collect();
    let mut sent: Vec<Value> = events.iter().map(|e| e.to_json().expect("json")).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    // The next run sends the same events again (same ids) and deletes them; the one after
    // sends nothing.
    let again = invoke(&app, "FlushApiRequests", timer.clone()).await;
    let again_ids: Vec<&str> = again.body["Outputs"]["events"]
        .as_array()
        .expect("the second run sends them again")
        .iter()
        .filter(|e| e["tenantid"] == "apicount")
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let mut first_ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let mut again_sorted = again_ids.clone();
    first_ids.sort();
    again_sorted.sort();
    assert_eq!(again_sorted, first_ids);
    let third = invoke(&app, "FlushApiRequests", timer).await;
    assert!(
        third.body["Outputs"]["events"]
            .as_array()
            .is_none_or(|a| a.iter().all(|e| e["tenantid"] != "apicount")),
        "{}",
        third.text
    );
    for e in events {
        let PlatformEvent::ApiRequests {
            app: a,
            route,
            status,
            count,
            minute,
            ..
        } = e.data.clone()
        else {
            panic!("{e:?}")
        };
        let second = CloudEvent::new(
            "analytics",
            &TenantId::parse("apicount").expect("tenant"),
            minute,
            PlatformEvent::ApiRequests {
                app: a,
                instance: "i2".into(),
                minute,
                route,
                status,
                count,
            },
        );
        sent.push(second.to_json().expect("json"));
    }
    for e in &sent {
        deliver(&app, e).await;
    }
    tick(&app).await;
    let by_route = usage_of(&app, "apicount", "&groupBy=route").await;
    assert_eq!(
        keyed(&by_route, "analytics GET /api/analytics/dashboard 200")["apiRequests"],
        6
    );
    assert_eq!(
        keyed(
            &by_route,
            "analytics GET /api/analytics/usage/{tenantId} 404"
        )["apiRequests"],
        4
    );
    let by_app = usage_of(&app, "apicount", "&groupBy=app").await;
    assert_eq!(keyed(&by_app, "analytics")["apiRequests"], 10);
    assert_eq!(keyed(&by_app, "analytics")["apiErrors"], 0);
    let totals = usage_of(&app, "apicount", "").await["totals"].clone();
    assert_eq!(totals["apiRequests"], 10);

    // Delivered again: the same.
    for e in &sent {
        deliver(&app, e).await;
    }
    tick(&app).await;
    assert_eq!(usage_of(&app, "apicount", "").await["totals"], totals);
}

#[tokio::test]
async fn agent_events_count_as_events_of_the_agents_app_and_the_agent() {
    let app = start().await;
    let agent = AgentId::new();
    let at = Utc::now() - Duration::minutes(3);
    let events: Vec<Value> = [
        PlatformEvent::AgentCreated {
            agent_id: agent,
            version: 1,
        },
        PlatformEvent::AgentUpdated {
            agent_id: agent,
            version: 2,
        },
        PlatformEvent::AgentDeleted { agent_id: agent },
    ]
    .into_iter()
    .map(|d| {
        CloudEvent::new("agents", &acme(), at, d)
            .to_json()
            .expect("json")
    })
    .collect();
    for e in events.iter().chain(events.iter()) {
        deliver(&app, e).await;
    }
    tick(&app).await;
    let by_app = usage(&app, "&groupBy=app").await;
    assert_eq!(keyed(&by_app, "agents")["events"], 3);
    let by_agent = usage(&app, "&groupBy=agent").await;
    assert_eq!(keyed(&by_agent, &agent.to_string())["events"], 3);
    assert_eq!(keyed(&by_agent, &agent.to_string())["runs"], 0);
}
