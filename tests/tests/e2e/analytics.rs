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

use crate::upstream;

/// An upstream answering `/ok` with 200 and `/fail` with 503.
async fn upstream() -> String {
    let app = Router::new()
        .route("/ok", post(|| async { axum::Json(json!({"ok": true})) }))
        .route("/fail", post(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route(
            "/ping",
            axum::routing::get(|| async { axum::Json(json!({})) }),
        );
    upstream::serve(app).await
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
    // All five finished within 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut jobs = Vec::new();
    for id in &job_ids {
        let left = deadline.saturating_duration_since(Instant::now());
        jobs.push(dev.wait_finished(&admin, id, left).await);
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

/// Every instance's API request counts reach Analytics, each once, although the
/// `FlushApiRequests` timer of a scaled-out app runs on one instance only: Agents runs two
/// instances; a tenant of its own sends 7 requests straight to instance 0 and 11 to instance 1;
/// the app `agents` must show exactly 18 (neither instance's alone can make it), and stay at 18
/// through the later timer runs (each stored row is sent twice, under one id).
/// It waits for minute boundaries by design (about three to four minutes; nextest lets it run
/// 8, .config/nextest.toml).
#[tokio::test]
async fn api_request_counts_of_every_instance_arrive_in_analytics_once() {
    let dev = Dev::start(
        &["agents", "analytics"],
        &[("FLOWGRID_INSTANCES", "agents=2")],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ports: Vec<u64> = loop {
        let health = dev.health().await.expect("health");
        let ready: Vec<u64> = health["apps"]["agents"]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] == "ready")
            .filter_map(|i| i["port"].as_u64())
            .collect();
        if ready.len() == 2 {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "two Agents instances did not get ready: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client = reqwest::Client::new();
    let viewer = dev.token("reqcount", "viewer");
    for (port, n) in ports.iter().zip([7u64, 11]) {
        for _ in 0..n {
            let r = client
                .get(format!("http://127.0.0.1:{port}/api/agents"))
                .bearer_auth(&viewer)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
    let counted = async || {
        let usage = get(
            &client,
            &dev,
            &viewer,
            "/api/analytics/usage/reqcount?granularity=month&groupBy=app",
        )
        .await;
        usage["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["key"] == "agents")
            .map(|p| p["apiRequests"].as_u64().expect("apiRequests"))
            .sum::<u64>()
    };
    // The minute ends, the serve loop writes it, the next timer run sends it: about two
    // minutes at most.
    let deadline = Instant::now() + Duration::from_secs(200);
    loop {
        let n = counted().await;
        assert!(n <= 18, "counted {n} requests of 18");
        if n == 18 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Agents instances' 18 requests did not arrive (counted {n})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The next timer run sends every row again (same ids) and deletes it: wait until the
    // Agents app's store holds none of them, then until Analytics has read the second sends.
    use flowgrid_domain::store::ApiRequestCountStore;
    let store = flowgrid_storage::sqlite::Sqlite::open(&dev.data.path().join("flowgrid.db"))
        .await
        .expect("the apps' database");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = store.pending_counts("agents", 1_000).await.expect("rows");
        if !rows.iter().any(|r| r.count.tenant.as_str() == "reqcount") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rows were not sent a second time and deleted: {rows:?}"
        );
        assert_eq!(counted().await, 18, "a repeated send counted again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(counted().await, 18, "a repeated send counted again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A handler stopped with SIGTERM writes its API request counts, the current minute's
/// included, into its app's store before it exits (a graceful stop loses nothing).
#[tokio::test]
async fn a_handler_stopped_with_sigterm_writes_its_current_minutes_counts() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    use flowgrid_domain::store::ApiRequestCountStore;

    let data = tempfile::tempdir().expect("data dir");
    let mut child = Command::new(flowgrid_testkit::workspace_bin(
        "flowgrid-agents",
        "flowgrid-agents",
    ))
    .current_dir(flowgrid_e2e::workspace_root())
    .env("FLOWGRID_DATA_DIR", data.path())
    .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
    .env("FLOWGRID_LOG", "warn")
    .env_remove("FLOWGRID_JWT_JWKS")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawning flowgrid-agents");
    let stdout = child.stdout.take().expect("stdout");
    let addr = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .expect("the handler prints its address");
    let token = run_cli_with(
        data.path(),
        &["token", "--tenant", "sigterm", "--role", "viewer"],
        &[],
    )
    .lines()
    .last()
    .expect("a token line")
    .trim()
    .to_owned();
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client
            .get(format!("http://{addr}/api/agents"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the handler did not stop within 20 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");

    let store = flowgrid_storage::sqlite::Sqlite::open(&data.path().join("flowgrid.db"))
        .await
        .expect("the app's database");
    let rows = store.pending_counts("agents", 100).await.expect("rows");
    let counted: u64 = rows
        .iter()
        .filter(|r| {
            r.count.tenant.as_str() == "sigterm"
                && r.count.route == "GET /api/agents"
                && r.count.status == 200
        })
        .map(|r| r.count.count)
        .sum();
    assert_eq!(counted, 3, "{rows:?}");
    assert!(rows.iter().all(|r| !r.sent));
}
