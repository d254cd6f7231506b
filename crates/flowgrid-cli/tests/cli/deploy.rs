//! `flowgrid deploy` against a stand-in `az` and `curl` (shell scripts that log their arguments
//! and answer as the real ones do): the real binary runs every step, reading the real
//! `infra/apps.json`, and a second run changes nothing it must not (the key-encryption key).
//!
//! Blue/green: the stand-in keeps what the real services would (API Management's named values,
//! the pools' last update, each Function App's `AzureWebJobs.*` settings, which its deployment
//! sets as the Bicep does), so the tests see the exact `az` calls of --canary, --promote,
//! --rollback and --stage, that a rerun makes none that change anything, that a promote cut
//! short is completed by a rerun, and that bad input is refused before any call.

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

/// The stand-in `az`: logs each call as one line to `$FAKE_DIR/calls`, keeps secrets, named
/// values (`nv-<id>`), pools (`pool-<backend>`) and app settings (`settings-<function app>`, one
/// `NAME=VALUE` a line) as files in `$FAKE_DIR`, prints the deployment outputs from
/// `$FAKE_DIR/outputs.json` once a deployment was made. A deployment sets what the Bicep sets:
/// the named values of apps that have none (blue live, green 0) and every Function App's
/// `AzureWebJobs.<function>.Disabled=true` settings on the idle colour only (`$FAKE_DIR/apps`:
/// `<app> <trigger functions…>` a line). A call containing the text of `$FAKE_DIR/fail` fails
/// once.
const FAKE_AZ: &str = r#"#!/bin/sh
echo "az $*" >> "$FAKE_DIR/calls"
if [ -f "$FAKE_DIR/fail" ] && echo "$*" | grep -qF "$(cat "$FAKE_DIR/fail")"; then
  rm "$FAKE_DIR/fail"; echo "ERROR: (InternalServerError) injected failure" >&2; exit 1
fi
opt() { want=$1; shift; while [ $# -gt 0 ]; do [ "$1" = "$want" ] && { echo "$2"; return; }; shift; done; }
case "$*" in
  "ad signed-in-user show"*) echo "11111111-2222-3333-4444-555555555555" ;;
  "deployment group show"*)
    if [ -f "$FAKE_DIR/deployed" ]; then cat "$FAKE_DIR/outputs.json";
    else echo "ERROR: (DeploymentNotFound) Deployment 'flowgrid' could not be found." >&2; exit 3; fi ;;
  "deployment group create"*)
    touch "$FAKE_DIR/deployed"
    while read -r app fns; do
      [ -f "$FAKE_DIR/nv-$app-live" ] || echo blue > "$FAKE_DIR/nv-$app-live"
      [ -f "$FAKE_DIR/nv-$app-green-weight" ] || echo 0 > "$FAKE_DIR/nv-$app-green-weight"
      live=$(cat "$FAKE_DIR/nv-$app-live")
      for c in blue green; do
        f="$FAKE_DIR/settings-flowgrid-abc-$app-$c"; : > "$f"
        if [ "$c" != "$live" ]; then for fn in $fns; do echo "AzureWebJobs.$fn.Disabled=true" >> "$f"; done; fi
      done
    done < "$FAKE_DIR/apps"
    cat "$FAKE_DIR/outputs.json" ;;
  "apim nv list"*)
    printf '['; sep=''
    for f in "$FAKE_DIR"/nv-*; do
      [ -f "$f" ] || continue
      printf '%s{"name":"%s","value":"%s"}' "$sep" "${f##*/nv-}" "$(cat "$f")"; sep=','
    done
    printf ']\n' ;;
  "apim nv update"*) opt --value "$@" > "$FAKE_DIR/nv-$(opt --named-value-id "$@")" ;;
  "rest --method put"*)
    url=$(opt --url "$@"); backend=${url##*/backends/}; backend=${backend%%\?*}
    opt --body "$@" > "$FAKE_DIR/pool-$backend" ;;
  "functionapp config appsettings list"*)
    f="$FAKE_DIR/settings-$(opt --name "$@")"; touch "$f"
    printf '['; sep=''
    while IFS='=' read -r k v; do printf '%s{"name":"%s","value":"%s"}' "$sep" "$k" "$v"; sep=','; done < "$f"
    printf ']\n' ;;
  "functionapp config appsettings set"*)
    f="$FAKE_DIR/settings-$(opt --name "$@")"; touch "$f"; on=''
    for a in "$@"; do
      case "$a" in --settings) on=1; continue ;; --*) on='' ;; esac
      if [ -n "$on" ]; then grep -v "^${a%%=*}=" "$f" > "$f.new"; mv "$f.new" "$f"; echo "$a" >> "$f"; fi
    done ;;
  "functionapp config appsettings delete"*)
    f="$FAKE_DIR/settings-$(opt --name "$@")"; touch "$f"; on=''
    for a in "$@"; do
      case "$a" in --setting-names) on=1; continue ;; --*) on='' ;; esac
      if [ -n "$on" ]; then grep -v "^$a=" "$f" > "$f.new"; mv "$f.new" "$f"; fi
    done ;;
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

