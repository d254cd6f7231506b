//! Blue/green per app in Azure (docs/deploy.md, "Canary, promote, rollback"): the options of
//! `flowgrid deploy` that stage a build on an app's idle colour, shift the canary's weight,
//! promote a colour and roll back, and the state they keep.
//!
//! Each app runs as two Function Apps, `<app>-blue` and `<app>-green` (infra/main.bicep). API
//! Management records the state in two named values per app: `<app>-green-weight` (0-100, the
//! percentage of tenants, and of token-less requests, sent to green; the operations' policies read
//! it) and `<app>-live` (the colour whose timer and Service Bus functions run). Every command reads
//! that state, works out the state it is asked for, and changes only what differs, in an order
//! that a rerun after a failure completes: the pool's weights before the named value that records
//! them, the old colour's triggers off before the new colour's on (a queue message waits a moment
//! rather than a timer running twice), the live colour's record last.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Az, DEPLOYMENT, step};

/// The API version of the backend pool updates (`az rest`), the one infra/modules/apim.bicep uses.
const BACKENDS_API_VERSION: &str = "2024-05-01";

/// One of an app's two Function Apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Blue,
    Green,
}

impl Colour {
    fn parse(text: &str) -> Option<Colour> {
        match text {
            "blue" => Some(Colour::Blue),
            "green" => Some(Colour::Green),
            _ => None,
        }
    }

    pub fn other(self) -> Colour {
        match self {
            Colour::Blue => Colour::Green,
            Colour::Green => Colour::Blue,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Green => "green",
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An app's blue/green state: the live colour and green's share of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub live: Colour,
    pub green_weight: u8,
}

impl State {
    /// Without a recorded state: blue live, green 0 (main.bicep's default).
    pub const INITIAL: State = State {
        live: Colour::Blue,
        green_weight: 0,
    };

    /// The idle colour, which gets new builds and runs as the canary.
    pub fn idle(self) -> Colour {
        self.live.other()
    }

    /// The canary's (idle colour's) share of the traffic, in percent.
    pub fn canary_weight(self) -> u8 {
        match self.live {
            Colour::Blue => self.green_weight,
            Colour::Green => 100 - self.green_weight,
        }
    }

    /// This state with the canary at `weight` percent.
    fn with_canary(self, weight: u8) -> State {
        State {
            live: self.live,
            green_weight: match self.live {
                Colour::Blue => weight,
                Colour::Green => 100 - weight,
            },
        }
    }

    /// `colour` live with all the traffic, no canary.
    fn settled(colour: Colour) -> State {
        State {
            live: colour,
            green_weight: if colour == Colour::Green { 100 } else { 0 },
        }
    }
}

/// What a `flowgrid deploy` invocation asks of the colours; checked against infra/apps.json
/// before any `az` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Deploy the package of an app to its idle colour.
    Stage(String),
    /// The canary (idle colour) of an app at this weight.
    Canary(String, u8),
    /// This colour live with all the traffic; the other's triggers off.
    Promote(String, Colour),
    /// The canary of an app back to weight 0, its triggers off, the live colour's on.
    Rollback(String),
    /// Print each app's state and how to watch it.
    Status,
}

impl Operation {
    /// The operation the options ask for (at most one), `None` for a full deployment; `apps` are
    /// the app names of infra/apps.json.
    pub fn from_options(
        stage: Option<&str>,
        canary: Option<&str>,
        promote: Option<&str>,
        rollback: Option<&str>,
        status: bool,
        apps: &[String],
    ) -> Result<Option<Operation>> {
        let given = [stage, canary, promote, rollback]
            .iter()
            .filter(|o| o.is_some())
            .count()
            + usize::from(status);
        if given > 1 {
            bail!("give one of --stage, --canary, --promote, --rollback and --status at a time");
        }
        let known = |app: &str| -> Result<String> {
            if apps.iter().any(|a| a == app) {
                Ok(app.to_owned())
            } else {
                bail!(
                    "no app {app:?} in infra/apps.json (apps: {})",
                    apps.join(", ")
                )
            }
        };
        let pair = |option: &str, value: &str, what: &str| -> Result<(String, String)> {
            let (app, rest) = value
                .split_once('=')
                .with_context(|| format!("--{option} {value:?}: expected <app>={what}"))?;
            Ok((known(app)?, rest.to_owned()))
        };
        if let Some(app) = stage {
            return Ok(Some(Operation::Stage(known(app)?)));
        }
        if let Some(value) = canary {
            let (app, weight) = pair("canary", value, "<weight 0-100>")?;
            let weight: u8 = weight.parse().ok().filter(|w| *w <= 100).with_context(|| {
                format!("--canary {value:?}: the weight is a whole percentage, 0-100")
            })?;
            return Ok(Some(Operation::Canary(app, weight)));
        }
        if let Some(value) = promote {
            let (app, colour) = pair("promote", value, "blue|green")?;
            let colour = Colour::parse(&colour)
                .with_context(|| format!("--promote {value:?}: the colour is blue or green"))?;
            return Ok(Some(Operation::Promote(app, colour)));
        }
        if let Some(app) = rollback {
            return Ok(Some(Operation::Rollback(known(app)?)));
        }
        Ok(status.then_some(Operation::Status))
    }
}

/// What an existing deployment's outputs say about the colours.
pub struct Deployment {
    pub gateway: String,
    pub gateway_id: String,
    pub app_insights: String,
    /// Per app: its (blue, green) Function App names.
    pub apps: BTreeMap<String, (String, String)>,
}

impl Deployment {
    /// The deployment's outputs (`az deployment group show`); `None` when there is none yet.
    pub fn read(az: &Az) -> Result<Option<Value>> {
        let out = az.output(&[
            "deployment",
            "group",
            "show",
            "--resource-group",
            az.group,
            "--name",
            DEPLOYMENT,
            "--query",
            "properties.outputs",
            "--output",
            "json",
        ])?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("DeploymentNotFound") || stderr.contains("ResourceGroupNotFound") {
                return Ok(None);
            }
            bail!(
                "az deployment group show failed ({}): {}",
                out.status,
                stderr.trim()
            );
        }
        let outputs =
            serde_json::from_slice(&out.stdout).context("the deployment's outputs are not JSON")?;
        Ok(Some(outputs))
    }

