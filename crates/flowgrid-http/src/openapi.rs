//! OpenAPI 3.1 documents generated from the code.
//!
//! A handler is documented with utoipa's `#[utoipa::path]` attribute and declared through the
//! `App` builder with `routes!(handler)` instead of the bare handler:
//!
//! ```ignore
//! /// Reads one agent.                                   // summary (first line) and description
//! #[utoipa::path(get, path = "/api/agents/{id}",
//!     params(("id" = AgentId, Path, description = "The agent's id")),
//!     responses((status = 200, body = Agent), (status = 404, description = "No such agent")))]
//! async fn get_agent(...) -> Result<Json<Agent>> { ... }
//!
//! App::new("agents").get("GetAgent", "agents/{id}", routes!(get_agent))
//! ```
//!
//! The app's declaration is the source of truth: the operation id is the function name, the
//! tag the app, and `App::undocumented` reports an HTTP function
//! without documentation, or whose attribute names another path or method, or leaves a path
//! parameter undeclared (every app has a test that this list is empty). The kit completes each
//! operation the same way ([`complete`]):
//!
//! - the bearer security scheme, unless the attribute says `security(())` (a public route,
//!   which then has `security: []`), and `401` for the secured ones;
//! - the error responses every route of its shape can give: `400` and `404` with a path
//!   parameter, `400` with query parameters, `400`/`413`/`415`/`422` with a request body, `429`
//!   (the gateway's per-tenant rate limit) for secured routes and `503` everywhere;
//! - every error response (status 400 and above) as `application/problem+json` with the
//!   `Problem` schema and an example made by the domain's own error, unless the attribute gives
//!   its content;
//! - the `X-Correlation-Id` header on every response.
//!
//! [`merge`] joins the apps' documents into one (what `flowgrid dev` serves at
//! `/api/openapi.json` and `flowgrid openapi` prints).

use std::collections::BTreeMap;

use axum::routing::MethodRouter;
use flowgrid_domain::{Error, FieldError};
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::Paths;
use utoipa::openapi::schema::Schema;

pub use utoipa_axum::routes;

/// The name of the bearer security scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

/// What `routes!(handler)` gives: the schemas the handler's documentation refers to, its
/// documented path item, and its method router.
pub type Documented<S> = (Vec<(String, RefOr<Schema>)>, Paths, MethodRouter<S>);

/// The documentation of one handler, as its `#[utoipa::path]` attribute gives it.
#[derive(Debug, Clone)]
pub struct HandlerDoc {
    /// The path the attribute names (`/api/agents/{id}`).
    pub path: String,
    /// The methods the attribute names, lower case.
    pub methods: Vec<String>,
    /// The operation, as JSON.
    pub operation: Value,
    /// The component schemas it refers to, by name.
    pub schemas: Vec<(String, Value)>,
}

/// A handler as the `App` builder takes it: a bare axum handler (undocumented) or
/// `routes!(handler)` (documented). `M` only tells the two apart.
pub trait Endpoint<S, M> {
    /// The method router answering `method` (`get`, `post`, ...) and the documentation.
    fn into_endpoint(self, method: &str) -> (MethodRouter<S>, Option<HandlerDoc>);
}

/// Marks a bare handler.
#[doc(hidden)]
pub struct Bare<T>(std::marker::PhantomData<T>);
/// Marks a `routes!` handler.
#[doc(hidden)]
pub struct WithDoc;

impl<H, T, S> Endpoint<S, Bare<T>> for H
where
    H: axum::handler::Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    fn into_endpoint(self, method: &str) -> (MethodRouter<S>, Option<HandlerDoc>) {
        (
            axum::routing::on(crate::function::method_filter(method), self),
            None,
        )
    }
}

impl<S> Endpoint<S, WithDoc> for Documented<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn into_endpoint(self, _method: &str) -> (MethodRouter<S>, Option<HandlerDoc>) {
        let (schemas, paths, router) = self;
        let paths = serde_json::to_value(&paths).unwrap_or(Value::Null);
        let mut doc = None;
        // `Paths` serialises as the map of paths itself (extensions aside).
        if let Some((path, item)) = paths
            .as_object()
            .and_then(|p| p.iter().find(|(k, _)| k.starts_with('/')))
        {
            let mut methods = Vec::new();
            let mut operation = Value::Null;
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    methods.push(method.to_string());
                    operation = op.clone();
                }
            }
            doc = Some(HandlerDoc {
                path: path.clone(),
                methods,
                operation,
                schemas: schemas
                    .into_iter()
                    .map(|(name, schema)| {
                        (name, serde_json::to_value(schema).unwrap_or(Value::Null))
                    })
                    .collect(),
            });
        }
        (router, doc)
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The problem body an error of `status` gives, for examples.
fn example_error(status: u16) -> Error {
    match status {
        400 => Error::BadRequest("\"x\" is not an id".into()),
        401 => Error::Unauthorized(String::new()),
        403 => Error::Forbidden("the editor role is required".into()),
        404 => Error::NotFound,
        405 => Error::MethodNotAllowed,
        409 => Error::Conflict("an agent named \"Triage\" exists".into()),
        412 => Error::PreconditionFailed,
        413 => Error::PayloadTooLarge {
            limit_bytes: crate::BODY_LIMIT_BYTES,
        },
        415 => Error::UnsupportedMediaType,
        422 => Error::Validation(vec![FieldError::new("name", "must not be empty")]),
        429 => Error::TooManyRequests {
            retry_after_secs: 1,
        },
        503 => Error::Unavailable(String::new()),
        _ => Error::Internal(String::new()),
    }
}

