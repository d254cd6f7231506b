//! `flowgrid-execution`: the Execution app as an Azure Functions custom handler.

use flowgrid_core::config::Config;
use flowgrid_core::http::{bind_address, serve};
use flowgrid_execution::{APP, AppState, Settings, router};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowgrid_core::telemetry::init(APP);
    let config = Config::from_env()?;
    let settings = Settings::from_env()?;
    let state = AppState::from_config(&config, settings).await?;
    serve(router(state), bind_address()?).await?;
    Ok(())
}
