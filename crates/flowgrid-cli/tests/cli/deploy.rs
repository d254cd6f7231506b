//! `flowgrid deploy` against a stand-in `az` and `curl` (shell scripts that log their arguments
//! and answer as the real ones do): the real binary runs every step, reading the real
//! `infra/apps.json`, and a second run changes nothing it must not (the key-encryption key).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/flowgrid-cli is two levels down")
        .to_path_buf()
}

/// The stand-in `az`: logs each call as one line to `$FAKE_DIR/calls`, keeps secrets as files
/// in `$FAKE_DIR`, prints the deployment outputs from `$FAKE_DIR/outputs.json`.
const FAKE_AZ: &str = r#"#!/bin/sh
echo "az $*" >> "$FAKE_DIR/calls"
case "$*" in
  "ad signed-in-user show"*) echo "11111111-2222-3333-4444-555555555555" ;;
  "deployment group create"*) cat "$FAKE_DIR/outputs.json" ;;
  "keyvault secret show"*)
    name=$(echo "$*" | sed 's/.*--name \([^ ]*\).*/\1/')
    if [ -f "$FAKE_DIR/secret-$name" ]; then echo "https://vault/secrets/$name/1";
    else echo "ERROR: (SecretNotFound) A secret with (name/id) $name was not found in this key vault." >&2; exit 3; fi ;;
  "keyvault secret set"*)
    name=$(echo "$*" | sed 's/.*--name \([^ ]*\).*/\1/')
    file=$(echo "$*" | sed 's/.*--file \([^ ]*\).*/\1/')
    cp "$file" "$FAKE_DIR/secret-$name" ;;
  *) ;;
esac
"#;

const FAKE_CURL: &str = r#"#!/bin/sh
echo "curl $*" >> "$FAKE_DIR/calls"
"#;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).expect("script written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("script made executable");
    path
}

fn manifest() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("infra/apps.json")).expect("apps.json"),
    )
    .expect("apps.json is JSON")
}

