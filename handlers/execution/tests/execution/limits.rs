//! Bounds enforced while a run happens: a template that builds a huge value fails its step
//! within the cap (`FLOWGRID_TEMPLATE_MAX_BYTES`) instead of taking the handler's memory.

use flowgrid_domain::store::JobStatus;
use flowgrid_http::auth::Role;
use serde_json::json;

use crate::helpers::{ExecApp, job_id};

/// Peak resident memory of this test process (nextest runs each test in its own process), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn a_template_that_builds_a_hundred_million_items_fails_its_step_naming_the_step_and_the_limit()
 {
    let app = ExecApp::with(&[("FLOWGRID_TEMPLATE_MAX_BYTES", "65536")]).await;
    // The count comes from the input: a literal one is refused when the agent is saved.
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x", "steps": [
                {"id": "small", "kind": "transform", "output": {"ones": "{{ [1] * input.few }}"}},
                {"id": "huge", "kind": "transform", "output": {"ones": "{{ [1] * input.many }}"}}
            ]}),
        )
        .await;
    let token = app.token("t1", Role::Editor);
    let res = app
        .submit(&token, &agent, json!({"few": 3, "many": 100_000_000}), None)
        .await;
    assert_eq!(res["statusCode"], 202, "{res}");
    let id = job_id(&res);
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.steps[0].output, json!({"ones": [1, 1, 1]}));
    let error = job.error.clone().unwrap_or_default();
    assert!(error.contains("step \"huge\""), "{error}");
    assert!(
        error.contains("65536 bytes") && error.contains("FLOWGRID_TEMPLATE_MAX_BYTES"),
        "{error}"
    );
    // Without the cap this materialised 10^8 items (GBs); with it the process stays small.
    let peak = peak_rss_kib();
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn a_malformed_template_cap_is_refused_naming_the_setting() {
    let err = flowgrid_execution::settings::Settings::from_lookup(|name| {
        (name == "FLOWGRID_TEMPLATE_MAX_BYTES").then(|| "lots".to_owned())
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("FLOWGRID_TEMPLATE_MAX_BYTES"),
        "{err}"
    );
}

#[tokio::test]
async fn a_run_input_over_the_cap_is_refused_naming_the_setting_and_nothing_is_queued() {
    let app = ExecApp::with(&[("FLOWGRID_RUN_INPUT_MAX_BYTES", "4096")]).await;
    let agent = app.agent("t1", crate::engine::transform_agent()).await;
    let token = app.token("t1", Role::Editor);
    let big = "x".repeat(5000);
    let res = app
        .submit(&token, &agent, json!({"name": big, "n": 1}), None)
        .await;
    assert_eq!(res["statusCode"], 422, "{res}");
    assert!(
        res.to_string().contains("FLOWGRID_RUN_INPUT_MAX_BYTES"),
        "{res}"
    );
    assert!(app.queue.lock().unwrap().is_empty(), "nothing queued");
    let ok = app
        .submit(&token, &agent, json!({"name": "Ada", "n": 1}), None)
        .await;
    assert_eq!(ok["statusCode"], 202, "{ok}");
}

#[tokio::test]
async fn a_step_output_that_would_overfill_the_job_record_is_kept_as_null_and_the_run_goes_on() {
    let app = ExecApp::with(&[("FLOWGRID_JOB_RECORD_MAX_BYTES", "65536")]).await;
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x", "steps": [
                {"id": "a", "kind": "transform", "output": "{{ 'a' * 25000 }}"},
                {"id": "b", "kind": "transform", "output": "{{ 'b' * 25000 }}"},
                {"id": "c", "kind": "transform", "output": "{{ 'c' * 25000 }}"},
                {"id": "d", "kind": "transform", "output": "{{ steps.c.output|length }}"}
            ]}),
        )
        .await;
    let token = app.token("t1", Role::Editor);
    let id = job_id(&app.submit(&token, &agent, json!({}), None).await);
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    // Which outputs are dropped depends on the record's own size; the first one fits, and at
    // least one of the three large ones cannot.
    assert!(!job.steps[0].output_truncated);
    assert!(
        job.steps[..3].iter().any(|s| s.output_truncated),
        "{:?}",
        job.steps
    );
    for s in job.steps.iter().filter(|s| s.output_truncated) {
        assert_eq!(s.output, serde_json::Value::Null);
    }
    assert_eq!(
        job.output,
        Some(json!(25000)),
        "later steps still saw the full output"
    );
    let size = serde_json::to_vec(&job).unwrap().len();
    assert!(size <= 65536, "the record is {size} bytes");
}