/// What an added error response says.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request cannot be read: a malformed id, query parameter or JSON body.",
        401 => "The bearer token is missing, expired, revoked or not trusted.",
        403 => "The caller's role does not allow this.",
        404 => "No such resource for the caller's tenant (another tenant's ids included).",
        409 => "The change conflicts with existing state.",
        412 => "`If-Match` does not match the current ETag.",
        413 => "The body is larger than the limit (1 MiB).",
        415 => "The body is not `application/json` (or `application/<something>+json`).",
        422 => "The body was read but a field is invalid; `errors` names each one.",
        429 => "Too many requests for the tenant; retry after `Retry-After` seconds.",
        503 => "A dependency (storage) is unreachable; retry later.",
        _ => "An error.",
    }
}

/// The `application/problem+json` content of an error response of `status`.
pub fn problem_content(status: u16) -> Value {
    let example = serde_json::to_value(example_error(status).problem(Some("3f1c2a9e-corr".into())))
        .unwrap_or(Value::Null);
    json!({
        crate::PROBLEM_JSON: {
            "schema": {"$ref": "#/components/schemas/Problem"},
            "example": example,
        }
    })
}

fn correlation_header() -> Value {
    json!({
        "description": "The request's correlation id (the caller's when sane, else a new one).",
        "schema": {"type": "string"}
    })
}

/// The kit's completion of a documented operation (see the module docs): `operation_id`, the
/// app's tag, security, the standard error responses, problem+json errors and the
/// correlation header.
pub fn complete(app: &str, function: &str, path: &str, mut op: Value) -> Value {
    let Some(obj) = op.as_object_mut() else {
        return op;
    };
    obj.insert("operationId".into(), json!(function));
    obj.insert("tags".into(), json!([app]));
    let public = match obj.get("security") {
        None => false,
        Some(Value::Array(reqs)) => reqs
            .iter()
            .all(|r| r.as_object().is_some_and(Map::is_empty)),
        Some(_) => false,
    };
    obj.insert(
        "security".into(),
        if public {
            json!([])
        } else {
            json!([{ BEARER: [] }])
        },
    );
    let params: Vec<Value> = obj
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_in = |place: &str| params.iter().any(|p| p["in"] == place);
    let mut standard: Vec<u16> = vec![503];
    if !public {
        standard.extend([401, 429]);
    }
    if path.contains('{') || has_in("path") {
        standard.extend([400, 404]);
    }
    if has_in("query") {
        standard.push(400);
    }
    if obj.contains_key("requestBody") {
        standard.extend([400, 413, 415, 422]);
    }
    let responses = obj
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return op;
    };
    for status in standard {
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": error_description(status)}));
    }
    for (status, response) in responses.iter_mut() {
        let code: u16 = status.parse().unwrap_or(500);
        let Some(response) = response.as_object_mut() else {
            continue;
        };
        if code >= 400 && !response.contains_key("content") {
            response.insert("content".into(), problem_content(code));
            let headers = response.entry("headers").or_insert_with(|| json!({}));
            match code {
                401 => {
                    headers["WWW-Authenticate"] = json!({
                        "description": "`Bearer realm=\"flowgrid\", ...`",
                        "schema": {"type": "string"}
                    });
                }
                429 => {
                    headers["Retry-After"] = json!({
                        "description": "Seconds to wait before retrying.",
                        "schema": {"type": "integer", "minimum": 0}
                    });
                }
                _ => {}
            }
        }
        let headers = response.entry("headers").or_insert_with(|| json!({}));
        headers["X-Correlation-Id"] = correlation_header();
    }
    op
}

/// The OpenAPI parameter names of a path template (`/api/agents/{id}` → `id`).
pub fn path_parameters(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split('}').next())
        .collect()
}

/// The component schemas every document has: `Problem` and `FieldError`.
pub fn kit_schemas() -> Vec<(String, Value)> {
    use utoipa::{PartialSchema, ToSchema};
    let mut out = vec![(
        flowgrid_domain::error::Problem::name().into_owned(),
        serde_json::to_value(flowgrid_domain::error::Problem::schema()).unwrap_or(Value::Null),
    )];
    let mut refs = Vec::new();
    flowgrid_domain::error::Problem::schemas(&mut refs);
    out.extend(
        refs.into_iter()
            .map(|(n, s)| (n, serde_json::to_value(s).unwrap_or(Value::Null))),
    );
    out
}

