//! `flowgrid-analytics`: the Analytics app as an Azure Functions custom handler.

use flowgrid_analytics::{APP, AppState, router};
use flowgrid_domain::config::Config;
use flowgrid_http::{bind_address, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowgrid_http::telemetry::init(APP);
    let config = Config::from_env()?;
    let state = AppState::from_config(&config).await?;
    serve(router(state), bind_address()?).await?;
    Ok(())
}
