//! Loading and validating what the host serves: `host.json`, the app settings
//! (`local.settings.json`, else `local.settings.example.json`), and every
//! `functions/<app>/<Function>/function.json`. Every error names the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::route::RouteTemplate;

pub use crate::timespan::parse_timespan;

/// Everything loaded from an app root.
#[derive(Debug, Clone)]
pub struct Config {
    /// The folder holding `host.json` and `functions/`.
    pub root: PathBuf,
    /// `host.json`.
    pub host: HostJson,
    /// App settings (`Values` of local.settings.json), given to every handler as environment.
    pub settings: BTreeMap<String, String>,
    /// Which settings file was read (for the start-up banner).
    pub settings_source: String,
    /// The apps, sorted by name.
    pub apps: Vec<AppDef>,
}

/// The parts of `host.json` the local host uses.
#[derive(Debug, Clone)]
pub struct HostJson {
    /// `extensions.http.routePrefix` (default `api`), without slashes.
    pub route_prefix: String,
    /// `customHandler.enableForwardingHttpRequest`.
    pub forwarding: bool,
    /// `customHandler.description.arguments`, `%NAME%` expanded per app.
    pub arguments: Vec<String>,
    /// `customHandler.initializationTimeout` (default 30 s, as the host's `HttpWorkerOptions`).
    pub initialization_timeout: Duration,
    /// `functionTimeout`; the host → handler client waits this plus one minute.
    pub function_timeout: Option<Duration>,
    /// `extensions.serviceBus.maxConcurrentCalls` (default 16), per app.
    pub max_concurrent_calls: usize,
    /// `extensions.serviceBus.maxAutoLockRenewalDuration` (default 5 min).
    pub max_auto_lock_renewal: Duration,
    /// Top-level `functions`: when present only these functions are loaded.
    pub functions_filter: Option<Vec<String>>,
}

/// One app: a folder under `functions/`, served by one handler binary.
#[derive(Debug, Clone)]
pub struct AppDef {
    /// Folder name under `functions/` (= the `<app>` of `flowgrid-<app>`).
    pub name: String,
    /// Its functions, sorted by name.
    pub functions: Vec<FunctionDef>,
}

/// One function (a folder with a `function.json`).
#[derive(Debug, Clone)]
pub struct FunctionDef {
    /// Folder name = function name = the path the envelope is posted to.
    pub name: String,
    /// The trigger.
    pub trigger: Trigger,
    /// Output bindings.
    pub outputs: Vec<OutputBinding>,
    /// Whether HTTP requests are forwarded as is (`enableForwardingHttpRequest` and exactly one
    /// `httpTrigger` + one `http` output).
    pub forwarded: bool,
}

/// A function's trigger.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// `httpTrigger`.
    Http {
        /// Binding name (`req`).
        name: String,
        /// Upper-case methods; `None` = every method.
        methods: Option<Vec<String>>,
        /// Route template (without prefix).
        route: RouteTemplate,
    },
    /// `serviceBusTrigger` on a queue or a topic subscription.
    ServiceBus {
        /// Binding name (`msg`).
        name: String,
        /// The entity path: `queue` or `topic/Subscriptions/sub`.
        entity: String,
        /// `dataType: binary`.
        binary: bool,
    },
    /// `timerTrigger`.
    Timer {
        /// Binding name.
        name: String,
        /// The schedule as written (after `%Setting%` expansion).
        schedule: String,
        /// `runOnStartup`.
        run_on_startup: bool,
        /// `useMonitor` (default: true when the schedule's period is at least one minute).
        use_monitor: bool,
    },
}

/// An output binding.
#[derive(Debug, Clone)]
pub struct OutputBinding {
    /// Binding name (`res`, `outMsg`, `$return`).
    pub name: String,
    /// What it writes to.
    pub kind: OutputKind,
    /// `dataType: binary` (strings are then never base64-decoded).
    pub binary: bool,
}

/// Where an output binding writes.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// The HTTP response.
    Http,
    /// A Service Bus queue.
    Queue(String),
    /// A Service Bus topic.
    Topic(String),
}

const KNOWN_BINDINGS: &str = "httpTrigger, http, serviceBusTrigger, serviceBus, timerTrigger";

