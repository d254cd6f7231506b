//! The `flowgrid dev`, `flowgrid package` and `flowgrid queue` commands (the `flowgrid` binary
//! only parses arguments and calls these).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::bus::{Bus, BusSettings, Outgoing, SendOutcome, Target};
use crate::config::check::AppSettings;
use crate::devstate::{DataDirLock, DevState};
use crate::host::{Host, HostOptions};
use crate::output::LogFormat;
use crate::package::{PackageOptions, package};

/// `flowgrid dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Port to serve every app on.
    #[arg(long, default_value_t = 7071)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// The app root (host.json, functions/); default: the nearest folder upwards that has both.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Do not run `cargo build --bins` first.
    #[arg(long)]
    pub no_build: bool,
    /// Where the handler binaries `flowgrid-<app>` are (default: next to this `flowgrid`).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Log lines: `pretty` (one readable line per event), `json` (one JSON object per line),
    /// `auto` (pretty on a terminal, else JSON).
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Instances of an app: `app=min..max` or `app=n` (repeatable; a bare `min..max` is every
    /// app). Over the FLOWGRID_INSTANCES setting; default one instance each.
    #[arg(long, value_name = "APP=MIN..MAX")]
    pub instances: Vec<String>,
    /// How an app's HTTP requests are spread over its instances: `app=round-robin`,
    /// `least-connections`, `ip-hash` or `weighted-round-robin:<w0>:<w1>…` (repeatable). Over
    /// the FLOWGRID_BALANCE setting; default round-robin.
    #[arg(long, value_name = "APP=STRATEGY")]
    pub balance: Vec<String>,
    /// Start a canary: another binary of an app beside the current one, taking a share of its
    /// HTTP traffic sticky per tenant: `app=/path/to/flowgrid-app:10` (percent; repeatable). Over
    /// the FLOWGRID_CANARY setting. On a running host: `flowgrid canary`.
    #[arg(long, value_name = "APP=BINARY:WEIGHT")]
    pub canary: Vec<String>,
}

/// `flowgrid package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// Only this app (a folder name under functions/).
    #[arg(long)]
    pub app: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "dist")]
    pub out: PathBuf,
    /// The app root (host.json, functions/); default: the nearest folder upwards that has both.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Rust target to build for. Default: x86_64-unknown-linux-musl (a static binary) when that
    /// target and a musl C compiler (`musl-gcc`) are installed, else the host's target (glibc).
    /// `--target x86_64-unknown-linux-gnu` forces a glibc build.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not build; package the binaries already in target/release (or target/<target>/release).
    #[arg(long)]
    pub no_build: bool,
}

/// `flowgrid queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// The queue subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every queue and subscription with its active, scheduled and dead-letter counts.
    List,
    /// Show messages without locking them.
    Peek {
        /// Queue, or `topic/Subscriptions/sub`.
        entity: String,
        /// Peek the dead-letter queue instead.
        #[arg(long)]
        dead_letter: bool,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        max: usize,
    },
    /// Move every dead letter of an entity back to it, with a fresh delivery count.
    Resubmit {
        /// Queue, or `topic/Subscriptions/sub`.
        entity: String,
    },
    /// Delete every dead letter of an entity.
    Purge {
        /// Queue, or `topic/Subscriptions/sub`.
        entity: String,
    },
    /// Send a message to a queue (or, with --topic, a topic).
    Send {
        /// Queue or topic name.
        entity: String,
        /// The message body.
        body: String,
        /// Send to the topic of that name.
        #[arg(long)]
        topic: bool,
        /// MessageId (duplicate detection drops a repeat within the window).
        #[arg(long)]
        message_id: Option<String>,
        /// ContentType.
        #[arg(long)]
        content_type: Option<String>,
        /// An application property `key=value` (repeatable).
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Deliver no earlier than this many seconds from now.
        #[arg(long)]
        scheduled_in_secs: Option<u64>,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// The nearest folder from the current directory upwards holding `host.json` and `functions/`.
fn find_root(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.join("host.json").is_file() {
            bail!(
                "{}: no host.json here; pass the folder that holds host.json and functions/ to --root",
                p.display()
            );
        }
        return Ok(p.to_owned());
    }
    let cwd = std::env::current_dir()?;
    for dir in cwd.ancestors() {
        if dir.join("host.json").is_file() && dir.join("functions").is_dir() {
            return Ok(dir.to_owned());
        }
    }
    bail!(
        "no host.json with a functions/ folder in {} or above; run this from the Flowgrid checkout or pass --root",
        cwd.display()
    )
}

