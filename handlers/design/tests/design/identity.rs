//! Azure OpenAI with the Function App's managed identity, in the real `flowgrid-design` process
//! (the token comes from the App Service / Functions identity endpoint that the platform names in
//! `IDENTITY_ENDPOINT` and guards with `IDENTITY_HEADER`; the `azure_identity` crate reads both
//! from the process environment, so the test runs the executable with them set).
//!
//! The identity endpoint is a fake written here, the last resort: no package ships one. It is
//! built from Microsoft's documented REST protocol for App Service and Functions managed
//! identities: `GET {IDENTITY_ENDPOINT}?resource=…&api-version=2019-08-01` with the
//! `X-IDENTITY-HEADER` header, answered with `access_token`, `expires_on` (Unix seconds as a
//! string), `resource`, `token_type` and `client_id`. Azure OpenAI itself is steady serving
//! Azure's own description, behind a recording pass-through that notes each request's headers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flowgrid_http::auth::Role;
use flowgrid_testkit::{DataDir, Handler, ai_fakes};
use serde_json::{Value, json};

const SECRET_HEADER: &str = "identity-header-secret-never-shown";

/// What the fake identity endpoint answers.
#[derive(Clone, Copy)]
enum Issue {
    /// Tokens valid for this many seconds.
    ValidFor(i64),
    /// A 400, as the endpoint answers when no identity is assigned.
    NoIdentity,
}

/// A token request: its query and its `X-IDENTITY-HEADER`.
type Asked = (Value, Option<String>);
/// A request to Azure OpenAI: its URI, `Authorization` and `api-key` headers.
type Seen = (String, Option<String>, Option<String>);

#[derive(Clone)]
struct Identity {
    issue: Issue,
    asked: Arc<Mutex<Vec<Asked>>>,
}

async fn token(
    State(id): State<Identity>,
    Query(query): Query<serde_json::Map<String, Value>>,
    headers: HeaderMap,
) -> Response {
    let header = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let n = {
        let mut asked = id.asked.lock().unwrap_or_else(|p| p.into_inner());
        asked.push((Value::Object(query.clone()), header.clone()));
        asked.len()
    };
    if header.as_deref() != Some(SECRET_HEADER) {
        return (StatusCode::UNAUTHORIZED, "missing X-IDENTITY-HEADER").into_response();
    }
    match id.issue {
        Issue::NoIdentity => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"statusCode": 400, "message": "No managed identity is assigned to this app.", "correlationId": "7f2b2a38-0c1e-4a34-9a4f-1b8a7c0d1e2f"})),
        )
            .into_response(),
        Issue::ValidFor(secs) => {
            let expires_on = chrono::Utc::now().timestamp() + secs;
            axum::Json(json!({
                "access_token": format!("entra-token-{n}"),
                "expires_on": expires_on.to_string(),
                "resource": query.get("resource").cloned().unwrap_or(Value::Null),
                "token_type": "Bearer",
                "client_id": "5e29463d-71da-4fe0-8e69-999b57db23b0",
            }))
            .into_response()
        }
    }
}

