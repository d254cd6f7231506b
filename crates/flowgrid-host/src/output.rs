//! What `flowgrid dev` prints: its own events and its handlers' log lines, either as JSON lines
//! (one object per line, as the handlers write them: when stdout is not a terminal, or with
//! `--log-format json`) or, on a terminal, as one readable coloured line per event:
//!
//! ```text
//! 12:00:01.234 INFO  agents     GET /api/agents/{id} 200 1.2 ms  tenant=acme corr=3f2a…
//! ```
//!
//! Handlers always write JSON lines (crates/flowgrid-http telemetry); the host renders them.
//! Lines that would say the same thing twice are shown at debug level only: the host's access
//! line of a request a handler answered (the handler logged it, with its tenant and error), a
//! handler's line for a request the host made itself (an invocation, `POST /{Function}`, or a
//! deep health check behind `GET /api/health`, which carries no invocation id), and the plain
//! `listening on` line a handler prints for its parent.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How `flowgrid dev` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    /// One readable line per event (coloured on a terminal, unless `NO_COLOR` is set).
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Readable lines (with or without colour); `None`: JSON lines.
static PRETTY: OnceLock<Option<bool>> = OnceLock::new();

/// A marker on a response a handler answered (and so logged itself).
#[derive(Debug, Clone, Copy)]
pub struct AnsweredByHandler;

