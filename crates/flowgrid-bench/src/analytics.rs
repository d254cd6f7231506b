//! `flowgrid-bench analytics`: the Analytics app's ingestion throughput through the local queue,
//! and its usage and dashboard routes' latency over rollups of a million events.
//!
//! `cargo run --release -p flowgrid-bench -- analytics [--events 20000] [--workers 4]
//! [--seed 1000000] [--requests 300]`
//!
//! 1. Ingestion: `--events` `job.finished` events are sent to the topic `platform-events` of the
//!    local host's durable queue (`flowgrid_host::bus`, the SQLite Service Bus `flowgrid dev`
//!    runs), then `--workers` consumers do what the host does for each message: peek-lock
//!    receive from subscription `analytics`, invoke `IngestEvent` over HTTP on the Analytics
//!    handler (the real router, served on a loopback port in this process) with the host's
//!    invocation envelope, complete. Printed: events/s from the first receive to the last
//!    complete, and a check that the rollups count every event once.
//! 2. Reads: `--seed` events of another tenant (50 agents, 3 models, spread over 30 days) are
//!    stored through the store's `ingest` and rolled up by `refresh`; then `--requests`
//!    sequential `GET /api/analytics/usage/{tenant}` (day granularity, 30 days), the same grouped
//!    by agent, and `GET /api/analytics/dashboard` are timed: p50/p99. They read rollups only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use flowgrid_analytics::{AppState, router};
use flowgrid_domain::analytics::RawEvent;
use flowgrid_domain::config::{Config, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use flowgrid_domain::events::{CloudEvent, PlatformEvent, StepUsage, TokenUsage};
use flowgrid_domain::job::{JobStatus, StepStatus};
use flowgrid_domain::store::analytics::refresh;
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_host::bus::{Bus, BusSettings, Outgoing, Target};
use flowgrid_http::auth::{DevKey, Role, TokenRequest};
use serde_json::Value;

const TOPIC: &str = "platform-events";
const SUBSCRIPTION: &str = "analytics";

/// Runs the benchmark with the arguments after `analytics`.
pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let (mut events, mut workers, mut seed, mut requests) =
        (20_000usize, 4usize, 1_000_000usize, 300usize);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = || -> anyhow::Result<usize> {
            Ok(it.next().with_context(|| format!("{arg} N"))?.parse()?)
        };
        match arg.as_str() {
            "--events" => events = value()?,
            "--workers" => workers = value()?,
            "--seed" => seed = value()?,
            "--requests" => requests = value()?,
            other => bail!(
                "unknown argument {other}; usage: flowgrid-bench analytics [--events N] [--workers N] [--seed N] [--requests N]"
            ),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(events, workers.max(1), seed, requests.max(1)))
}

