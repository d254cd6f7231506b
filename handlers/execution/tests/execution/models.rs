//! `llm` steps on a real provider's wire format (llmock, installed from its pin and started by
//! the test): the job record's model call, the monthly AI budget, and a provider that hangs.

use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::store::JobStatus;
use flowgrid_domain::store::spend::month_of;
use flowgrid_http::auth::Role;
use flowgrid_testkit::ai_fakes;
use serde_json::{Value, json};

use crate::helpers::*;

async fn app_on(mock: &ai_fakes::Fake, extra: &[(&str, &str)]) -> ExecApp {
    let base = format!("{}/v1", mock.url());
    let mut settings = vec![
        ("FLOWGRID_AI_OPENAI_BASE_URL", base.as_str()),
        ("FLOWGRID_AI_OPENAI_API_KEY", "sk-exec-test-never-shown"),
        ("FLOWGRID_AI_PROVIDERS", "offline,openai"),
    ];
    settings.extend_from_slice(extra);
    ExecApp::with(&settings).await
}

fn openai_agent() -> Value {
    json!({"instructions": "You triage tickets.", "model": {"provider": "openai", "model": "gpt-4o-mini", "maxTokens": 200},
           "steps": [{"id": "ask", "kind": "llm", "prompt": "Triage: {{ input.ticket }}"}]})
}

async fn requests_seen(mock: &ai_fakes::Fake) -> usize {
    let v: Value = reqwest::get(format!("{}/_llmock/requests", mock.url()))
        .await
        .expect("llmock")
        .json()
        .await
        .expect("json");
    v["count"].as_u64().expect("count") as usize
}