/// A pass-through to steady that notes each request's path and auth headers.
#[derive(Clone)]
struct Recorder {
    upstream: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn pass(
    State(r): State<Recorder>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    r.seen.lock().unwrap_or_else(|p| p.into_inner()).push((
        uri.to_string(),
        get("authorization"),
        get("api-key"),
    ));
    let answer = reqwest::Client::new()
        .request(method, format!("{}{uri}", r.upstream))
        .header("content-type", "application/json")
        .header("authorization", get("authorization").unwrap_or_default())
        .body(body)
        .send()
        .await
        .expect("steady");
    let status = StatusCode::from_u16(answer.status().as_u16()).expect("status");
    let bytes = answer.bytes().await.expect("steady's body");
    (status, [("content-type", "application/json")], bytes).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

struct Setup {
    _dir: DataDir,
    _steady: ai_fakes::Fake,
    handler: Handler,
    token: String,
    identity: Identity,
    recorder: Recorder,
}

async fn setup(issue: Issue) -> Setup {
    let steady = ai_fakes::steady_azure_deployments();
    let identity = Identity {
        issue,
        asked: Arc::default(),
    };
    let identity_url = serve(
        Router::new()
            .route("/msi/token", axum::routing::get(token))
            .with_state(identity.clone()),
    )
    .await;
    let recorder = Recorder {
        upstream: steady.url(),
        seen: Arc::default(),
    };
    let azure = serve(Router::new().fallback(pass).with_state(recorder.clone())).await;
    let dir = DataDir::new();
    let token = dir.token("mi1", Role::Editor);
    let endpoint = format!("{identity_url}/msi/token");
    let handler = Handler::spawn(
        Path::new(env!("CARGO_BIN_EXE_flowgrid-design")),
        dir.path(),
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IDENTITY_HEADER", SECRET_HEADER),
            ("FLOWGRID_AI_AZURE_OPENAI_ENDPOINT", azure.as_str()),
            ("FLOWGRID_AI_AZURE_OPENAI_API_VERSION", "2024-10-21"),
            ("FLOWGRID_AI_AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini"),
            ("FLOWGRID_AI_MAX_ATTEMPTS", "1"),
        ],
    );
    Setup {
        _dir: dir,
        _steady: steady,
        handler,
        token,
        identity,
        recorder,
    }
}

impl Setup {
    async fn post(&self, route: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/api/design/{route}", self.handler.base_url()))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("design");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn asked(&self) -> Vec<Asked> {
        self.identity
            .asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn seen(&self) -> Vec<Seen> {
        self.recorder
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn model(deployment: &str) -> Value {
    json!({"model": {"provider": "azure-openai", "model": deployment}})
}

#[tokio::test]
async fn the_managed_identitys_token_is_fetched_once_sent_as_bearer_and_kept_until_near_expiry() {
    let s = setup(Issue::ValidFor(3600)).await;
    let (status, view) = s.post("analyze-model", model("default")).await;
    assert_eq!(status, 200, "{view:#}");
    let (status, _) = s.post("analyze-model", model("gpt-4o")).await;
    assert_eq!(status, 200);
    let seen = s.seen();
    assert_eq!(seen.len(), 6, "three probes for each deployment: {seen:#?}");
    for (uri, authorization, api_key) in &seen {
        assert!(
            uri.starts_with("/openai/deployments/")
                && uri.ends_with("/chat/completions?api-version=2024-10-21"),
            "{uri}"
        );
        assert_eq!(
            authorization.as_deref(),
            Some("Bearer entra-token-1"),
            "{uri}"
        );
        assert!(api_key.is_none(), "no api-key with a managed identity");
    }
    let asked = s.asked();
    assert_eq!(asked.len(), 1, "one token for six calls: {asked:#?}");
    let (query, header) = &asked[0];
    assert_eq!(query["resource"], "https://cognitiveservices.azure.com");
    assert_eq!(query["api-version"], "2019-08-01");
    assert_eq!(header.as_deref(), Some(SECRET_HEADER));
}

#[tokio::test]
async fn a_token_about_to_expire_is_not_reused() {
    // Within the five minutes before its expiry a token is fetched anew for each call.
    let s = setup(Issue::ValidFor(120)).await;
    let (status, _) = s.post("analyze-model", model("default")).await;
    assert_eq!(status, 200);
    let tokens: Vec<Option<String>> = s.seen().into_iter().map(|(_, a, _)| a).collect();
    assert_eq!(
        tokens,
        vec![
            Some("Bearer entra-token-1".to_owned()),
            Some("Bearer entra-token-2".to_owned()),
            Some("Bearer entra-token-3".to_owned())
        ]
    );
    assert_eq!(s.asked().len(), 3);
}

#[tokio::test]
async fn an_identity_endpoint_that_refuses_is_a_clear_error_and_nothing_is_sent() {
    let s = setup(Issue::NoIdentity).await;
    let (status, problem) = s
        .post(
            "generate-interactions",
            json!({"description": "Every day at 9, summarise", "model": {"provider": "azure-openai", "model": "default"}}),
        )
        .await;
    // The deployment's configuration, not an outage: a 422 on `model` saying what to check.
    assert_eq!(status, 422, "{problem:#}");
    let said = problem.to_string();
    assert!(
        said.contains("getting an Entra token for Azure OpenAI failed")
            && said.contains("identity endpoint answered 400")
            && said.contains("managed identity"),
        "{problem:#}"
    );
    assert!(!problem.to_string().contains(SECRET_HEADER), "{problem:#}");
    assert!(s.seen().is_empty(), "nothing reached Azure OpenAI");
    assert!(!s.asked().is_empty());
}
