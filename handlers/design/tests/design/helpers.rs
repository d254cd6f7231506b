use axum::body::Body;
use axum::http::Request;
use chrono::Utc;
use flowgrid_design::{AppState, Settings, router};
use flowgrid_domain::config::Config;
use flowgrid_domain::{Agent, AgentInput, TenantId};
use flowgrid_testkit::{Reply, TestApp};
use serde_json::{Value, json};

pub async fn start(overrides: &[(&str, &str)]) -> TestApp<AppState> {
    let builder = TestApp::builder().settings(overrides);
    let settings = Settings::from_lookup(|name| builder.get(name)).expect("settings");
    builder
        .start(
            async |config: &Config| AppState::from_config(config, settings).await,
            router,
        )
        .await
}

/// Stores an agent of `tenant` with `definition` (validated as the Agents app does).
pub async fn agent(app: &TestApp<AppState>, tenant: &str, definition: Value) -> Agent {
    let input: AgentInput = serde_json::from_value(
        json!({"name": format!("a-{}", uuid_like()), "definition": definition}),
    )
    .expect("input");
    let agent = Agent::create(
        TenantId::parse(tenant).expect("tenant"),
        input.validate().expect("valid agent"),
        "tester",
        Utc::now(),
    );
    app.state()
        .stores
        .agents
        .insert(&agent)
        .await
        .expect("insert")
}

fn uuid_like() -> String {
    format!("{:x}", Utc::now().timestamp_nanos_opt().unwrap_or_default())
}

/// A PNG with `text` in a `tEXt` chunk (as drawing tools write a diagram's labels).
pub fn png_with_text(text: &str) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&[0, 0, 0, 0]); // CRC (not checked here)
    };
    chunk(&mut png, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
    let mut text_data = b"Description\0".to_vec();
    text_data.extend_from_slice(text.as_bytes());
    chunk(&mut png, b"tEXt", &text_data);
    chunk(&mut png, b"IEND", &[]);
    png
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends `body` as `multipart/form-data` with the parts given.
pub async fn post_multipart(
    app: &TestApp<AppState>,
    uri: &str,
    token: &str,
    parts: &[(&str, &[u8])],
) -> Reply {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(format!("--BOUNDARY\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--BOUNDARY--\r\n");
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "multipart/form-data; boundary=BOUNDARY")
        .body(Body::from(body))
        .expect("request");
    app.request(request).await
}

/// Invokes the envelope-mode `CompileAgent` as the host does; returns (status, answer).
pub async fn invoke_compile(app: &TestApp<AppState>, token: &str, agent_id: &str) -> (u16, Value) {
    let envelope = json!({"Data": {"req": {
        "Url": format!("http://localhost:7071/api/design/compile/{agent_id}"),
        "Method": "POST", "Query": {}, "Headers": {"Authorization": [format!("Bearer {token}")]},
        "Params": {"id": agent_id}}}, "Metadata": {}});
    let request = Request::builder()
        .method("POST")
        .uri("/CompileAgent")
        .header("content-type", "application/json")
        .header("x-azure-functions-invocationid", "inv-1")
        .body(Body::from(envelope.to_string()))
        .expect("request");
    let reply = app.request(request).await;
    (reply.status.as_u16(), reply.body)
}

/// Invokes the envelope-mode function `function` (`POST route` with the JSON `body`) as the
/// host does; returns (status of `res`, `res` body, the `events` output: the published
/// platform events' `data`).
pub async fn invoke(
    app: &TestApp<AppState>,
    token: &str,
    function: &str,
    route: &str,
    body: Value,
) -> (u16, Value, Vec<Value>) {
    let envelope = json!({"Data": {"req": {
        "Url": format!("http://localhost:7071/api/{route}"),
        "Method": "POST", "Query": {},
        "Headers": {"Authorization": [format!("Bearer {token}")], "Content-Type": ["application/json"]},
        "Body": body.to_string(),
        "Params": {}}}, "Metadata": {}});
    let request = Request::builder()
        .method("POST")
        .uri(format!("/{function}"))
        .header("content-type", "application/json")
        .header("x-azure-functions-invocationid", "inv-1")
        .body(Body::from(envelope.to_string()))
        .expect("request");
    let reply = app.request(request).await;
    assert_eq!(reply.status.as_u16(), 200, "the invocation: {}", reply.text);
    let outputs = &reply.body["Outputs"];
    let events = outputs["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["data"].clone())
        .collect();
    (
        outputs["res"]["statusCode"]
            .as_u64()
            .or_else(|| outputs["res"]["status"].as_u64())
            .unwrap_or(0) as u16,
        outputs["res"]["body"].clone(),
        events,
    )
}

/// The llmock requests recorded so far.
pub async fn llmock_requests(mock: &flowgrid_testkit::ai_fakes::Fake) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{}/_llmock/requests", mock.url()))
        .await
        .expect("llmock")
        .json()
        .await
        .expect("json");
    v["requests"].as_array().cloned().unwrap_or_default()
}

/// Scripts llmock's next answers (an empty list: forgets what is scripted).
pub async fn llmock_scenario(mock: &flowgrid_testkit::ai_fakes::Fake, behaviors: Value) {
    if behaviors.as_array().is_some_and(Vec::is_empty) {
        let r = reqwest::Client::new()
            .delete(format!("{}/_llmock/scenario", mock.url()))
            .send()
            .await
            .expect("llmock scenario");
        assert!(r.status().is_success(), "scenario: {}", r.status());
        return;
    }
    let r = reqwest::Client::new()
        .post(format!("{}/_llmock/scenario", mock.url()))
        .json(&json!({"behaviors": behaviors}))
        .send()
        .await
        .expect("llmock scenario");
    assert!(r.status().is_success(), "scenario: {}", r.status());
}
