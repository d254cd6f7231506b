//! `flowgrid run` and `flowgrid jobs list|show|cancel`: runs through the API. `--watch` follows
//! a run with the long poll `GET /api/execute/jobs/{id}?wait=N` (answered as soon as the job
//! changes), printing each step as it finishes.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::agents::{find_by_name, truncate};
use crate::api::{Api, ApiArgs, encode};

/// Seconds each long poll of `--watch` asks to wait (the server caps it at 60).
pub const WATCH_WAIT_SECS: u64 = 30;

/// Arguments of `flowgrid run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The agent: its id, or its name (case-insensitive).
    agent: String,
    /// The run's input (JSON), checked against the agent's inputSchema.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Follow the run: print each step as it finishes, then the output; exit non-zero when the
    /// run does not succeed.
    #[arg(long)]
    watch: bool,
    /// An Idempotency-Key: the same key and input give the same job (24 h).
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Print JSON (the 202 answer, or with --watch the finished job).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// `flowgrid jobs ...`.
#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// The tenant's jobs, newest first.
    List {
        /// Only this agent's jobs (id or name).
        #[arg(long)]
        agent: Option<String>,
        /// Only jobs in this status (queued, running, cancelling, succeeded, failed, cancelled, timed_out).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1-200).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One job with its steps, output and error.
    Show {
        /// Job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// The agent id for an id or a name.
fn resolve_agent(api: &Api, agent: &str) -> Result<String> {
    if flowgrid_domain::AgentId::parse(agent).is_ok() {
        return Ok(agent.to_owned());
    }
    match find_by_name(api, agent)? {
        Some(a) => Ok(a["id"].as_str().unwrap_or_default().to_owned()),
        None => bail!(
            "no agent named {agent:?} in tenant (see `flowgrid agents list`, or create it with `flowgrid agents apply -f`)"
        ),
    }
}

/// `flowgrid run`.
pub fn run(data_dir: &Path, args: &RunArgs) -> Result<()> {
    let input: Value =
        serde_json::from_str(&args.input).map_err(|e| anyhow!("--input: not JSON: {e}"))?;
    let api = Api::new(data_dir, &args.api)?;
    let agent_id = resolve_agent(&api, &args.agent)?;
    let mut headers = Vec::new();
    if let Some(k) = &args.idempotency_key {
        headers.push(("idempotency-key", k.as_str()));
    }
    let accepted = api
        .ok_with(
            Method::POST,
            &format!("/api/execute/agent/{agent_id}"),
            Some(&json!({ "input": input })),
            &headers,
        )?
        .body;
    let job_id = accepted["jobId"]
        .as_str()
        .ok_or_else(|| anyhow!("the submit answered no jobId: {accepted}"))?
        .to_owned();
    if !args.watch {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&accepted)?);
        } else {
            println!("{job_id}");
            eprintln!(
                "job {job_id} queued; follow it with `flowgrid jobs show {job_id}` (or run with --watch)"
            );
        }
        return Ok(());
    }
    let total = api
        .ok(Method::GET, &format!("/api/agents/{agent_id}"), None)
        .ok()
        .and_then(|a| a.body["definition"]["steps"].as_array().map(Vec::len));
    let job = watch(&api, &job_id, total, !args.json)?;
    finish(&job, args.json)
}