const GATEWAY_ID: &str = "/subscriptions/0000/resourceGroups/rg-test/providers/Microsoft.ApiManagement/service/flowgrid-abc-apim";

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
            json!({
                "app": app,
                "name": format!("flowgrid-abc-{app}-blue"),
                "blue": format!("flowgrid-abc-{app}-blue"),
                "green": format!("flowgrid-abc-{app}-green"),
            })
        })
        .collect();
    let triggers: String = manifest()["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| {
            let functions: Vec<&str> = a["triggers"]
                .as_array()
                .expect("triggers per app")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{} {}\n",
                a["name"].as_str().expect("a name"),
                functions.join(" ")
            )
        })
        .collect();
    std::fs::write(dir.path().join("apps"), triggers).expect("apps");
    let outputs = json!({
        "gatewayUrl": { "type": "String", "value": "https://flowgrid-abc-apim.azure-api.net" },
        "gatewayName": { "type": "String", "value": "flowgrid-abc-apim" },
        "gatewayResourceId": { "type": "String", "value": GATEWAY_ID },
        "appInsightsName": { "type": "String", "value": "flowgrid-abc-ai" },
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
    /// The full deployment (infrastructure, secrets, packages, smoke calls).
    fn deploy(&self, extra: &[&str]) -> (bool, String) {
        let mut args = vec!["--publisher-email", "ops@example.com"];
        args.extend(extra);
        self.run(&args)
    }

    /// `flowgrid deploy --resource-group rg-test <extra>` with the stand-ins.
    fn run(&self, extra: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_flowgrid"))
            .args(["deploy", "--resource-group", "rg-test"])
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

    /// `flowgrid deploy --resource-group rg-test <extra>`, which must succeed: the calls it
    /// made and what it printed.
    fn succeed(&self, extra: &[&str]) -> (Vec<String>, String) {
        let before = self.calls().len();
        let (ok, output) = self.run(extra);
        assert!(ok, "{output}");
        (self.calls_since(before), output)
    }

    /// The calls made since the first `since` ones.
    fn calls_since(&self, since: usize) -> Vec<String> {
        self.calls().split_off(since)
    }

    /// A file the stand-in keeps (named value, pool, settings), trimmed; empty when absent.
    fn kept(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The next call containing `text` fails once.
    fn fail_next(&self, text: &str) {
        std::fs::write(self.dir.path().join("fail"), text).expect("fail file");
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
        // A first deployment: no recorded blue/green state, every app blue.
        "colours={}",
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
            "az functionapp deployment source config-zip --resource-group rg-test --name flowgrid-abc-{app}-blue --src"
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
    // The rerun passes the blue/green state API Management records (here: the Bicep's initial).
    let create = rerun
        .iter()
        .find(|c| c.contains("deployment group create"))
        .expect("the rerun deploys the infrastructure");
    assert_eq!(
        colours_of(create)["execution"],
        json!({ "live": "blue", "greenWeight": 0 }),
        "{create}"
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
                "az storage blob upload --auth-mode login --account-name flowgridrtabc --container-name package-{app}-blue --name {app}.zip"
            ))),
            "{calls:#?}"
        );
        assert!(
            calls.iter().any(|c| c.contains(&format!(
                "az functionapp restart --resource-group rg-test --name flowgrid-abc-{app}-blue"
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

/// The `colours` parameter of an `az deployment group create` call.
fn colours_of(call: &str) -> Value {
    let start = call.find("colours=").expect("a colours parameter") + "colours=".len();
    let end = call[start..]
        .find(" --query")
        .expect("--query after the parameters")
        + start;
    serde_json::from_str(&call[start..end]).expect("colours is JSON")
}

/// The app whose blue/green the tests drive: the one with the most timer and Service Bus functions.
const APP: &str = "execution";

fn triggers_of(app: &str) -> Vec<String> {
    manifest()["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["name"] == app)
        .expect("the app")["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .map(|t| t.as_str().expect("a name").to_owned())
        .collect()
}

/// The `AzureWebJobs.<function>.Disabled=true` settings of every trigger of `app`, sorted.
fn disabled_settings(app: &str) -> Vec<String> {
    let mut settings: Vec<String> = triggers_of(app)
        .iter()
        .map(|f| format!("AzureWebJobs.{f}.Disabled=true"))
        .collect();
    settings.sort();
    settings
}

impl Fake {
    /// The settings the stand-in keeps for a Function App, sorted.
    fn settings(&self, function_app: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .kept(&format!("settings-{function_app}"))
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// The pool's (blue, green) weights from its last update.
    fn pool_weights(&self, app: &str) -> (u64, u64) {
        let body: Value =
            serde_json::from_str(&self.kept(&format!("pool-{app}-pool"))).expect("a pool update");
        let services = body["properties"]["pool"]["services"]
            .as_array()
            .expect("services")
            .clone();
        assert_eq!(body["properties"]["type"], "Pool");
        let weight = |colour: &str| {
            services
                .iter()
                .find(|s| s["id"] == format!("/backends/{app}-{colour}"))
                .and_then(|s| s["weight"].as_u64())
                .unwrap_or_else(|| panic!("no {colour} member in {body}"))
        };
        (weight("blue"), weight("green"))
    }
}

/// Asserts that `calls` are exactly the calls starting with `expected`, in order.
fn assert_calls(calls: &[String], expected: &[String]) {
    let matches = calls.len() == expected.len()
        && calls
            .iter()
            .zip(expected)
            .all(|(c, e)| c.starts_with(e.as_str()));
    assert!(
        matches,
        "expected calls starting with:\n{expected:#?}\ngot:\n{calls:#?}"
    );
}

#[test]
fn canary_promote_and_rollback_make_exactly_their_az_calls_and_a_rerun_changes_nothing() {
    let fake = fake("FlexConsumption");
    let (ok, output) = fake.deploy(&[]);
    assert!(ok, "{output}");
    let (blue, green) = (
        format!("flowgrid-abc-{APP}-blue"),
        format!("flowgrid-abc-{APP}-green"),
    );
    // As deployed: blue live, green idle with its timer and Service Bus functions off.
    assert!(!triggers_of(APP).is_empty());
    assert_eq!(fake.settings(&green), disabled_settings(APP));
    assert_eq!(fake.settings(&blue), Vec::<String>::new());

    let reads = [
        "az deployment group show --resource-group rg-test --name flowgrid --query properties.outputs".to_owned(),
        "az apim nv list --resource-group rg-test --service-name flowgrid-abc-apim".to_owned(),
    ];
    let pool_put = format!(
        "az rest --method put --url {GATEWAY_ID}/backends/{APP}-pool?api-version=2024-05-01 --body"
    );
    let weight_update = |w: u8| {
        format!(
            "az apim nv update --resource-group rg-test --service-name flowgrid-abc-apim --named-value-id {APP}-green-weight --value {w}"
        )
    };
    let settings_list = |name: &str| {
        format!("az functionapp config appsettings list --resource-group rg-test --name {name}")
    };

    // The canary: green (idle) at 10%: the pool, then the named value the policies read.
    let canary = format!("{APP}=10");
    let (calls, output) = fake.succeed(&["--canary", &canary]);
    assert_calls(
        &calls,
        &[reads.to_vec(), vec![pool_put.clone(), weight_update(10)]].concat(),
    );
    assert_eq!(fake.kept(&format!("nv-{APP}-green-weight")), "10");
    assert_eq!(fake.pool_weights(APP), (90, 10));
    assert!(
        output.contains(&format!(
            "{APP}: blue live (90%), canary green at 10% of tenants"
        )),
        "{output}"
    );
    // How to compare the colours before promoting.
    assert!(
        output.contains("az monitor app-insights query --resource-group rg-test --app flowgrid-abc-ai --analytics-query")
            && output.contains(&format!(r#"cloud_RoleName in ("{blue}", "{green}")"#))
            && output.contains("by cloud_RoleName"),
        "{output}"
    );
    // Rerun: reads only.
    let (calls, _) = fake.succeed(&["--canary", &canary]);
    assert_calls(&calls, &reads);

    // Status: the state and the query, nothing changed.
    let (calls, output) = fake.succeed(&["--status"]);
    assert_calls(&calls, &reads);
    assert!(
        output.contains(&format!(
            "{APP}: blue live (90%), canary green at 10% of tenants"
        )),
        "{output}"
    );
    assert!(
        output.contains("auth: blue live with all the traffic, green idle"),
        "{output}"
    );

    // A redeploy of everything keeps the canary.
    let before = fake.calls().len();
    let (ok, output) = fake.deploy(&[]);
    assert!(ok, "{output}");
    let redeploy = fake.calls_since(before);
    let create = redeploy
        .iter()
        .find(|c| c.contains("deployment group create"))
        .expect("a deployment");
    assert_eq!(
        colours_of(create)[APP],
        json!({ "live": "blue", "greenWeight": 10 })
    );
    assert!(
        output.contains(&format!("{APP}: canary green at 10% kept")),
        "{output}"
    );

    // Promote green: all traffic, blue's triggers off, green's on, green recorded live.
    let before = fake.calls().len();
    let promote = format!("{APP}=green");
    let (ok, output) = fake.run(&["--promote", &promote]);
    assert!(ok, "{output}");
    let calls = fake.calls_since(before);
    assert_calls(
        &calls,
        &[
            reads.to_vec(),
            vec![
                pool_put.clone(),
                weight_update(100),
                settings_list(&blue),
                format!("az functionapp config appsettings set --resource-group rg-test --name {blue} --output none --settings AzureWebJobs."),
                settings_list(&green),
                format!("az functionapp config appsettings delete --resource-group rg-test --name {green} --output none --setting-names AzureWebJobs."),
                format!("az apim nv update --resource-group rg-test --service-name flowgrid-abc-apim --named-value-id {APP}-live --value green"),
            ],
        ]
        .concat(),
    );
    assert_eq!(fake.settings(&blue), disabled_settings(APP));
    assert_eq!(fake.settings(&green), Vec::<String>::new());
    assert_eq!(fake.pool_weights(APP), (0, 100));
    assert_eq!(fake.kept(&format!("nv-{APP}-live")), "green");
    assert_eq!(fake.kept(&format!("nv-{APP}-green-weight")), "100");
    // Rerun: reads only.
    let (calls, _) = fake.succeed(&["--promote", &promote]);
    assert_calls(
        &calls,
        &[
            reads.to_vec(),
            vec![settings_list(&blue), settings_list(&green)],
        ]
        .concat(),
    );

    // The next build: staged on blue (now idle), then a canary on blue, rolled back.
    let (calls, _) = fake.succeed(&["--stage", APP]);
    assert_calls(
        &calls,
        &[
            reads.to_vec(),
            vec![
                settings_list(&blue),
                format!("az functionapp deployment source config-zip --resource-group rg-test --name {blue} --src"),
            ],
        ]
        .concat(),
    );
    assert_eq!(
        fake.settings(&blue),
        disabled_settings(APP),
        "staging keeps blue's triggers off"
    );
    let canary = format!("{APP}=20");
    let (ok, output) = fake.run(&["--canary", &canary]);
    assert!(ok, "{output}");
    assert_eq!(
        fake.pool_weights(APP),
        (20, 80),
        "blue is the canary: tenants' buckets 80-99"
    );
    assert_eq!(fake.kept(&format!("nv-{APP}-green-weight")), "80");
    let (calls, _) = fake.succeed(&["--rollback", APP]);
    assert_calls(
        &calls,
        &[
            reads.to_vec(),
            vec![
                pool_put,
                weight_update(100),
                settings_list(&blue),
                settings_list(&green),
            ],
        ]
        .concat(),
    );
    assert_eq!(fake.pool_weights(APP), (0, 100));
    assert_eq!(fake.kept(&format!("nv-{APP}-live")), "green");
    let (calls, _) = fake.succeed(&["--rollback", APP]);
    assert_calls(
        &calls,
        &[
            reads.to_vec(),
            vec![settings_list(&blue), settings_list(&green)],
        ]
        .concat(),
    );

    // A full deployment now deploys the build to green, the live colour.
    let before = fake.calls().len();
    let (ok, output) = fake.deploy(&[]);
    assert!(ok, "{output}");
    let calls = fake.calls_since(before);
    assert!(
        calls.iter().any(|c| c.starts_with(&format!(
            "az functionapp deployment source config-zip --resource-group rg-test --name {green} --src"
        ))),
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.contains(&format!("--name {blue} --src"))),
        "{calls:#?}"
    );
    let create = calls
        .iter()
        .find(|c| c.contains("deployment group create"))
        .expect("a deployment");
    assert_eq!(
        colours_of(create)[APP],
        json!({ "live": "green", "greenWeight": 100 })
    );
    // Which the stand-in, like the Bicep, turns into blue's triggers off, green's on.
    assert_eq!(fake.settings(&blue), disabled_settings(APP));
    assert_eq!(fake.settings(&green), Vec::<String>::new());
}

#[test]
fn a_promote_cut_short_is_completed_by_a_rerun() {
    let fake = fake("FlexConsumption");
    let (ok, output) = fake.deploy(&[]);
    assert!(ok, "{output}");
    let (blue, green) = (
        format!("flowgrid-abc-{APP}-blue"),
        format!("flowgrid-abc-{APP}-green"),
    );
    // Green's triggers cannot be switched on: blue's are already off, nothing recorded live.
    fake.fail_next(&format!(
        "appsettings delete --resource-group rg-test --name {green}"
    ));
    let promote = format!("{APP}=green");
    let (ok, output) = fake.run(&["--promote", &promote]);
    assert!(!ok, "the injected failure must fail the promote: {output}");
    assert!(output.contains("injected failure"), "{output}");
    assert_eq!(fake.settings(&blue), disabled_settings(APP));
    assert_eq!(fake.settings(&green), disabled_settings(APP));
    assert_eq!(fake.kept(&format!("nv-{APP}-live")), "blue");
    // The rerun finishes it.
    let (ok, output) = fake.run(&["--promote", &promote]);
    assert!(ok, "{output}");
    assert_eq!(fake.settings(&blue), disabled_settings(APP));
    assert_eq!(fake.settings(&green), Vec::<String>::new());
    assert_eq!(fake.kept(&format!("nv-{APP}-live")), "green");
    assert_eq!(fake.pool_weights(APP), (0, 100));
}

#[test]
fn bad_colour_options_are_refused_before_any_az_call() {
    let fake = fake("FlexConsumption");
    for (args, message) in [
        (vec!["--canary", "execution=150"], "0-100"),
        (vec!["--canary", "execution=ten"], "0-100"),
        (vec!["--canary", "execution"], "<app>="),
        (vec!["--canary", "nope=5"], "no app \"nope\""),
        (vec!["--promote", "execution=red"], "blue or green"),
        (vec!["--promote", "execution"], "<app>="),
        (vec!["--rollback", "nope"], "no app \"nope\""),
        (vec!["--stage", "nope"], "no app \"nope\""),
        (
            vec!["--canary", "execution=5", "--rollback", "execution"],
            "one of",
        ),
    ] {
        let (ok, output) = fake.run(&args);
        assert!(!ok, "{args:?} was accepted: {output}");
        assert!(output.contains(message), "{args:?}: {output}");
        assert_eq!(fake.calls(), Vec::<String>::new(), "{args:?} called az");
    }
    // Without a deployment, a colour operation says so and changes nothing.
    let (ok, output) = fake.run(&["--canary", "execution=5"]);
    assert!(!ok, "{output}");
    assert!(output.contains("run flowgrid deploy first"), "{output}");
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.starts_with("az deployment group show")),
        "{:#?}",
        fake.calls()
    );
    // The full deployment still needs the publisher e-mail.
    let (ok, output) = fake.run(&[]);
    assert!(!ok && output.contains("--publisher-email"), "{output}");
}
