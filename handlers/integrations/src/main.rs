//! `flowgrid-integrations`: the Integrations app as an Azure Functions custom handler.

use flowgrid_domain::config::Config;
use flowgrid_http::{bind_address, serve};
use flowgrid_integrations::{APP, AppState, router};
use flowgrid_providers::integrations::CallSettings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowgrid_http::telemetry::init(APP);
    let config = Config::from_env()?;
    let settings = CallSettings::from_env()?;
    let state = AppState::from_config(&config, settings).await?;
    serve(router(state), bind_address()?).await?;
    Ok(())
}
