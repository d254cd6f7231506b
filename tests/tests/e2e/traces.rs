//! OpenTelemetry through `flowgrid dev` (issue 11): with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing
//! at the test kit's OTLP receiver (which decodes the real OTLP protobuf), one run of an agent
//! with an `http` step is one trace from the client's submit request through the gateway, the
//! Execution handler, the queue invocation and every step to the outbound call, each span the
//! child of the one before, and the outbound call carries that trace in `traceparent`. Without
//! the variable no handler starts an exporter and no trace context is minted for the call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use flowgrid_e2e::Dev;
use flowgrid_testkit::free_port;
use flowgrid_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use serde_json::json;

use crate::upstream;

const CLIENT_TRACE: &str = "5d9f0c4a6e2b4f1c8a7d3e9b1c2d3e4f";
const CLIENT_SPAN: &str = "a1b2c3d4e5f60718";

/// The `traceparent` header (or none) of each call the outside world received.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

async fn upstream() -> (Seen, String) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/effect",
            post(|State(seen): State<Seen>, headers: HeaderMap| async move {
                let tp = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                seen.lock().expect("lock").push(tp);
                axum::Json(json!({"ok": true}))
            }),
        )
        .with_state(seen.clone());
    (seen, upstream::serve(app).await)
}

/// Creates an agent (greet → call → done) and submits a run with the client's trace context and
/// correlation id; waits for it to succeed. Returns the job id.
async fn run_agent(dev: &Dev, addr: &str, correlation_id: &str) -> String {
    let token = dev.token("acme", "editor");
    let agent = dev
        .create_agent(
            &token,
            &json!({"name": format!("traced-{}", free_port()), "definition": {"instructions": "e2e", "steps": [
                {"id": "greet", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}},
                {"id": "call", "kind": "http", "method": "POST", "url": format!("http://{addr}/effect"), "body": "{{ steps.greet.output }}"},
                {"id": "done", "kind": "transform", "output": {"ok": "{{ steps.call.output.body.ok }}"}}
            ]}}),
        )
        .await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let job = dev
        .submit_with_headers(
            &token,
            &agent,
            json!({"name": "Ada"}),
            &[
                ("traceparent", &traceparent),
                ("x-correlation-id", correlation_id),
            ],
        )
        .await;
    let body = dev
        .wait_finished(&token, &job, Duration::from_secs(30))
        .await;
    assert_eq!(body["status"], "succeeded", "{body}");
    job
}

/// The pids of `app`'s handler processes, from `/api/health`.
async fn pids(dev: &Dev, app: &str) -> Vec<u64> {
    let health = dev.health().await.expect("health");
    let a = &health["apps"][app];
    let mut pids: Vec<u64> = a["pid"].as_u64().into_iter().collect();
    if let Some(instances) = a["instances"].as_array() {
        pids.extend(instances.iter().filter_map(|i| i["pid"].as_u64()));
    }
    pids.sort_unstable();
    pids.dedup();
    assert!(!pids.is_empty(), "no pid for {app} in {health}");
    pids
}

/// Whether process `pid` runs a thread named `name`.
fn has_thread(pid: u64, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the handler's threads")
        .filter_map(Result::ok)
        .any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    f: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what}, got {found:#?}\nall: {spans:#?}"
    );
    found[0]
}

