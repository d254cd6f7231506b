//! `flowgrid deploy`: the steps of docs/deploy.md, run with the `az` CLI, with progress output.
//!
//! 1. the resource group (`az group create`, when `--location` is given);
//! 2. the infrastructure (`az deployment group create` with `infra/main.bicep` and
//!    `infra/main.parameters.json`), whose outputs drive the next steps;
//! 3. the Key Vault secrets the apps read (`secrets` in `infra/apps.json`), created only when
//!    absent: the key-encryption key is 32 random bytes, never replaced; an AI provider's API key
//!    (`FLOWGRID_AI_*_API_KEY`) is optional: when absent it is named and left unset (the app then
//!    runs without that provider, the offline provider being the default); any other missing
//!    secret stops the deployment, naming the command that sets it;
//! 4. the packages (`flowgrid package`), then one deploy per app to its live colour: a zip
//!    deploy on Flex Consumption, an upload of the package blob and a restart on Elastic Premium;
//! 5. a smoke call through the gateway: each app's liveness route.
//!
//! Every step is idempotent, so rerunning the command after a failure or a change is the way to
//! resume or update. Each app is a blue/green pair of Function Apps; the deployment keeps the
//! state API Management records (which colour is live, green's weight), and the options
//! `--stage`, `--canary`, `--promote`, `--rollback` and `--status` work on it without a redeploy
//! (`colours`, docs/deploy.md "Canary, promote, rollback").

mod colours;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use colours::{Colour, Deployment, Operation, State};

/// The deployment's name in the resource group (its outputs are read back by name).
const DEPLOYMENT: &str = "flowgrid";

/// How often and how long to wait for a fresh Key Vault role assignment to apply.
const ROLE_RETRIES: u32 = 12;
const ROLE_RETRY_DELAY: Duration = Duration::from_secs(10);

/// `flowgrid deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The resource group to deploy into.
    #[arg(long)]
    resource_group: String,
    /// Create the resource group in this region first (idempotent); without it, the group must exist.
    #[arg(long)]
    location: Option<String>,
    /// API Management publisher e-mail (the service requires one); needed to deploy the
    /// infrastructure, not by the colour options.
    #[arg(long, required_unless_present_any = ["stage", "canary", "promote", "rollback", "status"])]
    publisher_email: Option<String>,
    /// Object id of the deployer, granted the rights to set secrets and upload packages;
    /// default: the signed-in user's (`az ad signed-in-user show`).
    #[arg(long)]
    deployer: Option<String>,
    /// A template parameter, NAME=VALUE (repeatable), e.g. hostingPlan=ElasticPremium.
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    parameters: Vec<String>,
    /// Folder of the packages.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// Deploy the packages already in --dist instead of building them.
    #[arg(long)]
    no_package: bool,
    /// Rust target of the packages (see `flowgrid package --target`).
    #[arg(long)]
    target: Option<String>,
    /// The repository root (infra/, functions/); default: the nearest folder upwards with both.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The Azure CLI executable.
    #[arg(long, env = "FLOWGRID_AZ", default_value = "az")]
    az: String,
    /// The curl executable, for the smoke calls.
    #[arg(long, env = "FLOWGRID_CURL", default_value = "curl")]
    curl: String,
    /// Deploy only this app's package, to its idle colour (its timer and Service Bus functions
    /// off), without traffic until --canary gives it some.
    #[arg(long, value_name = "APP")]
    stage: Option<String>,
    /// Send this percentage of the app's tenants (and token-less requests) to its idle colour,
    /// the canary: APP=WEIGHT, 0-100.
    #[arg(long, value_name = "APP=WEIGHT")]
    canary: Option<String>,
    /// Make this colour of the app live: all its traffic, its timer and Service Bus functions on
    /// and the other colour's off: APP=blue|green.
    #[arg(long, value_name = "APP=COLOUR")]
    promote: Option<String>,
    /// Take the app's canary back to 0% (its triggers off, the live colour's on).
    #[arg(long, value_name = "APP")]
    rollback: Option<String>,
    /// Print each app's live colour and canary weight, and the query that compares the colours'
    /// error rate and latency.
    #[arg(long)]
    status: bool,
}

