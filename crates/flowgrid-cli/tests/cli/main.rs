//! The `flowgrid` binary as a user runs it: one test binary, a module per area. The API commands
//! against a running `flowgrid dev` are tested end to end in tests/tests/e2e/cli.rs.

mod canary;
mod commands;
mod deploy;

use std::path::Path;
use std::process::{Command, Output};

/// `flowgrid <args>` on the data folder `data_dir`, with none of the settings of the calling
/// shell that would point it elsewhere.
fn flowgrid(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowgrid"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("FLOWGRID_JWT_JWKS")
        .env_remove("FLOWGRID_JWT_ISSUER")
        .env_remove("FLOWGRID_TOKEN")
        .env_remove("FLOWGRID_URL")
        .output()
        .expect("running flowgrid")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