fn app_names() -> Vec<String> {
    manifest()["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| a["name"].as_str().expect("a name").to_owned())
        .collect()
}

struct Fake {
    dir: tempfile::TempDir,
    az: PathBuf,
    curl: PathBuf,
    dist: PathBuf,
}

fn fake(hosting_plan: &str) -> Fake {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let az = script(dir.path(), "az", FAKE_AZ);
    let curl = script(dir.path(), "curl", FAKE_CURL);
    let dist = dir.path().join("dist");
    std::fs::create_dir(&dist).expect("dist");
    let apps: Vec<Value> = app_names()
        .iter()
        .map(|app| {
            std::fs::write(dist.join(format!("{app}.zip")), b"zip").expect("package");
            json!({ "app": app, "name": format!("flowgrid-abc-{app}") })
        })
        .collect();
    let outputs = json!({
        "gatewayUrl": { "type": "String", "value": "https://flowgrid-abc-apim.azure-api.net" },
        "functionAppNames": { "type": "Array", "value": apps },
        "hostingPlan": { "type": "String", "value": hosting_plan },
        "packageStorageAccount": { "type": "String", "value": "flowgridrtabc" },
        "keyVaultName": { "type": "String", "value": "flowgridkvabc" },
        "cosmosAccount": { "type": "String", "value": "flowgrid-abc-cosmos" },
    });
    std::fs::write(dir.path().join("outputs.json"), outputs.to_string()).expect("outputs");
    Fake {
        dir,
        az,
        curl,
        dist,
    }
}

impl Fake {
    fn deploy(&self, extra: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_flowgrid"))
            .args([
                "deploy",
                "--resource-group",
                "rg-test",
                "--publisher-email",
                "ops@example.com",
            ])
            .args(["--no-package", "--root"])
            .arg(root())
            .arg("--dist")
            .arg(&self.dist)
            .arg("--az")
            .arg(&self.az)
            .arg("--curl")
            .arg(&self.curl)
            .args(extra)
            .env("FAKE_DIR", self.dir.path())
            .output()
            .expect("flowgrid runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn secret(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(format!("secret-{name}"))).ok()
    }
}

#[test]
fn deploy_runs_every_step_on_flex_consumption_and_a_rerun_keeps_the_secret() {
    let fake = fake("FlexConsumption");
    let (ok, output) = fake.deploy(&[
        "--location",
        "swedencentral",
        "--parameter",
        "alwaysReadyInstances=1",
    ]);
    assert!(ok, "{output}");
    let calls = fake.calls();
    let position = |needle: &str| {
        calls
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no call with {needle:?} in {calls:#?}"))
    };
    let group = position("az group create --name rg-test --location swedencentral");
    let deployment =
        position("az deployment group create --resource-group rg-test --name flowgrid");
    assert!(group < deployment);
    let create = &calls[deployment];
    for part in [
        "infra/main.bicep",
        "infra/main.parameters.json",
        "publisherEmail=ops@example.com",
        "deployerPrincipalId=11111111-2222-3333-4444-555555555555",
        "alwaysReadyInstances=1",
    ] {
        assert!(create.contains(part), "{part} missing from {create}");
    }
    // An AI provider's key is optional: named as not set, never invented.
    assert!(
        output.contains("openai-api-key (FLOWGRID_AI_OPENAI_API_KEY): not set, optional"),
        "{output}"
    );
    assert_eq!(fake.secret("openai-api-key"), None);
    // The key-encryption key: created once, 32 random bytes in base64.
    let key = fake
        .secret("key-encryption-key")
        .expect("the key-encryption key was set");
    {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .expect("base64");
        assert_eq!(bytes.len(), 32);
    }
    assert!(
        !calls.iter().any(|c| c.contains(key.trim())),
        "the secret must not travel on a command line"
    );
    for app in app_names() {
        let deploy = position(&format!(
            "az functionapp deployment source config-zip --resource-group rg-test --name flowgrid-abc-{app} --src"
        ));
        assert!(deployment < deploy);
        assert!(calls[deploy].contains(&format!("{app}.zip")));
        let smoke = position(&format!(
            "https://flowgrid-abc-apim.azure-api.net/api/health/{app}/live"
        ));
        assert!(deploy < smoke);
    }

    // Rerun: the secret exists, so it is kept.
    let before = fake.calls().len();
    let (ok, output) = fake.deploy(&[]);
    assert!(ok, "{output}");
    assert!(output.contains("exists, kept"), "{output}");
    let rerun = &fake.calls()[before..];
    assert!(
        !rerun.iter().any(|c| c.contains("keyvault secret set")),
        "{rerun:#?}"
    );
    assert_eq!(
        fake.secret("key-encryption-key").as_deref(),
        Some(key.as_str())
    );
}

#[test]
fn deploy_on_elastic_premium_uploads_the_package_blobs_and_restarts() {
    let fake = fake("ElasticPremium");
    let (ok, output) = fake.deploy(&["--deployer", "99999999-0000-0000-0000-000000000000"]);
    assert!(ok, "{output}");
    let calls = fake.calls();
    assert!(
        !calls.iter().any(|c| c.contains("signed-in-user")),
        "--deployer given: {calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains("config-zip")),
        "{calls:#?}"
    );
    for app in app_names() {
        assert!(
            calls.iter().any(|c| c.contains(&format!(
                "az storage blob upload --auth-mode login --account-name flowgridrtabc --container-name package-{app} --name {app}.zip"
            ))),
            "{calls:#?}"
        );
        assert!(
            calls.iter().any(|c| c.contains(&format!(
                "az functionapp restart --resource-group rg-test --name flowgrid-abc-{app}"
            ))),
            "{calls:#?}"
        );
    }
}

#[test]
fn deploy_stops_at_a_missing_package() {
    let fake = fake("FlexConsumption");
    let first = app_names().into_iter().next().expect("an app");
    std::fs::remove_file(fake.dist.join(format!("{first}.zip"))).expect("package removed");
    let (ok, output) = fake.deploy(&[]);
    assert!(!ok, "a missing package must fail the deploy: {output}");
    assert!(
        output.contains(&format!("no package for {first}")),
        "{output}"
    );
}