/// `debug` or `release`: the profile this `flowgrid` was built with.
fn own_profile() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|p| p == "release")
        .unwrap_or_else(|| "debug".to_owned())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn run_cargo(root: &Path, args: &[&str]) -> Result<()> {
    eprintln!("flowgrid: building: cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| {
            format!(
                "cannot run {} (is Rust installed? see https://rustup.rs)",
                cargo()
            )
        })?;
    if !status.success() {
        bail!(
            "cargo {} failed ({status}); fix the build errors above, or pass --no-build to run what is built",
            args.join(" ")
        );
    }
    Ok(())
}

/// `flowgrid dev`: takes the data folder (one host per folder), builds what is stale, checks
/// the settings, starts every app, serves until Ctrl-C. `app_settings` are the apps' own
/// settings to check before anything starts.
pub fn dev(
    data_dir: &Path,
    args: &DevArgs,
    app_settings: std::collections::BTreeMap<String, AppSettings>,
) -> Result<()> {
    let root = find_root(args.root.as_deref())?;
    let data_dir = &absolute_path(data_dir)?;
    let mut lock = DataDirLock::acquire(data_dir)?;
    let profile = own_profile();
    if !args.no_build && root.join("Cargo.toml").is_file() {
        let mut cargo_args = vec!["build", "--bins", "--workspace"];
        if profile == "release" {
            cargo_args.push("--release");
        }
        run_cargo(&root, &cargo_args)?;
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned))
            .filter(|d| d.join("flowgrid").is_file() && d.ends_with(&profile))
            .unwrap_or_else(|| root.join("target").join(&profile)),
    };
    crate::output::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Listen for Ctrl-C and SIGTERM before any handler starts, so that a signal at any
        // moment stops the handlers too instead of leaving them orphaned.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        tokio::pin!(stop);
        let opts = HostOptions {
            root: root.clone(),
            bin_dir,
            data_dir: data_dir.to_owned(),
            listen: SocketAddr::new(args.bind, args.port),
            app_settings,
            scaling: crate::config::scaling::ScaleOverrides {
                instances: args.instances.clone(),
                balance: args.balance.clone(),
                canary: args.canary.clone(),
            },
        };
        let host = Host::start(opts, &mut |n| eprintln!("flowgrid: {n}")).await?;
        lock.publish(&DevState {
            pid: std::process::id(),
            url: local_url(&host),
            issuer: host.issuer().to_owned(),
        })?;
        eprintln!("flowgrid: waiting for the apps to answer...");
        tokio::select! {
            () = host.settle(Duration::from_secs(60)) => {
                print_banner(&host, data_dir);
                (&mut stop).await;
            }
            () = &mut stop => {}
        }
        eprintln!("flowgrid: stopping");
        host.shutdown().await;
        flowgrid_http::telemetry::flush();
        Ok(())
    })
}

/// The URL a browser or the CLI on this machine reaches the host at.
fn local_url(host: &Host) -> String {
    let ip = host.addr().ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("http://localhost:{}", host.addr().port())
    } else {
        host.url()
    }
}