fn finished(
    tenant: &TenantId,
    agent: AgentId,
    job: usize,
    at: chrono::DateTime<Utc>,
    model: &str,
) -> CloudEvent<PlatformEvent> {
    CloudEvent::new(
        "execution",
        tenant,
        at,
        PlatformEvent::JobFinished {
            job_id: format!("job-{job}"),
            agent_id: agent,
            status: if job.is_multiple_of(10) {
                JobStatus::Failed
            } else {
                JobStatus::Succeeded
            },
            duration_ms: 50 + (job as u64 % 5_000),
            steps: vec![StepUsage {
                step_id: "ask".into(),
                kind: "llm".into(),
                status: StepStatus::Succeeded,
                attempts: 1,
                duration_ms: Some(20 + (job as u64 % 2_000)),
                tokens: Some(TokenUsage {
                    input: 100 + (job as u64 % 50),
                    output: 40,
                    ..TokenUsage::default()
                }),
                cost_micro_usd: Some(25 + (job as u64 % 7)),
                provider: Some("openai".into()),
                model: Some(model.into()),
            }],
        },
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(events: usize, workers: usize, seed: usize, requests: usize) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dir = data.path().to_string_lossy().into_owned();
    let config = Config::from_lookup(|name| (name == "FLOWGRID_DATA_DIR").then(|| dir.clone()))?;
    // The development signing key of the data folder, which the app's verifier trusts.
    let key = DevKey::load_or_create(data.path())?;
    let state = AppState::from_config(&config).await?;
    let store = state.analytics.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::new();

    // 1. Ingestion through the local queue.
    let bus = Arc::new(Bus::open(
        &data.path().join("servicebus.db"),
        BusSettings::default(),
    )?);
    bus.ensure_topic(TOPIC)?;
    bus.ensure_subscription(TOPIC, SUBSCRIPTION)?;
    let entity = format!("{TOPIC}/Subscriptions/{SUBSCRIPTION}");
    let tenant = TenantId::parse("bench-ingest")?;
    let agents: Vec<AgentId> = (0..10).map(|_| AgentId::new()).collect();
    let sent = Instant::now();
    for i in 0..events {
        let e = finished(
            &tenant,
            agents[i % agents.len()],
            i,
            Utc::now(),
            "gpt-4o-mini",
        );
        bus.send(
            &Target::Topic(TOPIC.into()),
            Outgoing {
                body: serde_json::to_vec(&e.to_json()?)?,
                ..Outgoing::default()
            },
        )?;
    }
    let send_secs = sent.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (bus, entity, client, base) =
            (bus.clone(), entity.clone(), client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let b = bus.clone();
                let e = entity.clone();
                let Some(m) = tokio::task::spawn_blocking(move || b.receive(&e)).await?? else {
                    return anyhow::Ok(done);
                };
                let envelope =
                    flowgrid_host::invoke::service_bus_envelope("IngestEvent", "msg", true, &m);
                let r = client
                    .post(format!("{base}/IngestEvent"))
                    .header("x-azure-functions-invocationid", m.message_id.clone())
                    .json(&envelope)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("IngestEvent answered {}", r.status());
                }
                let token = m.lock_token.clone().context("a locked message")?;
                let b = bus.clone();
                tokio::task::spawn_blocking(move || b.complete(m.sequence_number, &token))
                    .await??;
                done += 1;
            }
        }));
    }
    let mut consumed = 0;
    for t in tasks {
        consumed += t.await??;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    while refresh(store.as_ref(), 10_000).await? > 0 {}
    let token = |tenant: &str| {
        key.mint(&TokenRequest {
            tenant: tenant.into(),
            role: Role::Viewer,
            user: "bench".into(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            ttl_secs: 3600,
        })
    };
    let t = token("bench-ingest")?;
    let usage: Value = client
        .get(format!(
            "{base}/api/analytics/usage/bench-ingest?granularity=month"
        ))
        .bearer_auth(&t)
        .send()
        .await?
        .json()
        .await?;
    let runs = usage["totals"]["runs"].as_u64().unwrap_or(0);
    println!(
        "ingestion: {events} events sent to the topic in {send_secs:.2} s ({:.0}/s); {consumed} consumed by {workers} workers through IngestEvent in {ingest_secs:.2} s: {:.0} events/s; rollups count {runs} runs",
        events as f64 / send_secs,
        consumed as f64 / ingest_secs
    );
    if runs != events as u64 {
        bail!("the rollups count {runs} runs for {events} events");
    }

    // 2. Reads over rollups of `seed` events.
    let tenant = TenantId::parse("bench-reads")?;
    let agents: Vec<AgentId> = (0..50).map(|_| AgentId::new()).collect();
    let models = ["gpt-4o-mini", "gpt-4.1", "claude-sonnet-4"];
    let now = Utc::now();
    let span_ms = 30 * 24 * 3600 * 1000i64;
    let seeded = Instant::now();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..seed {
        // Evenly over the last 30 days.
        let at = now - chrono::Duration::milliseconds(span_ms / seed.max(1) as i64 * i as i64);
        let e = finished(
            &tenant,
            agents[i % agents.len()],
            i,
            at,
            models[i % models.len()],
        );
        batch.push(RawEvent::of_platform(&e)?);
        if batch.len() == 5_000 || i + 1 == seed {
            store.ingest(&batch, state_retention()).await?;
            batch.clear();
        }
    }
    let seed_secs = seeded.elapsed().as_secs_f64();
    let rolled = Instant::now();
    let mut hours = 0;
    loop {
        let n = refresh(store.as_ref(), 10_000).await?;
        if n == 0 {
            break;
        }
        hours += n;
    }
    println!(
        "seeded {seed} events in {seed_secs:.1} s ({:.0}/s); {hours} hour(s) rolled up (with their days and months) in {:.1} s",
        seed as f64 / seed_secs,
        rolled.elapsed().as_secs_f64()
    );
    let t = token("bench-reads")?;
    let check: Value = client
        .get(format!(
            "{base}/api/analytics/usage/bench-reads?granularity=month&from={}",
            (now - chrono::Duration::days(70)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .bearer_auth(&t)
        .send()
        .await?
        .json()
        .await?;
    println!(
        "rollups count {} runs of the {seed} seeded",
        check["totals"]["runs"]
    );
    for (name, path) in [
        (
            "usage (day, 30 days)",
            "/api/analytics/usage/bench-reads?granularity=day".to_owned(),
        ),
        (
            "usage by agent (day, 30 days)",
            "/api/analytics/usage/bench-reads?granularity=day&groupBy=agent".to_owned(),
        ),
        ("dashboard", "/api/analytics/dashboard".to_owned()),
    ] {
        let mut ms = Vec::with_capacity(requests);
        for _ in 0..requests {
            let one = Instant::now();
            let r = client
                .get(format!("{base}{path}"))
                .bearer_auth(&t)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("{path}: {}", r.status());
            }
            let _ = r.bytes().await?;
            ms.push(one.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{name}: {requests} requests, p50 {:.2} ms, p99 {:.2} ms",
            percentile(&ms, 0.50),
            percentile(&ms, 0.99)
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

fn state_retention() -> chrono::Duration {
    chrono::Duration::days(90)
}
