//! Canaries (docs/scaling.md, "Canary and cutover"): a second build of an app beside the
//! current one takes the HTTP requests of the tenants whose bucket is below its weight, sticky
//! per tenant; health counts what each version answered; promote moves every request and the
//! queue work to the new build without a failed request; rollback sends everything back; the
//! admin endpoints want the host admin key and refuse bad input without changing anything.
//!
//! The "new build" is the fixture started from another path (a symlink in another folder): its
//! answers and log lines carry the path it was started as.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed set-up should fail the test loudly"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowgrid_host::Host;
use flowgrid_host::bus::{Outgoing, Target};
use flowgrid_http::auth::{DevKey, Role, TokenRequest};
use serde_json::{Value, json};

use crate::common::{AppRoot, eventually, header, health_fns, http_fn, request, sb_fn};

/// An app `api` with a forwarded echo route and a Service Bus function `Work` on `jobs`.
fn api_root(values: Value) -> AppRoot {
    let mut fns = vec![
        ("Echo", http_fn("echo/{*rest}", &["get", "post"])),
        ("Work", sb_fn("jobs")),
    ];
    fns.extend(health_fns("api"));
    AppRoot::new(&[("api", fns)], values)
}

/// The "new build": the fixture as `<root>/next/flowgrid-api`.
fn next_build(root: &AppRoot) -> PathBuf {
    let dir = root.root().join("next");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flowgrid-api");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flowgrid-host-fixture"), &path).unwrap();
    path
}

fn current_build(root: &AppRoot) -> PathBuf {
    root.root().join("bin").join("flowgrid-api")
}

/// Development tokens of the data folder's issuer for `tenants`.
fn tokens(root: &AppRoot, host: &Host, tenants: &[String]) -> BTreeMap<String, String> {
    let key = DevKey::load_or_create(&root.root().join("data")).unwrap();
    tenants
        .iter()
        .map(|t| {
            let token = key
                .mint(&TokenRequest {
                    tenant: t.clone(),
                    role: Role::Viewer,
                    user: "tester".into(),
                    issuer: host.issuer().to_owned(),
                    audience: "flowgrid".into(),
                    ttl_secs: 600,
                })
                .unwrap();
            (t.clone(), token)
        })
        .collect()
}

/// The rule the docs state, computed here on its own: FNV-1a of the tenant id modulo 100.
fn bucket(tenant: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 100
}

fn admin_key(root: &AppRoot) -> String {
    flowgrid_host::devstate::read_admin_key(&root.root().join("data")).unwrap()
}