#[tokio::test]
async fn one_run_through_flowgrid_dev_is_one_trace_from_the_submit_request_to_the_outbound_call() {
    let receiver = OtlpReceiver::start().await;
    let (seen, addr) = upstream().await;
    let dev = Dev::start(
        &["agents", "execution"],
        &[
            ("FLOWGRID_OUTBOUND_ALLOWLIST", &addr),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ],
    )
    .await;
    for pid in pids(&dev, "execution").await {
        assert!(
            has_thread(pid, "otel-export"),
            "the exporter runs in the handler"
        );
    }
    run_agent(&dev, &addr, "otel-e2e-run").await;

    let in_trace = |s: &ReceivedSpan| s.trace_id == CLIENT_TRACE;
    // Spans end (and are exported) when their work ends, the invocation's after its steps:
    // wait until every expected one has arrived.
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            let has = |f: &dyn Fn(&ReceivedSpan) -> bool| spans.iter().any(f);
            has(&|s| in_trace(s) && s.service == "flowgrid-host" && s.kind == 2)
                && has(&|s| in_trace(s) && s.service == "flowgrid-execution" && s.kind == 2)
                && has(&|s| in_trace(s) && s.service == "flowgrid-execution" && s.kind == 5)
                && has(&|s| in_trace(s) && s.kind == 3)
                && ["greet", "call", "done"]
                    .iter()
                    .all(|id| has(&|s| in_trace(s) && s.name == format!("step {id}")))
                // The host's delivery span of the worker's invocation (not merely any delivery:
                // Analytics' ingestion of the agent's events has host delivery spans too).
                && spans
                    .iter()
                    .filter(|w| in_trace(w) && w.service == "flowgrid-execution" && w.kind == 5)
                    .any(|w| {
                        has(&|s| {
                            s.service == "flowgrid-host"
                                && s.kind == 5
                                && s.attr("faas.invocation_id") == w.attr("faas.invocation_id")
                        })
                    })
        })
        .await;
    assert_eq!(receiver.rejected(), Vec::<String>::new());
    let trace: Vec<ReceivedSpan> = spans.iter().filter(|s| in_trace(s)).cloned().collect();

    // client → gateway (the local host's server span)
    let gateway = one(&trace, "gateway span", |s| {
        s.service == "flowgrid-host" && s.kind == 2
    });
    assert_eq!(gateway.parent_span_id, CLIENT_SPAN);
    assert_eq!(gateway.name, "POST /api/execute/agent/{id}");
    assert_eq!(gateway.attr("faas.name"), Some("SubmitJob"));
    assert_eq!(
        gateway.attr("flowgrid.correlation_id"),
        Some("otel-e2e-run")
    );
    // gateway → the Execution handler's request span (SubmitJob, envelope mode)
    let submit = one(&trace, "submit request span", |s| {
        s.service == "flowgrid-execution" && s.kind == 2
    });
    assert_eq!(submit.parent_span_id, gateway.span_id);
    assert_eq!(submit.attr("http.route"), Some("/api/execute/agent/{id}"));
    assert_eq!(submit.attr("faas.name"), Some("SubmitJob"));
    assert_eq!(submit.attr("flowgrid.tenant"), Some("acme"));
    assert_eq!(submit.attr("flowgrid.correlation_id"), Some("otel-e2e-run"));
    assert_eq!(submit.attributes["http.response.status_code"], 202);
    assert!(
        submit
            .attr("faas.invocation_id")
            .is_some_and(|i| !i.is_empty())
    );
    // handler → Service Bus message (trace context in the body) → the worker's invocation
    let worker = one(&trace, "queue invocation span", |s| {
        s.service == "flowgrid-execution" && s.kind == 5
    });
    assert_eq!(worker.parent_span_id, submit.span_id);
    assert_eq!(worker.name, "process executions");
    assert_eq!(worker.attr("faas.name"), Some("ExecuteJob"));
    assert_eq!(worker.attr("faas.trigger"), Some("pubsub"));
    assert_eq!(worker.attr("flowgrid.correlation_id"), Some("otel-e2e-run"));
    assert_eq!(worker.attr("flowgrid.tenant"), Some("acme"));
    let invocation = worker
        .attr("faas.invocation_id")
        .expect("the invocation id");
    // The host's own span of the delivery (its own trace, as the Functions host's is) is linked.
    let host_delivery = one(&spans, "host delivery span", |s| {
        s.service == "flowgrid-host"
            && s.kind == 5
            && s.attr("faas.invocation_id") == Some(invocation)
    });
    assert_eq!(
        worker.links,
        vec![(
            host_delivery.trace_id.clone(),
            host_delivery.span_id.clone()
        )]
    );
    // worker → each step
    for step in ["greet", "call", "done"] {
        let span = one(&trace, &format!("step {step}"), |s| {
            s.name == format!("step {step}")
        });
        assert_eq!(span.parent_span_id, worker.span_id, "step {step}");
        assert_eq!(span.kind, 1);
        assert_eq!(span.attr("flowgrid.step.id"), Some(step));
        assert_eq!(span.attr("flowgrid.correlation_id"), Some("otel-e2e-run"));
    }
    let call_step = one(&trace, "step call", |s| s.name == "step call");
    assert_eq!(call_step.attr("flowgrid.step.kind"), Some("http"));
    // step → the outbound call, whose traceparent names its span
    let outbound = one(&trace, "outbound call span", |s| s.kind == 3);
    assert_eq!(outbound.parent_span_id, call_step.span_id);
    assert_eq!(outbound.name, "POST");
    assert_eq!(
        outbound.attr("url.full"),
        Some(format!("http://{addr}/effect").as_str())
    );
    assert_eq!(outbound.attributes["http.response.status_code"], 200);
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![Some(format!("00-{CLIENT_TRACE}-{}-01", outbound.span_id))]
    );
    // One tree: every span of the trace hangs from the client's span through spans of the trace
    // (the Analytics app's ingestion of the run's events, when it has happened, included).
    for s in &trace {
        assert!(
            s.parent_span_id == CLIENT_SPAN || trace.iter().any(|p| p.span_id == s.parent_span_id),
            "{s:#?} has a parent outside the trace"
        );
    }

    // Request metrics from the host and the handler.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let services: Vec<String> = receiver
            .metrics()
            .iter()
            .flat_map(|m| &m.resource_metrics)
            .filter(|r| {
                r.scope_metrics
                    .iter()
                    .flat_map(|s| &s.metrics)
                    .any(|m| m.name == "http.server.request.duration")
            })
            .filter_map(|r| r.resource.as_ref())
            .filter_map(|r| {
                flowgrid_testkit::otlp::attributes(&r.attributes)["service.name"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        if ["flowgrid-host", "flowgrid-execution", "flowgrid-agents"]
            .iter()
            .all(|s| services.iter().any(|x| x == s))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "request metrics from {services:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_an_otlp_endpoint_no_exporter_runs_and_no_trace_context_is_made_for_calls() {
    let (seen, addr) = upstream().await;
    let dev = Dev::start(
        &["agents", "execution"],
        &[("FLOWGRID_OUTBOUND_ALLOWLIST", &addr)],
    )
    .await;
    run_agent(&dev, &addr, "otel-e2e-off").await;
    for app in ["agents", "execution"] {
        for pid in pids(&dev, app).await {
            assert!(!has_thread(pid, "otel-export"), "{app} runs an exporter");
        }
    }
    assert_eq!(*seen.lock().expect("lock"), vec![None]);
}
