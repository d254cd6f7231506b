//! The app builder: every function of an app declared once, with the name of its folder under
//! `functions/<app>/`, its trigger and its handler.
//!
//! ```ignore
//! App::new("agents")
//!     .get("GetAgent", "agents/{id}", get_agent)
//!     .post("CreateAgent", "agents", create_agent)
//!     .router(state, vec![stores_health])
//! ```
//!
//! HTTP routes are written as in `function.json` (relative to the `api` prefix, with the host's
//! constraints such as `{version:int}`); the axum path is derived from them. Envelope-mode
//! functions (Service Bus and timer triggers, HTTP functions with output bindings) are served at
//! `POST /<FunctionName>` as the custom-handler contract says. [`App::functions`] lists every
//! declaration, so a test can check them against the `function.json` files (routes declared
//! once), and the health functions (`HealthLive`, `HealthReady`, `HealthDeep`) and the app's
//! OpenAPI document (`OpenApi`, `GET /api/openapi/<app>.json`) come with every app.
//!
//! A handler passed as `routes!(handler)` (see [`crate::openapi`]) is documented: the app
//! collects an OpenAPI 3.1 document ([`App::openapi`]) whose operation ids are the function
//! names; [`App::undocumented`] lists the HTTP functions that are not.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::handler::Handler;
use axum::routing::{get, post};
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::ApiRequestCountStore;
use serde_json::{Value, json};

use crate::api_requests;
use crate::auth::TokenVerifier;
use crate::openapi::{Endpoint, HandlerDoc};
use crate::{envelope, health, openapi, with_common_layers};

pub use crate::function::{Function, ROUTE_PREFIX, Trigger, axum_path};

/// An app under construction: its functions and the router serving them.
pub struct App<S> {
    name: &'static str,
    router: Router<S>,
    invocations: Router<S>,
    envelope_http: Vec<&'static str>,
    functions: Vec<Function>,
    /// The documentation of each documented HTTP function, by function name and method.
    docs: Vec<(String, String, HandlerDoc)>,
    /// Where the app's instances keep their finished minutes of API request counts.
    api_request_counts: Option<Arc<dyn ApiRequestCountStore>>,
}

/// The route of an app's OpenAPI document, as in `function.json`.
pub fn openapi_route(app: &str) -> String {
    format!("openapi/{app}.json")
}

impl<S> App<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<TokenVerifier>: FromRef<S>,
{
    /// An app named `name` (its folder under `functions/`, its binary `flowgrid-<name>`).
    pub fn new(name: &'static str) -> Self {
        let functions = ["HealthLive", "HealthReady", "HealthDeep", "OpenApi"]
            .into_iter()
            .map(|function| Function {
                name: function.to_owned(),
                trigger: Trigger::Http {
                    method: "get".to_owned(),
                    route: match function {
                        "HealthLive" => format!("health/{name}/live"),
                        "HealthReady" => format!("health/{name}/ready"),
                        "OpenApi" => openapi_route(name),
                        _ => format!("health/{name}"),
                    },
                },
                outputs: Vec::new(),
            })
            .collect();
        App {
            name,
            router: Router::new(),
            invocations: Router::new(),
            envelope_http: Vec::new(),
            functions: with_flush_api_requests(functions),
            docs: Vec::new(),
            api_request_counts: None,
        }
    }

    /// The app's own store of pending API request counts (its backend's
    /// `api_request_counts()`): the serve loop writes this process's finished minutes into it
    /// and the `FlushApiRequests` timer publishes every instance's from it
    /// ([`crate::api_requests`]). Without one the timer fails and the counts stay in memory.
    pub fn api_request_counts(mut self, store: Arc<dyn ApiRequestCountStore>) -> Self {
        self.api_request_counts = Some(store);
        self
    }

