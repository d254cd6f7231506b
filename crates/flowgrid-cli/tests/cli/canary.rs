//! `flowgrid canary` against a running host: it finds the host through the data folder's dev
//! state, calls the admin endpoints with the key the host wrote there, and prints the host's
//! refusals. The host runs in this process (`flowgrid_host::Host`, published in the data
//! folder as `flowgrid dev` does); its app's two "builds" are Python's `http.server` serving
//! a folder that says `v1` or `v2`.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed set-up should fail the test loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use flowgrid_host::devstate::{DataDirLock, DevState};
use flowgrid_host::{Host, HostOptions};
use serde_json::json;

use crate::{flowgrid, text};

/// A handler "build": an executable script serving `<dir>/api/version` = `version`.
fn build(root: &Path, folder: &str, version: &str) -> PathBuf {
    let dir = root.join(folder);
    std::fs::create_dir_all(dir.join("www/api")).unwrap();
    std::fs::write(dir.join("www/api/version"), version).unwrap();
    let script = dir.join("flowgrid-web");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec python3 -m http.server \"$FUNCTIONS_CUSTOMHANDLER_PORT\" --bind 127.0.0.1 --directory '{}'\n",
            dir.join("www").display()
        ),
    )
    .unwrap();
    let mut p = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&script, p).unwrap();
    script
}

fn get(rt: &tokio::runtime::Runtime, url: &str, token: Option<&str>) -> String {
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.get(url).timeout(Duration::from_secs(20));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert!(res.status().is_success(), "{url}: {}", res.status());
        res.text().await.unwrap()
    })
}

#[test]
fn canary_commands_drive_the_running_host_with_its_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("data");
    std::fs::write(
        root.join("host.json"),
        json!({"version": "2.0",
            "customHandler": {"description": {"defaultExecutablePath": "handler"}, "enableForwardingHttpRequest": true},
            "extensions": {"http": {"routePrefix": "api"}}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        root.join("local.settings.json"),
        json!({"IsEncrypted": false, "Values": {"FUNCTIONS_WORKER_RUNTIME": "custom", "FLOWGRID_LOG": "warn"}})
            .to_string(),
    )
    .unwrap();
    let f = root.join("functions/web/Version");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(
        f.join("function.json"),
        json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"], "route": "version"},
            {"type": "http", "direction": "out", "name": "res"}]})
        .to_string(),
    )
    .unwrap();
    let v1 = build(root, "bin", "v1");
    let v2 = build(root, "next", "v2");

    let none = flowgrid(&data, &["canary", "status"]);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("no `flowgrid dev` is running"),
        "{}",
        text(&none.stderr)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lock = DataDirLock::acquire(&data).unwrap();
    let host = rt
        .block_on(Host::start(
            HostOptions {
                root: root.to_owned(),
                bin_dir: root.join("bin"),
                data_dir: data.clone(),
                listen: "127.0.0.1:0".parse().unwrap(),
                app_settings: Default::default(),
                scaling: Default::default(),
            },
            &mut |_| {},
        ))
        .unwrap();
    rt.block_on(host.settle(Duration::from_secs(20)));
    lock.publish(&DevState {
        pid: std::process::id(),
        url: host.url(),
        issuer: host.issuer().to_owned(),
    })
    .unwrap();
    let url = format!("{}/api/version", host.url());
    assert_eq!(get(&rt, &url, None), "v1");

    let status = flowgrid(&data, &["canary", "status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains(&format!("web: no canary; current binary {}", v1.display())),
        "{}",
        text(&status.stdout)
    );

    let started = flowgrid(
        &data,
        &[
            "canary",
            "start",
            "web",
            &v2.display().to_string(),
            "--weight",
            "100",
        ],
    );
    assert!(started.status.success(), "{}", text(&started.stderr));
    assert!(
        text(&started.stdout).contains("web: canary at 100 %"),
        "{}",
        text(&started.stdout)
    );
    let token = flowgrid(&data, &["token", "--tenant", "acme", "--role", "viewer"]);
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token = text(&token.stdout).trim().to_owned();
    assert_eq!(get(&rt, &url, Some(&token)), "v2", "a tenant at 100 %");
    assert_eq!(get(&rt, &url, None), "v1", "no tenant: the current build");

    let refused = flowgrid(&data, &["canary", "weight", "web", "101"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("400") && text(&refused.stderr).contains("weight"),
        "{}",
        text(&refused.stderr)
    );
    let unknown = flowgrid(&data, &["canary", "promote", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("404"),
        "{}",
        text(&unknown.stderr)
    );

    let status = flowgrid(&data, &["canary", "status"]);
    let out = text(&status.stdout);
    assert!(out.contains("web: canary at 100 %"), "{out}");
    assert!(
        out.contains(&format!("current  {}: 1 requests, 0 errors", v1.display()))
            && out.contains(&format!("canary   {}: 1 requests, 0 errors", v2.display())),
        "{out}"
    );
    let json_status = flowgrid(&data, &["canary", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json_status.stdout).unwrap();
    assert_eq!(v["apps"]["web"]["weight"], 100);

    let promoted = flowgrid(&data, &["canary", "promote", "web"]);
    assert!(promoted.status.success(), "{}", text(&promoted.stderr));
    assert!(
        text(&promoted.stdout)
            .contains(&format!("web: no canary; current binary {}", v2.display())),
        "{}",
        text(&promoted.stdout)
    );
    assert_eq!(get(&rt, &url, None), "v2", "promoted: every request");
    let again = flowgrid(&data, &["canary", "rollback", "web"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("409") && text(&again.stderr).contains("no canary"),
        "{}",
        text(&again.stderr)
    );

    // A wrong key in the data folder: the host refuses, the CLI says so, nothing is printed of it.
    std::fs::write(data.join("host-admin.key"), "not-the-key").unwrap();
    let wrong = flowgrid(&data, &["canary", "status"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("401"),
        "{}",
        text(&wrong.stderr)
    );
    assert!(!text(&wrong.stderr).contains("not-the-key"));

    rt.block_on(host.shutdown());
    drop(lock);
}