/// Sets up the host's log: `FLOWGRID_LOG` as the filter (default `info`), in `format`.
pub fn init(format: LogFormat) {
    let terminal = std::io::stdout().is_terminal();
    let pretty = match format {
        LogFormat::Json => None,
        LogFormat::Pretty => Some(terminal && std::env::var_os("NO_COLOR").is_none()),
        LogFormat::Auto if terminal => Some(std::env::var_os("NO_COLOR").is_none()),
        LogFormat::Auto => None,
    };
    let chosen = *PRETTY.get_or_init(|| pretty);
    // Traces and request metrics of the gateway and the triggers, when an OTLP endpoint is set.
    flowgrid_http::otel::init("flowgrid-host");
    match chosen {
        None => flowgrid_http::telemetry::init("flowgrid-dev"),
        Some(color) => {
            let filter =
                EnvFilter::try_from_env("FLOWGRID_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .event_format(Readable { color })
                .with_writer(std::io::stdout)
                .with_env_filter(filter)
                .try_init();
        }
    }
}

/// Whether debug lines are shown.
fn debug_enabled() -> bool {
    LevelFilter::current() >= LevelFilter::DEBUG
}

/// What the host does with one stdout line of `app`'s handler. `quiet_routes` are the
/// `http.route`s of the invocations the host makes (`/{Function}`).
pub fn handler_line(app: &str, line: &str, quiet_routes: &[String]) {
    let Some(text) = render_handler_line(
        app,
        line,
        quiet_routes,
        debug_enabled(),
        PRETTY.get().copied().flatten(),
    ) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// The line to print for a handler's stdout `line`, or `None` when it is not shown: JSON with
/// the app added (`pretty` `None`), else a readable line (`Some(colour)`).
pub fn render_handler_line(
    app: &str,
    line: &str,
    quiet_routes: &[String],
    debug: bool,
    pretty: Option<bool>,
) -> Option<String> {
    let mut obj = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => obj,
        _ => {
            // Plain text. `listening on <addr>` is for a parent learning the port (the handler
            // logs the same as JSON): shown at debug level only.
            let quiet = line.starts_with("listening on ");
            if quiet && !debug {
                return None;
            }
            let mut obj = Map::new();
            obj.insert("timestamp".into(), now().into());
            obj.insert(
                "level".into(),
                (if quiet { "DEBUG" } else { "INFO" }).into(),
            );
            obj.insert("message".into(), line.into());
            obj
        }
    };
    obj.entry("app")
        .or_insert_with(|| Value::String(app.to_owned()));
    let route = obj.get("http.route").and_then(Value::as_str);
    // A request the host made itself: an invocation (`POST /{Function}`), or a call without an
    // invocation id (the deep health checks behind `GET /api/health`).
    let invocation = route.is_some_and(|r| quiet_routes.iter().any(|q| q.eq_ignore_ascii_case(r)))
        || (route.is_some() && obj.get("invocation_id").and_then(Value::as_str) == Some(""));
    let listening = obj.get("message").and_then(Value::as_str) == Some("listening");
    let warn_or_worse = matches!(
        obj.get("level").and_then(Value::as_str),
        Some("WARN" | "ERROR")
    );
    if (invocation || listening) && !warn_or_worse {
        if !debug {
            return None;
        }
        obj.insert("level".into(), "DEBUG".into());
    }
    Some(match pretty {
        None => Value::Object(obj).to_string(),
        Some(color) => render(&obj, color),
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Fields not repeated at the end of a readable line.
const SHOWN: &[&str] = &[
    "timestamp",
    "level",
    "message",
    "app",
    "target",
    "http.method",
    "http.route",
    "http.status",
    "duration_ms",
    "method",
    "path",
    "status",
    "function",
    "trace_id",
    "invocation_id",
    "tenant",
    "correlation_id",
];

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// One readable line for a log event given as its JSON object.
pub fn render(obj: &Map<String, Value>, color: bool) -> String {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let time = s("timestamp").get(11..23).unwrap_or("");
    let level = s("level");
    let level_code = match level {
        "ERROR" => "1;31",
        "WARN" => "33",
        "INFO" => "32",
        _ => "2",
    };
    let app = match s("app") {
        "" | "flowgrid-dev" => "host",
        a => a,
    };
    let mut line = format!(
        "{} {} {} ",
        paint(color, "2", time),
        paint(color, level_code, &format!("{level:<5}")),
        paint(color, "36", &format!("{app:<10}")),
    );
    // A request: method, path or route, status, duration.
    let method = obj.get("http.method").or_else(|| obj.get("method"));
    let status = obj.get("http.status").or_else(|| obj.get("status"));
    if let (Some(m), Some(st)) = (
        method.and_then(Value::as_str),
        status.and_then(Value::as_u64),
    ) {
        let path = obj
            .get("path")
            .or_else(|| obj.get("http.route"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let status_code = match st {
            500.. => "31",
            400..=499 => "33",
            _ => "32",
        };
        let _ = write!(
            line,
            "{m} {path} {}",
            paint(color, status_code, &st.to_string())
        );
        if let Some(ms) = obj.get("duration_ms").and_then(Value::as_f64) {
            let _ = write!(line, " {ms:.1} ms");
        }
        if let Some(e) = obj.get("error").and_then(Value::as_str) {
            let _ = write!(line, "  {}", paint(color, "31", e));
        }
    } else {
        line.push_str(s("message"));
    }
    let mut rest = String::new();
    for (k, v) in obj {
        if SHOWN.contains(&k.as_str()) || (k == "error" && method.is_some()) {
            continue;
        }
        let v = match v {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        if !v.is_empty() {
            let _ = write!(rest, " {k}={v}");
        }
    }
    for (k, label) in [("tenant", "tenant"), ("correlation_id", "corr")] {
        if let Some(v) = obj.get(k).and_then(Value::as_str)
            && !v.is_empty()
        {
            let _ = write!(rest, " {label}={v}");
        }
    }
    if !rest.is_empty() {
        line.push(' ');
        line.push_str(&paint(color, "2", rest.trim_start()));
    }
    line
}

/// The host's own events as readable lines.
struct Readable {
    color: bool,
}

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for Readable
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut obj = Map::new();
        obj.insert("timestamp".into(), now().into());
        obj.insert("level".into(), event.metadata().level().as_str().into());
        obj.extend(fields.0);
        writeln!(writer, "{}", render(&obj, self.color))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVED: &str = r#"{"timestamp":"2026-12-01T10:00:01.234567Z","level":"INFO","message":"request served","app":"agents","http.method":"GET","http.route":"/api/agents/{id}","http.status":200,"duration_ms":1.25,"tenant":"acme","correlation_id":"c-1","trace_id":"ab","invocation_id":"i"}"#;

    #[test]
    fn a_request_line_reads_as_method_route_status_and_duration() {
        let line = render_handler_line("agents", SERVED, &[], false, Some(false)).expect("shown");
        assert_eq!(
            line,
            "10:00:01.234 INFO  agents     GET /api/agents/{id} 200 1.2 ms tenant=acme corr=c-1"
        );
        let coloured =
            render_handler_line("agents", SERVED, &[], false, Some(true)).expect("shown");
        assert!(coloured.contains("\x1b[32m200\x1b[0m"), "{coloured:?}");
        let json = render_handler_line("agents", SERVED, &[], false, None).expect("shown");
        let v: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(
            (v["app"].as_str(), v["http.status"].as_u64()),
            (Some("agents"), Some(200))
        );
    }

    #[test]
    fn invocation_lines_and_the_listening_line_for_the_parent_show_only_at_debug_level() {
        let quiet = vec!["/ReapJobs".to_owned()];
        let tick = SERVED
            .replace("GET", "POST")
            .replace("/api/agents/{id}", "/ReapJobs");
        assert_eq!(
            render_handler_line("execution", &tick, &quiet, false, Some(false)),
            None
        );
        let shown = render_handler_line("execution", &tick, &quiet, true, None).expect("debug");
        assert!(shown.contains("\"level\":\"DEBUG\""), "{shown}");
        assert_eq!(
            render_handler_line("agents", "listening on 127.0.0.1:4000", &[], false, None),
            None
        );
        let listening = r#"{"timestamp":"2026-12-01T10:00:01.234567Z","level":"INFO","message":"listening","address":"127.0.0.1:4000"}"#;
        assert_eq!(
            render_handler_line("agents", listening, &[], false, None),
            None
        );
        // The host's own deep health call (no invocation id) is not a user's request.
        let health = SERVED.replace("\"invocation_id\":\"i\"", "\"invocation_id\":\"\"");
        assert_eq!(
            render_handler_line("agents", &health, &[], false, None),
            None
        );
        // A warning about an invocation is still shown.
        let failed = tick.replace("\"INFO\"", "\"WARN\"");
        assert!(render_handler_line("execution", &failed, &quiet, false, None).is_some());
        // Anything else that is not JSON is shown as a message.
        let plain = render_handler_line("agents", "hello", &[], false, Some(false)).expect("shown");
        assert!(plain.ends_with("INFO  agents     hello"), "{plain}");
    }
}