/// An app's document from its completed operations (`path` → `method` → operation) and the
/// schemas they refer to.
pub fn document(
    app: &str,
    paths: BTreeMap<String, BTreeMap<String, Value>>,
    schemas: BTreeMap<String, Value>,
) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("Flowgrid {app} API"),
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The {app} app of Flowgrid. Errors are RFC 9457 `application/problem+json`; \
                 every route but the public ones needs `Authorization: Bearer <JWT>`."
            ),
        },
        "tags": [{"name": app, "description": format!("The {app} app.")}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from `POST /api/auth/login` (or a trusted external issuer)."
                }
            }
        }
    })
}

/// The merged document of several apps' documents: their paths, tags and schemas. A path
/// (with method) or an operation id in two documents, or a schema of one name that differs
/// between two, is an error naming it.
pub fn merge(documents: &[Value]) -> Result<Value, Vec<String>> {
    let mut paths = Map::new();
    let mut tags = Vec::new();
    let mut schemas = Map::new();
    let mut errors = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for doc in documents {
        if let Some(t) = doc["tags"].as_array() {
            tags.extend(t.iter().cloned());
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let entry = paths.entry(path.clone()).or_insert_with(|| json!({}));
            for (method, op) in item.as_object().into_iter().flatten() {
                if let Some(id) = op["operationId"].as_str()
                    && !ids.insert(id.to_owned())
                {
                    errors.push(format!("the operation id {id} is in two documents"));
                }
                if entry.get(method).is_some() {
                    errors.push(format!("{method} {path} is in two documents"));
                } else {
                    entry[method] = op.clone();
                }
            }
        }
        for (name, schema) in doc["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
        {
            match schemas.get(name) {
                Some(existing) if existing != schema => {
                    errors.push(format!("schema {name} differs between two documents"));
                }
                Some(_) => {}
                None => {
                    schemas.insert(name.clone(), schema.clone());
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let paths: BTreeMap<String, Value> = paths.into_iter().collect();
    let schemas: BTreeMap<String, Value> = schemas.into_iter().collect();
    let mut merged = document("all", BTreeMap::new(), BTreeMap::new());
    merged["info"]["title"] = json!("Flowgrid API");
    merged["info"]["description"] = json!(
        "Every app of Flowgrid behind one gateway. Errors are RFC 9457 \
         `application/problem+json`; every route but the public ones needs \
         `Authorization: Bearer <JWT>`."
    );
    tags.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    merged["tags"] = Value::Array(tags);
    merged["paths"] = json!(paths);
    merged["components"]["schemas"] = json!(schemas);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_completed_with_security_and_problem_errors() {
        let op = json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "ok"}, "412": {"description": "stale"}}
        });
        let done = complete("agents", "GetAgent", "/api/agents/{id}", op);
        assert_eq!(done["operationId"], "GetAgent");
        assert_eq!(done["tags"], json!(["agents"]));
        assert_eq!(done["security"], json!([{"bearer": []}]));
        for status in ["400", "401", "404", "412", "429", "503"] {
            let content = &done["responses"][status]["content"];
            assert_eq!(
                content[crate::PROBLEM_JSON]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{status}"
            );
            assert_eq!(
                content[crate::PROBLEM_JSON]["example"]["status"],
                json!(status.parse::<u16>().unwrap())
            );
        }
        assert!(done["responses"]["200"].get("content").is_none());
        assert!(done["responses"]["200"]["headers"]["X-Correlation-Id"].is_object());
        assert!(done["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
        assert!(done["responses"].get("415").is_none(), "no body, no 415");
    }

    #[test]
    fn a_public_operation_has_no_security_and_no_401() {
        let op = json!({"security": [{}], "responses": {"200": {"description": "ok"}}});
        let done = complete("auth", "Login", "/api/auth/login", op);
        assert_eq!(done["security"], json!([]));
        assert!(done["responses"].get("401").is_none());
    }

    #[test]
    fn merging_refuses_a_path_twice_or_a_schema_that_differs() {
        let a = document(
            "a",
            BTreeMap::from([(
                "/api/x".to_owned(),
                BTreeMap::from([("get".to_owned(), json!({}))]),
            )]),
            BTreeMap::from([("S".to_owned(), json!({"type": "string"}))]),
        );
        let mut b = a.clone();
        b["components"]["schemas"]["S"] = json!({"type": "integer"});
        let errors = merge(&[a.clone(), b]).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let mut c = document(
            "c",
            BTreeMap::from([(
                "/api/y".to_owned(),
                BTreeMap::from([("get".to_owned(), json!({"operationId": "Same"}))]),
            )]),
            BTreeMap::new(),
        );
        let d = c.clone();
        c["paths"]["/api/z"] = c["paths"]["/api/y"].clone();
        c["paths"].as_object_mut().unwrap().remove("/api/y");
        let errors = merge(&[c, d]).unwrap_err();
        assert_eq!(errors, ["the operation id Same is in two documents"]);
        let merged = merge(&[a]).unwrap();
        assert_eq!(merged["paths"]["/api/x"]["get"], json!({}));
        assert_eq!(merged["openapi"], "3.1.0");
    }
}