/// Runs every step.
pub fn run(args: &DeployArgs) -> Result<()> {
    let root = find_root(args.root.as_deref())?;
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("infra/apps.json"))
            .context("reading infra/apps.json")?,
    )
    .context("infra/apps.json is not JSON")?;
    let app_names: Vec<String> = manifest["apps"]
        .as_array()
        .context("infra/apps.json has no apps array")?
        .iter()
        .filter_map(|a| a["name"].as_str().map(str::to_owned))
        .collect();
    // Checked before any az call.
    let operation = Operation::from_options(
        args.stage.as_deref(),
        args.canary.as_deref(),
        args.promote.as_deref(),
        args.rollback.as_deref(),
        args.status,
        &app_names,
    )?;
    let az = Az {
        program: &args.az,
        group: &args.resource_group,
    };
    match operation {
        None => {}
        Some(Operation::Stage(app)) => return stage(args, &root, &az, &manifest, &app_names, &app),
        Some(operation) => return colours::run(&az, &manifest, &operation, &app_names),
    }
    let publisher_email = args
        .publisher_email
        .as_deref()
        .context("--publisher-email is required to deploy the infrastructure")?;

    if let Some(location) = &args.location {
        step(&format!(
            "resource group {} in {location}",
            args.resource_group
        ));
        az.run(&[
            "group",
            "create",
            "--name",
            &args.resource_group,
            "--location",
            location,
            "--output",
            "none",
        ])?;
    }

    step(
        "infrastructure: az deployment group create (API Management takes minutes the first time)",
    );
    let deployer = match &args.deployer {
        Some(id) => id.clone(),
        None => az
            .run(&[
                "ad",
                "signed-in-user",
                "show",
                "--query",
                "id",
                "--output",
                "tsv",
            ])
            .context(
                "finding the signed-in user (pass --deployer <object id> for a service principal)",
            )?
            .trim()
            .to_owned(),
    };
    // The blue/green state API Management records, so the deployment keeps it (a first
    // deployment has none: every app blue).
    let states = match Deployment::read(&az)? {
        None => BTreeMap::new(),
        Some(outputs) => match outputs.get("gatewayName").and_then(|o| o.get("value")) {
            Some(Value::String(gateway)) => colours::read_states(&az, gateway, &app_names)?,
            // A deployment from before blue/green: its gateway has no state yet.
            _ => BTreeMap::new(),
        },
    };
    for (app, state) in &states {
        if state.canary_weight() > 0 {
            println!(
                "    {app}: canary {} at {}% kept (flowgrid deploy --promote or --rollback ends it)",
                state.idle(),
                state.canary_weight()
            );
        }
    }
    let template = root.join("infra/main.bicep");
    let parameters = format!("@{}", root.join("infra/main.parameters.json").display());
    let email = format!("publisherEmail={publisher_email}");
    let deployer = format!("deployerPrincipalId={deployer}");
    let colours_parameter = colours::colours_parameter(&states);
    let mut command = vec![
        "deployment",
        "group",
        "create",
        "--resource-group",
        &args.resource_group,
        "--name",
        DEPLOYMENT,
        "--template-file",
        template.to_str().context("a non-UTF-8 path")?,
        "--parameters",
        &parameters,
        "--parameters",
        &email,
        &deployer,
    ];
    command.extend(args.parameters.iter().map(String::as_str));
    if !args.parameters.iter().any(|p| p.starts_with("colours=")) {
        command.push(&colours_parameter);
    }
    command.extend(["--query", "properties.outputs", "--output", "json"]);
    let outputs: Value = serde_json::from_str(&az.run(&command)?)
        .context("the deployment's outputs are not JSON")?;
    let output = |name: &str| -> Result<&Value> {
        outputs
            .get(name)
            .and_then(|o| o.get("value"))
            .with_context(|| format!("the deployment has no output {name}"))
    };
    let text = |name: &str| -> Result<String> {
        output(name)?
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("output {name} is not a string"))
    };
    let gateway = text("gatewayUrl")?;
    let vault = text("keyVaultName")?;
    let flex = text("hostingPlan")? == "FlexConsumption";
    let deployment = Deployment::from_outputs(&outputs)?;

    step(&format!("secrets in Key Vault {vault}"));
    for (setting, secret) in secrets(&manifest) {
        ensure_secret(&az, &vault, &setting, &secret)?;
    }

    packages(args, &root, None)?;

    let account = if flex {
        None
    } else {
        Some(text("packageStorageAccount")?)
    };
    // Each app's build goes to its live colour (the idle one gets builds with --stage).
    for app in &app_names {
        let live = states.get(app).copied().unwrap_or(State::INITIAL).live;
        let name = deployment.function_app(app, live)?;
        step(&format!("app {app}: deploying to {name} ({live}, live)"));
        deploy_package(args, &az, account.as_deref(), app, live, name)?;
    }

    step("smoke: each app's liveness through the gateway");
    for (app, route) in liveness_routes(&manifest) {
        let url = format!("{}/api{route}", gateway.trim_end_matches('/'));
        let status = Command::new(&args.curl)
            .args([
                "--fail",
                "--silent",
                "--show-error",
                "--output",
                "/dev/null",
                "--max-time",
                "30",
                "--retry",
                "6",
                "--retry-all-errors",
                "--retry-delay",
                "10",
                &url,
            ])
            .status()
            .with_context(|| format!("running {}", args.curl))?;
        if !status.success() {
            bail!("{app}: GET {url} failed");
        }
        println!("    {app}: GET {url} ok");
    }
    step(&format!("done: the gateway is {gateway}/api"));
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Builds the packages (of one app, or all) unless --no-package.
fn packages(args: &DeployArgs, root: &Path, app: Option<&str>) -> Result<()> {
    if args.no_package {
        step(&format!("packages: using {}", args.dist.display()));
        return Ok(());
    }
    step("packages: flowgrid package");
    flowgrid_host::cli::run_package(&flowgrid_host::cli::PackageArgs {
        app: app.map(str::to_owned),
        out: args.dist.clone(),
        root: Some(root.to_owned()),
        target: args.target.clone(),
        no_build: false,
    })
}

