//! The dashboard page and its assets, embedded in the binary (`include_str!`): the page, its
//! script, and the chart library uPlot (MIT) as built by its npm package — the files are
//! checked in under `handlers/analytics/assets/`, and a test compares them with the package
//! pinned in `tools/dashboard/package-lock.json`. The page needs no token to load; its script
//! reads the dashboard with the caller's token (`#token=` in the URL, or a sign-in through the
//! Auth app).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flowgrid_http::extract::{Id, PathParam};
use flowgrid_http::{Error, Result};

const INDEX: &str = include_str!("../assets/index.html");

/// The assets under `ui/`: name, content type, content.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/dashboard.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../assets/uPlot.min.css"),
    ),
];

fn answer(content_type: &'static str, body: &'static str) -> Response {
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
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'",
        ),
    );
    r
}

/// The dashboard page (no token needed to load it; its script reads with the caller's token).
#[utoipa::path(get, path = "/api/analytics/ui", security(()),
    responses((status = 200, description = "The page.", content_type = "text/html", body = String,
        headers(("Content-Security-Policy" = String, description = "Scripts and styles from this origin only."),
            ("Cache-Control" = String, description = "`no-cache`.")))))]
pub async fn index() -> Response {
    answer("text/html; charset=utf-8", INDEX)
}

/// `{asset}` of the asset route.
pub struct AssetName(String);

impl PathParam for AssetName {
    const NAME: &'static str = "asset";
    fn parse(segment: &str) -> flowgrid_domain::Result<Self> {
        Ok(AssetName(segment.to_owned()))
    }
}

/// One of the dashboard page's assets; any other name is a 404.
#[utoipa::path(get, path = "/api/analytics/ui/{asset}", security(()),
    params(("asset" = String, Path, description = "`dashboard.js`, `uPlot.iife.min.js` or `uPlot.min.css`.")),
    responses((status = 200, description = "The asset.",
        content((String = "text/javascript"), (String = "text/css")),
        headers(("Cache-Control" = String, description = "`no-cache`.")))))]
pub async fn asset(Id(AssetName(name)): Id<AssetName>) -> Result<Response> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ty, body)| {
            // The content types above are static strings; `answer` takes them as such.
            let ty: &'static str = ty;
            answer(ty, body)
        })
        .ok_or_else(|| Error::NotFound.into())
}