/// An admin call with the key.
async fn admin(
    host: &Host,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let text = body.map(|b| b.to_string());
    let (status, hs, text) = request(
        method,
        &format!("{}/admin/{path}", host.url()),
        &[
            ("x-functions-key", key),
            ("content-type", "application/json"),
        ],
        text.as_deref(),
    )
    .await;
    (
        status,
        hs,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// One echo request as `tenant` (its token; none for `None`): status, the program that
/// answered, and the version header.
async fn echo(
    host: &Host,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut hs: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        hs.push(("authorization", a));
    }
    let (status, headers, text) =
        request("GET", &format!("{}/api/echo/who", host.url()), &hs, None).await;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (
        status,
        v["program"].as_str().unwrap_or_default().to_owned(),
        header(&headers, "x-flowgrid-version").map(str::to_owned),
    )
}

async fn health(host: &Host) -> Value {
    let (_, _, text) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    serde_json::from_str(&text).unwrap()
}

fn gone(pid: u64) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn problem(hs: &[(String, String)]) -> bool {
    header(hs, "content-type").is_some_and(|c| c.starts_with("application/problem+json"))
}

#[tokio::test]
async fn the_admin_endpoints_want_the_key_and_refuse_bad_input_without_changing_anything() {
    let root = api_root(json!({}));
    let next = next_build(&root);
    let host = root.start().await;
    let key = admin_key(&root);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root.root().join("data/host-admin.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key file is its owner's only");
    assert!(key.len() >= 32, "a long random key");

    let start = json!({"binary": next.display().to_string(), "weight": 10});
    for bad_key in [None, Some("wrong"), Some(&key[..key.len() - 1])] {
        let mut hs = vec![("content-type", "application/json")];
        if let Some(k) = bad_key {
            hs.push(("x-functions-key", k));
        }
        let (status, headers, text) = request(
            "POST",
            &format!("{}/admin/canary/api", host.url()),
            &hs,
            Some(&start.to_string()),
        )
        .await;
        assert_eq!(status, 401, "{bad_key:?}: {text}");
        assert!(problem(&headers), "{headers:?}");
        assert!(!text.contains(&key), "the key is never in an answer");
    }

    let missing = root.root().join("next/flowgrid-nothing");
    let refusals: Vec<(&str, &str, Option<Value>, u16)> = vec![
        ("POST", "canary/nope", Some(start.clone()), 404),
        (
            "POST",
            "canary/api",
            Some(json!({"binary": next.display().to_string(), "weight": 101})),
            400,
        ),
        (
            "POST",
            "canary/api",
            Some(json!({"binary": next.display().to_string(), "weight": -1})),
            400,
        ),
        (
            "POST",
            "canary/api",
            Some(json!({"binary": next.display().to_string()})),
            400,
        ),
        (
            "POST",
            "canary/api",
            Some(json!({"binary": missing.display().to_string(), "weight": 10})),
            400,
        ),
        (
            "POST",
            "canary/api",
            Some(json!({"binary": "next/flowgrid-api", "weight": 10})),
            400,
        ),
        ("POST", "canary/api", None, 400),
        ("PUT", "canary/api/weight", Some(json!({"weight": 20})), 409),
        ("POST", "canary/api/promote", None, 409),
        ("POST", "canary/api/rollback", None, 409),
        ("DELETE", "canary/api", None, 405),
        ("GET", "nothing-here", None, 404),
    ];
    for (method, path, body, want) in refusals {
        let (status, headers, v) = admin(&host, &key, method, path, body.clone()).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        assert!(problem(&headers), "{method} {path}: {headers:?}");
        let h = health(&host).await;
        assert_eq!(
            h["apps"]["api"]["canary"]["active"], false,
            "{method} {path} changed something"
        );
        assert_eq!(h["apps"]["api"]["canary"]["history"], json!([]));
    }

    // Started, then a second start and a bad weight are refused and change nothing.
    let (status, _, v) = admin(&host, &key, "POST", "canary/api", Some(start.clone())).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["active"], true);
    assert_eq!(v["weight"], 10);
    let (status, headers, _) = admin(&host, &key, "POST", "canary/api", Some(start)).await;
    assert_eq!(status, 409);
    assert!(problem(&headers));
    let (status, _, _) = admin(
        &host,
        &key,
        "PUT",
        "canary/api/weight",
        Some(json!({"weight": "ten"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, v) = admin(&host, &key, "GET", "canary", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["apps"]["api"]["weight"], 10, "{v}");
    assert_eq!(
        v["apps"]["api"]["history"].as_array().map(Vec::len),
        Some(1),
        "only the start is recorded: {v}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn traffic_splits_by_tenant_bucket_sticks_is_counted_per_version_and_rolls_back() {
    let root = api_root(json!({}));
    let next = next_build(&root);
    let current = current_build(&root);
    let host = root.start().await;
    let key = admin_key(&root);
    let tenants: Vec<String> = (0..200).map(|i| format!("tenant-{i:03}")).collect();
    let tokens = tokens(&root, &host, &tenants);

    let (status, _, v) = admin(
        &host,
        &key,
        "POST",
        "canary/api",
        Some(json!({"binary": next.display().to_string(), "weight": 0})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // What the test sent since the canary started, per version: (requests, errors).
    let mut sent: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut on_canary_before: Vec<bool> = vec![false; tenants.len()];
    for weight in [0u64, 10, 50, 100] {
        let (status, _, v) = admin(
            &host,
            &key,
            "PUT",
            "canary/api/weight",
            Some(json!({ "weight": weight })),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let mut on_canary = Vec::new();
        for (i, t) in tenants.iter().enumerate() {
            let token = tokens[t].as_str();
            // Every tenant twice: the same version both times.
            let (s1, p1, v1) = echo(&host, Some(token), &[]).await;
            let (s2, p2, _) = echo(&host, Some(token), &[]).await;
            assert_eq!((s1, s2), (200, 200));
            assert_eq!(p1, p2, "{t} switched versions at weight {weight}");
            let canary = p1 == next.display().to_string();
            assert!(
                canary || p1 == current.display().to_string(),
                "unknown program {p1}"
            );
            assert_eq!(
                v1.as_deref(),
                Some(if canary { "canary" } else { "current" })
            );
            assert_eq!(
                canary,
                bucket(t) < weight,
                "{t} (bucket {}) at weight {weight}",
                bucket(t)
            );
            assert!(
                !on_canary_before[i] || canary,
                "{t} moved back to the current version when the weight rose to {weight}"
            );
            let e = sent
                .entry(if canary { "canary" } else { "current" }.into())
                .or_default();
            e.0 += 2;
            on_canary.push(canary);
        }
        let share = on_canary.iter().filter(|c| **c).count() as u64;
        let want = weight * 2;
        assert!(
            share.abs_diff(want) <= 12,
            "weight {weight}: {share} of 200 tenants on the canary"
        );
        on_canary_before = on_canary;
    }

    // At 50 %: failures asked of some requests of each version, and requests without a token
    // (always the current version).
    let (status, _, _) = admin(
        &host,
        &key,
        "PUT",
        "canary/api/weight",
        Some(json!({"weight": 50})),
    )
    .await;
    assert_eq!(status, 200);
    for t in tenants.iter().take(40) {
        let (status, program, _) =
            echo(&host, Some(&tokens[t]), &[("x-fixture-status", "503")]).await;
        assert_eq!(status, 503);
        let version = if program == next.display().to_string() {
            "canary"
        } else {
            "current"
        };
        let e = sent.entry(version.into()).or_default();
        e.0 += 1;
        e.1 += 1;
    }
    for _ in 0..10 {
        let (status, program, version) = echo(&host, None, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(program, current.display().to_string(), "no tenant: current");
        assert_eq!(version.as_deref(), Some("current"));
        sent.entry("current".into()).or_default().0 += 1;
    }
    let h = health(&host).await;
    let c = &h["apps"]["api"]["canary"];
    assert_eq!(c["active"], true, "{c}");
    assert_eq!(c["weight"], 50);
    assert_eq!(c["canary"]["binary"], next.display().to_string());
    assert_eq!(c["current"]["binary"], current.display().to_string());
    for version in ["current", "canary"] {
        let (requests, errors) = sent[version];
        let v = &c[version];
        assert_eq!(v["requests"], requests, "{version}: {v}");
        assert_eq!(v["errors"], errors, "{version}: {v}");
        assert!(errors > 0, "both versions got failures");
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        let rate = errors as f64 / requests as f64;
        assert!(
            (v["errorRate"].as_f64().unwrap() - rate).abs() < 1e-9,
            "{version}: {v}"
        );
        let p50 = v["latencyMs"]["p50"].as_f64().unwrap();
        let p99 = v["latencyMs"]["p99"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{version}: {v}");
        assert_eq!(v["latencyMs"]["window"], requests.min(1000));
    }
    let canary_pids: Vec<u64> = c["canary"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    assert!(!canary_pids.is_empty());

    // Rollback: every tenant back on the current version at once.
    let (status, _, v) = admin(&host, &key, "POST", "canary/api/rollback", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["active"], false);
    for t in &tenants {
        let (status, program, version) = echo(&host, Some(&tokens[t]), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(program, current.display().to_string(), "{t} after rollback");
        assert_eq!(version, None, "no canary: no version header");
    }
    let h = health(&host).await;
    let changes: Vec<&str> = h["apps"]["api"]["canary"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes.first(), Some(&"started"));
    assert_eq!(changes.last(), Some(&"rolled back"));
    assert_eq!(
        changes.iter().filter(|c| **c == "weight changed").count(),
        5
    );
    eventually("the canary's processes stop", || async {
        canary_pids.iter().all(|p| gone(*p)).then_some(())
    })
    .await;
    host.shutdown().await;
}

#[tokio::test]
async fn promote_moves_every_request_and_the_queue_work_without_a_failed_request() {
    let root = api_root(json!({"FLOWGRID_INSTANCES": "2"}));
    let next = next_build(&root);
    let current = current_build(&root);
    // Started with the host, from the setting.
    std::fs::write(
        root.root().join("local.settings.json"),
        std::fs::read_to_string(root.root().join("local.settings.json"))
            .unwrap()
            .replace(
                "\"FLOWGRID_INSTANCES\"",
                &format!(
                    "\"FLOWGRID_CANARY\": \"api={}:30\", \"FLOWGRID_INSTANCES\"",
                    next.display()
                ),
            ),
    )
    .unwrap();
    let host = root.start().await;
    let key = admin_key(&root);
    let tenants: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let tokens = Arc::new(tokens(&root, &host, &tenants));
    let h = health(&host).await;
    assert_eq!(h["apps"]["api"]["canary"]["active"], true, "{h}");
    assert_eq!(h["apps"]["api"]["canary"]["weight"], 30);
    let old_pids: Vec<u64> = h["apps"]["api"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(old_pids.len(), 2);

    // Before: queue work stays on the current build, canary tenants or not.
    let bus = host.bus();
    for i in 0..6 {
        bus.send(
            &Target::Queue("jobs".into()),
            Outgoing {
                body: format!("before-{i}").into_bytes(),
                ..Outgoing::default()
            },
        )
        .unwrap();
    }
    let lines = root
        .wait_for_lines("6 messages", |l| {
            l.iter().filter(|l| l.contains(" before-")).count() >= 6
        })
        .await;
    for l in lines.iter().filter(|l| l.contains(" before-")) {
        assert!(
            l.contains(&format!("program={} ", current.display())),
            "queue work on the canary: {l}"
        );
    }

    // A client loop through the promotion: GETs and POSTs of every tenant and without one.
    let stop = Arc::new(AtomicBool::new(false));
    let url = host.url();
    let loops: Vec<_> = (0..8)
        .map(|n| {
            let stop = stop.clone();
            let tokens = tokens.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut seen: Vec<(u16, String)> = Vec::new();
                let mut i = n;
                while !stop.load(Ordering::SeqCst) {
                    let token = tokens.values().nth(i % (tokens.len() + 1)).cloned();
                    let auth = token.map(|t| format!("Bearer {t}"));
                    // Slow answers: requests are in flight on the old build at the switch.
                    let mut hs = vec![("x-fixture-sleep-ms", "250")];
                    if let Some(a) = &auth {
                        hs.push(("authorization", a.as_str()));
                    }
                    let method = if i % 2 == 0 { "GET" } else { "POST" };
                    let body = (method == "POST").then_some("{}");
                    let (status, _, text) =
                        request(method, &format!("{url}/api/echo/loop"), &hs, body).await;
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    seen.push((status, v["program"].as_str().unwrap_or_default().to_owned()));
                    i += 8;
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _, v) = admin(&host, &key, "POST", "canary/api/promote", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["active"], false);
    assert_eq!(v["current"]["binary"], next.display().to_string());
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    let mut on_old = 0;
    let mut on_new = 0;
    for l in loops {
        let seen = l.await.unwrap();
        for (status, program) in &seen {
            total += 1;
            assert_eq!(*status, 200, "a request failed during the promotion");
            if *program == current.display().to_string() {
                on_old += 1;
            }
        }
        // Each loop ends on the new build (its last requests came after the switch).
        assert_eq!(
            seen.last().map(|s| s.1.clone()),
            Some(next.display().to_string())
        );
        on_new += seen
            .iter()
            .filter(|s| s.1 == next.display().to_string())
            .count();
    }
    assert!(
        total > 30 && on_old > 0 && on_new > 0,
        "{total} requests, {on_old} on the old build, {on_new} on the new"
    );

    // After: every request and every message on the new build, two instances of it.
    for t in &tenants {
        let (status, program, version) = echo(&host, Some(&tokens[t]), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(program, next.display().to_string(), "{t} after promote");
        assert_eq!(version, None);
    }
    let (_, program, _) = echo(&host, None, &[]).await;
    assert_eq!(program, next.display().to_string());
    for i in 0..6 {
        bus.send(
            &Target::Queue("jobs".into()),
            Outgoing {
                body: format!("after-{i}").into_bytes(),
                ..Outgoing::default()
            },
        )
        .unwrap();
    }
    let lines = root
        .wait_for_lines("6 messages after", |l| {
            l.iter().filter(|l| l.contains(" after-")).count() >= 6
        })
        .await;
    for l in lines.iter().filter(|l| l.contains(" after-")) {
        assert!(
            l.contains(&format!("program={} ", next.display())),
            "queue work on the old build after promote: {l}"
        );
    }
    let h = health(&host).await;
    let app = &h["apps"]["api"];
    assert_eq!(app["instances"].as_array().map(Vec::len), Some(2), "{app}");
    assert_eq!(
        app["canary"]["current"]["binary"],
        next.display().to_string()
    );
    let changes: Vec<&str> = app["canary"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["started", "promoting", "promoted"]);
    eventually("the old build's processes stop", || async {
        old_pids.iter().all(|p| gone(*p)).then_some(())
    })
    .await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_malformed_canary_setting_stops_the_start_naming_it() {
    let root = api_root(json!({}));
    let next = next_build(&root);
    let missing = root.root().join("next/none");
    let cases = [
        format!("api={}:101", next.display()),
        format!("api={}", next.display()),
        format!("nope={}:10", next.display()),
        format!("api={}:10", missing.display()),
        format!("{}:10", next.display()),
    ];
    let settings = root.root().join("local.settings.json");
    let original = std::fs::read_to_string(&settings).unwrap();
    for value in cases {
        std::fs::write(&settings, &original).unwrap();
        let mut opts = root.options();
        opts.scaling.canary = vec![value.clone()];
        let err = format!(
            "{:#}",
            Host::start(opts, &mut |_| {}).await.err().expect("refused")
        );
        assert!(err.contains("--canary"), "{value}: {err}");
        // The same through the setting.
        let mut opts = root.options();
        opts.scaling.canary = vec![];
        let value_json = json!({"IsEncrypted": false, "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "custom", "ServiceBusConnection": "local",
            "FLOWGRID_LOG": "warn", "FLOWGRID_CANARY": value}});
        std::fs::write(&settings, value_json.to_string()).unwrap();
        let err = format!(
            "{:#}",
            Host::start(opts, &mut |_| {}).await.err().expect("refused")
        );
        assert!(err.contains("FLOWGRID_CANARY"), "{value}: {err}");
    }
}

#[tokio::test]
async fn a_canary_without_a_ready_instance_gets_nothing_and_one_that_never_gets_ready_is_refused() {
    let root = AppRoot::with_host_json(
        &[(
            "api",
            vec![
                ("Echo", http_fn("echo/{*rest}", &["get"])),
                ("Health", http_fn("health/api/{probe?}", &["get"])),
            ],
        )],
        json!({}),
        json!({"customHandler": {"initializationTimeout": "00:00:01"}}),
    );
    // A "build" that never answers.
    let silent = root.root().join("silent");
    std::fs::write(&silent, "#!/bin/sh\nexec sleep 600\n").unwrap();
    let mut mode = std::fs::metadata(&silent).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&silent, mode).unwrap();
    let mut opts = root.options();
    opts.scaling.canary = vec![format!("api={}:100", silent.display())];
    let host = Host::start(opts, &mut |_| {}).await.unwrap();
    root.start_settled(&host).await;
    let key = admin_key(&root);
    let tenants: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let tokens = tokens(&root, &host, &tenants);
    for t in &tenants {
        let (status, program, version) = echo(&host, Some(&tokens[t]), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(program, current_build(&root).display().to_string(), "{t}");
        assert_eq!(version.as_deref(), Some("current"));
    }
    let h = health(&host).await;
    let c = &h["apps"]["api"]["canary"];
    assert_eq!(c["active"], true);
    assert_eq!(c["weight"], 100);
    assert_ne!(c["canary"]["instances"][0]["state"], "ready", "{c}");
    assert_eq!(c["current"]["requests"], 20);
    assert_eq!(c["canary"]["requests"], 0);
    let (status, _, _) = admin(&host, &key, "POST", "canary/api/rollback", None).await;
    assert_eq!(status, 200);

    // Started on the running host: refused once its instance fails to get ready; nothing changed.
    let (status, headers, v) = admin(
        &host,
        &key,
        "POST",
        "canary/api",
        Some(json!({"binary": silent.display().to_string(), "weight": 10})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(problem(&headers));
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("did not get ready"),
        "{v}"
    );
    let h = health(&host).await;
    assert_eq!(h["apps"]["api"]["canary"]["active"], false);
    let changes = h["apps"]["api"]["canary"]["history"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(changes, 2, "started (at start-up) and rolled back only");
    host.shutdown().await;
}
