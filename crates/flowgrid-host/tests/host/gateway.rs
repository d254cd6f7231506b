//! The HTTP gateway: forwarding, the envelope, routing, correlation ids, the rate limit and the body limit.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::apps::echo_app;
use crate::common::{AppRoot, header, request};

#[tokio::test]
async fn a_forwarded_request_keeps_method_path_query_headers_and_body_and_gets_the_host_variables()
{
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({"CUSTOM_SETTING": "from-settings"}),
    );
    let host = root.start().await;
    let url = format!("{}/api/echo/a/b?x=1&y=2", host.url());
    let (status, hs, body) = request(
        "PUT",
        &url,
        &[("x-custom", "v"), ("content-type", "text/plain")],
        Some("payload"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&hs, "x-fixture"), Some("echo"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/api/echo/a/b");
    assert_eq!(v["query"], "x=1&y=2");
    assert_eq!(v["body"], "payload");
    assert_eq!(v["headers"]["x-custom"], "v");
    assert!(v["headers"]["x-azure-functions-invocationid"].is_string());
    assert!(
        v["headers"]["x-azure-functions-hostversion"]
            .as_str()
            .unwrap()
            .starts_with("4.")
    );
    let env = &v["env"];
    assert_eq!(
        env["FUNCTIONS_CUSTOMHANDLER_PORT"],
        env["FUNCTIONS_HTTPWORKER_PORT"]
    );
    assert!(
        env["FUNCTIONS_CUSTOMHANDLER_PORT"]
            .as_str()
            .unwrap()
            .parse::<u16>()
            .is_ok()
    );
    assert!(env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"].is_string());
    assert!(env["FUNCTIONS_APP_ROOT_PATH"].is_string());
    assert_eq!(env["CUSTOM_SETTING"], "from-settings");
    host.shutdown().await;
}

#[tokio::test]
async fn a_forwarded_answer_is_returned_as_is_without_following_redirects() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let url = format!("{}/api/echo/x", host.url());
    let (status, _, body) = request("GET", &url, &[("x-fixture-status", "418")], None).await;
    assert_eq!(
        status, 418,
        "non-2xx from a forwarded function is passed through"
    );
    assert!(body.contains("\"method\":\"GET\""));
    let (status, hs, _) = request("GET", &url, &[("x-fixture-status", "302")], None).await;
    assert_eq!(status, 302);
    assert_eq!(header(&hs, "location"), Some("/api/echo/redirected"));
    host.shutdown().await;
}

#[tokio::test]
async fn a_chunked_request_body_is_not_forwarded() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let mut s = tokio::net::TcpStream::connect(host.addr()).await.unwrap();
    s.write_all(b"POST /api/echo/c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("\"body\":\"\""),
        "the chunked body must be dropped: {out}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_as_problem_json() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let (status, hs, body) = request(
        "GET",
        &format!("{}/api/nothing-here", host.url()),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/problem+json")
    );
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["type"], "urn:flowgrid:problem:not-found");
    assert_eq!(p["correlationId"].as_str(), header(&hs, "x-correlation-id"));
    let (status, hs, body) =
        request("PATCH", &format!("{}/api/echo/x", host.url()), &[], None).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(header(&hs, "allow"), Some("DELETE, GET, POST, PUT"));
    let (status, _, _) = request(
        "GET",
        &format!("{}/elsewhere/echo/x", host.url()),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404, "paths outside the route prefix are not routed");
    host.shutdown().await;
}

#[tokio::test]
async fn route_constraints_and_optional_segments_decide_which_paths_match() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let (s, _, _) = request("GET", &format!("{}/api/inspect/abc", host.url()), &[], None).await;
    assert_eq!(s, 404, "{{id:int}} refuses letters");
    let (s, _, b) = request("GET", &format!("{}/api/inspect/7", host.url()), &[], None).await;
    assert_eq!(s, 200, "the optional segment may be absent: {b}");
    let (s, _, b) = request(
        "GET",
        &format!("{}/api/inspect/7/more", host.url()),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["envelope"]["Metadata"]["opt"], "\"more\"");
    host.shutdown().await;
}