/// Follows job `id` until it finishes: each step printed once as it finishes, with a progress
/// line on a terminal (stderr). Returns the finished job.
pub fn watch(api: &Api, id: &str, total: Option<usize>, print: bool) -> Result<Value> {
    let progress = print && std::io::stderr().is_terminal();
    let color = print && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let started = Instant::now();
    let mut shown = 0usize;
    let mut job = api
        .ok(Method::GET, &format!("/api/execute/jobs/{id}"), None)?
        .body;
    if print {
        eprintln!("job {id}: {}", job["status"].as_str().unwrap_or("?"));
    }
    loop {
        let steps = job["steps"].as_array().cloned().unwrap_or_default();
        // Steps are recorded in order; print every one that has finished and was not shown.
        while let Some(step) = steps.get(shown) {
            let status = step["status"].as_str().unwrap_or("");
            if matches!(status, "running" | "pending" | "") {
                break;
            }
            if print {
                if progress {
                    eprint!("\r\x1b[2K");
                }
                println!("{}", step_line(step, color));
            }
            shown += 1;
        }
        let status = job["status"].as_str().unwrap_or("").to_owned();
        if matches!(
            status.as_str(),
            "succeeded" | "failed" | "cancelled" | "timed_out"
        ) {
            if progress {
                eprint!("\r\x1b[2K");
            }
            return Ok(job);
        }
        if progress {
            let current = steps
                .get(shown)
                .and_then(|s| s["id"].as_str())
                .map(|s| format!(" step {s}"))
                .unwrap_or_default();
            let of = total.map(|t| format!("/{t}")).unwrap_or_default();
            eprint!(
                "\r\x1b[2K{} {status}{current} [{shown}{of} steps done, {:.0} s]",
                spinner(started),
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        job = api
            .ok(
                Method::GET,
                &format!("/api/execute/jobs/{id}?wait={WATCH_WAIT_SECS}"),
                None,
            )
            .context("following the job")?
            .body;
    }
}

fn spinner(started: Instant) -> char {
    const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
    let i = usize::try_from(started.elapsed().as_millis() / 250).unwrap_or(0);
    FRAMES[i % FRAMES.len()]
}

/// `  ok     greet  transform  3 ms` (coloured on a terminal).
fn step_line(step: &Value, color: bool) -> String {
    let status = step["status"].as_str().unwrap_or("?");
    let (mark, code) = match status {
        "succeeded" => ("ok", "32"),
        "cancelled" => ("stop", "33"),
        _ => ("FAIL", "31"),
    };
    let mark = if color {
        format!("\x1b[{code}m{mark:<5}\x1b[0m")
    } else {
        format!("{mark:<5}")
    };
    let ms = step["durationMs"]
        .as_u64()
        .map(|m| format!("  {m} ms"))
        .unwrap_or_default();
    let tokens = step["tokens"]
        .as_object()
        .map(|t| {
            let n = |k: &str| t.get(k).and_then(Value::as_u64).unwrap_or(0);
            format!("  {} tokens", n("input") + n("output"))
        })
        .unwrap_or_default();
    let error = step["error"]
        .as_str()
        .map(|e| format!("  {}", truncate(e, 400)))
        .unwrap_or_default();
    format!(
        "  {mark} {:<20} {:<12}{ms}{tokens}{error}",
        step["id"].as_str().unwrap_or("?"),
        step["kind"].as_str().unwrap_or("")
    )
}

/// Prints the outcome; an error (exit code 1) unless the job succeeded.
fn finish(job: &Value, json: bool) -> Result<()> {
    let status = job["status"].as_str().unwrap_or("?");
    let id = job["id"].as_str().unwrap_or("?");
    if json {
        println!("{}", serde_json::to_string_pretty(job)?);
    } else if status == "succeeded" {
        println!("{}", serde_json::to_string_pretty(&job["output"])?);
    }
    if status == "succeeded" {
        if !json {
            eprintln!("job {id} succeeded");
        }
        Ok(())
    } else {
        let why = job["error"].as_str().unwrap_or("no error recorded");
        bail!("job {id} {status}: {why}")
    }
}

/// Runs a jobs command.
pub fn jobs(data_dir: &Path, command: &JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List {
            agent,
            status,
            limit,
            json,
            api,
        } => {
            let api = Api::new(data_dir, api)?;
            let mut path = format!("/api/execute/jobs?limit={limit}");
            if let Some(a) = agent {
                path.push_str(&format!("&agentId={}", encode(&resolve_agent(&api, a)?)));
            }
            if let Some(s) = status {
                path.push_str(&format!("&status={}", encode(s)));
            }
            let page = api.ok(Method::GET, &path, None)?.body;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if *json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(());
            }
            if items.is_empty() {
                eprintln!("no jobs");
                return Ok(());
            }
            println!(
                "{:<38} {:<38} {:<10} {:<9} CREATED",
                "ID", "AGENT", "STATUS", "TRIGGER"
            );
            for j in &items {
                println!(
                    "{:<38} {:<38} {:<10} {:<9} {}",
                    j["id"].as_str().unwrap_or(""),
                    j["agentId"].as_str().unwrap_or(""),
                    j["status"].as_str().unwrap_or(""),
                    j["trigger"].as_str().unwrap_or(""),
                    j["createdAt"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
        JobsCommand::Show { id, json, api } => {
            let api = Api::new(data_dir, api)?;
            let job = api
                .ok(
                    Method::GET,
                    &format!("/api/execute/jobs/{}", encode(id)),
                    None,
                )?
                .body;
            if *json {
                println!("{}", serde_json::to_string_pretty(&job)?);
                return Ok(());
            }
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            println!(
                "job {}  agent {} v{}  {}",
                job["id"].as_str().unwrap_or(""),
                job["agentId"].as_str().unwrap_or(""),
                job["agentVersion"],
                job["status"].as_str().unwrap_or("")
            );
            for s in job["steps"].as_array().into_iter().flatten() {
                println!("{}", step_line(s, color));
            }
            if let Some(e) = job["error"].as_str() {
                println!("error: {e}");
            }
            if !job["output"].is_null() {
                println!("output: {}", serde_json::to_string_pretty(&job["output"])?);
            }
            Ok(())
        }
        JobsCommand::Cancel { id, api } => {
            let api = Api::new(data_dir, api)?;
            let job = api
                .ok(
                    Method::POST,
                    &format!("/api/execute/cancel/{}", encode(id)),
                    None,
                )?
                .body;
            println!(
                "job {}: {}",
                job["id"].as_str().unwrap_or(id),
                job["status"].as_str().unwrap_or("?")
            );
            Ok(())
        }
    }
}