#[tokio::test]
async fn an_http_response_over_the_setting_fails_the_step_naming_the_limit_that_applied() {
    // Each response echoes the request body: about 2,000 bytes. The deployment's cap (1 KiB)
    // applies over the step's default 1 MiB; a step's own smaller cap applies under a larger one.
    for (setting, step_cap, named) in [
        ("1024", None, "FLOWGRID_HTTP_RESPONSE_MAX_BYTES"),
        ("1048576", Some(1500), "the step's maxResponseBytes"),
    ] {
        let app = ExecApp::with(&[("FLOWGRID_HTTP_RESPONSE_MAX_BYTES", setting)]).await;
        let mut step = json!({"id": "call", "kind": "http", "method": "POST",
            "url": app.server.url("/ok"), "body": {"x": "{{ 'a' * 2000 }}"}});
        if let Some(cap) = step_cap {
            step["maxResponseBytes"] = json!(cap);
        }
        let agent = app
            .agent("t1", json!({"instructions": "x", "steps": [step]}))
            .await;
        let token = app.token("t1", Role::Editor);
        let id = job_id(&app.submit(&token, &agent, json!({}), None).await);
        app.drain().await;
        let job = app.job("t1", &id).await;
        assert_eq!(job.status, JobStatus::Failed, "{job:?}");
        let error = job.error.clone().unwrap_or_default();
        assert!(
            error.contains("step \"call\"")
                && error.contains("larger than")
                && error.contains(named),
            "{error}"
        );
    }
    // Within both caps the same call succeeds.
    let app = ExecApp::with(&[("FLOWGRID_HTTP_RESPONSE_MAX_BYTES", "4096")]).await;
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x", "steps": [{"id": "call", "kind": "http", "method": "POST",
                "url": app.server.url("/ok"), "body": {"x": "{{ 'a' * 2000 }}"}}]}),
        )
        .await;
    let token = app.token("t1", Role::Editor);
    let id = job_id(&app.submit(&token, &agent, json!({}), None).await);
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
}

#[tokio::test]
async fn an_http_response_cap_outside_its_range_is_refused_naming_the_setting() {
    for bad in ["10", "20000000", "big"] {
        let err = flowgrid_execution::settings::Settings::from_lookup(|name| {
            (name == "FLOWGRID_HTTP_RESPONSE_MAX_BYTES").then(|| bad.to_owned())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("FLOWGRID_HTTP_RESPONSE_MAX_BYTES"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn templates_that_print_huge_values_into_text_fail_their_step_naming_the_step_and_the_limit()
{
    let app = ExecApp::with(&[("FLOWGRID_TEMPLATE_MAX_BYTES", "65536")]).await;
    let token = app.token("t1", Role::Editor);
    let nested = "{% set ns = namespace(a='x' * 1000) %}{% for i in range(input.k) %}\
                  {% set ns.a = [ns.a, ns.a] %}{% endfor %}";
    for template in [
        "{{ 'a' ~ ([1] * input.many) }}".to_owned(),
        "x{{ ([1] * input.many)|lower }}".to_owned(),
        "{{ ([[1] * input.many])|join(',') }}".to_owned(),
        "{{ ([1] * input.many) in 'abc' }}".to_owned(),
        "{{ 'a' ~ ([[1] * input.many] * input.many) }}".to_owned(),
        format!("{nested}{{{{ ns.a ~ '' }}}}"),
    ] {
        let agent = app
            .agent(
                "t1",
                json!({"instructions": "x", "steps": [
                    {"id": "print", "kind": "transform", "output": {"text": template}}
                ]}),
            )
            .await;
        let id = job_id(
            &app.submit(&token, &agent, json!({"many": 100_000_000, "k": 30}), None)
                .await,
        );
        app.drain().await;
        let job = app.job("t1", &id).await;
        assert_eq!(job.status, JobStatus::Failed, "{template}: {job:?}");
        let error = job.error.clone().unwrap_or_default();
        assert!(
            error.contains("step \"print\"")
                && error.contains("65536 bytes")
                && error.contains("FLOWGRID_TEMPLATE_MAX_BYTES"),
            "{template}: {error}"
        );
    }
    // Printed in full, the first of these was 300 MB and the last 1 GB; bounded, nothing is.
    let peak = peak_rss_kib();
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
}