#[tokio::test]
async fn a_non_forwarded_http_function_gets_the_envelope_with_the_hosts_encodings() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let url = format!("{}/api/inspect/42?x=1&x=2&q=v", host.url());
    let (status, _, body) = request(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("x-correlation-id", "corr-1"),
        ],
        Some(r#"{"qty":2,"name":"n"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let env = &v["envelope"];
    let req = &env["Data"]["req"];
    assert_eq!(req["Method"], "POST");
    assert!(
        req["Url"]
            .as_str()
            .unwrap()
            .ends_with("/api/inspect/42?x=1&x=2&q=v")
    );
    assert_eq!(req["Query"], json!({"q": "v", "x": "1,2"}));
    assert_eq!(req["Params"], json!({"id": "42"}));
    assert_eq!(req["Body"], r#"{"qty":2,"name":"n"}"#);
    assert_eq!(req["Headers"]["Content-Type"], json!(["application/json"]));
    let md = &env["Metadata"];
    assert_eq!(
        md["id"], "\"42\"",
        "route values are double-encoded strings"
    );
    assert_eq!(md["qty"], "2", "numbers travel as their JSON text");
    assert_eq!(md["name"], "\"n\"");
    assert_eq!(md["Headers"]["Content-Type"], "application/json");
    assert_eq!(md["sys"]["MethodName"], "Inspect");
    let headers = &v["headers"];
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert!(headers["x-azure-functions-invocationid"].is_string());
    assert_eq!(headers["x-correlation-id"], "corr-1");
    assert!(headers["traceparent"].as_str().unwrap().starts_with("00-"));
    host.shutdown().await;
}

#[tokio::test]
async fn correlation_id_and_traceparent_reach_forwarded_handlers_and_come_back() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, hs, body) = request(
        "GET",
        &format!("{}/api/echo/t", host.url()),
        &[("x-correlation-id", "abc-1"), ("traceparent", tp)],
        None,
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-correlation-id"], "abc-1");
    assert_eq!(v["headers"]["traceparent"], tp);
    assert_eq!(header(&hs, "x-correlation-id"), Some("abc-1"));
    let (_, hs, body) = request("GET", &format!("{}/api/echo/t", host.url()), &[], None).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let generated = header(&hs, "x-correlation-id").unwrap();
    assert_eq!(
        v["headers"]["x-correlation-id"], generated,
        "a generated id is passed on and returned"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn outputs_set_the_http_response_and_strings_that_are_base64_are_decoded_unless_binary() {
    let f = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post"], "route": "outputs"},
        {"type": "http", "direction": "out", "name": "res"},
        {"type": "serviceBus", "direction": "out", "name": "out", "queueName": "b64", "connection": "ServiceBusConnection"},
        {"type": "serviceBus", "direction": "out", "name": "outBin", "queueName": "bin", "dataType": "binary", "connection": "ServiceBusConnection"}]});
    let root = AppRoot::new(&[("edge", vec![("Outputs", f)])], json!({}));
    let host = root.start().await;
    let (status, hs, body) = request(
        "POST",
        &format!("{}/api/outputs", host.url()),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(header(&hs, "x-kind"), Some("outputs"));
    assert_eq!(body, "plain text");
    let msgs = host.bus().peek("b64", false, 10).unwrap();
    let bodies: Vec<Vec<u8>> = msgs.iter().map(|m| m.body.clone()).collect();
    assert_eq!(
        bodies.len(),
        3,
        "an array output sends one message per element"
    );
    assert_eq!(
        bodies[0],
        vec![0xb5, 0xeb, 0x2d],
        "\"test\" is valid base64 and becomes three bytes"
    );
    assert_eq!(bodies[1], b"{\"a\": 1}".to_vec());
    assert_eq!(bodies[2], b"{\"b\":2}".to_vec());
    let bin = host.bus().peek("bin", false, 10).unwrap();
    assert_eq!(
        bin[0].body,
        b"test".to_vec(),
        "dataType binary keeps the string"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_failing_handler_answer_is_a_500_problem_for_http_callers() {
    let f = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "route": "nobody"},
        {"type": "http", "direction": "out", "name": "res"},
        {"type": "serviceBus", "direction": "out", "name": "out", "queueName": "q", "connection": "ServiceBusConnection"}]});
    // The fixture answers 404 to /Missing: a non-2xx answer fails the invocation.
    let root = AppRoot::new(&[("edge", vec![("Missing", f)])], json!({}));
    let host = root.start().await;
    let (status, hs, body) = request("GET", &format!("{}/api/nobody", host.url()), &[], None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/problem+json")
    );
    // Internal details stay out of the body: the handler's 404 is named nowhere but in the
    // correlation id, which is random (and can contain those digits).
    let mut problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    problem.as_object_mut().unwrap().remove("correlationId");
    assert!(
        !problem.to_string().contains("404"),
        "internal details stay out of the body: {body}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_problem_json_with_retry_after() {
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({"FLOWGRID_RATE_LIMIT_RPS": "0.5", "FLOWGRID_RATE_LIMIT_BURST": "3"}),
    );
    let host = root.start().await;
    let url = format!("{}/api/echo/r", host.url());
    for _ in 0..3 {
        assert_eq!(request("GET", &url, &[], None).await.0, 200);
    }
    let (status, hs, body) = request("GET", &url, &[], None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/problem+json")
    );
    assert!(header(&hs, "retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(body.contains("too-many-requests"));
    host.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_problem_json() {
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({"FLOWGRID_BODY_LIMIT_BYTES": "1024"}),
    );
    let host = root.start().await;
    let (status, hs, _) = request(
        "POST",
        &format!("{}/api/echo/big", host.url()),
        &[],
        Some(&"x".repeat(1025)),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/problem+json")
    );
    let (status, _, _) = request(
        "POST",
        &format!("{}/api/echo/big", host.url()),
        &[],
        Some(&"x".repeat(1024)),
    )
    .await;
    assert_eq!(status, 200);
    host.shutdown().await;
}
