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
