//! The bad-input suite (issue #18): every route of Agents, Auth and Execution (and, in a second
//! test, of Design, Integrations and Analytics), through `flowgrid dev`, fed malformed, oversized and wrongly typed bodies, hostile templates, ids,
//! paths and headers. Each answer must be the documented status in `application/problem+json`
//! with `type`, `title`, `status`, `detail` and a `correlationId` equal to the
//! `X-Correlation-Id` header; afterwards every tenant's agents, users and jobs are as they were;
//! and while it runs, no handler's resident memory (VmRSS of the handler processes, sampled
//! every 20 ms from /proc) goes over [`RSS_BOUND_MIB`].
//!
//! Requests are written on raw TCP, so that what no HTTP client library would send (a `%FF`
//! path, a control character in a header, 150 headers) is sent as is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use flowgrid_e2e::Dev;
use flowgrid_testkit::run_cli;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most resident memory any handler may reach while the corpus runs (MiB). A handler at
/// rest holds about 15-30 MiB; every body is at most 1 MiB (larger ones are refused by the host
/// before a handler reads them), so a handler that stays bounded stays far below this.
const RSS_BOUND_MIB: u64 = 256;

/// How many times the corpus is sent.
const ROUNDS: usize = 5;

/// One answer, as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Writes `head` (request line and headers, without the final blank line) with
/// `Connection: close`, `Content-Length` and `body`, and reads the answer to the end.
async fn send(addr: &str, head: &[u8], body: &[u8]) -> Answer {
    let mut request = head.to_vec();
    request.extend_from_slice(
        format!(
            "\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (413, 431) and close before it has read everything: fine.
    let _ = stream.write_all(&request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    parse_answer(&out)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..text_end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[text_end + 4..].to_vec(),
    }
}

/// One request of the corpus and the status it must get.
struct Case {
    name: String,
    method: &'static str,
    path: String,
    headers: Vec<Vec<u8>>,
    body: Vec<u8>,
    status: u16,
}

impl Case {
    fn new(name: impl Into<String>, method: &'static str, path: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            status: 0,
        }
    }
    fn token(mut self, token: &str) -> Case {
        self.headers
            .push(format!("authorization: Bearer {token}").into_bytes());
        self
    }
    fn header(mut self, line: &[u8]) -> Case {
        self.headers.push(line.to_vec());
        self
    }
    fn json(self, body: &[u8]) -> Case {
        self.header(b"content-type: application/json").body(body)
    }
    fn body(mut self, body: &[u8]) -> Case {
        self.body = body.to_vec();
        self
    }
    fn expect(mut self, status: u16) -> Case {
        self.status = status;
        self
    }
    /// `method` on a route `template` with its `{}` replaced by `id`, as `token`, with `json` as
    /// the body when there is one.
    fn on_id(
        name: String,
        method: &'static str,
        template: &str,
        id: &str,
        token: &str,
        json: Option<&[u8]>,
    ) -> Case {
        let case = Case::new(name, method, template.replace("{}", id)).token(token);
        match json {
            Some(body) => case.json(body),
            None => case,
        }
    }

    async fn run(&self, addr: &str) {
        if let Err(e) = self.check(addr).await {
            panic!("{e}");
        }
    }

    /// Sends the case; `Err` says how the answer is outside the contract.
    async fn check(&self, addr: &str) -> Result<(), String> {
        let mut head =
            format!("{} {} HTTP/1.1\r\nhost: 127.0.0.1", self.method, self.path).into_bytes();
        for h in &self.headers {
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(h);
        }
        let answer = send(addr, &head, &self.body).await;
        let what = format!(
            "{} ({} {}): {} {:?} {}",
            self.name,
            self.method,
            self.path.chars().take(80).collect::<String>(),
            answer.status,
            answer.headers,
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(400)
                .collect::<String>()
        );
        if answer.status != self.status {
            return Err(format!("expected {}: {what}", self.status));
        }
        std::panic::catch_unwind(|| assert_problem(&answer, &what)).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| format!("not a problem: {what}"))
        })
    }
}

