//! `flowgrid openapi`: the merged OpenAPI 3.1 document of every app, printed to standard
//! output. It is built from the apps' own declarations (each app's `app().openapi()`, the same
//! code that serves `GET /api/openapi/<app>.json`), so nothing is started: the CLI links every
//! app's library already, and a document made without servers cannot depend on which ones run.
//! `flowgrid dev` serves the same merge at `/api/openapi.json` from the running apps' documents.
//!
//! `docs/openapi.json` pins the document (see the test below and docs/api.md).

use anyhow::{Result, anyhow};
use serde_json::Value;

/// Every app's own document, in app-name order.
pub fn documents() -> Vec<Value> {
    vec![
        flowgrid_agents::app().openapi(),
        flowgrid_analytics::app().openapi(),
        flowgrid_auth::app().openapi(),
        flowgrid_design::app().openapi(),
        flowgrid_execution::app().openapi(),
        flowgrid_integrations::app().openapi(),
    ]
}

/// The merged document of every app.
pub fn merged() -> Result<Value> {
    flowgrid_http::openapi::merge(&documents())
        .map_err(|errors| anyhow!("the apps' documents do not merge: {}", errors.join("; ")))
}

/// Prints the merged document.
pub fn run() -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&merged()?)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json`, the pinned document; `FLOWGRID_UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn the_merged_openapi_document_is_the_pinned_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let current = serde_json::to_string_pretty(&merged().expect("documents merge"))
            .expect("JSON serialises")
            + "\n";
        if std::env::var_os("FLOWGRID_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &current).expect("writing docs/openapi.json");
            return;
        }
        let pinned = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            pinned == current,
            "docs/openapi.json differs from the apps' merged document: if the change is meant, \
             rewrite it with `FLOWGRID_UPDATE_OPENAPI=1 cargo nextest run -p flowgrid openapi` \
             (or `cargo run -p flowgrid -- openapi > docs/openapi.json`) and review the diff"
        );
    }
}