    /// The app's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every function of the app, health included.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// An HTTP function `name` answering `method` on `route` with `handler` (a bare handler,
    /// or `routes!(handler)` for a documented one).
    pub fn http<E, M>(
        mut self,
        method: &'static str,
        name: &'static str,
        route: &'static str,
        handler: E,
    ) -> Self
    where
        E: Endpoint<S, M>,
    {
        let (method_router, doc) = handler.into_endpoint(method);
        self.router = self.router.route(&axum_path(route), method_router);
        if let Some(doc) = doc {
            self.docs.push((name.to_owned(), method.to_owned(), doc));
        }
        self.functions.push(Function {
            name: name.to_owned(),
            trigger: Trigger::Http {
                method: method.to_owned(),
                route: route.to_owned(),
            },
            outputs: Vec::new(),
        });
        self
    }

    /// `GET route` → `handler`, as function `name`.
    pub fn get<E: Endpoint<S, M>, M>(
        self,
        name: &'static str,
        route: &'static str,
        handler: E,
    ) -> Self {
        self.http("get", name, route, handler)
    }

    /// `POST route` → `handler`, as function `name`.
    pub fn post<E: Endpoint<S, M>, M>(
        self,
        name: &'static str,
        route: &'static str,
        handler: E,
    ) -> Self {
        self.http("post", name, route, handler)
    }

    /// `PUT route` → `handler`, as function `name`.
    pub fn put<E: Endpoint<S, M>, M>(
        self,
        name: &'static str,
        route: &'static str,
        handler: E,
    ) -> Self {
        self.http("put", name, route, handler)
    }

    /// `PATCH route` → `handler`, as function `name`.
    pub fn patch<E: Endpoint<S, M>, M>(
        self,
        name: &'static str,
        route: &'static str,
        handler: E,
    ) -> Self {
        self.http("patch", name, route, handler)
    }

    /// `DELETE route` → `handler`, as function `name`.
    pub fn delete<E: Endpoint<S, M>, M>(
        self,
        name: &'static str,
        route: &'static str,
        handler: E,
    ) -> Self {
        self.http("delete", name, route, handler)
    }

