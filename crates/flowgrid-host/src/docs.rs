//! The API description at the gateway: `GET /api/openapi.json`, the merged OpenAPI 3.1 document
//! of the running apps (each app's own `GET /api/openapi/<app>.json`, joined by
//! `flowgrid_http::openapi::merge`), and `GET /api/docs`, a page rendering it with Swagger UI.
//!
//! Neither needs a token: the document describes routes, never data, and the page is static
//! (it reads the document with no credentials; a token typed into its "Authorize" dialog stays
//! in the browser). The UI is `swagger-ui-dist` as its npm package builds it, checked in under
//! `assets/docs/` and compared with the package pinned in `tools/openapi-ui/package-lock.json`
//! by a test; nothing is downloaded at build or run time.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowgrid_domain::Error;
use flowgrid_http::ErrorResponse as _;
use flowgrid_http::correlation;
use serde_json::Value;

use crate::invoke::CallContext;
use crate::runtime::Shared;
use crate::supervisor::State as AppState;

const INDEX: &str = include_str!("../assets/docs/index.html");

/// The page's assets under `/api/docs/`: name, content type, content.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "docs.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/docs/docs.js"),
    ),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/docs/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_str!("../assets/docs/swagger-ui.css"),
    ),
];

/// The answer of the gateway's own API-description routes (`openapi.json`, `docs`,
/// `docs/<asset>` after the route prefix), or `None` for any other path.
pub(crate) async fn serve(
    sh: &Shared,
    rest: &[&str],
    method: &Method,
    ctx: &CallContext,
) -> Option<Response> {
    let known = match rest {
        [doc] if doc.eq_ignore_ascii_case("openapi.json") => true,
        [docs] | [docs, _] if docs.eq_ignore_ascii_case("docs") => true,
        _ => false,
    };
    if !known {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = Error::MethodNotAllowed.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    Some(match rest {
        [_, asset] => match ASSETS.iter().find(|(n, _, _)| n == asset) {
            Some((_, ty, body)) => page(ty, body),
            None => Error::NotFound.into_response(),
        },
        [docs] if docs.eq_ignore_ascii_case("docs") => page("text/html; charset=utf-8", INDEX),
        _ => merged(sh, ctx).await,
    })
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

/// The merged document of the apps that are ready now (an app that is starting or restarting
/// is left out and named in `x-flowgrid-missing-apps`).
async fn merged(sh: &Shared, ctx: &CallContext) -> Response {
    let mut documents = Vec::new();
    let mut missing = Vec::new();
    for app in &sh.apps {
        match app_document(sh, &app.name, app.pool.status(), ctx).await {
            Some(doc) => documents.push(doc),
            None => missing.push(app.name.clone()),
        }
    }
    match flowgrid_http::openapi::merge(&documents) {
        Ok(mut doc) => {
            if !missing.is_empty() {
                doc["x-flowgrid-missing-apps"] = Value::from(missing);
            }
            let mut r = axum::Json(doc).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(errors) => {
            tracing::error!(errors = ?errors, "the apps' OpenAPI documents do not merge");
            Error::Internal(errors.join("; ")).into_response()
        }
    }
}

/// One app's own document, from its handler (`None` while it is not ready or does not answer).
async fn app_document(
    sh: &Shared,
    app: &str,
    status: crate::supervisor::Status,
    ctx: &CallContext,
) -> Option<Value> {
    let (AppState::Ready, Some(port)) = (status.state, status.port) else {
        return None;
    };
    let prefix = &sh.config.host.route_prefix;
    let url = format!(
        "http://127.0.0.1:{port}/{prefix}/{}",
        flowgrid_http::app::openapi_route(app)
    );
    let req = hyper::Request::get(url)
        .header(correlation::HEADER, &ctx.correlation_id)
        .body(Body::empty())
        .ok()?;
    match tokio::time::timeout(Duration::from_secs(3), sh.client.send_collect(req)).await {
        Ok(Ok((status, _, body))) if status == StatusCode::OK => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}