/// The answer is problem+json whose members have the right types, whose `status` is the
/// answer's, and whose `correlationId` is the `X-Correlation-Id` header.
fn assert_problem(answer: &Answer, what: &str) {
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("application/problem+json"),
        "{what}"
    );
    let problem: Value =
        serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("{e}: {what}"));
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:flowgrid:problem:")),
        "{what}"
    );
    assert!(
        problem["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}"
    );
    assert!(
        problem["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}"
    );
    assert_eq!(problem["status"], answer.status, "{what}");
    let header = answer.headers.get("x-correlation-id").expect(what);
    assert_eq!(
        problem["correlationId"].as_str(),
        Some(header.as_str()),
        "{what}"
    );
}

/// What a tenant can see, to check that nothing changed.
async fn snapshot(url: &str, token: &str) -> Value {
    let client = reqwest::Client::new();
    let mut all = serde_json::Map::new();
    for path in [
        "agents?limit=100",
        "auth/users?limit=100",
        "execute/jobs?limit=100",
    ] {
        let reply = client
            .get(format!("{url}/api/{path}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("snapshot");
        assert_eq!(reply.status(), 200, "{path}");
        all.insert(path.into(), reply.json().await.expect("json"));
    }
    Value::Object(all)
}

/// The largest VmRSS (KiB) each handler reached while `running` was set.
fn sample_rss(
    pids: Vec<(String, u32)>,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<String, u64>> {
    tokio::spawn(async move {
        let mut peaks: BTreeMap<String, u64> = BTreeMap::new();
        while running.load(Ordering::SeqCst) {
            for (app, pid) in &pids {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_else(|e| panic!("the {app} handler (pid {pid}) is gone: {e}"));
                let kib = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .expect("VmRSS");
                let peak = peaks.entry(app.clone()).or_default();
                *peak = (*peak).max(kib);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peaks
    })
}

async fn login(url: &str, email: &str, password: &str) -> Value {
    let reply = reqwest::Client::new()
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(reply.status(), 200);
    reply.json().await.expect("json")
}

/// A tenant made by `flowgrid admin create-tenant`, logged in: its owner's access token.
async fn tenant(dev: &Dev, name: &str, email: &str) -> String {
    let created = flowgrid_e2e::create_tenant(dev.data.path(), name, email);
    let password = created["password"].as_str().expect("password");
    login(&dev.url, email, password).await["accessToken"]
        .as_str()
        .expect("access token")
        .to_owned()
}

async fn post_json(url: &str, token: &str, path: &str, body: Value) -> Value {
    let reply = reqwest::Client::new()
        .post(format!("{url}/api/{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = reply.status();
    let body: Value = reply.json().await.expect("json");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("claims")
}

/// The JOSE header of `token`.
fn header_of(token: &str) -> Value {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = token.split('.').next().expect("a JWT");
    serde_json::from_slice(&b64.decode(header).expect("base64url")).expect("a JSON header")
}

/// `token` with its header's `kid` replaced (the signature no longer matters: the kid is
/// looked up first).
fn with_kid(token: &str, kid: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut header = header_of(token);
    header["kid"] = json!(kid);
    let rest: Vec<&str> = token.split('.').skip(1).collect();
    format!("{}.{}", b64.encode(header.to_string()), rest.join("."))
}

/// An expired token signed with the data folder's current key, with `valid`'s claims.
fn expired(dev: &Dev, valid: &str) -> String {
    let key = flowgrid_http::auth::DevKey::load_or_create(dev.data.path()).expect("key");
    let mut claims: flowgrid_http::auth::AccessClaims =
        serde_json::from_value(claims_of(valid)).expect("claims");
    let now = chrono_now();
    claims.iat = now - 7200;
    claims.nbf = now - 7200;
    claims.exp = now - 3600;
    key.sign(&claims).expect("sign")
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The body-level corpus for a route that reads a JSON object: each case and its status.
fn body_cases(
    name: &str,
    method: &'static str,
    path: &str,
    token: Option<&str>,
    optional: bool,
) -> Vec<Case> {
    let base = |what: &str| {
        let c = Case::new(format!("{name}: {what}"), method, path);
        match token {
            Some(t) => c.token(t),
            None => c,
        }
    };
    let mut cases = vec![
        base("malformed JSON").json(br#"{"na"#).expect(400),
        base("a member without a name")
            .json(br#"{ x }"#)
            .expect(400),
        base("not UTF-8").json(b"{\"\xff\xfe\": 1}").expect(400),
        base("an array by position")
            .json(br#"["viewer", true]"#)
            .expect(422),
        base("an empty array").json(b"[]").expect(422),
        base("a string").json(br#""x""#).expect(422),
        base("a number").json(b"12").expect(422),
        base("null").json(b"null").expect(422),
        base("a lone surrogate")
            .json(br#"{"name": "\ud800"}"#)
            .expect(422),
        base("an unknown field")
            .json(br#"{"tenantId": "other"}"#)
            .expect(422),
        base("text/plain")
            .header(b"content-type: text/plain")
            .body(b"{}")
            .expect(415),
        base("a prefix of application/json")
            .header(b"content-type: application/jsonx")
            .body(b"{}")
            .expect(415),
        base("a control character in the content type")
            .header(b"content-type: application/json\x01")
            .body(b"{}")
            .expect(415),
        base("over 1 MiB")
            .json(&[b"{\"name\": \"".as_slice(), &b"a".repeat(1_100_000), b"\"}"].concat())
            .expect(413),
    ];
    if !optional {
        cases.push(base("no body").json(b"").expect(400));
    }
    cases
}

/// Every route with hostile paths, headers and bodies; status, problem shape, no change,
/// bounded memory.
#[tokio::test]
async fn no_bad_input_on_any_route_gets_an_answer_outside_the_contract_or_changes_anything() {
    let started = Instant::now();
    // The host's per-tenant rate limit (on by default) is not what this suite is about.
    let dev = Dev::start(
        &["agents", "auth", "execution"],
        &[("FLOWGRID_RATE_LIMIT_RPS", "0")],
    )
    .await;
    let url = dev.url.clone();
    let addr = url.trim_start_matches("http://").to_owned();

    let ann = tenant(&dev, "Acme", "ann@acme.test").await;
    let bob = tenant(&dev, "Globex", "bob@globex.test").await;
    let agent = post_json(
        &url,
        &ann,
        "agents",
        json!({"name": "mine", "status": "active", "definition": {"instructions": "x"}}),
    )
    .await;
    let agent = agent["id"].as_str().expect("id").to_owned();
    let theirs = post_json(
        &url,
        &bob,
        "agents",
        json!({"name": "theirs", "status": "active", "definition": {"instructions": "x", "steps": [{"id": "t", "kind": "transform", "output": {"ok": "yes"}}]}}),
    )
    .await;
    let theirs = theirs["id"].as_str().expect("id").to_owned();
    let user = post_json(
        &url,
        &ann,
        "auth/users",
        json!({"email": "carl@acme.test", "role": "viewer", "password": "Carl-pass-12345"}),
    )
    .await;
    let user = user["id"].as_str().expect("id").to_owned();
    let bob_user = reqwest::Client::new()
        .get(format!("{url}/api/auth/user"))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("user")
        .json::<Value>()
        .await
        .expect("json");
    let bob_user = bob_user["id"].as_str().expect("id").to_owned();
    let job = post_json(
        &url,
        &bob,
        &format!("execute/agent/{theirs}"),
        json!({"input": {}}),
    )
    .await;
    let their_job = job["jobId"].as_str().expect("job id").to_owned();
    // Let Globex's job finish, so that nothing moves while the corpus runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job: Value = reqwest::Client::new()
            .get(format!("{url}/api/execute/jobs/{their_job}"))
            .bearer_auth(&bob)
            .send()
            .await
            .expect("job")
            .json()
            .await
            .expect("json");
        if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or("")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Globex's job did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let before = (snapshot(&url, &ann).await, snapshot(&url, &bob).await);
    let health = dev.health().await.expect("health");
    let pids: Vec<(String, u32)> = ["agents", "auth", "execution"]
        .iter()
        .map(|app| {
            let pid = health["apps"][*app]["pid"]
                .as_u64()
                .expect("a pid in /api/health");
            ((*app).to_owned(), u32::try_from(pid).expect("pid"))
        })
        .collect();
    let running = Arc::new(AtomicBool::new(true));
    let sampler = sample_rss(pids, running.clone());

    let mut cases: Vec<Case> = Vec::new();
    // Bodies, per route that reads one.
    for (name, method, path, token, optional) in [
        (
            "create agent",
            "POST",
            "/api/agents".to_owned(),
            Some(ann.as_str()),
            false,
        ),
        (
            "update agent",
            "PUT",
            format!("/api/agents/{agent}"),
            Some(&ann),
            false,
        ),
        (
            "create user",
            "POST",
            "/api/auth/users".to_owned(),
            Some(&ann),
            false,
        ),
        (
            "update user",
            "PATCH",
            format!("/api/auth/users/{user}"),
            Some(&ann),
            false,
        ),
        (
            "reset password",
            "POST",
            format!("/api/auth/users/{user}/reset-password"),
            Some(&ann),
            true,
        ),
        ("login", "POST", "/api/auth/login".to_owned(), None, false),
        (
            "refresh",
            "POST",
            "/api/auth/refresh".to_owned(),
            None,
            false,
        ),
        (
            "validate",
            "POST",
            "/api/auth/validate".to_owned(),
            None,
            false,
        ),
        (
            "set password",
            "POST",
            "/api/auth/password".to_owned(),
            None,
            false,
        ),
        (
            "logout",
            "POST",
            "/api/auth/logout".to_owned(),
            Some(&ann),
            true,
        ),
        (
            "submit",
            "POST",
            format!("/api/execute/agent/{agent}"),
            Some(&ann),
            true,
        ),
    ] {
        cases.extend(body_cases(name, method, &path, token, optional));
    }
    // Any JSON is accepted as a run's input, but not nested past serde_json's 128 levels.
    cases.push(
        Case::new(
            "submit: an input nested 10000 deep",
            "POST",
            format!("/api/execute/agent/{agent}"),
        )
        .token(&ann)
        .json(
            &[
                &b"{\"input\": "[..],
                &b"[".repeat(10_000),
                &b"]".repeat(10_000),
                b"}",
            ]
            .concat(),
        )
        .expect(400),
    );
    // Hostile templates and definitions, refused at save.
    for (what, definition) in [
        (
            "a step with a broken template",
            json!({"instructions": "x", "steps": [{"id": "t", "kind": "transform", "output": {"x": "{{ [1] * }}"}}]}),
        ),
        (
            "a condition that does not parse",
            json!({"instructions": "x", "steps": [{"id": "c", "kind": "condition", "if": "input.q =="}]}),
        ),
        (
            "instructions of the wrong type",
            json!({"instructions": ["x"]}),
        ),
    ] {
        cases.push(
            Case::new(format!("create agent: {what}"), "POST", "/api/agents")
                .token(&ann)
                .json(
                    json!({"name": format!("hostile {what}"), "definition": definition})
                        .to_string()
                        .as_bytes(),
                )
                .expect(422),
        );
    }
    // Hostile ids and paths.
    let id_routes: Vec<(&'static str, String)> = vec![
        ("GET", "/api/agents/{}".into()),
        ("PUT", "/api/agents/{}".into()),
        ("DELETE", "/api/agents/{}".into()),
        ("GET", "/api/agents/{}/status".into()),
        ("GET", "/api/agents/{}/versions".into()),
        ("GET", "/api/agents/{}/versions/1".into()),
        ("POST", "/api/agents/{}/versions/1/restore".into()),
        ("GET", "/api/auth/users/{}".into()),
        ("PATCH", "/api/auth/users/{}".into()),
        ("POST", "/api/auth/users/{}/reset-password".into()),
        ("POST", "/api/execute/agent/{}".into()),
        ("POST", "/api/execute/cancel/{}".into()),
        ("GET", "/api/execute/jobs/{}".into()),
    ];
    for (method, template) in &id_routes {
        for (what, id, status) in [
            ("invalid UTF-8", "%FF".to_owned(), 400),
            ("not an id", "not-an-id".to_owned(), 400),
            ("a NUL", "a%00b".to_owned(), 400),
            ("a very long id", "a".repeat(8000), 400),
        ] {
            let json = matches!(*method, "PUT" | "PATCH").then_some(&b"{}"[..]);
            let name = format!("{what} in {template}");
            cases.push(Case::on_id(name, method, template, &id, &ann, json).expect(status));
        }
        // Another tenant's id is a 404, exactly like a missing one.
        let other = if template.contains("/users/") {
            bob_user.clone()
        } else if template.contains("/jobs/") || template.contains("/cancel/") {
            their_job.clone()
        } else {
            theirs.clone()
        };
        let stolen = json!({"name": "stolen", "definition": {"instructions": "x"}}).to_string();
        let json = match *method {
            "PUT" => Some(stolen.as_bytes()),
            "PATCH" => Some(&br#"{"role": "admin"}"#[..]),
            _ => None,
        };
        let name = format!("another tenant's id in {template}");
        cases.push(Case::on_id(name, method, template, &other, &ann, json).expect(404));
    }
    for (what, method, path, status) in [
        (
            "a version that is not a number",
            "GET",
            format!("/api/agents/{agent}/versions/abc"),
            404,
        ),
        (
            "version 0",
            "GET",
            format!("/api/agents/{agent}/versions/0"),
            400,
        ),
        (
            "a version past the route's int",
            "GET",
            format!("/api/agents/{agent}/versions/99999999999"),
            404,
        ),
        (
            "a negative version",
            "GET",
            format!("/api/agents/{agent}/versions/-1"),
            400,
        ),
        (
            "an unknown route",
            "GET",
            "/api/nothing/here".to_owned(),
            404,
        ),
        (
            "invalid UTF-8 at the top",
            "GET",
            "/api/%FF".to_owned(),
            404,
        ),
        (
            "outside the route prefix",
            "GET",
            "/elsewhere".to_owned(),
            404,
        ),
        (
            "a method the route does not take",
            "DELETE",
            "/api/agents".to_owned(),
            405,
        ),
        (
            "a method no route takes",
            "BREW",
            "/api/agents".to_owned(),
            405,
        ),
        (
            "another tenant's agent as a job filter",
            "GET",
            format!("/api/execute/jobs?agentId={theirs}"),
            404,
        ),
        (
            "a malformed agent filter",
            "GET",
            "/api/execute/jobs?agentId=%FF".to_owned(),
            400,
        ),
        (
            "a forged continuation token",
            "GET",
            format!(
                "/api/agents?continuationToken={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"c":1e999,"i":"x"}"#)
            ),
            400,
        ),
        (
            "a forged jobs continuation token",
            "GET",
            format!(
                "/api/execute/jobs?continuationToken={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"i":"x","c":1}"#)
            ),
            400,
        ),
        (
            "a forged users continuation token",
            "GET",
            format!(
                "/api/auth/users?continuationToken={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"i":5}"#)
            ),
            400,
        ),
        (
            "a limit that is not a number",
            "GET",
            "/api/agents?limit=ten".to_owned(),
            400,
        ),
        (
            "an unknown job status filter",
            "GET",
            "/api/execute/jobs?status=bogus".to_owned(),
            400,
        ),
    ] {
        let case = Case::new(what, method, path).token(&ann);
        cases.push(case.expect(status));
    }
    // Hostile headers.
    let many: Vec<Vec<u8>> = (0..150)
        .map(|i| format!("x-filler-{i}: {i}").into_bytes())
        .collect();
    let mut too_many = Case::new("150 headers", "GET", "/api/agents").token(&ann);
    too_many.headers.extend(many);
    cases.push(too_many.expect(431));
    cases.push(
        Case::new("a 64 KiB header", "GET", "/api/agents")
            .token(&ann)
            .header(format!("x-big: {}", "a".repeat(64 * 1024)).as_bytes())
            .expect(431),
    );
    cases.push(
        Case::new(
            "a 64 KiB header on an anonymous route",
            "POST",
            "/api/auth/login",
        )
        .header(format!("cookie: {}", "a".repeat(64 * 1024)).as_bytes())
        .json(b"{}")
        .expect(431),
    );
    cases.push(
        Case::new(
            "a request line that is not HTTP",
            "GET /api/agents HTTP/1.1 x",
            "",
        )
        .expect(400),
    );
    cases.push(
        Case::new("a junk correlation id", "GET", "/api/agents/not-an-id")
            .token(&ann)
            .header(b"x-correlation-id: <script>alert(1)</script>")
            .expect(400),
    );
    cases.push(Case::new("no token", "GET", "/api/agents").expect(401));
    cases.push(
        Case::new("a token that is not a JWT", "GET", "/api/agents")
            .token("not.a.jwt")
            .expect(401),
    );
    cases.push(
        Case::new(
            "an Authorization header with a control character",
            "GET",
            "/api/agents",
        )
        .header(format!("authorization: Bearer {ann}\x01").as_bytes())
        .expect(401),
    );
    cases.push(
        Case::new("a token with an unknown kid", "GET", "/api/execute/jobs")
            .token(&with_kid(&ann, "k-never-issued"))
            .expect(401),
    );
    cases.push(
        Case::new("an expired token", "GET", "/api/agents")
            .token(&expired(&dev, &ann))
            .expect(401),
    );
    cases.push(
        Case::new(
            "a viewer's change",
            "DELETE",
            format!("/api/agents/{agent}"),
        )
        .token(&dev.token(claims_of(&ann)["tid"].as_str().expect("tid"), "viewer"))
        .expect(403),
    );

    let count = cases.len();
    let corpus_started = Instant::now();
    // Five rounds, so the memory sampler sees the handlers over a few hundred samples.
    for case in cases.iter().cycle().take(count * ROUNDS) {
        let one = Instant::now();
        case.run(&addr).await;
        if one.elapsed() > Duration::from_millis(500) {
            eprintln!(
                "bad-input suite: slow case {} ({:?})",
                case.name,
                one.elapsed()
            );
        }
    }
    eprintln!(
        "bad-input suite: the corpus took {:.1} s",
        corpus_started.elapsed().as_secs_f64()
    );

    running.store(false, Ordering::SeqCst);
    let peaks = sampler.await.expect("sampler");
    let after = (snapshot(&url, &ann).await, snapshot(&url, &bob).await);
    assert_eq!(before, after, "the bad input changed something");
    assert_eq!(peaks.len(), 3, "{peaks:?}");
    for (app, kib) in &peaks {
        eprintln!("bad-input suite: {app} peaked at {} MiB", kib / 1024);
        assert!(
            *kib < RSS_BOUND_MIB * 1024,
            "the {app} handler reached {} MiB (bound {RSS_BOUND_MIB} MiB)",
            kib / 1024
        );
    }
    eprintln!(
        "bad-input suite: {count} cases x {ROUNDS} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// In development a 401 says why; the token carries `client_id`; a token signed right after a
/// key rotation works in every app at once; another tenant's agent as a job filter is a 404.
#[tokio::test]
async fn a_rotated_key_works_at_once_and_a_dev_401_says_why() {
    let dev = Dev::start(&["agents", "auth", "execution"], &[]).await;
    let url = dev.url.clone();
    let ann = tenant(&dev, "Acme", "ann@acme.test").await;
    assert_eq!(claims_of(&ann)["client_id"], "flowgrid");
    assert_eq!(
        claims_of(&dev.token("acme", "viewer"))["client_id"],
        "flowgrid-cli"
    );
    let client = reqwest::Client::new();

    let problem = |token: String, path: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let reply = client
                .get(format!("{url}/api/{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("send");
            (
                reply.status().as_u16(),
                reply.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = problem(with_kid(&ann, "k-never-issued"), "agents").await;
    assert_eq!(status, 401);
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("k-never-issued") && detail.contains("not trusted"),
        "{detail}"
    );
    let (status, body) = problem(expired(&dev, &ann), "execute/jobs").await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().expect("detail").contains("expired"),
        "{body}"
    );

    // An unknown kid has just made both apps read the keys; then the keys rotate.
    for path in ["agents", "execute/jobs"] {
        assert_eq!(
            problem(with_kid(&ann, "k-other").clone(), path).await.0,
            401
        );
    }
    run_cli(dev.data.path(), &["admin", "rotate-keys"]);
    let created = flowgrid_e2e::create_tenant(dev.data.path(), "Initech", "pat@initech.test");
    let fresh = login(
        &url,
        "pat@initech.test",
        created["password"].as_str().expect("pw"),
    )
    .await;
    let fresh = fresh["accessToken"].as_str().expect("token").to_owned();
    assert_ne!(
        header_of(&fresh)["kid"],
        header_of(&ann)["kid"],
        "rotate-keys made a new signing key"
    );
    for path in ["agents", "execute/jobs", "auth/user"] {
        let (status, body) = problem(fresh.clone(), path).await;
        assert_eq!(status, 200, "{path} right after the rotation: {body}");
    }
}

/// Sends `cases` [`ROUNDS`] times while the VmRSS of `apps`' handlers is sampled; answers the
/// peaks (KiB per app).
async fn run_corpus(dev: &Dev, apps: &[&str], cases: &[Case]) -> BTreeMap<String, u64> {
    let addr = dev.url.trim_start_matches("http://").to_owned();
    let health = dev.health().await.expect("health");
    let pids: Vec<(String, u32)> = apps
        .iter()
        .map(|app| {
            let pid = health["apps"][*app]["pid"]
                .as_u64()
                .unwrap_or_else(|| panic!("a pid for {app} in /api/health: {health}"));
            ((*app).to_owned(), u32::try_from(pid).expect("pid"))
        })
        .collect();
    let running = Arc::new(AtomicBool::new(true));
    let sampler = sample_rss(pids, running.clone());
    let started = Instant::now();
    // The first round reports every case outside the contract at once.
    let mut failures = Vec::new();
    for case in cases {
        let one = Instant::now();
        if let Err(e) = case.check(&addr).await {
            failures.push(format!("- {}: {e}", case.name));
        }
        if one.elapsed() > Duration::from_millis(500) {
            eprintln!(
                "bad-input suite: slow case {} ({:?})",
                case.name,
                one.elapsed()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases answered outside the contract:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    for case in cases.iter().cycle().take(cases.len() * (ROUNDS - 1)) {
        let one = Instant::now();
        case.run(&addr).await;
        if one.elapsed() > Duration::from_millis(500) {
            eprintln!(
                "bad-input suite: slow case {} ({:?})",
                case.name,
                one.elapsed()
            );
        }
    }
    running.store(false, Ordering::SeqCst);
    let peaks = sampler.await.expect("sampler");
    eprintln!(
        "bad-input suite: {} cases x {ROUNDS} in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(peaks.len(), apps.len(), "{peaks:?}");
    for (app, kib) in &peaks {
        eprintln!("bad-input suite: {app} peaked at {} MiB", kib / 1024);
        assert!(
            *kib < RSS_BOUND_MIB * 1024,
            "the {app} handler reached {} MiB (bound {RSS_BOUND_MIB} MiB)",
            kib / 1024
        );
    }
    peaks
}

/// What a tenant can see of the Design, Integrations and Analytics apps' data.
async fn snapshot_more(url: &str, token: &str, tenant: &str) -> Value {
    let client = reqwest::Client::new();
    let mut all = serde_json::Map::new();
    for path in [
        "agents?limit=100".to_owned(),
        "integrations/connections?limit=100".to_owned(),
        format!("analytics/usage/{tenant}?granularity=day"),
    ] {
        let reply = client
            .get(format!("{url}/api/{path}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("snapshot");
        assert_eq!(reply.status(), 200, "{path}");
        let mut seen: Value = reply.json().await.expect("json");
        if path.starts_with("analytics/") {
            // What the corpus could change there: tracked events. (The rest of the usage comes
            // from the setup's own platform events, rolled up on a timer whenever it fires.)
            seen = json!({"customEvents": seen["totals"]["customEvents"]});
        }
        all.insert(path, seen);
    }
    Value::Object(all)
}

/// The same corpus over every route of the Design, Integrations and Analytics apps.
#[tokio::test]
async fn no_bad_input_on_a_design_integrations_or_analytics_route_gets_an_answer_outside_the_contract()
 {
    let started = Instant::now();
    let apps = ["agents", "auth", "design", "integrations", "analytics"];
    let dev = Dev::start(&apps, &[("FLOWGRID_RATE_LIMIT_RPS", "0")]).await;
    let url = dev.url.clone();
    let ann = tenant(&dev, "Acme", "ann@acme.test").await;
    let bob = tenant(&dev, "Globex", "bob@globex.test").await;
    let ann_tid = claims_of(&ann)["tid"].as_str().expect("tid").to_owned();
    let bob_tid = claims_of(&bob)["tid"].as_str().expect("tid").to_owned();
    let agent_of = async |token: &str, name: &str| {
        post_json(
            &url,
            token,
            "agents",
            json!({"name": name, "definition": {"instructions": "x", "steps": [
                {"id": "t", "kind": "transform", "output": {"ok": "{{ input.n }}"}}]}}),
        )
        .await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let agent = agent_of(&ann, "mine").await;
    let theirs = agent_of(&bob, "theirs").await;
    for token in [&ann, &bob] {
        post_json(
            &url,
            token,
            "integrations/connections",
            json!({"name": "hook", "kind": "http", "auth": "none",
                   "config": {"baseUrl": "https://example.invalid"}}),
        )
        .await;
    }
    post_json(
        &url,
        &bob,
        "integrations/connections",
        json!({"name": "bobs", "kind": "http", "auth": "none",
               "config": {"baseUrl": "https://example.invalid"}}),
    )
    .await;
    // Ann's defaults for the actions, so their bodies are checked (none of them is ever called:
    // every body of the corpus is refused first).
    for connection in [
        json!({"name": "snow", "kind": "servicenow", "auth": "basic", "secret": "pw-123456789",
               "config": {"instanceUrl": "https://example.invalid", "username": "u"}}),
        json!({"name": "jira", "kind": "jira", "auth": "api-token", "secret": "tok-123456789",
               "config": {"baseUrl": "https://example.invalid", "email": "a@example.invalid"}}),
    ] {
        post_json(&url, &ann, "integrations/connections", connection).await;
    }
    eprintln!(
        "bad-input suite: set up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let before = (
        snapshot_more(&url, &ann, &ann_tid).await,
        snapshot_more(&url, &bob, &bob_tid).await,
    );

    let mut cases: Vec<Case> = Vec::new();
    for (name, method, path, optional) in [
        (
            "analyze image",
            "POST",
            "/api/design/analyze-image".to_owned(),
            false,
        ),
        (
            "analyze model",
            "POST",
            "/api/design/analyze-model".to_owned(),
            false,
        ),
        (
            "generate interactions",
            "POST",
            "/api/design/generate-interactions".to_owned(),
            false,
        ),
        (
            "create connection",
            "POST",
            "/api/integrations/connections".to_owned(),
            false,
        ),
        (
            "update connection",
            "PUT",
            "/api/integrations/connections/hook".to_owned(),
            false,
        ),
        (
            "rotate secret",
            "POST",
            "/api/integrations/connections/hook/secret".to_owned(),
            false,
        ),
        (
            "servicenow incident",
            "POST",
            "/api/integrations/servicenow/incident".to_owned(),
            false,
        ),
        (
            "jira issue",
            "POST",
            "/api/integrations/jira/issue".to_owned(),
            false,
        ),
        ("track", "POST", "/api/analytics/track".to_owned(), false),
    ] {
        cases.extend(body_cases(name, method, &path, Some(&ann), optional));
    }
    // Wrong types and hostile values inside otherwise well-formed bodies.
    for (what, path, body, status) in [
        (
            "an image that is not base64",
            "/api/design/analyze-image",
            json!({"image": "%%% not base64 %%%"}),
            422,
        ),
        (
            "an image that is no known format",
            "/api/design/analyze-image",
            json!({"image": "aGVsbG8gd29ybGQ="}),
            422,
        ),
        (
            "an image of the wrong type",
            "/api/design/analyze-image",
            json!({"image": 12}),
            422,
        ),
        (
            "another tenant's agent to analyze",
            "/api/design/analyze-model",
            json!({"agentId": theirs}),
            404,
        ),
        (
            "a malformed agent id to analyze",
            "/api/design/analyze-model",
            json!({"agentId": "%FF\u{0}"}),
            422,
        ),
        (
            "another tenant's agent for interactions",
            "/api/design/generate-interactions",
            json!({"agentId": theirs}),
            404,
        ),
        (
            "a description of the wrong type",
            "/api/design/generate-interactions",
            json!({"description": ["x"]}),
            422,
        ),
        (
            "a connection of an unknown kind",
            "/api/integrations/connections",
            json!({"name": "x", "kind": "gopher", "auth": "none", "config": {}}),
            422,
        ),
        (
            "a connection named with a NUL",
            "/api/integrations/connections",
            json!({"name": "a\u{0}b", "kind": "http", "auth": "none", "config": {"baseUrl": "https://example.invalid"}}),
            422,
        ),
        (
            "a connection to the metadata address",
            "/api/integrations/connections",
            json!({"name": "meta", "kind": "http", "auth": "none", "config": {"baseUrl": "http://169.254.169.254/"}}),
            422,
        ),
        (
            "a connection whose config is a list",
            "/api/integrations/connections",
            json!({"name": "listy", "kind": "http", "auth": "none", "config": ["https://example.invalid"]}),
            422,
        ),
        (
            "an incident on another tenant's connection",
            "/api/integrations/servicenow/incident",
            json!({"connection": "bobs", "shortDescription": "x"}),
            404,
        ),
        (
            "101 tracked events",
            "/api/analytics/track",
            json!({"events": (0..101).map(|_| json!({"type": "custom.x"})).collect::<Vec<_>>()}),
            422,
        ),
        (
            "a tracked event with a timestamp that is not one",
            "/api/analytics/track",
            json!({"events": [{"type": "custom.x", "timestamp": "yesterday"}]}),
            422,
        ),
        (
            "a tracked event of another tenant's agent",
            "/api/analytics/track",
            json!({"events": [{"type": "custom.x", "agentId": theirs}]}),
            422,
        ),
        (
            "a tracked event whose numbers are a string",
            "/api/analytics/track",
            json!({"events": [{"type": "custom.x", "numbers": "12"}]}),
            422,
        ),
    ] {
        cases.push(
            Case::new(what, "POST", path)
                .token(&ann)
                .json(body.to_string().as_bytes())
                .expect(status),
        );
    }
    // Hostile ids and names in paths; another tenant's → 404.
    let id_routes: [(&'static str, &str, &str); 10] = [
        ("POST", "/api/design/compile/{}", "agent"),
        ("GET", "/api/design/prompt-preview/{}", "agent"),
        ("GET", "/api/analytics/agents/{}/metrics", "agent"),
        ("GET", "/api/analytics/usage/{}", "tenant"),
        ("GET", "/api/integrations/connections/{}", "connection"),
        ("PUT", "/api/integrations/connections/{}", "connection"),
        ("DELETE", "/api/integrations/connections/{}", "connection"),
        (
            "POST",
            "/api/integrations/connections/{}/secret",
            "connection",
        ),
        ("POST", "/api/integrations/{}/test", "connection"),
        ("GET", "/api/integrations/{}/status", "connection"),
    ];
    for (method, template, kind) in id_routes {
        for (what, id) in [
            ("invalid UTF-8", "%FF".to_owned()),
            ("a NUL", "a%00b".to_owned()),
            ("a very long id", "a".repeat(8000)),
        ] {
            let json = (method == "PUT" || template.ends_with("/secret")).then_some(&b"{}"[..]);
            let name = format!("{what} in {template}");
            cases.push(Case::on_id(name, method, template, &id, &ann, json).expect(400));
        }
        let other = match kind {
            "agent" => theirs.clone(),
            "tenant" => bob_tid.clone(),
            _ => "bobs".to_owned(),
        };
        let json: Option<&[u8]> = if method == "PUT" {
            Some(br#"{"auth": "none", "config": {"baseUrl": "https://example.invalid"}}"#)
        } else if template.ends_with("/secret") {
            Some(br#"{"secret": "stolen-secret-1234"}"#)
        } else {
            None
        };
        let name = format!("another tenant's {kind} in {template}");
        cases.push(Case::on_id(name, method, template, &other, &ann, json).expect(404));
    }
    for (what, method, path, status) in [
        (
            "an unknown granularity",
            "GET",
            format!("/api/analytics/usage/{ann_tid}?granularity=week"),
            422,
        ),
        (
            "a from that is not a time",
            "GET",
            format!("/api/analytics/usage/{ann_tid}?from=yesterday"),
            422,
        ),
        (
            "a range longer than the granularity allows",
            "GET",
            format!("/api/analytics/usage/{ann_tid}?granularity=hour&from=2020-01-01T00:00:00Z"),
            422,
        ),
        (
            "an unknown grouping",
            "GET",
            format!("/api/analytics/usage/{ann_tid}?groupBy=planet"),
            422,
        ),
        (
            "a forged connections continuation token",
            "GET",
            format!(
                "/api/integrations/connections?continuationToken={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"n":1e999}"#)
            ),
            400,
        ),
        (
            "repos of another tenant's connection",
            "GET",
            "/api/integrations/github/repos?connection=bobs".to_owned(),
            404,
        ),
        (
            "an unknown dashboard asset",
            "GET",
            "/api/analytics/ui/..%2F..%2Fetc%2Fpasswd".to_owned(),
            404,
        ),
        (
            "a method the catalog does not take",
            "DELETE",
            "/api/integrations/catalog".to_owned(),
            405,
        ),
        (
            "a method preview does not take",
            "POST",
            format!("/api/design/prompt-preview/{agent}"),
            405,
        ),
    ] {
        cases.push(Case::new(what, method, path).token(&ann).expect(status));
    }
    // Roles and tokens.
    let viewer = dev.token(&ann_tid, "viewer");
    for (method, path, body) in [
        (
            "POST",
            "/api/design/analyze-model".to_owned(),
            r#"{"model": {"provider": "offline", "model": "m"}}"#,
        ),
        ("POST", format!("/api/design/compile/{agent}"), ""),
        (
            "DELETE",
            "/api/integrations/connections/hook".to_owned(),
            "",
        ),
        (
            "POST",
            "/api/analytics/track".to_owned(),
            r#"{"events": []}"#,
        ),
    ] {
        let mut case =
            Case::new(format!("a viewer's {method} {path}"), method, path).token(&viewer);
        if !body.is_empty() {
            case = case.json(body.as_bytes());
        }
        cases.push(case.expect(403));
    }
    for path in [
        "/api/integrations/catalog",
        "/api/analytics/dashboard",
        "/api/design/prompt-preview/x",
    ] {
        cases.push(Case::new(format!("no token on {path}"), "GET", path).expect(401));
        cases.push(
            Case::new(format!("an expired token on {path}"), "GET", path)
                .token(&expired(&dev, &ann))
                .expect(401),
        );
    }

    run_corpus(&dev, &["design", "integrations", "analytics"], &cases).await;
    let after = (
        snapshot_more(&url, &ann, &ann_tid).await,
        snapshot_more(&url, &bob, &bob_tid).await,
    );
    assert_eq!(before, after, "the bad input changed something");
}
