//! `function.json`: a function's trigger and output bindings, validated binding by binding.
//! Errors name the field (`bindings[<i>].<field>: ...`); the caller adds the file.

use std::collections::BTreeMap;

use serde_json::Value;

use super::host_json::HostJson;
use super::settings::{expand, setting};
use crate::route::RouteTemplate;

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

/// One parsed binding.
enum Binding {
    Trigger(Trigger),
    Output(OutputBinding),
}

impl FunctionDef {
    pub(super) fn parse(
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
            match parse_binding(name, b, i, settings)? {
                Binding::Trigger(t) => {
                    if trigger.is_some() {
                        return Err(format!("bindings[{i}]: a function has exactly one trigger"));
                    }
                    trigger = Some(t);
                }
                Binding::Output(o) => {
                    if o.kind == OutputKind::Http {
                        http_outputs += 1;
                    }
                    outputs.push(o);
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

/// `bindings[i]` of function `function`.
fn parse_binding(
    function: &str,
    b: &Value,
    i: usize,
    settings: &BTreeMap<String, String>,
) -> Result<Binding, String> {
    let ty = str_field(b, i, "type")?.ok_or(format!("bindings[{i}].type: missing"))?;
    let bname = str_field(b, i, "name")?
        .ok_or(format!("bindings[{i}].name: missing"))?
        .to_owned();
    let direction = str_field(b, i, "direction")?
        .unwrap_or("")
        .to_ascii_lowercase();
    let binary = str_field(b, i, "dataType")?.is_some_and(|d| d.eq_ignore_ascii_case("binary"));
    match ty {
        "httpTrigger" => http_trigger(function, b, i, bname).map(Binding::Trigger),
        "serviceBusTrigger" => {
            service_bus_trigger(b, i, bname, binary, settings).map(Binding::Trigger)
        }
        "timerTrigger" => timer_trigger(b, i, bname, settings).map(Binding::Trigger),
        "http" => {
            if direction != "out" {
                return Err(format!(
                    "bindings[{i}].direction: an http binding must be \"out\""
                ));
            }
            Ok(Binding::Output(OutputBinding {
                name: bname,
                kind: OutputKind::Http,
                binary,
            }))
        }
        "serviceBus" => {
            service_bus_output(b, i, &direction, bname, binary, settings).map(Binding::Output)
        }
        other => Err(format!(
            "bindings[{i}].type: unknown binding type {other:?} (the local host supports {KNOWN_BINDINGS})"
        )),
    }
}

/// `httpTrigger`: methods, route (default: the function name), authLevel.
fn http_trigger(function: &str, b: &Value, i: usize, bname: String) -> Result<Trigger, String> {
    let methods = http_methods(b, i)?;
    let raw = str_field(b, i, "route")?.unwrap_or(function);
    let route = RouteTemplate::parse(raw).map_err(|e| format!("bindings[{i}].route: {e}"))?;
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
    Ok(Trigger::Http {
        name: bname,
        methods,
        route,
    })
}

/// `methods`, upper-cased; `None` when absent (every method).
fn http_methods(b: &Value, i: usize) -> Result<Option<Vec<String>>, String> {
    match b.get("methods") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            let mut ms = Vec::new();
            for m in a {
                let m = m
                    .as_str()
                    .ok_or(format!("bindings[{i}].methods: must be strings"))?
                    .to_ascii_uppercase();
                if !matches!(
                    m.as_str(),
                    "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" | "TRACE"
                ) {
                    return Err(format!("bindings[{i}].methods: unknown method {m:?}"));
                }
                ms.push(m);
            }
            Ok(Some(ms))
        }
        Some(_) => Err(format!("bindings[{i}].methods: must be an array")),
    }
}

/// `serviceBusTrigger`: a queue or a topic subscription; no sessions, cardinality one.
fn service_bus_trigger(
    b: &Value,
    i: usize,
    bname: String,
    binary: bool,
    settings: &BTreeMap<String, String>,
) -> Result<Trigger, String> {
    check_connection(b, i, settings)?;
    let entity = trigger_entity(b, i, settings)?;
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
    Ok(Trigger::ServiceBus {
        name: bname,
        entity,
        binary,
    })
}

/// The entity path a Service Bus trigger receives from: `queue` or `topic/Subscriptions/sub`.
fn trigger_entity(
    b: &Value,
    i: usize,
    settings: &BTreeMap<String, String>,
) -> Result<String, String> {
    match (
        str_field(b, i, "queueName")?,
        str_field(b, i, "topicName")?,
        str_field(b, i, "subscriptionName")?,
    ) {
        (Some(q), None, None) => entity_name(&expand(q, settings)?, i, "queueName"),
        (None, Some(t), Some(s)) => Ok(format!(
            "{}/Subscriptions/{}",
            entity_name(&expand(t, settings)?, i, "topicName")?,
            entity_name(&expand(s, settings)?, i, "subscriptionName")?
        )),
        (None, Some(_), None) => Err(format!(
            "bindings[{i}].subscriptionName: required with topicName"
        )),
        _ => Err(format!(
            "bindings[{i}]: set queueName, or topicName with subscriptionName"
        )),
    }
}

/// `timerTrigger`: the schedule (after `%Setting%` expansion), runOnStartup, useMonitor.
fn timer_trigger(
    b: &Value,
    i: usize,
    bname: String,
    settings: &BTreeMap<String, String>,
) -> Result<Trigger, String> {
    let raw = str_field(b, i, "schedule")?.ok_or(format!("bindings[{i}].schedule: missing"))?;
    let schedule = expand(raw, settings).map_err(|e| format!("bindings[{i}].schedule: {e}"))?;
    let parsed = crate::timer::Schedule::parse(&schedule)
        .map_err(|e| format!("bindings[{i}].schedule: {e}"))?;
    let run_on_startup = bool_field(b, i, "runOnStartup", false)?;
    // As the host: useMonitor defaults to true when the period is at least a minute.
    let use_monitor = bool_field(b, i, "useMonitor", parsed.period_at_least_a_minute())?;
    Ok(Trigger::Timer {
        name: bname,
        schedule,
        run_on_startup,
        use_monitor,
    })
}

/// A `serviceBus` output: exactly one of queueName and topicName.
fn service_bus_output(
    b: &Value,
    i: usize,
    direction: &str,
    bname: String,
    binary: bool,
    settings: &BTreeMap<String, String>,
) -> Result<OutputBinding, String> {
    if direction != "out" {
        return Err(format!(
            "bindings[{i}].direction: a serviceBus binding must be \"out\""
        ));
    }
    check_connection(b, i, settings)?;
    let kind = match (str_field(b, i, "queueName")?, str_field(b, i, "topicName")?) {
        (Some(q), None) => OutputKind::Queue(entity_name(&expand(q, settings)?, i, "queueName")?),
        (None, Some(t)) => OutputKind::Topic(entity_name(&expand(t, settings)?, i, "topicName")?),
        _ => {
            return Err(format!(
                "bindings[{i}]: set exactly one of queueName and topicName"
            ));
        }
    };
    Ok(OutputBinding {
        name: bname,
        kind,
        binary,
    })
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