    /// An envelope-mode function `name` (served at `POST /<name>`) with its trigger and its
    /// Service Bus output bindings (`(binding name, queue or topic)`).
    pub fn function<H: Handler<T, S>, T: 'static>(
        mut self,
        name: &'static str,
        trigger: Trigger,
        outputs: &[(&'static str, &'static str)],
        handler: H,
    ) -> Self {
        self.invocations = self.invocations.route(&format!("/{name}"), post(handler));
        self.functions.push(Function {
            name: name.to_owned(),
            trigger,
            outputs: owned(outputs),
        });
        self
    }

    /// An HTTP function with output bindings: the host delivers it in the invocation envelope
    /// at `POST /<name>`, which is replayed through the app's own routes; `handler` also answers
    /// the route directly (forwarded requests, tests). The handler sets the outputs in the
    /// response the envelope adapter turns into `Outputs`.
    pub fn http_envelope<E: Endpoint<S, M>, M>(
        mut self,
        method: &'static str,
        name: &'static str,
        route: &'static str,
        outputs: &[(&'static str, &'static str)],
        handler: E,
    ) -> Self {
        let (method_router, doc) = handler.into_endpoint(method);
        self.router = self.router.route(&axum_path(route), method_router);
        if let Some(doc) = doc {
            self.docs.push((name.to_owned(), method.to_owned(), doc));
        }
        self.envelope_http.push(name);
        self.functions.push(Function {
            name: name.to_owned(),
            trigger: Trigger::HttpEnvelope {
                method: method.to_owned(),
                route: route.to_owned(),
            },
            outputs: owned(outputs),
        });
        self
    }

    /// The app's OpenAPI 3.1 document: every documented HTTP function (operation id = the
    /// function name, completed as [`openapi::complete`] says), the health functions and the
    /// document itself.
    pub fn openapi(&self) -> Value {
        let mut paths: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        let mut schemas: BTreeMap<String, Value> = openapi::kit_schemas().into_iter().collect();
        for (function, method, doc) in &self.docs {
            let Some(route) = self.route_of(function, method) else {
                continue;
            };
            let path = axum_path(&route);
            let op = openapi::complete(self.name, function, &path, doc.operation.clone());
            paths.entry(path).or_default().insert(method.clone(), op);
            for (name, schema) in &doc.schemas {
                schemas.insert(name.clone(), schema.clone());
            }
        }
        for (function, op) in self.kit_operations() {
            if let Some(route) = self.route_of(function, "get") {
                // Every app has these functions: their operation ids name the app too, so
                // that ids stay unique in the merged document.
                let id = format!("{}.{function}", self.name);
                let op = openapi::complete(self.name, &id, &axum_path(&route), op);
                paths
                    .entry(axum_path(&route))
                    .or_default()
                    .insert("get".into(), op);
            }
        }
        openapi::document(self.name, paths, schemas)
    }

    /// The route of the HTTP function `name` answering `method`.
    fn route_of(&self, name: &str, method: &str) -> Option<String> {
        self.functions.iter().find_map(|f| match &f.trigger {
            Trigger::Http { method: m, route } | Trigger::HttpEnvelope { method: m, route }
                if f.name == name && m == method =>
            {
                Some(route.clone())
            }
            _ => None,
        })
    }

    /// The operations of the functions every app has: health and the document itself.
    fn kit_operations(&self) -> Vec<(&'static str, Value)> {
        let report = json!({
            "description": "The app's health report.",
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["app", "status"],
                "properties": {
                    "app": {"type": "string"},
                    "status": {"type": "string", "enum": ["ok", "failing"]},
                    "version": {"type": "string"},
                    "checks": {"type": "object", "additionalProperties": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {"type": "string", "enum": ["ok", "failing"]},
                            "durationMs": {"type": "number"}
                        }
                    }}
                }
            }}}
        });
        let checked = |summary: &str| {
            json!({
                "summary": summary,
                "security": [],
                "responses": {"200": report, "503": {
                    "description": "A check is failing: the same report, with the failing check.",
                    "content": report["content"].clone()
                }}
            })
        };
        vec![
            (
                "HealthLive",
                json!({
                    "summary": "Liveness: the process answers.",
                    "security": [],
                    "responses": {"200": report}
                }),
            ),
            (
                "HealthReady",
                checked("Readiness: the app's dependencies answer."),
            ),
            (
                "HealthDeep",
                checked("Deep health: every dependency, with timings."),
            ),
            (
                "OpenApi",
                json!({
                    "summary": "This app's OpenAPI 3.1 document.",
                    "security": [],
                    "responses": {"200": {
                        "description": "The document.",
                        "content": {"application/json": {"schema": {"type": "object"}}}
                    }}
                }),
            ),
        ]
    }

    /// What keeps the document from describing every HTTP function: a function without
    /// documentation, documentation whose attribute names another path or method than the
    /// declaration, or a path parameter the operation does not declare. Empty when complete.
    pub fn undocumented(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.functions {
            let (Trigger::Http { method, route } | Trigger::HttpEnvelope { method, route }) =
                &f.trigger
            else {
                continue;
            };
            if ["HealthLive", "HealthReady", "HealthDeep", "OpenApi"].contains(&f.name.as_str()) {
                continue;
            }
            let Some((_, _, doc)) = self
                .docs
                .iter()
                .find(|(name, m, _)| *name == f.name && m == method)
            else {
                out.push(format!(
                    "{} ({} {route}) is not documented: pass routes!(handler) with a #[utoipa::path]",
                    f.name,
                    method.to_uppercase()
                ));
                continue;
            };
            let path = axum_path(route);
            if doc.path != path {
                out.push(format!(
                    "{}: #[utoipa::path] says path = {:?}, the declaration {path:?}",
                    f.name, doc.path
                ));
            }
            if doc.methods != [method.clone()] {
                out.push(format!(
                    "{}: #[utoipa::path] says {:?}, the declaration {method}",
                    f.name, doc.methods
                ));
            }
            let declared: Vec<&str> = doc.operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for param in openapi::path_parameters(&path) {
                if !declared.contains(&param) {
                    out.push(format!(
                        "{}: the path parameter {{{param}}} is not in params(...)",
                        f.name
                    ));
                }
            }
        }
        out
    }

    /// The app's router over `state`: its functions, the health routes over `checks`, and the
    /// common layers (problem+json fallbacks, body limit, correlation ids, access log).
    pub fn router(self, state: S, checks: Vec<Arc<dyn HealthCheck>>) -> Router {
        let health = health::routes(self.name, checks);
        crate::middleware::register_functions(self.name, &self.functions);
        let document: Arc<[u8]> = serde_json::to_vec(&self.openapi())
            .unwrap_or_default()
            .into();
        let doc_route = Router::new().route(
            &axum_path(&openapi_route(self.name)),
            get(move || {
                let body = document.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            axum::http::HeaderValue::from_static("application/json"),
                        )],
                        axum::body::Bytes::from(body.to_vec()),
                    )
                }
            }),
        );
        let api = with_common_layers(
            self.router
                .with_state(state.clone())
                .merge(health)
                .merge(doc_route),
            self.name,
        );
        if let Some(store) = &self.api_request_counts {
            api_requests::register(self.name, store.clone());
        }
        let mut invocations = route_flush_api_requests(
            self.invocations.with_state(state),
            self.name,
            self.api_request_counts.clone(),
        );
        invocations = crate::middleware::invocation_spans(invocations, self.name);
        for name in self.envelope_http {
            invocations = invocations.route(
                &format!("/{name}"),
                envelope::http_function(api.clone(), "req", "res"),
            );
        }
        api.merge(invocations.layer(DefaultBodyLimit::max(crate::invocation_body_limit())))
    }
}