impl Config {
    /// Loads and validates everything under `root`. `notice` receives one-line notices.
    pub fn load(root: &Path, notice: &mut dyn FnMut(String)) -> Result<Self> {
        let host_path = root.join("host.json");
        let host_value = read_json(&host_path)?;
        let host =
            HostJson::parse(&host_value).with_context(|| format!("{}", host_path.display()))?;

        let (settings, settings_source) = load_settings(root, notice)?;
        let functions_dir = root.join("functions");
        let mut apps = Vec::new();
        let entries = std::fs::read_dir(&functions_dir).with_context(|| {
            format!(
                "{}: cannot read the functions folder",
                functions_dir.display()
            )
        })?;
        let mut app_dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        app_dirs.sort();
        for app_dir in app_dirs {
            let app_name = file_name(&app_dir);
            let mut fn_dirs: Vec<PathBuf> = std::fs::read_dir(&app_dir)
                .with_context(|| format!("{}: cannot read", app_dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("function.json").is_file())
                .collect();
            fn_dirs.sort();
            let mut functions = Vec::new();
            for dir in fn_dirs {
                let name = file_name(&dir);
                if let Some(filter) = &host.functions_filter
                    && !filter.iter().any(|f| f.eq_ignore_ascii_case(&name))
                {
                    continue;
                }
                let path = dir.join("function.json");
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                let value = read_json(&path)?;
                if value.get("disabled").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let f = FunctionDef::parse(&name, &value, &host, &settings)
                    .map_err(|e| anyhow!("{rel}: {e}"))?;
                functions.push(f);
            }
            if !functions.is_empty() {
                apps.push(AppDef {
                    name: app_name,
                    functions,
                });
            }
        }
        let config = Config {
            root: root.to_owned(),
            host,
            settings,
            settings_source,
            apps,
        };
        config.check_routes()?;
        Ok(config)
    }

    /// Two functions (in any apps) claiming the same route shape with overlapping methods.
    fn check_routes(&self) -> Result<()> {
        let mut seen: Vec<(String, Option<Vec<String>>, String)> = Vec::new();
        for app in &self.apps {
            for f in &app.functions {
                if let Trigger::Http { methods, route, .. } = &f.trigger {
                    let shape = route.shape();
                    for (other_shape, other_methods, who) in &seen {
                        let overlap = match (methods, other_methods) {
                            (None, _) | (_, None) => true,
                            (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
                        };
                        if *other_shape == shape && overlap {
                            bail!(
                                "functions/{}/{}/function.json: bindings[httpTrigger].route: route {:?} is already claimed by {who}",
                                app.name,
                                f.name,
                                route.to_string()
                            );
                        }
                    }
                    seen.push((
                        shape,
                        methods.clone(),
                        format!("functions/{}/{}", app.name, f.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Looks a setting up in the app settings, then the process environment.
    pub fn setting(&self, name: &str) -> Option<String> {
        setting(&self.settings, name)
    }
}

fn setting(settings: &BTreeMap<String, String>, name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| settings.get(name).cloned())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

fn load_settings(
    root: &Path,
    notice: &mut dyn FnMut(String),
) -> Result<(BTreeMap<String, String>, String)> {
    let local = root.join("local.settings.json");
    let example = root.join("local.settings.example.json");
    let (path, source) = if local.is_file() {
        (local, "local.settings.json".to_owned())
    } else if example.is_file() {
        notice("local.settings.json not found: using the values of local.settings.example.json (copy it to local.settings.json to change them)".to_owned());
        (example, "local.settings.example.json".to_owned())
    } else {
        notice(
            "no local.settings.json or local.settings.example.json: app settings are empty"
                .to_owned(),
        );
        return Ok((BTreeMap::new(), "(none)".to_owned()));
    };
    let value = read_json(&path)?;
    if value.get("IsEncrypted").and_then(Value::as_bool) == Some(true) {
        bail!(
            "{}: IsEncrypted: encrypted settings are not supported locally; set it to false",
            path.display()
        );
    }
    let mut settings = BTreeMap::new();
    if let Some(values) = value.get("Values") {
        let obj = values
            .as_object()
            .ok_or_else(|| anyhow!("{}: Values: must be an object", path.display()))?;
        for (k, v) in obj {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => bail!("{}: Values.{k}: must be a string", path.display()),
            };
            settings.insert(k.clone(), s);
        }
    }
    Ok((settings, source))
}

fn duration_field(v: &Value, field: &str) -> Result<Option<Duration>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_timespan(s)
            .map(Some)
            .ok_or_else(|| anyhow!("{field}: {s:?} is not a TimeSpan (hh:mm:ss)")),
        Some(_) => bail!("{field}: must be a TimeSpan string (hh:mm:ss)"),
    }
}

impl HostJson {
    fn parse(v: &Value) -> Result<Self> {
        let handler = v.get("customHandler").or_else(|| v.get("httpWorker"));
        let handler = handler.ok_or_else(|| {
            anyhow!("customHandler: missing (the local host runs custom handlers only)")
        })?;
        let desc = handler
            .get("description")
            .ok_or_else(|| anyhow!("customHandler.description: missing"))?;
        let exe = desc
            .get("defaultExecutablePath")
            .and_then(Value::as_str)
            .unwrap_or("");
        if exe.trim().is_empty() {
            bail!("customHandler.description.defaultExecutablePath: must not be empty");
        }
        let arguments = match desc.get("arguments") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    anyhow!("customHandler.description.arguments: must be an array of strings")
                })?,
            Some(_) => bail!("customHandler.description.arguments: must be an array of strings"),
        };
        let forwarding = match handler.get("enableForwardingHttpRequest") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => bail!("customHandler.enableForwardingHttpRequest: must be true or false"),
        };
        let initialization_timeout = duration_field(handler, "initializationTimeout")
            .map_err(|e| anyhow!("customHandler.{e}"))?
            .unwrap_or(Duration::from_secs(30));
        let function_timeout = duration_field(v, "functionTimeout")?;
        let ext = v.get("extensions");
        let route_prefix = match ext
            .and_then(|e| e.get("http"))
            .and_then(|h| h.get("routePrefix"))
        {
            None | Some(Value::Null) => "api".to_owned(),
            Some(Value::String(s)) => s.trim_matches('/').to_owned(),
            Some(_) => bail!("extensions.http.routePrefix: must be a string"),
        };
        let sb = ext.and_then(|e| e.get("serviceBus"));
        let max_concurrent_calls = match sb.and_then(|s| s.get("maxConcurrentCalls")) {
            None | Some(Value::Null) => 16,
            Some(n) => n
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    anyhow!("extensions.serviceBus.maxConcurrentCalls: must be a positive integer")
                })?
                .try_into()
                .unwrap_or(16),
        };
        let max_auto_lock_renewal = match sb {
            Some(sb) => duration_field(sb, "maxAutoLockRenewalDuration")
                .map_err(|e| anyhow!("extensions.serviceBus.{e}"))?,
            None => None,
        }
        .unwrap_or(Duration::from_secs(300));
        let functions_filter = match v.get("functions") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
            ),
            Some(_) => bail!("functions: must be an array of function names"),
        };
        Ok(HostJson {
            route_prefix,
            forwarding,
            arguments,
            initialization_timeout,
            function_timeout,
            max_concurrent_calls,
            max_auto_lock_renewal,
            functions_filter,
        })
    }
}

