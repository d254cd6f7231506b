//! The dashboard page in headless Chromium (Debian's `chromium`, installed by this test when
//! missing; driven by `playwright-core` pinned in `tools/dashboard/package-lock.json`): it loads
//! against seeded data and every number it shows is the dashboard API's. The screenshot is kept
//! as `target/test-artifacts/analytics-dashboard.png`.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, Utc};
use flowgrid_analytics::router;
use flowgrid_domain::AgentId;
use flowgrid_domain::job::JobStatus;
use flowgrid_http::auth::Role;
use serde_json::Value;

use crate::{deliver, job_finished, start, tick};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Debian's Chromium, installed with apt-get when missing.
fn chromium() {
    if Path::new("/usr/bin/chromium").exists() {
        return;
    }
    let ok = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok && Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed (apt-get install chromium) and could not be installed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_shows_the_apis_numbers_in_headless_chromium() {
    let tools = root().join("tools/dashboard");
    flowgrid_testkit::tools::npm_ci(&tools, "the dashboard tests");
    chromium();

    let app = start().await;
    let (a, b) = (AgentId::new(), AgentId::new());
    let now = Utc::now();
    for (i, (agent, days, status, tokens, cost)) in [
        (a, 0, JobStatus::Succeeded, 120, 2_400),
        (a, 1, JobStatus::Failed, 60, 900),
        (b, 3, JobStatus::Succeeded, 30, 150),
        (b, 12, JobStatus::Succeeded, 10, 40),
    ]
    .into_iter()
    .enumerate()
    {
        let at = now - Duration::days(days) - Duration::minutes(1);
        deliver(
            &app,
            &job_finished("acme", agent, &format!("j{i}"), at, status, tokens, cost),
        )
        .await;
    }
    tick(&app).await;
    let token = app.token("acme", Role::Viewer);
    let api = app.get("/api/analytics/dashboard", &token).await;
    assert_eq!(api.status, 200, "{}", api.text);

    // Serve the same state on a real port for the browser.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(axum::serve(listener, router(app.state().clone())).into_future());

    let artifacts = root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("analytics-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{addr}/api/analytics/ui#token={token}");
    let script = tools.join("check-dashboard.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&url)
        .arg(&shot)
        .current_dir(&tools)
        .output()
        .await
        .expect("node");
    server.abort();
    assert!(
        out.status.success(),
        "the browser check failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("JSON from the browser check");
    assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
    let shown = &seen["shown"];
    let d = &api.body;
    for window in ["today", "last7Days", "last30Days"] {
        for (metric, value) in [
            ("runs", &d[window]["runs"]),
            ("failures", &d[window]["failures"]),
            ("tokens.total", &d[window]["tokens"]["total"]),
            ("costMicroUsd", &d[window]["costMicroUsd"]),
        ] {
            assert_eq!(
                shown["metrics"][format!("{window}.{metric}")],
                value.to_string(),
                "{window}.{metric}: {seen}"
            );
        }
    }
    assert_eq!(d["last30Days"]["runs"], 4);
    assert_eq!(d["last30Days"]["costMicroUsd"], 3_490);
    assert_eq!(
        shown["metrics"]["budget.spentMicroUsd"],
        d["budget"]["spentMicroUsd"].to_string()
    );
    assert_eq!(
        shown["metrics"]["budget.budgetMicroUsd"],
        d["budget"]["budgetMicroUsd"].to_string()
    );
    let agents = shown["agents"].as_array().expect("agent rows");
    let top = d["topAgentsByCost"].as_array().expect("top agents");
    assert_eq!(agents.len(), top.len());
    for (row, want) in agents.iter().zip(top) {
        assert_eq!(row["key"], want["agentId"]);
        assert_eq!(row["costMicroUsd"], want["costMicroUsd"].to_string());
        assert_eq!(row["runs"], want["runs"].to_string());
        assert_eq!(row["failures"], want["failures"].to_string());
    }
    assert_eq!(agents[0]["key"], a.to_string());
    let models = shown["models"].as_array().expect("model rows");
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["costMicroUsd"], "3490");
    assert_eq!(shown["chartCanvas"], true, "{seen}");
    assert_eq!(
        shown["chartPoints"].as_u64(),
        Some(d["daily"].as_array().expect("daily").len() as u64)
    );
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}
