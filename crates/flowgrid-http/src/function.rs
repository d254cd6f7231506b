//! The declaration of one function of an app (its folder under `functions/<app>/`, its trigger,
//! its output bindings) and the axum path of an HTTP route: what the app builder collects and
//! the request layers read, apart from both so neither depends on the other.

/// The route prefix of every HTTP function (`extensions.http.routePrefix` in host.json).
pub const ROUTE_PREFIX: &str = "api";

/// How a function is triggered, as its `function.json` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// An HTTP trigger forwarded to the handler as it came (`enableForwardingHttpRequest`).
    Http {
        /// The method, lower case (`get`, `post`, ...).
        method: String,
        /// The route template, as in `function.json` (`agents/{id}`).
        route: String,
    },
    /// An HTTP trigger delivered in the invocation envelope, because the function has output
    /// bindings.
    HttpEnvelope {
        /// The method, lower case.
        method: String,
        /// The route template.
        route: String,
    },
    /// A Service Bus queue (`queue`) or topic subscription (`topic/subscription`).
    ServiceBus(String),
    /// A timer.
    Timer,
}

/// One function of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The folder name under `functions/<app>/`.
    pub name: String,
    /// Its trigger.
    pub trigger: Trigger,
    /// The names and targets of its Service Bus output bindings (`out` → `executions`).
    pub outputs: Vec<(String, String)>,
}

/// The axum path of a `function.json` route template: the `api` prefix, and constraints
/// (`{version:int}`) and optional markers (`{x?}`) dropped, since handlers parse their ids.
pub fn axum_path(route: &str) -> String {
    let mut out = format!("/{ROUTE_PREFIX}/");
    let mut rest = route;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        let name = inner
            .split(':')
            .next()
            .unwrap_or(inner)
            .trim_end_matches('?');
        out.push('{');
        out.push_str(name);
        out.push('}');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The axum method filter of a lower-case method name.
pub(crate) fn method_filter(method: &str) -> axum::routing::MethodFilter {
    match method {
        "post" => axum::routing::MethodFilter::POST,
        "put" => axum::routing::MethodFilter::PUT,
        "patch" => axum::routing::MethodFilter::PATCH,
        "delete" => axum::routing::MethodFilter::DELETE,
        _ => axum::routing::MethodFilter::GET,
    }
}