fn absolute_path(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// The start-up banner, on stderr (stdout carries the log lines, JSON ones when piped).
fn print_banner(host: &Host, data_dir: &Path) {
    let url = local_url(host);
    let data = data_dir.display().to_string();
    let data_arg = if data.contains(char::is_whitespace) {
        format!("'{data}'")
    } else {
        data
    };
    let mut b = String::new();
    b.push_str(&format!("\nFlowgrid is running at {url}\n"));
    b.push_str(&format!("  health of every app: {url}/api/health\n"));
    b.push_str(&format!("  data folder:         {data_arg}\n\nApps:\n"));
    let instances = host.instances();
    for (name, s) in host.statuses() {
        let extra = s.reason.map(|r| format!(" ({r})")).unwrap_or_default();
        let n = instances
            .iter()
            .find(|(a, _)| *a == name)
            .map_or(1, |(_, i)| i.len());
        let count = if n > 1 {
            format!(", {n} instances")
        } else {
            String::new()
        };
        b.push_str(&format!("  {name:<14} {:?}{count}{extra}\n", s.state));
    }
    for (app, binary, weight) in host.canaries() {
        b.push_str(&format!(
            "  {app:<14} canary {} at {weight} % of its tenants (flowgrid canary status)\n",
            binary.display()
        ));
    }
    b.push_str("\nRoutes:\n");
    for (app, methods, path) in host.routes() {
        b.push_str(&format!("  {app:<14} {methods:<18} {url}{path}\n"));
    }
    b.push_str(&format!(
        "\nGet a token:  TOKEN=$(cargo run -q -p flowgrid -- --data-dir {data_arg} token --tenant demo --role owner)\n"
    ));
    b.push_str(&format!(
        "Then:         curl -H \"Authorization: Bearer $TOKEN\" {url}/api/agents\n"
    ));
    b.push_str(&format!(
        "Or the CLI:   cargo run -q -p flowgrid -- --data-dir {data_arg} agents list   (also: agents apply -f, run --watch, jobs)\n"
    ));
    b.push_str(&format!(
        "Queues:       cargo run -q -p flowgrid -- --data-dir {data_arg} queue list\n"
    ));
    b.push_str("Stop with Ctrl-C.\n");
    eprint!("{b}");
}

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Whether a static musl build can be made here: the Rust target is installed and `musl-gcc`
/// (for the C the handlers compile) is on `PATH`.
fn musl_available() -> bool {
    let target_installed = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib")
                .join(MUSL)
                .is_dir()
        })
        .unwrap_or(false);
    let compiler = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("musl-gcc").is_file()));
    target_installed && compiler
}

/// `flowgrid package`: release build, then one zip and folder per app.
pub fn run_package(args: &PackageArgs) -> Result<()> {
    let root = find_root(args.root.as_deref())?;
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let target = match &args.target {
        Some(t) => Some(t.clone()),
        None if musl_available() => Some(MUSL.to_owned()),
        None if args.no_build => None,
        None => {
            eprintln!(
                "flowgrid: building for glibc (the handler needs glibc >= 2.34); for a static binary: \
                 `rustup target add {MUSL}` and `apt-get install musl-tools`"
            );
            None
        }
    };
    let bin_dir = match &target {
        Some(t) => target_dir.join(t).join("release"),
        None => target_dir.join("release"),
    };
    if !args.no_build {
        // Build only the handlers being packaged: `flowgrid-<app>` for each app.
        let config = crate::config::Config::load(&root, &mut |_| {})?;
        let bins: Vec<String> = config
            .apps
            .iter()
            .filter(|a| args.app.as_ref().is_none_or(|n| *n == a.name))
            .map(|a| format!("flowgrid-{}", a.name))
            .collect();
        let mut cargo_args = vec!["build", "--release"];
        for b in &bins {
            cargo_args.push("--bin");
            cargo_args.push(b);
        }
        if let Some(t) = &target {
            cargo_args.push("--target");
            cargo_args.push(t);
        }
        run_cargo(&root, &cargo_args)?;
    }
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        std::env::current_dir()?.join(&args.out)
    };
    eprintln!("flowgrid: writing packages to {}", out.display());
    let done = package(
        &PackageOptions {
            root,
            out,
            app: args.app.clone(),
            bin_dir,
        },
        &mut |n| eprintln!("flowgrid: {n}"),
    )?;
    for p in done {
        #[expect(clippy::cast_precision_loss, reason = "file sizes for display")]
        let mb = p.zip_bytes as f64 / 1_048_576.0;
        println!(
            "{}: {} ({mb:.1} MB) and {}/",
            p.app,
            p.zip.display(),
            p.dir.display()
        );
    }
    Ok(())
}

/// `flowgrid queue ...`.
pub fn run_queue(data_dir: &Path, args: &QueueArgs) -> Result<()> {
    queue_to(data_dir, &args.command, &mut std::io::stdout().lock())
}

