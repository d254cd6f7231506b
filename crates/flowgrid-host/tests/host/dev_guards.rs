//! `flowgrid dev` guards itself: the port is bound and every setting checked before any handler
//! starts; a malformed value names the setting and the app, an unknown key names the closest
//! known one, `"Value"` for `"Values"` is named; the issuer the apps get follows the port.

use std::collections::BTreeMap;
use std::time::Duration;

use flowgrid_host::Host;
use flowgrid_host::config::check::AppSettings;
use serde_json::{Value, json};

use crate::common::{AppRoot, health_fns, http_fn, request};

fn app_root(values: Value) -> (AppRoot, std::path::PathBuf) {
    let mut fns = vec![("Echo", http_fn("echo/{*rest}", &["get"]))];
    fns.extend(health_fns("edge"));
    let started = tempfile::NamedTempFile::new()
        .expect("temp")
        .into_temp_path();
    let started = started.to_path_buf();
    let _ = std::fs::remove_file(&started);
    let mut all = json!({"FIXTURE_STARTED": started.display().to_string()});
    if let (Some(a), Value::Object(b)) = (all.as_object_mut(), values) {
        a.extend(b);
    }
    (AppRoot::new(&[("edge", fns)], all), started)
}

/// The apps that started (after giving a spawned one time to say so).
async fn started_apps(file: &std::path::Path) -> String {
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::read_to_string(file).unwrap_or_default()
}

#[tokio::test]
async fn a_taken_port_fails_the_start_before_any_handler_starts() {
    let (root, started) = app_root(json!({}));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut opts = root.options();
    opts.listen = taken.local_addr().expect("addr");
    let err = format!(
        "{:#}",
        Host::start(opts, &mut |_| {}).await.err().expect("refused")
    );
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(started_apps(&started).await, "", "a handler was started");
}

fn number_check(get: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    match get("EDGE_BATCH") {
        Some(v) if v.parse::<u32>().is_err() => {
            Err(format!("setting EDGE_BATCH: {v:?} is not a number"))
        }
        _ => Ok(()),
    }
}

#[tokio::test]
async fn a_malformed_setting_stops_the_start_with_one_line_naming_the_setting_and_the_app() {
    let (root, started) = app_root(json!({
        "FLOWGRID_ACCESS_TOKEN_TTL_SECS": "soon",
        "EDGE_BATCH": "many",
    }));
    let mut opts = root.options();
    opts.app_settings = BTreeMap::from([(
        "edge".to_owned(),
        AppSettings {
            names: vec!["EDGE_BATCH"],
            check: number_check,
        },
    )]);
    let err = format!(
        "{:#}",
        Host::start(opts, &mut |_| {}).await.err().expect("refused")
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("setting FLOWGRID_ACCESS_TOKEN_TTL_SECS:")
            && lines[0].contains("read by every app: edge"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("setting EDGE_BATCH: \"many\"")
            && lines[1].contains("read by app edge"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert_eq!(started_apps(&started).await, "", "a handler was started");
}

#[tokio::test]
async fn an_unknown_setting_is_a_warning_with_the_closest_known_name_and_the_host_starts() {
    let (root, _) = app_root(json!({"FLOWGRID_RATE_LIMT_RPS": "5", "ZZZ_NOTHING_LIKE_IT": "1"}));
    let mut notices = Vec::new();
    let host = Host::start(root.options(), &mut |n| notices.push(n))
        .await
        .expect("starts");
    let text = notices.join("\n");
    assert!(
        text.contains("Values.FLOWGRID_RATE_LIMT_RPS")
            && text.contains("did you mean FLOWGRID_RATE_LIMIT_RPS?"),
        "{text}"
    );
    assert!(
        text.contains("Values.ZZZ_NOTHING_LIKE_IT is not a setting"),
        "{text}"
    );
    assert!(
        !text.contains("FLOWGRID_LOG") && !text.contains("FUNCTIONS_WORKER_RUNTIME"),
        "settings an app or the runtime reads are known: {text}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn value_instead_of_values_is_named() {
    let (root, started) = app_root(json!({}));
    let path = root.root().join("local.settings.json");
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    std::fs::write(
        &path,
        json!({"IsEncrypted": false, "Value": settings["Values"]}).to_string(),
    )
    .expect("write");
    let err = format!(
        "{:#}",
        Host::start(root.options(), &mut |_| {})
            .await
            .err()
            .expect("refused")
    );
    assert!(err.contains("\"Value\" should be \"Values\""), "{err}");
    assert_eq!(started_apps(&started).await, "");
}

#[tokio::test]
async fn the_issuer_the_apps_get_follows_the_port_unless_set_to_another() {
    let (root, _) = app_root(json!({"FLOWGRID_JWT_ISSUER": "http://localhost:7071/api/auth"}));
    let host = root.start().await;
    let expected = format!("http://localhost:{}/api/auth", host.addr().port());
    assert_eq!(host.issuer(), expected);
    let (status, _, body) = request("GET", &format!("{}/api/echo/x", host.url()), &[], None).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["env"]["FLOWGRID_JWT_ISSUER"], expected.as_str());
    host.shutdown().await;

    let (root, _) = app_root(json!({"FLOWGRID_JWT_ISSUER": "https://login.example.com/flowgrid"}));
    let host = root.start().await;
    assert_eq!(host.issuer(), "https://login.example.com/flowgrid");
    host.shutdown().await;
}