    /// The outputs of the deployment there is; an error naming the first step when there is
    /// none yet.
    pub fn require(az: &Az) -> Result<Value> {
        Deployment::read(az)?.with_context(|| {
            format!(
                "no deployment {DEPLOYMENT} in resource group {}: run flowgrid deploy first",
                az.group
            )
        })
    }

    /// The colours' resources from the outputs of a blue/green deployment.
    pub fn from_outputs(outputs: &Value) -> Result<Deployment> {
        let text = |name: &str| -> Result<String> {
            outputs
                .get(name)
                .and_then(|o| o.get("value"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| {
                    format!(
                        "the deployment has no output {name}: deploy this version's \
                         infrastructure first (flowgrid deploy without colour options)"
                    )
                })
        };
        let mut apps = BTreeMap::new();
        let list = outputs
            .get("functionAppNames")
            .and_then(|o| o.get("value"))
            .and_then(Value::as_array)
            .context("the deployment has no output functionAppNames")?;
        for entry in list {
            let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
            let (Some(app), Some(blue), Some(green)) =
                (field("app"), field("blue"), field("green"))
            else {
                bail!(
                    "output functionAppNames has no blue and green Function Apps: deploy this \
                     version's infrastructure first (flowgrid deploy without colour options)"
                );
            };
            apps.insert(app, (blue, green));
        }
        Ok(Deployment {
            gateway: text("gatewayName")?,
            gateway_id: text("gatewayResourceId")?,
            app_insights: text("appInsightsName")?,
            apps,
        })
    }

    /// The Function App of `app` in `colour`.
    pub fn function_app(&self, app: &str, colour: Colour) -> Result<&str> {
        let (blue, green) = self
            .apps
            .get(app)
            .with_context(|| format!("the deployment has no Function Apps for {app}"))?;
        Ok(match colour {
            Colour::Blue => blue,
            Colour::Green => green,
        })
    }
}

/// Each app's state as API Management's named values record it (apps without a record: the
/// initial state).
pub fn read_states(az: &Az, gateway: &str, apps: &[String]) -> Result<BTreeMap<String, State>> {
    let listed = az.run(&[
        "apim",
        "nv",
        "list",
        "--resource-group",
        az.group,
        "--service-name",
        gateway,
        "--query",
        "[].{name:name, value:value}",
        "--output",
        "json",
    ])?;
    let listed: Value = serde_json::from_str(&listed).context("az apim nv list: not JSON")?;
    let values: BTreeMap<String, String> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|nv| {
            Some((
                nv.get("name")?.as_str()?.to_owned(),
                nv.get("value")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut states = BTreeMap::new();
    for app in apps {
        let live = match values.get(&format!("{app}-live")) {
            None => State::INITIAL.live,
            Some(v) => Colour::parse(v.trim())
                .with_context(|| format!("named value {app}-live is {v:?}, not blue or green"))?,
        };
        let green_weight = match values.get(&format!("{app}-green-weight")) {
            None => State::settled(live).green_weight,
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|w| *w <= 100)
                .with_context(|| format!("named value {app}-green-weight is {v:?}, not 0-100"))?,
        };
        states.insert(app.clone(), State { live, green_weight });
    }
    Ok(states)
}

/// The `colours` parameter of infra/main.bicep for these states.
pub fn colours_parameter(states: &BTreeMap<String, State>) -> String {
    let object: serde_json::Map<String, Value> = states
        .iter()
        .map(|(app, s)| {
            (
                app.clone(),
                json!({ "live": s.live.name(), "greenWeight": s.green_weight }),
            )
        })
        .collect();
    format!("colours={}", Value::Object(object))
}

/// The setting that stops the Functions host triggering `function`.
fn disabled_setting(function: &str) -> String {
    format!("AzureWebJobs.{function}.Disabled")
}

/// The names of the `AzureWebJobs.<function>.Disabled` settings of a Function App set to true.
fn disabled_functions(az: &Az, function_app: &str) -> Result<Vec<String>> {
    let listed = az.run(&[
        "functionapp",
        "config",
        "appsettings",
        "list",
        "--resource-group",
        az.group,
        "--name",
        function_app,
        "--query",
        "[?starts_with(name, 'AzureWebJobs.')].{name:name, value:value}",
        "--output",
        "json",
    ])?;
    let listed: Value = serde_json::from_str(&listed)
        .context("az functionapp config appsettings list: not JSON")?;
    Ok(listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s.get("value")
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
        .filter_map(|s| s.get("name")?.as_str().map(str::to_owned))
        .collect())
}

/// The Function App's triggers (timer and Service Bus functions) on or off: off is an
/// `AzureWebJobs.<function>.Disabled=true` setting per function, on is none (as the Bicep
/// deploys the live colour). Only what differs is changed.
fn set_triggers(az: &Az, function_app: &str, triggers: &[String], on: bool) -> Result<()> {
    let disabled = disabled_functions(az, function_app)?;
    let change: Vec<String> = triggers
        .iter()
        .map(|f| disabled_setting(f))
        .filter(|s| disabled.contains(s) == on)
        .collect();
    let state = if on { "on" } else { "off" };
    if change.is_empty() {
        println!("    {function_app}: timer and Service Bus functions already {state}");
        return Ok(());
    }
    let settings: Vec<String> = if on {
        change.clone()
    } else {
        change.iter().map(|s| format!("{s}=true")).collect()
    };
    let (verb, flag) = if on {
        ("delete", "--setting-names")
    } else {
        ("set", "--settings")
    };
    let mut command = vec![
        "functionapp",
        "config",
        "appsettings",
        verb,
        "--resource-group",
        az.group,
        "--name",
        function_app,
        "--output",
        "none",
        flag,
    ];
    command.extend(settings.iter().map(String::as_str));
    az.run(&command)?;
    if on {
        println!(
            "    {function_app}: timer and Service Bus functions on (removed {})",
            change.join(" ")
        );
    } else {
        println!(
            "    {function_app}: timer and Service Bus functions off ({})",
            settings.join(" ")
        );
    }
    Ok(())
}

/// The app's pool weights and green-weight named value at `green_weight` (when the named value
/// says otherwise): the pool first, the named value (the record) last.
fn set_weights(
    az: &Az,
    deployment: &Deployment,
    app: &str,
    now: State,
    green_weight: u8,
) -> Result<()> {
    if now.green_weight == green_weight {
        println!("    {app}: green weight already {green_weight}");
        return Ok(());
    }
    let pool = json!({
        "properties": {
            "type": "Pool",
            "description": format!("Blue/green pool of {app}"),
            "pool": { "services": [
                { "id": format!("/backends/{app}-blue"), "priority": 1, "weight": 100 - green_weight },
                { "id": format!("/backends/{app}-green"), "priority": 1, "weight": green_weight },
            ]},
        }
    });
    let url = format!(
        "{}/backends/{app}-pool?api-version={BACKENDS_API_VERSION}",
        deployment.gateway_id
    );
    az.run(&[
        "rest",
        "--method",
        "put",
        "--url",
        &url,
        "--body",
        &pool.to_string(),
        "--output",
        "none",
    ])?;
    let value = green_weight.to_string();
    az.run(&[
        "apim",
        "nv",
        "update",
        "--resource-group",
        az.group,
        "--service-name",
        &deployment.gateway,
        "--named-value-id",
        &format!("{app}-green-weight"),
        "--value",
        &value,
        "--output",
        "none",
    ])?;
    println!(
        "    {app}: green weight {} -> {green_weight} (blue {}%, green {green_weight}%)",
        now.green_weight,
        100 - green_weight
    );
    Ok(())
}

/// The named value `<app>-live` at `colour` (when it says otherwise).
fn set_live(az: &Az, deployment: &Deployment, app: &str, now: State, colour: Colour) -> Result<()> {
    if now.live == colour {
        println!("    {app}: {colour} already recorded live");
        return Ok(());
    }
    az.run(&[
        "apim",
        "nv",
        "update",
        "--resource-group",
        az.group,
        "--service-name",
        &deployment.gateway,
        "--named-value-id",
        &format!("{app}-live"),
        "--value",
        colour.name(),
        "--output",
        "none",
    ])?;
    println!("    {app}: live {} -> {colour}", now.live);
    Ok(())
}

/// `colour` of `app` live: all the traffic, its triggers on and the other colour's off, recorded.
fn make_live(
    az: &Az,
    deployment: &Deployment,
    app: &str,
    triggers: &[String],
    now: State,
    colour: Colour,
) -> Result<()> {
    set_weights(
        az,
        deployment,
        app,
        now,
        State::settled(colour).green_weight,
    )?;
    set_triggers(
        az,
        deployment.function_app(app, colour.other())?,
        triggers,
        false,
    )?;
    set_triggers(az, deployment.function_app(app, colour)?, triggers, true)?;
    set_live(az, deployment, app, now, colour)
}

/// `--stage`: the idle colour's triggers off before its new build starts (the Bicep deploys them
/// off; this holds after a half-finished promote too).
pub fn disable_idle_triggers(
    az: &Az,
    deployment: &Deployment,
    manifest: &Value,
    app: &str,
    idle: Colour,
) -> Result<()> {
    set_triggers(
        az,
        deployment.function_app(app, idle)?,
        &triggers_of(manifest, app),
        false,
    )
}

/// The query a user runs to compare the two colours of `app` (requests by Function App).
pub fn watch_command(az: &Az, deployment: &Deployment, app: &str) -> Result<String> {
    let blue = deployment.function_app(app, Colour::Blue)?;
    let green = deployment.function_app(app, Colour::Green)?;
    let query = format!(
        "requests | where timestamp > ago(30m) | where cloud_RoleName in (\"{blue}\", \"{green}\") \
         | summarize requests = count(), errors = countif(toint(resultCode) >= 500), \
         errorRatePercent = round(100.0 * countif(toint(resultCode) >= 500) / count(), 2), \
         p50Ms = percentile(duration, 50), p95Ms = percentile(duration, 95), \
         p99Ms = percentile(duration, 99) by cloud_RoleName"
    );
    Ok(format!(
        "az monitor app-insights query --resource-group {} --app {} --analytics-query '{query}'",
        az.group, deployment.app_insights
    ))
}

fn describe(app: &str, state: State) -> String {
    let canary = state.canary_weight();
    if canary == 0 {
        format!(
            "{app}: {} live with all the traffic, {} idle",
            state.live,
            state.idle()
        )
    } else {
        format!(
            "{app}: {} live ({}%), canary {} at {canary}% of tenants",
            state.live,
            100 - canary,
            state.idle()
        )
    }
}

/// Runs a colour operation other than staging (which deploys a package: `super::run`).
pub fn run(az: &Az, manifest: &Value, operation: &Operation, apps: &[String]) -> Result<()> {
    let deployment = Deployment::from_outputs(&Deployment::require(az)?)?;
    let states = read_states(az, &deployment.gateway, apps)?;
    let state = |app: &str| states.get(app).copied().unwrap_or(State::INITIAL);
    match operation {
        Operation::Status => {
            step("blue/green state (named values <app>-live and <app>-green-weight)");
            for app in apps {
                println!("    {}", describe(app, state(app)));
            }
            for app in apps {
                println!("    watch {app}: {}", watch_command(az, &deployment, app)?);
            }
        }
        Operation::Canary(app, weight) => {
            let now = state(app);
            step(&format!(
                "{app}: canary {} at {weight}% (was {}%)",
                now.idle(),
                now.canary_weight()
            ));
            let target = now.with_canary(*weight);
            set_weights(az, &deployment, app, now, target.green_weight)?;
            println!("    {}", describe(app, target));
            println!("    watch: {}", watch_command(az, &deployment, app)?);
        }
        Operation::Promote(app, colour) => {
            let now = state(app);
            step(&format!("{app}: promote {colour} (live now: {})", now.live));
            make_live(
                az,
                &deployment,
                app,
                &triggers_of(manifest, app),
                now,
                *colour,
            )?;
            println!("    {}", describe(app, State::settled(*colour)));
            println!(
                "    rollback: flowgrid deploy --resource-group {} --promote {app}={}",
                az.group,
                colour.other()
            );
        }
        Operation::Rollback(app) => {
            let now = state(app);
            step(&format!(
                "{app}: roll back the canary {} ({}% -> 0%), {} stays live",
                now.idle(),
                now.canary_weight(),
                now.live
            ));
            make_live(
                az,
                &deployment,
                app,
                &triggers_of(manifest, app),
                now,
                now.live,
            )?;
            println!("    {}", describe(app, State::settled(now.live)));
        }
        Operation::Stage(_) => bail!("staging deploys a package: flowgrid deploy --stage"),
    }
    Ok(())
}

/// The app's timer and Service Bus functions (`triggers` in infra/apps.json).
pub fn triggers_of(manifest: &Value, app: &str) -> Vec<String> {
    manifest["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["name"] == app)
        .flat_map(|a| a["triggers"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Vec<String> {
        vec!["agents".to_owned(), "execution".to_owned()]
    }

    fn parse(
        stage: Option<&str>,
        canary: Option<&str>,
        promote: Option<&str>,
        rollback: Option<&str>,
        status: bool,
    ) -> Result<Option<Operation>> {
        Operation::from_options(stage, canary, promote, rollback, status, &apps())
    }

    #[test]
    fn options_become_one_operation_or_none() {
        assert_eq!(parse(None, None, None, None, false).unwrap(), None);
        assert_eq!(
            parse(None, Some("agents=10"), None, None, false).unwrap(),
            Some(Operation::Canary("agents".into(), 10))
        );
        assert_eq!(
            parse(None, None, Some("execution=green"), None, false).unwrap(),
            Some(Operation::Promote("execution".into(), Colour::Green))
        );
        assert_eq!(
            parse(Some("agents"), None, None, None, false).unwrap(),
            Some(Operation::Stage("agents".into()))
        );
        assert_eq!(
            parse(None, None, None, Some("agents"), false).unwrap(),
            Some(Operation::Rollback("agents".into()))
        );
        assert_eq!(
            parse(None, None, None, None, true).unwrap(),
            Some(Operation::Status)
        );
    }

    #[test]
    fn bad_options_are_refused_naming_the_problem() {
        let error = |r: Result<Option<Operation>>| format!("{:#}", r.expect_err("refused"));
        assert!(error(parse(None, Some("agents=101"), None, None, false)).contains("0-100"));
        assert!(error(parse(None, Some("agents=-1"), None, None, false)).contains("0-100"));
        assert!(error(parse(None, Some("agents"), None, None, false)).contains("<app>="));
        assert!(error(parse(None, Some("nope=5"), None, None, false)).contains("no app \"nope\""));
        assert!(
            error(parse(None, None, Some("agents=red"), None, false)).contains("blue or green")
        );
        assert!(error(parse(None, None, None, Some("nope"), false)).contains("no app"));
        assert!(
            error(parse(Some("agents"), Some("agents=5"), None, None, false)).contains("one of")
        );
    }

    #[test]
    fn the_canary_is_the_idle_colour_whichever_is_live() {
        let blue = State::INITIAL;
        assert_eq!(blue.idle(), Colour::Green);
        assert_eq!(blue.with_canary(10).green_weight, 10);
        assert_eq!(blue.with_canary(10).canary_weight(), 10);
        let green = State::settled(Colour::Green);
        assert_eq!(green.green_weight, 100);
        assert_eq!(green.canary_weight(), 0);
        assert_eq!(green.with_canary(10).green_weight, 90);
        assert_eq!(green.with_canary(10).canary_weight(), 10);
        assert_eq!(green.with_canary(0), green);
    }

    #[test]
    fn the_colours_parameter_is_the_bicep_object() {
        let mut states = BTreeMap::new();
        states.insert("agents".to_owned(), State::INITIAL.with_canary(25));
        states.insert("auth".to_owned(), State::settled(Colour::Green));
        let parameter = colours_parameter(&states);
        let value: Value = serde_json::from_str(
            parameter
                .strip_prefix("colours=")
                .expect("a NAME=VALUE parameter"),
        )
        .expect("JSON");
        assert_eq!(
            value,
            json!({
                "agents": { "live": "blue", "greenWeight": 25 },
                "auth": { "live": "green", "greenWeight": 100 },
            })
        );
    }
}
