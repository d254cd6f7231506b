//! `flowgrid`: the command line of Flowgrid — local development tokens, the local Functions
//! host, packaging and admin commands.

mod admin;
mod agents;
mod api;
mod canary;
mod deploy;
mod jobs;
mod openapi;
mod token;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowgrid_host::config::check::AppSettings;
use flowgrid_providers::outbound::OutboundPolicy;

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
    /// Canaries of the running `flowgrid dev`: start, weight, promote, rollback, status.
    #[command(subcommand)]
    Canary(canary::CanaryCommand),
    /// Deploy to Azure with the az CLI: infrastructure, secrets, packages, smoke call (docs/deploy.md).
    Deploy(deploy::DeployArgs),
    /// Create or update agents from files, list them (through the API).
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Run an agent: submit a job, and with --watch follow it step by step.
    Run(jobs::RunArgs),
    /// List, show or cancel jobs (through the API).
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Print the merged OpenAPI 3.1 document of every app (built from the apps, no server).
    Openapi,
}

/// The apps' own settings, checked by `flowgrid dev` before anything starts (the shared ones
/// are always checked; an app not listed here has only those).
fn app_settings() -> BTreeMap<String, AppSettings> {
    fn names(settings: &[flowgrid_domain::config::Setting]) -> Vec<&'static str> {
        settings.iter().map(|s| s.name).collect()
    }
    let mut apps = BTreeMap::new();
    apps.insert(
        "execution".to_owned(),
        AppSettings {
            names: names(flowgrid_execution::SETTINGS),
            check: |get| {
                flowgrid_execution::Settings::from_lookup(get)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        },
    );
    apps.insert(
        "auth".to_owned(),
        AppSettings {
            names: names(flowgrid_auth::SETTINGS),
            check: |get| {
                flowgrid_auth::settings_keys(get)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        },
    );
    apps.insert(
        "agents".to_owned(),
        AppSettings {
            names: names(flowgrid_agents::SETTINGS),
            check: |get| {
                flowgrid_domain::agent::OfferedProviders::from_lookup(get)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        },
    );
    apps.insert(
        "design".to_owned(),
        AppSettings {
            names: names(flowgrid_design::SETTINGS)
                .into_iter()
                .chain(names(flowgrid_design::settings::AI_SETTINGS))
                .collect(),
            check: |get| {
                flowgrid_design::Settings::from_lookup(get)
                    .and_then(|s| OutboundPolicy::parse(&s.outbound_allowlist))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        },
    );
    apps.insert(
        "integrations".to_owned(),
        AppSettings {
            names: flowgrid_integrations::settings()
                .iter()
                .map(|s| s.name)
                .collect(),
            check: |get| {
                flowgrid_providers::integrations::call::CallSettings::from_lookup(get)
                    .and_then(|_| {
                        OutboundPolicy::parse(
                            &get("FLOWGRID_OUTBOUND_ALLOWLIST").unwrap_or_default(),
                        )
                    })
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        },
    );
    apps.insert(
        "analytics".to_owned(),
        AppSettings {
            names: names(flowgrid_analytics::SETTINGS),
            check: |get| {
                flowgrid_analytics::retention_from_lookup(get)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        },
    );
    apps
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Token(args) => token::run(&cli.data_dir, &args),
        Command::Admin(command) => admin::run(&cli.data_dir, &command),
        Command::Dev(args) => flowgrid_host::cli::dev(&cli.data_dir, &args, app_settings()),
        Command::Package(args) => flowgrid_host::cli::run_package(&args),
        Command::Queue(args) => flowgrid_host::cli::run_queue(&cli.data_dir, &args),
        Command::Canary(command) => canary::run(&cli.data_dir, &command),
        Command::Deploy(args) => deploy::run(&args),
        Command::Agents(command) => agents::run(&cli.data_dir, &command),
        Command::Run(args) => jobs::run(&cli.data_dir, &args),
        Command::Jobs(command) => jobs::jobs(&cli.data_dir, &command),
        Command::Openapi => openapi::run(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