/// Expands `%NAME%` from the settings (then the environment). Unknown names are an error.
pub fn expand(s: &str, settings: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('%')
            .ok_or_else(|| format!("unterminated %...% in {s:?}"))?;
        let name = &after[..end];
        let value = setting(settings, name)
            .ok_or_else(|| format!("setting {name:?} (used as %{name}%) is not defined"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn str_field<'a>(b: &'a Value, i: usize, field: &str) -> Result<Option<&'a str>, String> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("bindings[{i}].{field}: must be a string")),
    }
}

fn bool_field(b: &Value, i: usize, field: &str, default: bool) -> Result<bool, String> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(x)) => Ok(*x),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(format!("bindings[{i}].{field}: must be true or false")),
    }
}

fn check_connection(
    b: &Value,
    i: usize,
    settings: &BTreeMap<String, String>,
) -> Result<(), String> {
    let conn = str_field(b, i, "connection")?.unwrap_or("AzureWebJobsServiceBus");
    let defined = setting(settings, conn).is_some()
        || setting(settings, &format!("{conn}__fullyQualifiedNamespace")).is_some();
    if !defined {
        return Err(format!(
            "bindings[{i}].connection: setting {conn:?} is not defined (add \"{conn}\" or \"{conn}__fullyQualifiedNamespace\" to Values in local.settings.json)"
        ));
    }
    Ok(())
}

fn entity_name(s: &str, i: usize, field: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 260
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !ok {
        return Err(format!(
            "bindings[{i}].{field}: {s:?} is not a valid entity name (letters, digits, '-', '.', '_')"
        ));
    }
    Ok(s.to_owned())
}

/// Checks a six-field NCRONTAB expression (or a `hh:mm:ss` TimeSpan).
pub fn check_schedule(s: &str) -> Result<(), String> {
    crate::timer::Schedule::parse(s).map(|_| ())
}

