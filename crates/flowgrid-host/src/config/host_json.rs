//! `host.json`: the parts the local host uses.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

use crate::timespan::parse_timespan;

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

impl HostJson {
    pub(super) fn parse(v: &Value) -> Result<Self> {
        let handler = v.get("customHandler").or_else(|| v.get("httpWorker"));
        let handler = handler.ok_or_else(|| {
            anyhow!("customHandler: missing (the local host runs custom handlers only)")
        })?;
        let arguments = handler_arguments(handler)?;
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
        let route_prefix = route_prefix(ext)?;
        let sb = ext.and_then(|e| e.get("serviceBus"));
        let max_concurrent_calls = max_concurrent_calls(sb)?;
        let max_auto_lock_renewal = match sb {
            Some(sb) => duration_field(sb, "maxAutoLockRenewalDuration")
                .map_err(|e| anyhow!("extensions.serviceBus.{e}"))?,
            None => None,
        }
        .unwrap_or(Duration::from_secs(300));
        Ok(HostJson {
            route_prefix,
            forwarding,
            arguments,
            initialization_timeout,
            function_timeout,
            max_concurrent_calls,
            max_auto_lock_renewal,
            functions_filter: functions_filter(v)?,
        })
    }
}

/// `customHandler.description`: checks `defaultExecutablePath`, returns `arguments`.
fn handler_arguments(handler: &Value) -> Result<Vec<String>> {
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
    Ok(match desc.get("arguments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                anyhow!("customHandler.description.arguments: must be an array of strings")
            })?,
        Some(_) => bail!("customHandler.description.arguments: must be an array of strings"),
    })
}

fn route_prefix(ext: Option<&Value>) -> Result<String> {
    Ok(
        match ext
            .and_then(|e| e.get("http"))
            .and_then(|h| h.get("routePrefix"))
        {
            None | Some(Value::Null) => "api".to_owned(),
            Some(Value::String(s)) => s.trim_matches('/').to_owned(),
            Some(_) => bail!("extensions.http.routePrefix: must be a string"),
        },
    )
}

fn max_concurrent_calls(sb: Option<&Value>) -> Result<usize> {
    Ok(match sb.and_then(|s| s.get("maxConcurrentCalls")) {
        None | Some(Value::Null) => 16,
        Some(n) => n
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                anyhow!("extensions.serviceBus.maxConcurrentCalls: must be a positive integer")
            })?
            .try_into()
            .unwrap_or(16),
    })
}

fn functions_filter(v: &Value) -> Result<Option<Vec<String>>> {
    Ok(match v.get("functions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(_) => bail!("functions: must be an array of function names"),
    })
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
