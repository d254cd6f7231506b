//! Shared by the in-process tests: the app on a fresh data folder, a local HTTP server that counts
//! requests per idempotency key, agents made directly in the store, a tiny in-memory queue that
//! delivers the app's output messages to its worker function as the host would, and the platform
//! events the functions sent.
#![expect(
    clippy::unwrap_used,
    reason = "a helper that cannot do its part fails the test at once"
)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::Utc;
use flowgrid_domain::config::Config;
use flowgrid_domain::store::{Job, JobId};
use flowgrid_domain::{Agent, AgentInput, TenantId};
use flowgrid_execution::Stores;
use flowgrid_execution::{AppState, Settings, router};
use flowgrid_testkit::{Reply, TestApp};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the test server saw.
#[derive(Default)]
pub struct Seen {
    /// Requests per `Idempotency-Key` (absent key: "").
    pub by_key: HashMap<String, usize>,
    /// Responses fully sent by `/slow`.
    pub slow_completed: usize,
    /// Requests to `/fail` answered 500.
    pub failures: usize,
    /// Per `Idempotency-Key`, the requests `/stall-once` answered (the side effect applied).
    pub applied: HashMap<String, usize>,
}

/// A local HTTP server: `/ok` echoes, `/fail` answers 500, `/slow` waits 30 s, `/gate` waits
/// for [`TestServer::open_gate`], `/stall-once` stalls the first request of each key.
#[derive(Clone)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    pub gate: Arc<Notify>,
}

#[derive(Clone)]
struct ServerState {
    seen: Arc<Mutex<Seen>>,
    gate: Arc<Notify>,
}

fn count(state: &ServerState, headers: &HeaderMap) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    *state.seen.lock().unwrap().by_key.entry(key).or_default() += 1;
}