/// Deploys `<dist>/<app>.zip` to the Function App `name` (colour `colour` of `app`): a zip deploy
/// on Flex Consumption (`account` None), else an upload to its package container and a restart.
fn deploy_package(
    args: &DeployArgs,
    az: &Az,
    account: Option<&str>,
    app: &str,
    colour: Colour,
    name: &str,
) -> Result<()> {
    let zip = args.dist.join(format!("{app}.zip"));
    if !zip.is_file() {
        bail!("{}: no package for {app}", zip.display());
    }
    let zip = zip.to_str().context("a non-UTF-8 path")?;
    match account {
        None => {
            az.run(&[
                "functionapp",
                "deployment",
                "source",
                "config-zip",
                "--resource-group",
                &args.resource_group,
                "--name",
                name,
                "--src",
                zip,
                "--output",
                "none",
            ])?;
        }
        Some(account) => {
            az.run(&[
                "storage",
                "blob",
                "upload",
                "--auth-mode",
                "login",
                "--account-name",
                account,
                "--container-name",
                &format!("package-{app}-{colour}"),
                "--name",
                &format!("{app}.zip"),
                "--file",
                zip,
                "--overwrite",
                "--output",
                "none",
            ])?;
            az.run(&[
                "functionapp",
                "restart",
                "--resource-group",
                &args.resource_group,
                "--name",
                name,
            ])?;
        }
    }
    Ok(())
}

/// `--stage <app>`: the app's package on its idle colour, whose timer and Service Bus functions
/// stay off; its traffic stays as it is (0% until --canary).
fn stage(
    args: &DeployArgs,
    root: &Path,
    az: &Az,
    manifest: &Value,
    app_names: &[String],
    app: &str,
) -> Result<()> {
    // The package first: a zip that cannot be built or found stops before anything changes.
    packages(args, root, Some(app))?;
    if !args.dist.join(format!("{app}.zip")).is_file() {
        bail!(
            "{}: no package for {app}",
            args.dist.join(format!("{app}.zip")).display()
        );
    }
    let outputs = Deployment::require(az)?;
    let deployment = Deployment::from_outputs(&outputs)?;
    let states = colours::read_states(az, &deployment.gateway, app_names)?;
    let state = states.get(app).copied().unwrap_or(State::INITIAL);
    let idle = state.idle();
    let name = deployment.function_app(app, idle)?;
    step(&format!(
        "{app}: staging on {name} ({idle}, idle; {} stays live)",
        state.live
    ));
    colours::disable_idle_triggers(az, &deployment, manifest, app, idle)?;
    let flex = outputs
        .get("hostingPlan")
        .and_then(|o| o.get("value"))
        .and_then(Value::as_str)
        != Some("ElasticPremium");
    let account = if flex {
        None
    } else {
        Some(
            outputs
                .get("packageStorageAccount")
                .and_then(|o| o.get("value"))
                .and_then(Value::as_str)
                .context("the deployment has no output packageStorageAccount")?
                .to_owned(),
        )
    };
    deploy_package(args, az, account.as_deref(), app, idle, name)?;
    println!(
        "    {app}: {idle} has the new build and {}% of the traffic; next: flowgrid deploy \
         --resource-group {} --canary {app}=10",
        state.canary_weight(),
        az.group
    );
    println!(
        "    watch: {}",
        colours::watch_command(az, &deployment, app)?
    );
    Ok(())
}

/// The `az` CLI, with the resource group at hand.
struct Az<'a> {
    program: &'a str,
    group: &'a str,
}

