//! The dashboard page and its embedded assets.

use std::path::Path;

use flowgrid_analytics::page_assets;

use crate::start;

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary_and_other_names_are_not_found() {
    let app = start().await;
    let page = app.get("/api/analytics/ui", "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text.contains("ui/uPlot.iife.min.js"));
    for name in ["dashboard.js", "uPlot.iife.min.js", "uPlot.min.css"] {
        let r = app.get(&format!("/api/analytics/ui/{name}"), "").await;
        assert_eq!(r.status, 200, "{name}");
        assert!(r.text.len() > 100, "{name}");
    }
    let r = app.get("/api/analytics/ui/secrets.txt", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}

/// The chart library checked in is, byte for byte, the build of the npm package pinned in
/// `tools/dashboard/package-lock.json` (installed with `npm ci` by this test).
#[test]
fn the_checked_in_chart_library_is_the_pinned_npm_package() {
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/dashboard");
    flowgrid_testkit::tools::npm_ci(&tools, "the dashboard tests");
    let dist = tools.join("node_modules/uplot/dist");
    for (name, _, body) in page_assets() {
        if !name.starts_with("uPlot") {
            continue;
        }
        let published = std::fs::read_to_string(Path::new(&dist).join(name)).expect("package file");
        assert!(
            published == *body,
            "{name} differs from the pinned uplot package"
        );
    }
}
