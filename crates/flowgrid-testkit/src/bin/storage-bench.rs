//! `storage-bench`: point read and write latency through the storage backends, printed as
//! p50/p99, to watch the backends' own overhead.
//!
//! Run from the repository root (release mode; it starts the Cosmos emulator itself):
//! `cargo run --release -p flowgrid-testkit --bin storage-bench -- [--ops 300]`
//!
//! For each backend: `insert` (a new agent: on Cosmos one transactional batch of three
//! documents), `get` (a point read), `replace` (read + conditional batch), sequentially, one at
//! a time. For Cosmos it also times the emulator alone: a raw `GET` of the same document over
//! HTTP (the emulator does not check keys), so `get` minus `raw GET` is what the SDK and the
//! backend add on top of the emulator.

use std::time::{Duration, Instant};

use chrono::Utc;
use flowgrid_domain::config::{CosmosSettings, SecretString};
use flowgrid_domain::store::AgentStore;
use flowgrid_domain::{Agent, AgentInput, TenantId};
use flowgrid_storage::cosmos::{Cosmos, EMULATOR_KEY};
use flowgrid_storage::sqlite::Sqlite;
use flowgrid_testkit::emulators;
use serde_json::json;

fn agent(tenant: &TenantId, name: &str) -> Agent {
    let input: AgentInput =
        serde_json::from_value(json!({"name": name, "definition": {"instructions": "bench"}}))
            .expect("input");
    Agent::create(
        tenant.clone(),
        input.validate().expect("valid"),
        "bench",
        Utc::now(),
    )
}

fn renamed(agent: &Agent, name: &str) -> Agent {
    let input: AgentInput =
        serde_json::from_value(json!({"name": name, "definition": {"instructions": "again"}}))
            .expect("input");
    agent.replaced(input.validate().expect("valid"), "bench", Utc::now())
}

fn report(backend: &str, op: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "{backend:<8} {op:<9} n={:<5} p50={:>7.3} ms  p99={:>7.3} ms",
        samples.len(),
        at(0.50),
        at(0.99)
    );
}

async fn run(backend: &str, store: &dyn AgentStore, ops: usize) -> Vec<Agent> {
    let tenant = TenantId::parse("bench").expect("tenant");
    let mut agents = Vec::new();
    let mut writes = Vec::new();
    for i in 0..ops {
        let started = Instant::now();
        let stored = store
            .insert(&agent(&tenant, &format!("agent-{i}")))
            .await
            .expect("insert");
        writes.push(started.elapsed());
        agents.push(stored);
    }
    report(backend, "insert", writes);
    let mut reads = Vec::new();
    for a in &agents {
        let started = Instant::now();
        store.get(&tenant, a.id).await.expect("get");
        reads.push(started.elapsed());
    }
    report(backend, "get", reads);
    let mut replaces = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let next = renamed(a, &format!("renamed-{i}"));
        let started = Instant::now();
        store.replace(&next, &a.etag).await.expect("replace");
        replaces.push(started.elapsed());
    }
    report(backend, "replace", replaces);
    agents
}

#[tokio::main]
async fn main() {
    let mut ops = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ops" => {
                ops = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Sqlite::open(&dir.path().join("bench.db"))
        .await
        .expect("sqlite");
    run("sqlite", &sqlite, ops).await;

    let emulator = emulators::cosmos();
    let database = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let cosmos = Cosmos::open(&CosmosSettings {
        endpoint: emulator.endpoint(),
        key: Some(SecretString::new(EMULATOR_KEY)),
        database: database.clone(),
        create_containers: true,
        client_id: None,
    })
    .await
    .expect("cosmos");
    let agents = run("cosmos", &cosmos, ops).await;

    // The emulator alone: the same point reads as plain HTTP requests.
    let client = reqwest::Client::new();
    let mut raw = Vec::new();
    for a in &agents {
        let url = format!(
            "{}dbs/{database}/colls/agents/docs/{}",
            emulator.endpoint(),
            a.id
        );
        let started = Instant::now();
        let response = client
            .get(url)
            .header("x-ms-documentdb-partitionkey", "[\"bench\"]")
            .header("x-ms-version", "2020-07-15")
            .send()
            .await
            .expect("raw get");
        assert!(response.status().is_success(), "{}", response.status());
        response.bytes().await.expect("body");
        raw.push(started.elapsed());
    }
    report("emulator", "raw GET", raw);
    let _ = cosmos.delete_database().await;
}

fn usage() -> ! {
    eprintln!("usage: storage-bench [--ops N]");
    std::process::exit(2)
}
