//! The API description end to end (issue 11, docs/api.md): `flowgrid dev` serves every app's
//! document, the merged one and the docs page without a token and without revealing data; the
//! page's UI is the pinned npm package's; and schemathesis, pinned on PyPI and installed by this
//! module, finds no failure in any documented app.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowgrid_e2e::{Dev, workspace_root};
use flowgrid_testkit::{free_port, tools, workspace_bin};
use serde_json::{Value, json};

const APPS: [&str; 6] = [
    "agents",
    "analytics",
    "auth",
    "design",
    "execution",
    "integrations",
];

/// Every app's own document, as its library makes it.
fn documents() -> Vec<(&'static str, Value)> {
    vec![
        ("agents", flowgrid_agents::app().openapi()),
        ("analytics", flowgrid_analytics::app().openapi()),
        ("auth", flowgrid_auth::app().openapi()),
        ("design", flowgrid_design::app().openapi()),
        ("execution", flowgrid_execution::app().openapi()),
        ("integrations", flowgrid_integrations::app().openapi()),
    ]
}

#[tokio::test]
async fn flowgrid_dev_serves_every_document_and_the_docs_page_without_a_token_and_without_data() {
    let dev = Dev::start(&APPS, &[]).await;
    let client = reqwest::Client::new();
    // Something a token protects, to look for in what needs none.
    let token = dev.token("acme", "owner");
    let secret_name = "Quarterly-merger-plan-7f3a";
    let created = client
        .post(format!("{}/api/agents", dev.url))
        .bearer_auth(&token)
        .json(&json!({"name": secret_name, "definition": {"instructions": "Keep it quiet."}}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let agent: Value = created.json().await.expect("json");
    let agent_id = agent["id"].as_str().expect("an id").to_owned();

    let mut seen = Vec::new();
    for (app, expected) in documents() {
        let r = client
            .get(format!("{}/api/openapi/{app}.json", dev.url))
            .send()
            .await
            .expect("document");
        assert_eq!(r.status(), 200, "{app}");
        let doc: Value = r.json().await.expect("json");
        assert_eq!(doc, expected, "{app}'s served document is its library's");
        assert_eq!(doc["openapi"], "3.1.0");
        seen.push(expected);
    }
    let r = client
        .get(format!("{}/api/openapi.json", dev.url))
        .send()
        .await
        .expect("merged");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.expect("text");
    let merged: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        merged,
        flowgrid_http::openapi::merge(&seen).expect("documents merge"),
        "the gateway's merge of the running apps is the libraries' merge"
    );
    assert!(
        !text.contains(secret_name) && !text.contains(&agent_id),
        "the document holds no tenant data"
    );

    let page = client
        .get(format!("{}/api/docs", dev.url))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(html.contains("/api/docs/swagger-ui-bundle.js"), "{html}");
    assert!(!html.contains(secret_name));
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "docs.js"] {
        let r = client
            .get(format!("{}/api/docs/{asset}", dev.url))
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{asset}");
        let served = r.bytes().await.expect("bytes");
        let file = std::fs::read(assets().join(asset)).expect("checked-in asset");
        assert!(served == file, "{asset} is served as checked in");
    }

    // Bad input at these routes is problem+json like everywhere else.
    for (method, path, status) in [
        (reqwest::Method::POST, "/api/openapi.json", 405),
        (reqwest::Method::DELETE, "/api/docs", 405),
        (
            reqwest::Method::GET,
            "/api/docs/..%2F..%2Fetc%2Fpasswd",
            404,
        ),
        (reqwest::Method::GET, "/api/docs/nope.js", 404),
        (reqwest::Method::GET, "/api/openapi/nope.json", 404),
    ] {
        let r = client
            .request(method.clone(), format!("{}{path}", dev.url))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), status, "{method} {path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
    }
}

