//! `flowgrid-bench ai [--calls 200]`: what the provider layer adds to a model call over the
//! fake's own latency, and the latency of the Design app's prompt preview and compile.
//!
//! - Provider overhead: `--calls` sequential OpenAI Responses calls through
//!   `flowgrid_providers::llm::http::HttpProvider` against llmock (started from its pin), beside
//!   the same request body sent with a bare `reqwest` client; llmock records how long it took
//!   itself for each request. Printed: p50/p90 of the call as the caller sees it, of the bare
//!   client, of llmock's own time, and the differences (the layer's overhead: body building,
//!   answer parsing, usage normalisation and pricing, with a structured-output check).
//! - Design: `GET /api/design/prompt-preview/{id}` and `POST /api/design/compile/{id}` (the
//!   idempotent path after the first compile) in process on SQLite and a blob folder, `--calls`
//!   each; p50/p90/p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowgrid_domain::agent::ModelSettings;
use flowgrid_http::auth::Role;
use flowgrid_providers::llm::http::HttpProvider;
use flowgrid_providers::llm::settings::{AiSettings, Secret};
use flowgrid_providers::llm::{LlmProvider, LlmRequest, OutputSchema, wire};
use flowgrid_providers::outbound::OutboundPolicy;
use flowgrid_testkit::{TestApp, ai_fakes};
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p90, p99) = (
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
    );
    println!(
        "{name:<44} n={:<5} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    (p50, p90)
}

pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let mut calls = 200usize;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--calls" => calls = it.next().context("--calls N")?.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(calls))
}

async fn run(calls: usize) -> anyhow::Result<()> {
    println!("== provider layer over llmock ({calls} sequential calls each)");
    let mock = ai_fakes::llmock(0);
    let base = format!("{}/v1", mock.url());
    let settings = AiSettings {
        openai_base_url: base.clone(),
        openai_key: Some(Secret::new("sk-bench")),
        ..AiSettings::default()
    };
    let provider = HttpProvider::new(settings, Arc::new(OutboundPolicy::default()))?;
    let request = |i: usize| LlmRequest {
        model: ModelSettings {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            ..ModelSettings::default()
        },
        system: "You triage support tickets.".into(),
        prompt: format!("Ticket {i}: the VPN drops every hour since the update."),
        max_tokens: Some(200),
        idempotency_key: format!("bench:{i}"),
        schema: Some(OutputSchema {
            name: "triage".into(),
            schema: json!({"type": "object", "properties": {"urgency": {"type": "string"}}, "required": ["urgency"], "additionalProperties": false}),
        }),
        ..LlmRequest::default()
    };
    // Warm up both clients (connections, llmock's first request).
    for i in 0..10 {
        provider
            .complete(&request(i))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let bare = reqwest::Client::new();
    let mut layer = Vec::with_capacity(calls);
    let mut raw = Vec::with_capacity(calls);
    for i in 0..calls {
        let started = Instant::now();
        provider
            .complete(&request(i))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        layer.push(started.elapsed());
        let body = wire::body(wire::Api::Responses, Some("gpt-4o-mini"), &request(i));
        let started = Instant::now();
        let answer = bare
            .post(format!("{base}/responses"))
            .bearer_auth("sk-bench")
            .json(&body)
            .send()
            .await?
            .bytes()
            .await?;
        raw.push(started.elapsed());
        anyhow::ensure!(!answer.is_empty(), "empty answer");
    }
    let recorded: Value = reqwest::get(format!("{}/_llmock/requests", mock.url()))
        .await?
        .json()
        .await?;
    let own: Vec<Duration> = recorded["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(10)
        .filter_map(|r| r["duration"].as_f64())
        .map(Duration::from_secs_f64)
        .collect();
    let (layer50, layer90) = summary("provider layer (HttpProvider::complete)", layer);
    let (raw50, raw90) = summary("bare reqwest, same body", raw);
    let (own50, own90) = summary("llmock's own time (both kinds of request)", own);
    println!(
        "overhead of the layer over the fake's own time: p50 {:.3} ms, p90 {:.3} ms; over a bare client: p50 {:.3} ms, p90 {:.3} ms",
        (layer50.as_secs_f64() - own50.as_secs_f64()) * 1e3,
        (layer90.as_secs_f64() - own90.as_secs_f64()) * 1e3,
        (layer50.as_secs_f64() - raw50.as_secs_f64()) * 1e3,
        (layer90.as_secs_f64() - raw90.as_secs_f64()) * 1e3,
    );

    println!("\n== Design app in process (SQLite, blob folder; {calls} requests each)");
    let builder = TestApp::builder().setting("FLOWGRID_AI_OPENAI_API_KEY", "sk-bench");
    let design_settings = flowgrid_design::Settings::from_lookup(|n| builder.get(n))?;
    let app = builder
        .start(
            async |config: &flowgrid_domain::config::Config| {
                flowgrid_design::AppState::from_config(config, design_settings).await
            },
            flowgrid_design::router,
        )
        .await;
    let input: flowgrid_domain::AgentInput = serde_json::from_value(
        json!({"name": "bench", "definition": {
        "instructions": "You triage tickets.",
        "model": {"provider": "openai", "model": "gpt-4o-mini", "maxTokens": 300},
        "inputSchema": {"type": "object", "properties": {"ticket": {"type": "string"}}},
        "steps": [
            {"id": "classify", "kind": "llm", "prompt": "Classify: {{ input.ticket }}"},
            {"id": "summarise", "kind": "llm", "prompt": "Summarise: {{ input.ticket }}"},
            {"id": "shape", "kind": "transform", "output": {"label": "{{ steps.classify.output.text }}"}}
        ]}}),
    )?;
    let agent = flowgrid_domain::Agent::create(
        flowgrid_domain::TenantId::parse("bench")?,
        input.validate().map_err(|e| anyhow::anyhow!("{e}"))?,
        "bench",
        chrono::Utc::now(),
    );
    let agent = app.state().stores.agents.insert(&agent).await?;
    let viewer = app.token("bench", Role::Viewer);
    let editor = app.token("bench", Role::Editor);
    let mut preview = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let r = app
            .get(&format!("/api/design/prompt-preview/{}", agent.id), &viewer)
            .await;
        preview.push(started.elapsed());
        anyhow::ensure!(r.status == 200, "preview: {}", r.text);
    }
    let first = app
        .post_json(
            &format!("/api/design/compile/{}", agent.id),
            &editor,
            json!({}),
        )
        .await;
    anyhow::ensure!(first.status == 200, "compile: {}", first.text);
    let mut compile = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let r = app
            .post_json(
                &format!("/api/design/compile/{}", agent.id),
                &editor,
                json!({}),
            )
            .await;
        compile.push(started.elapsed());
        anyhow::ensure!(r.status == 200, "compile: {}", r.text);
    }
    summary("GET prompt-preview (2 llm steps)", preview);
    summary("POST compile (unchanged version)", compile);
    Ok(())
}