/// The functions a folder `functions/<app>/` declares: one per sub-folder with a
/// `function.json`, read as the host reads it. A file that cannot be read is an entry in the
/// error list, never silently skipped.
pub fn read_function_json(app_dir: &Path) -> Result<Vec<Function>, Vec<String>> {
    let entries =
        std::fs::read_dir(app_dir).map_err(|e| vec![format!("{}: {e}", app_dir.display())])?;
    let mut functions = Vec::new();
    let mut errors = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("function.json");
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            .and_then(|doc| function_of(&name, &doc))
        {
            Ok(mut read) => functions.append(&mut read),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    if errors.is_empty() {
        Ok(functions)
    } else {
        Err(errors)
    }
}

/// What `functions/<app>/` and the app's declarations disagree on: a function, method,
/// route, trigger or output binding on one side only. Empty when they agree.
pub fn differences(declared: &[Function], app_dir: &Path) -> Vec<String> {
    let on_disk = match read_function_json(app_dir) {
        Ok(f) => f,
        Err(errors) => return errors,
    };
    let mut out = Vec::new();
    for f in declared {
        if !on_disk.contains(f) {
            out.push(format!("declared in code but not in function.json: {f:?}"));
        }
    }
    for f in &on_disk {
        if !declared.contains(f) {
            out.push(format!("in function.json but not declared in code: {f:?}"));
        }
    }
    out
}

/// The function(s) of one `function.json`: one per HTTP method, so they compare with the
/// code's declarations (one per method).
fn function_of(name: &str, doc: &Value) -> Result<Vec<Function>, String> {
    let bindings = doc["bindings"].as_array().ok_or("no bindings array")?;
    let text = |b: &Value, key: &str| b[key].as_str().map(str::to_owned);
    let mut trigger = None;
    let mut methods = Vec::new();
    for b in bindings {
        let direction = b["direction"].as_str().unwrap_or_default();
        match (b["type"].as_str().unwrap_or_default(), direction) {
            ("httpTrigger", "in") => {
                methods = b["methods"]
                    .as_array()
                    .ok_or("an httpTrigger without methods")?
                    .iter()
                    .filter_map(|m| m.as_str())
                    .map(str::to_ascii_lowercase)
                    .collect();
                trigger = Some(text(b, "route").ok_or("an httpTrigger without route")?);
            }
            ("serviceBusTrigger", "in") => {
                let entity = match (text(b, "queueName"), text(b, "topicName")) {
                    (Some(queue), _) => queue,
                    (None, Some(topic)) => format!(
                        "{topic}/{}",
                        text(b, "subscriptionName")
                            .ok_or("a topic trigger without subscription")?
                    ),
                    _ => return Err("a serviceBusTrigger without queue or topic".into()),
                };
                return Ok(vec![Function {
                    name: name.to_owned(),
                    trigger: Trigger::ServiceBus(entity),
                    outputs: service_bus_outputs(bindings),
                }]);
            }
            ("timerTrigger", "in") => {
                return Ok(vec![Function {
                    name: name.to_owned(),
                    trigger: Trigger::Timer,
                    outputs: service_bus_outputs(bindings),
                }]);
            }
            ("serviceBus", "out") | ("http", "out") => {}
            (kind, direction) => {
                return Err(format!(
                    "a binding {kind}/{direction} Flowgrid does not use"
                ));
            }
        }
    }
    let route = trigger.ok_or("no trigger binding")?;
    let outputs = service_bus_outputs(bindings);
    Ok(methods
        .into_iter()
        .map(|method| Function {
            name: name.to_owned(),
            trigger: if outputs.is_empty() {
                Trigger::Http {
                    method,
                    route: route.clone(),
                }
            } else {
                Trigger::HttpEnvelope {
                    method,
                    route: route.clone(),
                }
            },
            outputs: outputs.clone(),
        })
        .collect())
}

fn service_bus_outputs(bindings: &[Value]) -> Vec<(String, String)> {
    bindings
        .iter()
        .filter(|b| b["type"] == "serviceBus" && b["direction"] == "out")
        .filter_map(|b| {
            let name = b["name"].as_str()?;
            let entity = b["queueName"]
                .as_str()
                .or_else(|| b["topicName"].as_str())?;
            Some((name.to_owned(), entity.to_owned()))
        })
        .collect()
}

fn owned(outputs: &[(&str, &str)]) -> Vec<(String, String)> {
    outputs
        .iter()
        .map(|(name, entity)| ((*name).to_owned(), (*entity).to_owned()))
        .collect()
}

/// The `FlushApiRequests` handler of `app`: writes this process's finished minutes of API
/// request counts into `store` and sends every instance's stored ones
/// ([`api_requests::flush`]).
async fn flush_api_requests(
    app: &'static str,
    store: Option<Arc<dyn ApiRequestCountStore>>,
    tick: crate::trigger::Tick,
) -> Result<crate::trigger::Outputs, crate::trigger::Failed> {
    let Some(store) = store else {
        return Err(crate::trigger::Failed(flowgrid_domain::Error::Internal(
            format!(
                "the app {app} was built without a store for API request counts (App::api_request_counts)"
            ),
        )));
    };
    let counter = api_requests::counter();
    let flushed = api_requests::flush(counter, app, store.as_ref(), chrono::Utc::now()).await?;
    let n = flushed.events.len();
    let mut outputs = crate::trigger::Outputs::new().events(
        api_requests::BINDING,
        flushed.events,
        &tick.trace,
    )?;
    outputs = outputs.log(format!(
        "sent {n} API request count(s), {} of them for the second time and deleted",
        flushed.deleted
    ));
    if let Err(e) = &flushed.persisted {
        tracing::warn!(app, error = %e, "this instance's API request counts not written; kept for the next try");
        outputs = outputs.log(format!("this instance's counts not written: {e}"));
    }
    let dropped = counter.take_dropped();
    if dropped > 0 {
        tracing::warn!(
            app,
            dropped,
            "API request counts over the limit were dropped"
        );
        outputs = outputs.log(format!("{dropped} request(s) over the count limit dropped"));
    }
    Ok(outputs)
}

/// `functions` with `FlushApiRequests` added (what [`App::new`] declares for every app).
fn with_flush_api_requests(mut functions: Vec<Function>) -> Vec<Function> {
    functions.push(Function {
        name: api_requests::FUNCTION.to_owned(),
        trigger: Trigger::Timer,
        outputs: vec![(
            api_requests::BINDING.to_owned(),
            flowgrid_domain::events::topics::PLATFORM_EVENTS.to_owned(),
        )],
    });
    functions
}

/// `invocations` with `POST /FlushApiRequests` of `app`.
fn route_flush_api_requests(
    invocations: axum::Router,
    app: &'static str,
    store: Option<Arc<dyn ApiRequestCountStore>>,
) -> axum::Router {
    invocations.route(
        &format!("/{}", api_requests::FUNCTION),
        axum::routing::post(move |tick: crate::trigger::Tick| {
            flush_api_requests(app, store.clone(), tick)
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_json_routes_become_axum_paths() {
        assert_eq!(axum_path("agents"), "/api/agents");
        assert_eq!(axum_path("agents/{id}"), "/api/agents/{id}");
        assert_eq!(
            axum_path("agents/{id}/versions/{version:int}/restore"),
            "/api/agents/{id}/versions/{version}/restore"
        );
        assert_eq!(axum_path("files/{name?}"), "/api/files/{name}");
        assert_eq!(
            axum_path("auth/.well-known/jwks.json"),
            "/api/auth/.well-known/jwks.json"
        );
    }
}

#[cfg(test)]
mod function_json_tests {
    use super::*;

    fn write(dir: &Path, name: &str, doc: serde_json::Value) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("function.json"), doc.to_string()).unwrap();
    }

    fn http(method: &str, route: &str) -> serde_json::Value {
        serde_json::json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": [method], "route": route},
            {"type": "http", "direction": "out", "name": "res"}
        ]})
    }

    fn declared(functions: &[(&str, &str, &str)]) -> Vec<Function> {
        functions
            .iter()
            .map(|(name, method, route)| Function {
                name: (*name).to_owned(),
                trigger: Trigger::Http {
                    method: (*method).to_owned(),
                    route: (*route).to_owned(),
                },
                outputs: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn matching_declarations_have_no_differences() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "GetThing", http("get", "things/{id}"));
        let code = declared(&[("GetThing", "get", "things/{id}")]);
        assert_eq!(differences(&code, dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_route_method_or_function_on_one_side_only_is_a_difference() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "GetThing", http("get", "things/{id}"));
        write(dir.path(), "OnlyOnDisk", http("get", "disk"));
        let code = declared(&[
            ("GetThing", "put", "things/{id}"),
            ("OnlyInCode", "get", "code"),
        ]);
        let found = differences(&code, dir.path());
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.iter().any(|d| d.contains("OnlyOnDisk")));
        assert!(found.iter().any(|d| d.contains("OnlyInCode")));
    }

    #[test]
    fn service_bus_triggers_and_outputs_are_compared() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "Work",
            serde_json::json!({"bindings": [
                {"type": "serviceBusTrigger", "direction": "in", "name": "msg", "queueName": "jobs"},
                {"type": "serviceBus", "direction": "out", "name": "out", "queueName": "jobs"}
            ]}),
        );
        let work = |outputs: Vec<(String, String)>| Function {
            name: "Work".into(),
            trigger: Trigger::ServiceBus("jobs".into()),
            outputs,
        };
        assert!(differences(&[work(owned(&[("out", "jobs")]))], dir.path()).is_empty());
        assert_eq!(differences(&[work(Vec::new())], dir.path()).len(), 2);
    }

    #[test]
    fn an_unreadable_function_json_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Broken")).unwrap();
        std::fs::write(dir.path().join("Broken/function.json"), "{").unwrap();
        let found = differences(&[], dir.path());
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("Broken"));
    }
}
