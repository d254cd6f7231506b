//! `flowgrid`: the command line of Flowgrid — local development tokens, the local Functions
//! host, packaging and admin commands.

mod admin;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Token(args) => token::run(&cli.data_dir, &args),
        Command::Admin(command) => admin::run(&cli.data_dir, &command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
