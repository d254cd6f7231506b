//! "The numbers must add up": jobs with `llm` (offline provider) and `integration` steps run
//! through `flowgrid dev`; Execution publishes their platform events to the topic
//! `platform-events`, Analytics ingests them from its subscription and its timer rolls them up.
//! The usage and agent-metrics routes must equal, exactly, the sums of the job records (runs,
//! failures, tokens by kind, cost); delivering every event once more changes nothing. The
//! Agents app's `agent.created` events and tracked events' numbers arrive the same way. The
//! same test runs on the embedded store and on Cosmos DB (the emulator), where it also reads
//! the dashboard.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use flowgrid_domain::events::{CloudEvent, PlatformEvent};
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_e2e::Dev;
use flowgrid_testkit::run_cli_with;
use serde_json::{Value, json};

/// An upstream answering `/ok` with 200 and `/fail` with 503.
async fn upstream() -> String {
    let app = Router::new()
        .route("/ok", post(|| async { axum::Json(json!({"ok": true})) }))
        .route("/fail", post(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route(
            "/ping",
            axum::routing::get(|| async { axum::Json(json!({})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn send(client: &reqwest::Client, dev: &Dev, token: &str, path: &str, body: Value) -> Value {
    let r = client
        .post(format!("{}{path}", dev.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn get(client: &reqwest::Client, dev: &Dev, token: &str, path: &str) -> Value {
    client
        .get(format!("{}{path}", dev.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// What the job records add up to.
#[derive(Debug, Default, PartialEq)]
struct Sums {
    runs: u64,
    failures: u64,
    input: u64,
    cached_input: u64,
    output: u64,
    reasoning: u64,
    cost: u64,
}

fn sums(jobs: &[Value]) -> Sums {
    let mut s = Sums::default();
    for job in jobs {
        s.runs += 1;
        if matches!(job["status"].as_str(), Some("failed" | "timed_out")) {
            s.failures += 1;
        }
        for step in job["steps"].as_array().expect("steps") {
            let llm = &step["llm"];
            if llm.is_object() {
                let n = |k: &str| llm["tokens"][k].as_u64().unwrap_or(0);
                s.input += n("input");
                s.cached_input += n("cachedInput");
                s.output += n("output");
                s.reasoning += n("reasoning");
                s.cost += llm["costMicroUsd"].as_u64().unwrap_or(0);
            }
        }
    }
    s
}

fn sums_of_view(v: &Value) -> Sums {
    let n = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(u64::MAX);
    Sums {
        runs: n("/runs"),
        failures: n("/failures"),
        input: n("/tokens/input"),
        cached_input: n("/tokens/cachedInput"),
        output: n("/tokens/output"),
        reasoning: n("/tokens/reasoning"),
        cost: n("/costMicroUsd"),
    }
}

#[tokio::test]
async fn usage_and_metrics_equal_the_sums_of_the_job_records_and_redelivery_changes_nothing() {
    numbers_add_up(&[]).await;
}

#[tokio::test]
async fn on_cosmos_ingestion_usage_metrics_and_dashboard_add_up_the_same() {
    let cosmos = flowgrid_testkit::emulators::cosmos();
    let endpoint = cosmos.endpoint();
    let database = format!(
        "an{:x}{:x}",
        std::process::id(),
        flowgrid_testkit::free_port()
    );
    let dev = numbers_add_up(&[
        ("FLOWGRID_STORE", "cosmos"),
        ("COSMOS_ENDPOINT", &endpoint),
        ("COSMOS_KEY", flowgrid_storage::cosmos::EMULATOR_KEY),
        ("COSMOS_DATABASE", &database),
    ])
    .await;
    assert!(
        !dev.data.path().join("flowgrid.db").exists(),
        "nothing was written to the embedded database"
    );
}

/// Runs the jobs through `flowgrid dev` with `settings` and checks the numbers; answers the
/// host (still running) for checks of its own.
async fn numbers_add_up(settings: &[(&str, &str)]) -> Dev {
    let addr = upstream().await;
    let mut all = vec![
        ("FLOWGRID_OUTBOUND_ALLOWLIST", addr.as_str()),
        ("FLOWGRID_INTEGRATION_MAX_ATTEMPTS", "1"),
    ];
    all.extend_from_slice(settings);
    let dev = Dev::start(&["agents", "execution", "integrations", "analytics"], &all).await;
    let client = reqwest::Client::new();
    let admin = dev.token("acme", "admin");
    send(
        &client,
        &dev,
        &admin,
        "/api/integrations/connections",
        json!({"name": "hook", "kind": "http", "auth": "bearer",
               "config": {"baseUrl": format!("http://{addr}"), "testPath": "/ping"}, "secret": "s3cret-token-1"}),
    )
    .await;
    let agent = |name: &str, path: &str| {
        json!({"name": name, "definition": {"instructions": "triage", "integrations": ["hook"], "steps": [
            {"id": "ask", "kind": "llm", "prompt": "Summarise the ticket about {{ input.topic }} please"},
            {"id": "notify", "kind": "integration", "connection": "hook", "action": "request",
             "input": {"method": "POST", "path": path, "body": {"topic": "{{ input.topic }}"}}}
        ]}})
    };
    let good = send(&client, &dev, &admin, "/api/agents", agent("good", "/ok")).await;
    let bad = send(&client, &dev, &admin, "/api/agents", agent("bad", "/fail")).await;
    let good = good["id"].as_str().expect("id").to_owned();
    let bad = bad["id"].as_str().expect("id").to_owned();

    let mut job_ids = Vec::new();
    for (i, agent) in [&good, &good, &bad, &good, &bad].into_iter().enumerate() {
        let topic = "printers ".repeat(i + 1);
        let submitted = send(
            &client,
            &dev,
            &admin,
            &format!("/api/execute/agent/{agent}"),
            json!({"input": {"topic": topic}}),
        )
        .await;
        job_ids.push(submitted["jobId"].as_str().expect("job id").to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut jobs = Vec::new();
    for id in &job_ids {
        loop {
            let job = get(&client, &dev, &admin, &format!("/api/execute/jobs/{id}")).await;
            if job["finishedAt"].is_string() {
                jobs.push(job);
                break;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let expected = sums(&jobs);
    assert_eq!((expected.runs, expected.failures), (5, 2), "{jobs:?}");
    assert!(expected.input > 0 && expected.output > 0, "{expected:?}");

    // Analytics catches up by its subscription and its timer (every 5 s).
    let usage = async || {
        get(
            &client,
            &dev,
            &admin,
            "/api/analytics/usage/acme?granularity=month",
        )
        .await
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let u = usage().await;
        if sums_of_view(&u["totals"]) == expected {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "usage never added up to {expected:?}: {u}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seen["totals"]["integrationCalls"], 5, "{seen}");
    assert_eq!(seen["totals"]["integrationFailures"], 2, "{seen}");
    assert_eq!(seen["totals"]["llmCalls"], 5, "{seen}");

    // The Agents app's writes sent `flowgrid.agent.created` (two agents), and a tracked
    // event's numbers are summed.
    let tracked = client
        .post(format!("{}/api/analytics/track", dev.url))
        .bearer_auth(&admin)
        .json(&json!({"events": [
            {"type": "feedback", "timestamp": chrono::Utc::now(), "id": "f1", "agentId": good, "numbers": {"score": 4}},
            {"type": "feedback", "timestamp": chrono::Utc::now(), "id": "f2", "agentId": good, "numbers": {"score": 5}},
        ]}))
        .send()
        .await
        .expect("track");
    assert_eq!(tracked.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let by_app = get(
            &client,
            &dev,
            &admin,
            "/api/analytics/usage/acme?granularity=month&groupBy=app",
        )
        .await;
        let events_of = |app: &str| {
            by_app["series"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["key"] == app)
                .map(|p| p["events"].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        let feedback = &by_app["totals"]["custom"]["feedback"];
        if events_of("agents") == 2 && feedback["events"] == 2 {
            assert_eq!(
                feedback["numbers"]["score"],
                json!({"count": 2, "sum": 9.0, "min": 4.0, "max": 5.0})
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agents' events and the tracked numbers never showed: {by_app}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = usage().await;
    assert_eq!(sums_of_view(&seen["totals"]), expected);

    // The dashboard reads the same rollups.
    let dashboard = get(&client, &dev, &admin, "/api/analytics/dashboard").await;
    assert_eq!(
        sums_of_view(&dashboard["last30Days"]),
        expected,
        "{dashboard}"
    );

    // Per agent: the agent's own jobs.
    for agent in [&good, &bad] {
        let mine: Vec<Value> = jobs
            .iter()
            .filter(|j| j["agentId"] == agent.as_str())
            .cloned()
            .collect();
        let m = get(
            &client,
            &dev,
            &admin,
            &format!("/api/analytics/agents/{agent}/metrics"),
        )
        .await;
        assert_eq!(sums_of_view(&m), sums(&mine), "{m}");
    }

    // Every event once more, straight onto the topic (ids are the facts': job submitted,
    // started per claim, finished): nothing changes.
    let tenant = TenantId::parse("acme").expect("tenant");
    let mut resent = 0;
    for job in &jobs {
        let agent_id = AgentId::parse(job["agentId"].as_str().expect("agent")).expect("agent id");
        let job_id = job["id"].as_str().expect("id").to_owned();
        let at = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(job[k].as_str().expect("time"))
                .expect("time")
                .with_timezone(&chrono::Utc)
        };
        let mut events = vec![CloudEvent::new(
            "execution",
            &tenant,
            at("createdAt"),
            PlatformEvent::JobSubmitted {
                job_id: job_id.clone(),
                agent_id,
                trigger: "manual".into(),
            },
        )];
        for attempt in 1..=job["attempts"].as_u64().expect("attempts") as u32 {
            events.push(CloudEvent::new(
                "execution",
                &tenant,
                at("createdAt"),
                PlatformEvent::JobStarted {
                    job_id: job_id.clone(),
                    agent_id,
                    attempt,
                },
            ));
        }
        events.push(CloudEvent::new(
            "execution",
            &tenant,
            at("finishedAt"),
            PlatformEvent::JobFinished {
                job_id: job_id.clone(),
                agent_id,
                status: serde_json::from_value(job["status"].clone()).expect("status"),
                duration_ms: 1,
                steps: Vec::new(),
            },
        ));
        for e in events {
            let body = e.to_json().expect("json").to_string();
            run_cli_with(
                dev.data.path(),
                &["queue", "send", "platform-events", &body, "--topic"],
                &[],
            );
            resent += 1;
        }
    }
    assert!(resent >= 15);
    // Wait until the subscription is drained and a timer tick has passed, then compare.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = run_cli_with(dev.data.path(), &["queue", "list"], &[]);
        let line = list
            .lines()
            .find(|l| l.contains("platform-events") && l.contains("analytics"))
            .unwrap_or_default()
            .to_owned();
        // ENTITY ACTIVE SCHEDULED DEAD-LETTER
        let active: Option<u64> = line.split_whitespace().nth(1).and_then(|n| n.parse().ok());
        if active == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription did not drain: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    // The test's own reads of its usage go on being counted (apiRequests, per minute): every
    // other number must stay as it was.
    let after = without_request_counts(usage().await);
    let seen = without_request_counts(seen);
    assert_eq!(
        after["totals"], seen["totals"],
        "a redelivery changed the numbers"
    );
    assert_eq!(after["series"], seen["series"]);
    dev
}

/// A usage answer without `apiRequests`/`apiErrors` in its totals and series.
fn without_request_counts(mut usage: Value) -> Value {
    let strip = |m: &mut Value| {
        if let Some(m) = m.as_object_mut() {
            m.remove("apiRequests");
            m.remove("apiErrors");
        }
    };
    strip(&mut usage["totals"]);
    if let Some(series) = usage["series"].as_array_mut() {
        series.iter_mut().for_each(strip);
    }
    usage
}
