//! One correlation id per request (#17): SubmitJob, in envelope mode, answers with the id the
//! host sent on the invocation request (not one of its own), and the job's message carries it to
//! the worker.

use serde_json::{Value, json};

use crate::helpers::ExecApp;

#[tokio::test]
async fn a_submit_answers_with_the_hosts_correlation_id_and_its_message_carries_it() {
    let app = ExecApp::new().await;
    let token = app.token("acme", flowgrid_http::auth::Role::Editor);
    let agent = app
        .agent(
            "acme",
            json!({"instructions": "x", "steps": [{"id": "t", "kind": "transform", "output": {"ok": "yes"}}]}),
        )
        .await;
    // The client sent no correlation id (or junk): the host made "host-made-1".
    let envelope = json!({"Data": {"req": {
        "Url": format!("http://localhost:7071/api/execute/agent/{}", agent.id),
        "Method": "POST", "Query": {},
        "Headers": {"Authorization": [format!("Bearer {token}")], "Content-Type": ["application/json"],
            "X-Correlation-Id": ["not sane!"]},
        "Params": {"id": agent.id.to_string()},
        "Body": json!({"input": {}}).to_string()}},
        "Metadata": {}});
    let (status, answer) = app
        .invoke_with(
            "SubmitJob",
            envelope,
            "inv-1",
            &[("x-correlation-id", "host-made-1")],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let res = &answer["Outputs"]["res"];
    assert_eq!(res["statusCode"], 202, "{res}");
    assert_eq!(res["headers"]["x-correlation-id"], "host-made-1", "{res}");
    let messages: Vec<Value> = app.queue.lock().unwrap().iter().cloned().collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["correlationId"], "host-made-1");
    assert_eq!(messages[0]["jobId"], res["body"]["jobId"]);

    // A refusal inside the envelope carries the same id in its problem body.
    let bad = json!({"Data": {"req": {
        "Url": format!("http://localhost:7071/api/execute/agent/{}", agent.id),
        "Method": "POST", "Query": {},
        "Headers": {"Authorization": [format!("Bearer {token}")], "Content-Type": ["application/json"]},
        "Params": {"id": agent.id.to_string()},
        "Body": "[\"by position\"]"}},
        "Metadata": {}});
    let (_, answer) = app
        .invoke_with(
            "SubmitJob",
            bad,
            "inv-2",
            &[("x-correlation-id", "host-made-2")],
        )
        .await;
    let res = &answer["Outputs"]["res"];
    assert_eq!(res["statusCode"], 422, "{res}");
    assert_eq!(res["body"]["correlationId"], "host-made-2", "{res}");
}
