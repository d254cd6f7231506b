//! The local commands: `flowgrid token`, `flowgrid admin create-tenant`, `flowgrid package
//! --no-build`, and what the API commands say when Flowgrid is not running.

use std::path::Path;
use std::process::Command;

use crate::{flowgrid, text};

#[test]
fn token_prints_only_the_token_on_stdout_and_says_on_stderr_when_it_creates_the_data_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh");
    let first = flowgrid(&data, &["token", "--tenant", "acme", "--role", "owner"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "TOKEN=$(...) takes all of stdout: {stdout}"
    );
    assert_eq!(stdout.trim().split('.').count(), 3, "a JWT: {stdout}");
    let note = text(&first.stderr);
    assert!(
        note.contains("created the data folder") && note.contains("fresh"),
        "{note}"
    );
    let again = flowgrid(&data, &["token", "--tenant", "acme"]);
    assert!(again.status.success());
    assert!(
        !text(&again.stderr).contains("created the data folder"),
        "said only once: {}",
        text(&again.stderr)
    );
}

#[test]
fn create_tenant_errors_name_the_flag_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_email = flowgrid(
        dir.path(),
        &[
            "admin",
            "create-tenant",
            "--name",
            "Acme",
            "--admin-email",
            "not-an-email",
        ],
    );
    assert!(!bad_email.status.success());
    let err = text(&bad_email.stderr);
    assert!(
        err.contains("--admin-email: is not an email address"),
        "{err}"
    );
    let bad_name = flowgrid(
        dir.path(),
        &[
            "admin",
            "create-tenant",
            "--name",
            " ",
            "--admin-email",
            "ann@acme.test",
        ],
    );
    assert!(!bad_name.status.success());
    let err = text(&bad_name.stderr);
    assert!(err.contains("--name: "), "{err}");
    assert!(
        !dir.path().join("flowgrid.db").exists(),
        "refused before storage is opened"
    );
}

#[test]
fn api_commands_say_how_to_reach_flowgrid_when_it_is_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = flowgrid(dir.path(), &["agents", "list", "--url", &url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach Flowgrid at {url}")) && err.contains("flowgrid dev"),
        "{err}"
    );
    let bad_input = flowgrid(
        dir.path(),
        &["run", "Greeter", "--input", "{nope", "--url", &url],
    );
    assert!(!bad_input.status.success());
    assert!(text(&bad_input.stderr).contains("--input: not JSON"));
}

#[test]
fn package_no_build_says_nothing_about_building_and_writes_local_settings_for_func_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("app");
    let f = root.join("functions/demo/Hello");
    std::fs::create_dir_all(&f).expect("mkdir");
    std::fs::write(
        root.join("host.json"),
        r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"},"enableForwardingHttpRequest":true}}"#,
    )
    .expect("host.json");
    std::fs::write(
        f.join("function.json"),
        r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"res"}]}"#,
    )
    .expect("function.json");
    std::fs::write(
        root.join("local.settings.example.json"),
        r#"{"IsEncrypted":false,"Values":{"FLOWGRID_STORE":"sqlite"}}"#,
    )
    .expect("example");
    let bin = root.join("target/x86_64-unknown-linux-gnu/release");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::write(bin.join("flowgrid-demo"), b"\x7fELF").expect("binary");
    let out = Command::new(env!("CARGO_BIN_EXE_flowgrid"))
        .current_dir(&root)
        .args([
            "package",
            "--no-build",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--out",
        ])
        .arg(dir.path().join("dist"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("running flowgrid package");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.to_lowercase().contains("build"), "{said}");
    let settings: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("dist/demo/local.settings.json")).expect("settings"),
    )
    .expect("json");
    assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert_eq!(settings["Values"]["FLOWGRID_STORE"], "sqlite");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn dev_refuses_malformed_integrations_and_analytics_settings_with_one_line_each_and_starts_nothing()
{
    // Two malformed settings of one app are both named (an app's reader stops at the first).
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for app in ["integrations", "analytics", "design"] {
        copy_dir(
            &repo.join("functions").join(app),
            &root.join("functions").join(app),
        );
    }
    std::fs::copy(repo.join("host.json"), root.join("host.json")).expect("host.json");
    // The example settings (every other value well formed), with two malformed ones.
    let mut settings: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join("local.settings.example.json")).expect("example settings"),
    )
    .expect("example settings are JSON");
    let values = settings["Values"].as_object_mut().expect("Values");
    values.insert("FLOWGRID_INTEGRATION_TIMEOUT_MS".into(), "soon".into());
    values.insert("FLOWGRID_ANALYTICS_RETENTION_DAYS".into(), "0".into());
    values.insert("FLOWGRID_INTEGRATION_MAX_ATTEMPTS".into(), "many".into());
    values.insert("FLOWGRID_DESIGN_MAX_IMAGE_BYTES".into(), "big".into());
    values.insert("FLOWGRID_AI_CALL_TIMEOUT_SECS".into(), "never".into());
    std::fs::write(
        root.join("local.settings.json"),
        serde_json::to_vec(&settings).expect("json"),
    )
    .expect("settings");
    let out = Command::new(env!("CARGO_BIN_EXE_flowgrid"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["dev", "--no-build", "--port", "0", "--root"])
        .arg(&root)
        .arg("--bin-dir")
        .arg(dir.path().join("no-binaries-here"))
        .env_remove("FLOWGRID_INTEGRATION_TIMEOUT_MS")
        .env_remove("FLOWGRID_ANALYTICS_RETENTION_DAYS")
        .env_remove("FLOWGRID_INTEGRATION_MAX_ATTEMPTS")
        .env_remove("FLOWGRID_DESIGN_MAX_IMAGE_BYTES")
        .env_remove("FLOWGRID_AI_CALL_TIMEOUT_SECS")
        .output()
        .expect("running flowgrid dev");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let named = |setting: &str, app: &str| {
        err.lines()
            .filter(|l| l.contains(&format!("setting {setting}")))
            .filter(|l| l.contains(&format!("read by app {app}")))
            .count()
    };
    assert_eq!(
        named("FLOWGRID_INTEGRATION_TIMEOUT_MS", "integrations"),
        1,
        "{err}"
    );
    assert_eq!(
        named("FLOWGRID_ANALYTICS_RETENTION_DAYS", "analytics"),
        1,
        "{err}"
    );
    for (setting, app) in [
        ("FLOWGRID_INTEGRATION_MAX_ATTEMPTS", "integrations"),
        ("FLOWGRID_DESIGN_MAX_IMAGE_BYTES", "design"),
        ("FLOWGRID_AI_CALL_TIMEOUT_SECS", "design"),
    ] {
        assert_eq!(named(setting, app), 1, "{setting}: {err}");
    }
    assert!(err.contains("nothing was started"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}