impl TestServer {
    pub async fn start() -> TestServer {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let gate = Arc::new(Notify::new());
        let state = ServerState {
            seen: seen.clone(),
            gate: gate.clone(),
        };
        let app = Router::new()
            .route(
                "/ok",
                post(|State(s): State<ServerState>, headers: HeaderMap, body: String| async move {
                    count(&s, &headers);
                    axum::Json(json!({"received": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)}))
                })
                .get(|State(s): State<ServerState>, headers: HeaderMap| async move {
                    count(&s, &headers);
                    axum::Json(json!({"ok": true}))
                }),
            )
            .route(
                "/fail",
                get(|State(s): State<ServerState>, headers: HeaderMap| async move {
                    count(&s, &headers);
                    s.seen.lock().unwrap().failures += 1;
                    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
                }),
            )
            .route(
                "/slow",
                get(|State(s): State<ServerState>, headers: HeaderMap| async move {
                    count(&s, &headers);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    s.seen.lock().unwrap().slow_completed += 1;
                    "late"
                }),
            )
            .route(
                "/gate",
                get(|State(s): State<ServerState>, headers: HeaderMap| async move {
                    count(&s, &headers);
                    s.gate.notified().await;
                    axum::Json(json!({"gate": "open"}))
                }),
            )
            .route(
                // The first request of each key stalls (until its caller goes away); later ones
                // with the same key are answered and counted as applied.
                "/stall-once",
                get(|State(s): State<ServerState>, headers: HeaderMap| async move {
                    count(&s, &headers);
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let first = s.seen.lock().unwrap().by_key.get(&key).copied() == Some(1);
                    if first {
                        std::future::pending::<()>().await;
                    }
                    *s.seen.lock().unwrap().applied.entry(key).or_default() += 1;
                    axum::Json(json!({"applied": true}))
                }),
            )
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [("location", "http://169.254.169.254/")], "") }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer { addr, seen, gate }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn calls(&self, key: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .by_key
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// How often `/stall-once` answered (applied) requests with `key`.
    pub fn applied(&self, key: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .applied
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_calls(&self) -> usize {
        self.seen.lock().unwrap().by_key.values().sum()
    }

    pub fn open_gate(&self) {
        self.gate.notify_waiters();
    }
}

/// The Execution app on the test kit's [`TestApp`], with what its tests add: an allow-listed
/// upstream server, the `executions` queue as the host would fill it from the app's outputs, and
/// the platform events it sent.
pub struct ExecApp {
    pub app: TestApp<AppState>,
    pub server: TestServer,
    /// Messages sent to the `executions` queue and not yet delivered.
    pub queue: Mutex<VecDeque<Value>>,
    /// Events sent to the `platform-events` topic (output `events`), in order.
    pub events: Mutex<Vec<Value>>,
}

impl std::ops::Deref for ExecApp {
    type Target = TestApp<AppState>;
    fn deref(&self) -> &TestApp<AppState> {
        &self.app
    }
}

impl ExecApp {
    pub async fn new() -> ExecApp {
        Self::with(&[]).await
    }

    /// An app whose settings are the defaults plus `overrides`; the test server is allow-listed.
    pub async fn with(overrides: &[(&str, &str)]) -> ExecApp {
        let server = TestServer::start().await;
        let builder = TestApp::builder()
            .setting("FLOWGRID_OUTBOUND_ALLOWLIST", &server.addr.to_string())
            .settings(overrides);
        let mut settings = Settings::from_lookup(|name| builder.get(name)).expect("settings");
        settings.cancel_poll = Duration::from_millis(50);
        let app = builder
            .start(
                async |config: &Config| AppState::from_config(config, settings).await,
                router,
            )
            .await;
        ExecApp {
            app,
            server,
            queue: Mutex::new(VecDeque::new()),
            events: Mutex::new(Vec::new()),
        }
    }

    pub fn stores(&self) -> &Stores {
        &self.app.state().stores
    }

    /// Stores an agent of `tenant` with `definition`; returns it.
    pub async fn agent(&self, tenant: &str, definition: Value) -> Agent {
        self.agent_with(
            tenant,
            json!({"name": format!("a-{}", uuid::Uuid::new_v4()), "definition": definition}),
            0,
        )
        .await
    }

    /// Stores an agent of `tenant` from `input` (an `AgentInput`), created `age_secs` ago.
    /// Steps that saving refuses are stored as an agent saved before saving checked steps: its
    /// version 1 without them, its version 2 with them, written straight to the store.
    pub async fn agent_with(&self, tenant: &str, input: Value, age_secs: i64) -> Agent {
        let parsed: AgentInput = serde_json::from_value(input.clone()).expect("agent input");
        let (valid, unchecked_steps) = match parsed.validate() {
            Ok(valid) => (valid, None),
            Err(_) => {
                let mut without = input.clone();
                let steps = std::mem::replace(&mut without["definition"]["steps"], json!([]));
                let parsed: AgentInput = serde_json::from_value(without).expect("agent input");
                (
                    parsed.validate().expect("valid agent but its steps"),
                    Some(steps),
                )
            }
        };
        let agent = Agent::create(
            TenantId::parse(tenant).unwrap(),
            valid,
            "tester",
            Utc::now() - chrono::Duration::seconds(age_secs),
        );
        let agents = &self.stores().agents;
        let stored = agents.insert(&agent).await.expect("insert agent");
        let Some(steps) = unchecked_steps else {
            return stored;
        };
        let mut next = stored.clone();
        next.version += 1;
        next.definition.steps = serde_json::from_value(steps).expect("steps");
        agents
            .replace(&next, &stored.etag)
            .await
            .expect("replace agent")
    }

    /// Invokes a function with an envelope, as the host does; returns (status, answer).
    pub async fn invoke(
        &self,
        function: &str,
        envelope: Value,
        invocation_id: &str,
    ) -> (StatusCode, Value) {
        self.invoke_with(function, envelope, invocation_id, &[])
            .await
    }

    /// [`ExecApp::invoke`] with more headers on the host's request (`traceparent`, ...).
    pub async fn invoke_with(
        &self,
        function: &str,
        envelope: Value,
        invocation_id: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut builder = Request::builder()
            .method("POST")
            .uri(format!("/{function}"))
            .header("content-type", "application/json; charset=utf-8")
            .header("x-azure-functions-invocationid", invocation_id);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Body::from(envelope.to_string())).unwrap();
        let Reply { status, body, .. } = self.app.request(request).await;
        if status.is_success() {
            for out in ["msg", "out"] {
                if let Some(Value::Array(messages)) = body["Outputs"].get(out) {
                    self.queue.lock().unwrap().extend(messages.iter().cloned());
                }
            }
            if let Some(Value::Array(events)) = body["Outputs"].get("events") {
                self.events.lock().unwrap().extend(events.iter().cloned());
            }
        }
        (status, body)
    }

    /// Submits a run through the envelope-mode `SubmitJob` function (as the host calls it);
    /// its message lands in [`ExecApp::queue`]. Returns the `res` output.
    pub async fn submit(
        &self,
        token: &str,
        agent: &Agent,
        input: Value,
        key: Option<&str>,
    ) -> Value {
        let mut headers = json!({"Authorization": [format!("Bearer {token}")], "Content-Type": ["application/json"]});
        if let Some(k) = key {
            headers["Idempotency-Key"] = json!([k]);
        }
        let envelope = json!({"Data": {"req": {
            "Url": format!("http://localhost:7071/api/execute/agent/{}", agent.id),
            "Method": "POST", "Query": {}, "Headers": headers, "Params": {"id": agent.id.to_string()},
            "Body": json!({"input": input}).to_string()}},
            "Metadata": {}});
        let (status, answer) = self
            .invoke("SubmitJob", envelope, &uuid::Uuid::new_v4().to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["Outputs"]["res"].clone()
    }

    /// Delivers one message to the worker function; returns its (status, answer).
    pub async fn deliver(&self, message: &Value) -> (StatusCode, Value) {
        self.deliver_with(message, &[]).await
    }

    /// [`ExecApp::deliver`] with more headers on the host's request.
    pub async fn deliver_with(
        &self,
        message: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let body = base64::engine::general_purpose::STANDARD.encode(message.to_string());
        let envelope = json!({"Data": {"msg": body},
            "Metadata": {"DeliveryCount": "1", "MessageId": format!("\"{}\"", message["jobId"].as_str().unwrap_or(""))}});
        let id = uuid::Uuid::new_v4().to_string();
        self.invoke_with("ExecuteJob", envelope, &id, headers).await
    }

    /// Cancels the job through the envelope-mode `CancelJob` function (as the host calls it);
    /// returns the `res` output.
    pub async fn cancel(&self, token: &str, job_id: &str) -> Value {
        let headers = json!({"Authorization": [format!("Bearer {token}")]});
        let envelope = json!({"Data": {"req": {
            "Url": format!("http://localhost:7071/api/execute/cancel/{job_id}"),
            "Method": "POST", "Query": {}, "Headers": headers, "Params": {"jobId": job_id}}},
            "Metadata": {}});
        let (status, answer) = self
            .invoke("CancelJob", envelope, &uuid::Uuid::new_v4().to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["Outputs"]["res"].clone()
    }

    /// The events sent so far of `type` (`flowgrid.job.finished`, ...) about job `id`.
    pub fn events_of(&self, event_type: &str, id: &str) -> Vec<Value> {
        let subject = format!("jobs/{id}");
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == event_type && e["subject"] == subject.as_str())
            .cloned()
            .collect()
    }

    /// Delivers queued messages until the queue is empty (bounded).
    pub async fn drain(&self) {
        for _ in 0..100 {
            let next = self.queue.lock().unwrap().pop_front();
            let Some(message) = next else { return };
            let (status, answer) = self.deliver(&message).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        panic!("the queue did not drain");
    }

    pub async fn job(&self, tenant: &str, id: &str) -> Job {
        self.stores()
            .jobs
            .get(&TenantId::parse(tenant).unwrap(), JobId::parse(id).unwrap())
            .await
            .unwrap()
    }

    /// Polls the job until `pred` holds (bounded deadline).
    pub async fn wait_job(
        &self,
        tenant: &str,
        id: &str,
        what: &str,
        pred: impl Fn(&Job) -> bool,
    ) -> Job {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.job(tenant, id).await;
            if pred(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The job id in a `res` output or a reply body.
pub fn job_id(res: &Value) -> String {
    res["body"]["jobId"]
        .as_str()
        .or_else(|| res["jobId"].as_str())
        .expect("jobId")
        .to_owned()
}