impl Az<'_> {
    /// Runs `az <args>`, returning stdout; a failure carries az's stderr.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "az {} failed ({}): {}",
                args.iter().take(3).copied().collect::<Vec<_>>().join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("az printed non-UTF-8 output")
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.program)
            .args(args)
            .output()
            .with_context(|| {
                format!(
                    "running {} (the Azure CLI) for resource group {}",
                    self.program, self.group
                )
            })
    }
}

/// The Key Vault secrets the apps read: (setting, secret name), each secret once.
fn secrets(manifest: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for app in manifest["apps"].as_array().into_iter().flatten() {
        for (setting, secret) in app["secrets"].as_object().into_iter().flatten() {
            let Some(secret) = secret.as_str() else {
                continue;
            };
            if !out.iter().any(|(_, s)| s == secret) {
                out.push((setting.clone(), secret.to_owned()));
            }
        }
    }
    out
}

/// An AI provider's API key: the apps run without it (an unresolved Key Vault reference counts as
/// no key, docs/ai-providers.md), so its absence is not an error.
fn optional_secret(setting: &str) -> bool {
    setting.starts_with("FLOWGRID_AI_") && setting.ends_with("_API_KEY")
}

/// Creates the secret when it does not exist; an existing one is never replaced. Waits for a
/// fresh role assignment (403) to apply.
fn ensure_secret(az: &Az, vault: &str, setting: &str, secret: &str) -> Result<()> {
    for attempt in 1..=ROLE_RETRIES {
        let shown = az.output(&[
            "keyvault",
            "secret",
            "show",
            "--vault-name",
            vault,
            "--name",
            secret,
            "--query",
            "id",
            "--output",
            "tsv",
        ])?;
        if shown.status.success() {
            println!("    {secret} ({setting}): exists, kept");
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&shown.stderr);
        if stderr.contains("SecretNotFound") {
            let value = match setting {
                "FLOWGRID_KEY_ENCRYPTION_KEY" => random_key()?,
                _ if optional_secret(setting) => {
                    println!(
                        "    {secret} ({setting}): not set, optional (set it with az keyvault secret \
                         set --vault-name {vault} --name {secret} --file <file> to use that provider)"
                    );
                    return Ok(());
                }
                _ => bail!(
                    "secret {secret} ({setting}) is missing from {vault}: set it with \
                     az keyvault secret set --vault-name {vault} --name {secret} --file <file>"
                ),
            };
            // Through a private temporary file, not the command line (which others can see).
            let mut file = tempfile::NamedTempFile::new()?;
            file.write_all(value.as_bytes())?;
            file.flush()?;
            let path = file.path().to_str().context("a non-UTF-8 temporary path")?;
            az.run(&[
                "keyvault",
                "secret",
                "set",
                "--vault-name",
                vault,
                "--name",
                secret,
                "--file",
                path,
                "--encoding",
                "utf-8",
                "--output",
                "none",
            ])?;
            println!("    {secret} ({setting}): created");
            return Ok(());
        }
        if stderr.contains("Forbidden") && attempt < ROLE_RETRIES {
            println!(
                "    {secret}: not allowed yet (a new role assignment applies within minutes), retrying"
            );
            std::thread::sleep(ROLE_RETRY_DELAY);
            continue;
        }
        bail!("az keyvault secret show {secret} failed: {}", stderr.trim());
    }
    bail!("secret {secret}: still forbidden after waiting for the role assignment")
}

/// 32 random bytes from the operating system, base64: an AES-256 key.
fn random_key() -> Result<String> {
    use base64::Engine;
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Each app's liveness route (its `HealthLive` function) from the gateway's operations.
fn liveness_routes(manifest: &Value) -> Vec<(String, String)> {
    manifest["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|op| op["function"] == "HealthLive" && op["method"] == "GET")
        .filter_map(|op| {
            Some((
                op["app"].as_str()?.to_owned(),
                op["urlTemplate"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The repository root: `explicit`, or the nearest folder upwards with `infra/main.bicep` and
/// `functions/`.
fn find_root(explicit: Option<&Path>) -> Result<PathBuf> {
    let is_root =
        |dir: &Path| dir.join("infra/main.bicep").is_file() && dir.join("functions").is_dir();
    if let Some(dir) = explicit {
        if !is_root(dir) {
            bail!("{}: no infra/main.bicep and functions/ here", dir.display());
        }
        return Ok(dir.to_owned());
    }
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .find(|d| is_root(d))
        .map(Path::to_owned)
        .context("no folder with infra/main.bicep and functions/ from here upwards; pass --root")
}