/// `crates/flowgrid-host/assets/docs/`.
fn assets() -> PathBuf {
    workspace_root().join("crates/flowgrid-host/assets/docs")
}

#[test]
fn the_docs_page_ui_is_the_pinned_swagger_ui_dist_package() {
    let dir = workspace_root().join("tools/openapi-ui");
    tools::npm_ci(&dir, "the docs page test");
    let package = dir.join("node_modules/swagger-ui-dist");
    for (checked_in, shipped) in [
        ("swagger-ui-bundle.js", "swagger-ui-bundle.js"),
        ("swagger-ui.css", "swagger-ui.css"),
        ("swagger-ui.LICENSE", "LICENSE"),
        ("swagger-ui.NOTICE", "NOTICE"),
    ] {
        let ours = std::fs::read(assets().join(checked_in)).expect("checked-in file");
        let theirs = std::fs::read(package.join(shipped)).expect("package file");
        assert!(
            ours == theirs,
            "{checked_in} differs from swagger-ui-dist's {shipped}: copy it from \
             tools/openapi-ui/node_modules/swagger-ui-dist after changing the pinned version"
        );
    }
}

/// `tools/schemathesis/.venv/bin/schemathesis`, installed from the pinned requirements (again
/// when they change).
fn schemathesis() -> PathBuf {
    let dir = workspace_root().join("tools/schemathesis");
    let requirements = std::fs::read(dir.join("requirements.txt")).expect("requirements.txt");
    let venv = dir.join(".venv");
    let stamp = venv.join(".installed");
    let current = |stamp: &Path| std::fs::read(stamp).is_ok_and(|s| s == requirements);
    tools::once(
        || current(&stamp),
        &dir.join(".venv.lock"),
        "pip install schemathesis",
        || {
            let _ = std::fs::remove_dir_all(&venv);
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "python3 -m venv tools/schemathesis/.venv",
            );
            run(
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(dir.join("requirements.txt")),
                "pip install -r tools/schemathesis/requirements.txt",
            );
            std::fs::write(&stamp, &requirements).expect("venv stamp");
        },
    );
    venv.join("bin/schemathesis")
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{what} failed ({s})"),
        Err(e) => panic!("cannot run {what} ({e}): the API test needs Python 3 with venv"),
    }
}

/// Schemathesis over the merged document of every app, through `flowgrid dev` on embedded
/// storage with an owner's token, inside a network namespace with loopback only
/// (`tools/schemathesis/run.sh`): examples, coverage, fuzzing with positive and negative data,
/// and the stateful phase following the documents' links; a fixed seed and at most
/// `MAX_EXAMPLES` cases per operation and phase. Every check runs but
/// `positive_data_acceptance` (docs/api.md says why). Zero failures.
#[test]
fn schemathesis_finds_no_failure_in_any_app() {
    const MAX_EXAMPLES: &str = "25";
    let st = schemathesis();
    let flowgrid = workspace_bin("flowgrid", "flowgrid");
    for app in APPS {
        let name = format!("flowgrid-{app}");
        workspace_bin(&name, &name);
    }
    let data = tempfile::tempdir().expect("data dir");
    let out = Command::new("unshare")
        .current_dir(workspace_root())
        .args(["--net", "--", "bash", "tools/schemathesis/run.sh"])
        .env("FLOWGRID", flowgrid)
        .env("DATA", data.path())
        .env("PORT", free_port().to_string())
        .env("SEED", "20261201")
        .env("MAX_EXAMPLES", MAX_EXAMPLES)
        .env("SCHEMATHESIS", st)
        .env_remove("FLOWGRID_JWT_JWKS")
        .output()
        .expect("running unshare (util-linux) for tools/schemathesis/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(data.path().join("dev.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}\nflowgrid dev's log:\n{log}",
        out.status
    );
    assert!(
        stdout.contains("Tested:") && !stdout.contains("Tested: 0"),
        "schemathesis tested nothing:\n{stdout}"
    );
}