impl FunctionDef {
    fn parse(
        name: &str,
        v: &Value,
        host: &HostJson,
        settings: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let bindings = v
            .get("bindings")
            .and_then(Value::as_array)
            .ok_or("bindings: missing or not an array")?;
        let mut trigger = None;
        let mut outputs = Vec::new();
        let mut http_outputs = 0;
        for (i, b) in bindings.iter().enumerate() {
            let ty = str_field(b, i, "type")?.ok_or(format!("bindings[{i}].type: missing"))?;
            let bname = str_field(b, i, "name")?
                .ok_or(format!("bindings[{i}].name: missing"))?
                .to_owned();
            let direction = str_field(b, i, "direction")?
                .unwrap_or("")
                .to_ascii_lowercase();
            let binary =
                str_field(b, i, "dataType")?.is_some_and(|d| d.eq_ignore_ascii_case("binary"));
            let set_trigger = |trigger: &mut Option<Trigger>, t: Trigger| {
                if trigger.is_some() {
                    return Err(format!("bindings[{i}]: a function has exactly one trigger"));
                }
                *trigger = Some(t);
                Ok(())
            };
            match ty {
                "httpTrigger" => {
                    let methods = match b.get("methods") {
                        None | Some(Value::Null) => None,
                        Some(Value::Array(a)) => {
                            let mut ms = Vec::new();
                            for m in a {
                                let m = m
                                    .as_str()
                                    .ok_or(format!("bindings[{i}].methods: must be strings"))?
                                    .to_ascii_uppercase();
                                if !matches!(
                                    m.as_str(),
                                    "GET"
                                        | "POST"
                                        | "PUT"
                                        | "DELETE"
                                        | "PATCH"
                                        | "HEAD"
                                        | "OPTIONS"
                                        | "TRACE"
                                ) {
                                    return Err(format!(
                                        "bindings[{i}].methods: unknown method {m:?}"
                                    ));
                                }
                                ms.push(m);
                            }
                            Some(ms)
                        }
                        Some(_) => return Err(format!("bindings[{i}].methods: must be an array")),
                    };
                    let raw = str_field(b, i, "route")?.unwrap_or(name);
                    let route = RouteTemplate::parse(raw)
                        .map_err(|e| format!("bindings[{i}].route: {e}"))?;
                    if let Some(level) = str_field(b, i, "authLevel")?
                        && !matches!(
                            level.to_ascii_lowercase().as_str(),
                            "anonymous" | "function" | "admin"
                        )
                    {
                        return Err(format!(
                            "bindings[{i}].authLevel: {level:?} is not anonymous, function or admin"
                        ));
                    }
                    set_trigger(
                        &mut trigger,
                        Trigger::Http {
                            name: bname,
                            methods,
                            route,
                        },
                    )?;
                }
                "serviceBusTrigger" => {
                    check_connection(b, i, settings)?;
                    let entity = match (
                        str_field(b, i, "queueName")?,
                        str_field(b, i, "topicName")?,
                        str_field(b, i, "subscriptionName")?,
                    ) {
                        (Some(q), None, None) => {
                            entity_name(&expand(q, settings)?, i, "queueName")?
                        }
                        (None, Some(t), Some(s)) => format!(
                            "{}/Subscriptions/{}",
                            entity_name(&expand(t, settings)?, i, "topicName")?,
                            entity_name(&expand(s, settings)?, i, "subscriptionName")?
                        ),
                        (None, Some(_), None) => {
                            return Err(format!(
                                "bindings[{i}].subscriptionName: required with topicName"
                            ));
                        }
                        _ => {
                            return Err(format!(
                                "bindings[{i}]: set queueName, or topicName with subscriptionName"
                            ));
                        }
                    };
                    if bool_field(b, i, "isSessionsEnabled", false)? {
                        return Err(format!(
                            "bindings[{i}].isSessionsEnabled: sessions are not supported by the local host"
                        ));
                    }
                    if let Some(c) = str_field(b, i, "cardinality")?
                        && !c.eq_ignore_ascii_case("one")
                    {
                        return Err(format!(
                            "bindings[{i}].cardinality: only \"one\" is supported by the local host"
                        ));
                    }
                    set_trigger(
                        &mut trigger,
                        Trigger::ServiceBus {
                            name: bname,
                            entity,
                            binary,
                        },
                    )?;
                }
                "timerTrigger" => {
                    let raw = str_field(b, i, "schedule")?
                        .ok_or(format!("bindings[{i}].schedule: missing"))?;
                    let schedule = expand(raw, settings)
                        .map_err(|e| format!("bindings[{i}].schedule: {e}"))?;
                    let parsed = crate::timer::Schedule::parse(&schedule)
                        .map_err(|e| format!("bindings[{i}].schedule: {e}"))?;
                    let run_on_startup = bool_field(b, i, "runOnStartup", false)?;
                    // As the host: useMonitor defaults to true when the period is at least a minute.
                    let use_monitor =
                        bool_field(b, i, "useMonitor", parsed.period_at_least_a_minute())?;
                    set_trigger(
                        &mut trigger,
                        Trigger::Timer {
                            name: bname,
                            schedule,
                            run_on_startup,
                            use_monitor,
                        },
                    )?;
                }
                "http" => {
                    if direction != "out" {
                        return Err(format!(
                            "bindings[{i}].direction: an http binding must be \"out\""
                        ));
                    }
                    http_outputs += 1;
                    outputs.push(OutputBinding {
                        name: bname,
                        kind: OutputKind::Http,
                        binary,
                    });
                }
                "serviceBus" => {
                    if direction != "out" {
                        return Err(format!(
                            "bindings[{i}].direction: a serviceBus binding must be \"out\""
                        ));
                    }
                    check_connection(b, i, settings)?;
                    let kind = match (str_field(b, i, "queueName")?, str_field(b, i, "topicName")?)
                    {
                        (Some(q), None) => {
                            OutputKind::Queue(entity_name(&expand(q, settings)?, i, "queueName")?)
                        }
                        (None, Some(t)) => {
                            OutputKind::Topic(entity_name(&expand(t, settings)?, i, "topicName")?)
                        }
                        _ => {
                            return Err(format!(
                                "bindings[{i}]: set exactly one of queueName and topicName"
                            ));
                        }
                    };
                    outputs.push(OutputBinding {
                        name: bname,
                        kind,
                        binary,
                    });
                }
                other => {
                    return Err(format!(
                        "bindings[{i}].type: unknown binding type {other:?} (the local host supports {KNOWN_BINDINGS})"
                    ));
                }
            }
        }
        let trigger = trigger
            .ok_or("bindings: no trigger (httpTrigger, serviceBusTrigger or timerTrigger)")?;
        let is_http = matches!(trigger, Trigger::Http { .. });
        if http_outputs > 0 && !is_http {
            return Err("bindings: an http output needs an httpTrigger".to_owned());
        }
        let forwarded = host.forwarding && is_http && bindings.len() == 2 && http_outputs == 1;
        Ok(FunctionDef {
            name: name.to_owned(),
            trigger,
            outputs,
            forwarded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host() -> HostJson {
        HostJson::parse(&json!({"customHandler": {"description": {"defaultExecutablePath": "handler"}, "enableForwardingHttpRequest": true}})).unwrap()
    }

    fn parse(v: Value) -> Result<FunctionDef, String> {
        let mut settings = BTreeMap::new();
        settings.insert("ServiceBusConnection".to_owned(), "local".to_owned());
        FunctionDef::parse("F", &v, &host(), &settings)
    }

    #[test]
    fn an_unknown_binding_type_is_named_with_its_field() {
        let e =
            parse(json!({"bindings": [{"type": "blobTrigger", "name": "b", "direction": "in"}]}))
                .unwrap_err();
        assert!(
            e.starts_with("bindings[0].type: unknown binding type \"blobTrigger\""),
            "{e}"
        );
    }

    #[test]
    fn an_undefined_connection_setting_is_refused() {
        let e = parse(json!({"bindings": [{"type": "serviceBusTrigger", "name": "m", "queueName": "q", "connection": "Nope"}]})).unwrap_err();
        assert!(
            e.contains("bindings[0].connection") && e.contains("\"Nope\""),
            "{e}"
        );
    }

    #[test]
    fn a_bad_ncrontab_is_refused() {
        let e = parse(
            json!({"bindings": [{"type": "timerTrigger", "name": "t", "schedule": "* * * * *"}]}),
        )
        .unwrap_err();
        assert!(e.contains("bindings[0].schedule"), "{e}");
    }

    #[test]
    fn only_http_in_http_out_functions_are_forwarded() {
        let fwd = parse(json!({"bindings": [{"type": "httpTrigger", "name": "req", "direction": "in"}, {"type": "http", "name": "res", "direction": "out"}]})).unwrap();
        assert!(fwd.forwarded);
        let env = parse(json!({"bindings": [
            {"type": "httpTrigger", "name": "req", "direction": "in"},
            {"type": "http", "name": "res", "direction": "out"},
            {"type": "serviceBus", "name": "out", "direction": "out", "queueName": "q", "connection": "ServiceBusConnection"}]}))
        .unwrap();
        assert!(!env.forwarded);
    }
}