#[tokio::test]
async fn an_openai_llm_step_records_provider_model_tokens_latency_and_cost() {
    let mock = ai_fakes::llmock(0);
    let app = app_on(&mock, &[]).await;
    let agent = app.agent("t1", openai_agent()).await;
    let token = app.token("t1", Role::Editor);
    let id = job_id(
        &app.submit(&token, &agent, json!({"ticket": "VPN drops hourly"}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let call = job.steps[0].llm.as_ref().expect("the model call");
    assert_eq!(
        (call.provider.as_str(), call.model.as_str()),
        ("openai", "gpt-4o-mini")
    );
    assert!(call.tokens.input + call.tokens.output > 0);
    assert!(
        call.cost_usd.is_some() && call.cost_unknown_reason.is_none(),
        "{call:?}"
    );
    assert!(call.raw_usage.get("input_tokens").is_some());
    let ledger = app
        .state()
        .engine
        .runner
        .budget
        .as_ref()
        .expect("budget")
        .ledger()
        .clone();
    let spent = ledger
        .spent(&TenantId::parse("t1").unwrap(), &month_of(Utc::now()))
        .await
        .unwrap();
    assert_eq!(
        Some(spent),
        call.cost_micro_usd,
        "the ledger holds the settled cost"
    );
    let record = serde_json::to_string(&job).unwrap();
    assert!(!record.contains("never-shown"), "no key in the job record");
}

#[tokio::test]
async fn a_tenant_whose_budget_is_spent_gets_budget_exceeded_and_nothing_is_sent() {
    let mock = ai_fakes::llmock(0);
    let app = app_on(&mock, &[]).await;
    let ledger = app
        .state()
        .engine
        .runner
        .budget
        .as_ref()
        .expect("budget")
        .ledger()
        .clone();
    // The free plan's $5 budget, spent.
    ledger
        .adjust(
            &TenantId::parse("t2").unwrap(),
            &month_of(Utc::now()),
            5_000_000,
        )
        .await
        .unwrap();
    let agent = app.agent("t2", openai_agent()).await;
    let token = app.token("t2", Role::Editor);
    let id = job_id(
        &app.submit(&token, &agent, json!({"ticket": "x"}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t2", &id).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.steps[0].error.as_deref().unwrap_or_default();
    assert!(error.starts_with("budget exceeded"), "{error}");
    assert_eq!(requests_seen(&mock).await, 0, "refused before it was sent");
    // Another tenant is not affected.
    let other = app.agent("t3", openai_agent()).await;
    let token3 = app.token("t3", Role::Editor);
    let ok = job_id(
        &app.submit(&token3, &other, json!({"ticket": "y"}), None)
            .await,
    );
    app.drain().await;
    assert_eq!(app.job("t3", &ok).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_provider_that_hangs_fails_the_step_clearly_and_releases_the_reservation() {
    let mock = ai_fakes::llmock(0);
    reqwest::Client::new()
        .post(format!("{}/_llmock/scenario", mock.url()))
        .json(&json!({"behaviors": [{"type": "delay", "seconds": 10, "times": null}]}))
        .send()
        .await
        .unwrap();
    let app = app_on(
        &mock,
        &[
            ("FLOWGRID_AI_CALL_TIMEOUT_SECS", "1"),
            ("FLOWGRID_AI_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let agent = app.agent("t4", openai_agent()).await;
    let token = app.token("t4", Role::Editor);
    let id = job_id(
        &app.submit(&token, &agent, json!({"ticket": "z"}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t4", &id).await;
    assert!(
        job.status.is_terminal() && job.status != JobStatus::Succeeded,
        "{job:?}"
    );
    let error = job.steps[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("no answer from openai within 1 s"),
        "{error}"
    );
    let ledger = app
        .state()
        .engine
        .runner
        .budget
        .as_ref()
        .expect("budget")
        .ledger()
        .clone();
    let spent = ledger
        .spent(&TenantId::parse("t4").unwrap(), &month_of(Utc::now()))
        .await
        .unwrap();
    assert_eq!(spent, 0, "the failed call's reservation was released");
}

#[tokio::test]
async fn a_step_whose_call_failed_after_generating_tokens_records_and_is_charged_what_it_used() {
    let mock = ai_fakes::llmock(0);
    let app = app_on(&mock, &[]).await;
    let agent = app.agent("t4", openai_agent()).await;
    let token = app.token("t4", Role::Editor);
    // Cut at the token limit: the step fails, but the tokens were generated.
    reqwest::Client::new()
        .post(format!("{}/_llmock/scenario", mock.url()))
        .json(&json!({"behaviors": [{"type": "reply", "text": "The VPN drops because", "finish_reason": "length", "times": 1}]}))
        .send()
        .await
        .unwrap();
    let id = job_id(
        &app.submit(&token, &agent, json!({"ticket": "VPN drops hourly"}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t4", &id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let step = &job.steps[0];
    assert!(
        step.error.as_deref().unwrap_or("").contains("token limit"),
        "{step:?}"
    );
    let call = step.llm.as_ref().expect("the failed call's record");
    assert!(call.tokens.output > 0, "{call:?}");
    assert!(step.tokens.is_some_and(|t| t.output == call.tokens.output));
    let charged = call.cost_micro_usd.expect("a known price");
    assert!(charged > 0);
    let ledger = app
        .state()
        .engine
        .runner
        .budget
        .as_ref()
        .expect("budget")
        .ledger()
        .clone();
    let tenant = TenantId::parse("t4").unwrap();
    let month = month_of(Utc::now());
    assert_eq!(ledger.spent(&tenant, &month).await.unwrap(), charged);
    // An error status generated nothing: the next run's failed step records and charges nothing.
    reqwest::Client::new()
        .post(format!("{}/_llmock/scenario", mock.url()))
        .json(&json!({"behaviors": [{"type": "fail", "status": 400, "times": 1}]}))
        .send()
        .await
        .unwrap();
    let id = job_id(
        &app.submit(&token, &agent, json!({"ticket": "printer"}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t4", &id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert!(job.steps[0].llm.is_none() && job.steps[0].tokens.is_none());
    assert_eq!(ledger.spent(&tenant, &month).await.unwrap(), charged);
}

/// An agent saved while its provider was offered, run after the deployment withdrew it
/// (`FLOWGRID_AI_PROVIDERS` no longer lists it): the step fails naming the setting and the
/// provider is never called.
#[tokio::test]
async fn an_llm_step_whose_provider_is_no_longer_offered_fails_naming_the_setting_and_sends_nothing()
 {
    let mock = ai_fakes::llmock(0);
    let app = app_on(&mock, &[("FLOWGRID_AI_PROVIDERS", "offline")]).await;
    let agent = app.agent("t1", openai_agent()).await;
    let token = app.token("t1", Role::Editor);
    let id = job_id(
        &app.submit(&token, &agent, json!({"ticket": "VPN drops hourly"}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("step \"ask\"")
            && error.contains("openai is not offered")
            && error.contains("FLOWGRID_AI_PROVIDERS lists offline"),
        "{error}"
    );
    assert_eq!(
        requests_seen(&mock).await,
        0,
        "nothing reached the provider"
    );
    assert!(job.steps[0].llm.is_none(), "no model call recorded");
}
