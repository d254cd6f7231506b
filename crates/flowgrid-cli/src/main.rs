//! `flowgrid`: the command line of Flowgrid — local development tokens, the local Functions
//! host, packaging and admin commands.

mod admin;
mod deploy;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flowgrid",
    version,
    about = "Flowgrid: design, compile, run and watch AI agents"
)]
struct Cli {
    /// Folder for local data (embedded database, development signing key, queues).
    #[arg(
        long,
        global = true,
        env = "FLOWGRID_DATA_DIR",
        default_value = ".flowgrid"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print an access token for local development, signed with the local development key.
    Token(token::TokenArgs),
    /// Operator commands against storage: create a tenant, rotate signing keys.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Run every app locally under Flowgrid's own Functions host (builds what is stale first).
    Dev(flowgrid_host::cli::DevArgs),
    /// Build release binaries and write one zip-deploy package per app.
    Package(flowgrid_host::cli::PackageArgs),
    /// Inspect the local Service Bus: list, peek, send, resubmit or purge dead letters.
    Queue(flowgrid_host::cli::QueueArgs),
    /// Deploy to Azure with the az CLI: infrastructure, secrets, packages, smoke call (docs/deploy.md).
    Deploy(deploy::DeployArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Token(args) => token::run(&cli.data_dir, &args),
        Command::Admin(command) => admin::run(&cli.data_dir, &command),
        Command::Dev(args) => flowgrid_host::cli::dev(&cli.data_dir, &args),
        Command::Package(args) => flowgrid_host::cli::run_package(&args),
        Command::Queue(args) => flowgrid_host::cli::run_queue(&cli.data_dir, &args),
        Command::Deploy(args) => deploy::run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
