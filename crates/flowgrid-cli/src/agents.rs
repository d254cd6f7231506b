//! `flowgrid agents apply|list`: agents by name through the API.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::Value;

use crate::api::{Api, ApiArgs, encode};

/// `flowgrid agents ...`.
#[derive(clap::Subcommand)]
pub enum AgentsCommand {
    /// Create the agent a file describes, or update the agent of that name (case-insensitive).
    Apply {
        /// The agent as `POST /api/agents` takes it: {"name", "definition", ...}; `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print the stored agent as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The tenant's agents, newest first.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs an agents command.
pub fn run(data_dir: &Path, command: &AgentsCommand) -> Result<()> {
    match command {
        AgentsCommand::Apply { file, json, api } => {
            apply(&Api::new(data_dir, api)?, &read_file(file)?, *json)
        }
        AgentsCommand::List { json, api } => list(&Api::new(data_dir, api)?, *json),
    }
}

fn read_file(path: &Path) -> Result<Value> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// Every agent of the caller's tenant (all pages), optionally only names containing `q`.
pub fn all_agents(api: &Api, q: Option<&str>) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut path = "/api/agents?limit=200".to_owned();
        if let Some(q) = q {
            path.push_str(&format!("&q={}", encode(q)));
        }
        if let Some(t) = &next {
            path.push_str(&format!("&continuationToken={}", encode(t)));
        }
        let page = api.ok(Method::GET, &path, None)?.body;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["continuationToken"].as_str() {
            Some(t) if !t.is_empty() => next = Some(t.to_owned()),
            _ => return Ok(items),
        }
    }
}

/// The agent named `name` (case-insensitive), when there is one.
pub fn find_by_name(api: &Api, name: &str) -> Result<Option<Value>> {
    Ok(all_agents(api, Some(name))?.into_iter().find(|a| {
        a["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }))
}

fn apply(api: &Api, agent: &Value, json: bool) -> Result<()> {
    let name = agent["name"].as_str().ok_or_else(|| {
        anyhow!("the file has no \"name\": apply finds the agent to update by its name")
    })?;
    let (stored, verb) = match find_by_name(api, name)? {
        None => (
            api.ok(Method::POST, "/api/agents", Some(agent))?.body,
            "created",
        ),
        Some(existing) => {
            let id = existing["id"].as_str().unwrap_or_default();
            let path = format!("/api/agents/{id}");
            // Replace the version just read: a concurrent change is a 412, not lost.
            let current = api.ok(Method::GET, &path, None)?;
            let Some(etag) = current.etag else {
                bail!("GET {path} answered no ETag");
            };
            let answer = api.ok_with(Method::PUT, &path, Some(agent), &[("if-match", &etag)])?;
            (answer.body, "updated")
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&stored)?);
    } else {
        println!(
            "{verb} agent {} ({}), version {}, status {}",
            stored["name"].as_str().unwrap_or(name),
            stored["id"].as_str().unwrap_or("?"),
            stored["version"],
            stored["status"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

fn list(api: &Api, json: bool) -> Result<()> {
    let items = all_agents(api, None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if items.is_empty() {
        eprintln!("no agents yet; create one with `flowgrid agents apply -f agent.json`");
        return Ok(());
    }
    println!(
        "{:<38} {:<30} {:<9} {:>7}  UPDATED",
        "ID", "NAME", "STATUS", "VERSION"
    );
    for a in &items {
        println!(
            "{:<38} {:<30} {:<9} {:>7}  {}",
            a["id"].as_str().unwrap_or(""),
            truncate(a["name"].as_str().unwrap_or(""), 30),
            a["status"].as_str().unwrap_or(""),
            a["version"],
            a["updatedAt"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// `s` cut to `max` characters (with `…`).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