/// `flowgrid queue ...`, printing to `out`.
pub fn queue_to(
    data_dir: &Path,
    command: &QueueCommand,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let path = data_dir.join("servicebus.db");
    if !path.is_file() {
        bail!(
            "{}: no queues yet; they are created by `flowgrid dev` from the function.json bindings (or pass --data-dir)",
            path.display()
        );
    }
    let bus = Bus::open(&path, BusSettings::default())?;
    match command {
        QueueCommand::List => {
            writeln!(
                out,
                "{:<40} {:>8} {:>10} {:>12}",
                "ENTITY", "ACTIVE", "SCHEDULED", "DEAD-LETTER"
            )?;
            for e in bus.list()? {
                writeln!(
                    out,
                    "{:<40} {:>8} {:>10} {:>12}",
                    e.entity, e.active, e.scheduled, e.dead_letter
                )?;
            }
        }
        QueueCommand::Peek {
            entity,
            dead_letter,
            max,
        } => {
            for m in bus.peek(entity, *dead_letter, *max)? {
                writeln!(out, "{}", serde_json::to_string(&m)?)?;
            }
        }
        QueueCommand::Resubmit { entity } => writeln!(
            out,
            "resubmitted {} dead letter(s) of {entity}",
            bus.resubmit_dead_letters(entity)?
        )?,
        QueueCommand::Purge { entity } => writeln!(
            out,
            "purged {} dead letter(s) of {entity}",
            bus.purge_dead_letters(entity)?
        )?,
        QueueCommand::Send {
            entity,
            body,
            topic,
            message_id,
            content_type,
            properties,
            scheduled_in_secs,
        } => {
            let target = if *topic {
                Target::Topic(entity.clone())
            } else {
                Target::Queue(entity.clone())
            };
            let msg = Outgoing {
                body: body.clone().into_bytes(),
                message_id: message_id.clone(),
                content_type: content_type.clone(),
                application_properties: properties
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
                scheduled_enqueue_time: scheduled_in_secs.map(|s| {
                    chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(s).unwrap_or(0))
                }),
                ..Outgoing::default()
            };
            match bus.send(&target, msg)? {
                SendOutcome::Accepted(seqs) => writeln!(out, "sent: sequence number(s) {seqs:?}")?,
                SendOutcome::Duplicate => writeln!(
                    out,
                    "dropped: a message with this MessageId was sent within the duplicate detection window"
                )?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, c: QueueCommand) -> String {
        let mut out = Vec::new();
        queue_to(dir, &c, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_queue_command_lists_sends_peeks_resubmits_and_purges_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let err = queue_to(dir.path(), &QueueCommand::List, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no queues yet"), "{err}");
        let bus = Bus::open(
            &dir.path().join("servicebus.db"),
            BusSettings {
                max_delivery_count: 1,
                ..BusSettings::default()
            },
        )
        .unwrap();
        bus.ensure_queue("jobs").unwrap();
        let send = |id: &str| QueueCommand::Send {
            entity: "jobs".into(),
            body: "{\"job\":1}".into(),
            topic: false,
            message_id: Some(id.into()),
            content_type: None,
            properties: vec![("tenant".into(), "acme".into())],
            scheduled_in_secs: None,
        };
        assert!(run(dir.path(), send("m1")).starts_with("sent"));
        assert!(run(dir.path(), send("m1")).starts_with("dropped"));
        let m = bus.receive("jobs").unwrap().unwrap();
        assert!(
            bus.abandon(m.sequence_number, m.lock_token.as_deref().unwrap(), "boom")
                .unwrap()
        );
        let list = run(dir.path(), QueueCommand::List);
        let row: Vec<&str> = list.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["jobs", "0", "0", "1"]);
        let peeked = run(
            dir.path(),
            QueueCommand::Peek {
                entity: "jobs".into(),
                dead_letter: true,
                max: 5,
            },
        );
        assert!(
            peeked.contains("MaxDeliveryCountExceeded") && peeked.contains("\"tenant\":\"acme\""),
            "{peeked}"
        );
        assert!(
            run(
                dir.path(),
                QueueCommand::Resubmit {
                    entity: "jobs".into()
                }
            )
            .contains("resubmitted 1")
        );
        let m = bus.receive("jobs").unwrap().unwrap();
        assert!(
            bus.abandon(m.sequence_number, m.lock_token.as_deref().unwrap(), "again")
                .unwrap()
        );
        assert!(
            run(
                dir.path(),
                QueueCommand::Purge {
                    entity: "jobs".into()
                }
            )
            .contains("purged 1")
        );
        let missing = queue_to(
            dir.path(),
            &QueueCommand::Purge {
                entity: "nope".into(),
            },
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("known: jobs"), "{missing}");
    }
}
