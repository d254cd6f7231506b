//! The host against the fixture handler: every rule of the local Functions host.

mod common;

use common::{AppRoot, eventually, header, health_fns, http_fn, request, sb_fn};
use flowgrid_host::bus::{Outgoing, SendOutcome, Target};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn echo_app() -> Vec<(&'static str, Value)> {
    let mut f = vec![
        (
            "Echo",
            http_fn("echo/{*rest}", &["get", "post", "put", "delete"]),
        ),
        (
            "Inspect",
            json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post", "get"], "route": "inspect/{id:int}/{opt?}"},
            {"type": "http", "direction": "out", "name": "res"},
            {"type": "serviceBus", "direction": "out", "name": "unused", "queueName": "unused", "connection": "ServiceBusConnection"}]}),
        ),
    ];
    f.extend(health_fns("edge"));
    f
}

fn work_app(queue_fns: bool) -> Vec<(&'static str, Value)> {
    let mut f = vec![
        ("Work", sb_fn("work")),
        (
            "Enqueue",
            json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post"], "route": "enqueue"},
            {"type": "http", "direction": "out", "name": "res"},
            {"type": "serviceBus", "direction": "out", "name": "out", "queueName": "work", "connection": "ServiceBusConnection"}]}),
        ),
    ];
    if queue_fns {
        f.extend(health_fns("worker"));
    }
    f
}

fn send(host: &flowgrid_host::Host, body: &str) {
    host.bus()
        .send(
            &Target::Queue("work".into()),
            Outgoing {
                body: body.as_bytes().to_vec(),
                ..Outgoing::default()
            },
        )
        .expect("the queue accepts the message");
}

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
    assert!(
        !body.contains("404"),
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
        json!({"FLOWGRID_BODY_LIMIT_BYTES": "10"}),
    );
    let host = root.start().await;
    let (status, hs, _) = request(
        "POST",
        &format!("{}/api/echo/big", host.url()),
        &[],
        Some("01234567890123"),
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
        Some("0123"),
    )
    .await;
    assert_eq!(status, 200);
    host.shutdown().await;
}

#[tokio::test]
async fn an_http_output_binding_enqueues_and_the_service_bus_trigger_receives_it() {
    let root = AppRoot::new(&[("worker", work_app(false))], json!({}));
    let host = root.start().await;
    let (status, _, body) = request(
        "POST",
        &format!("{}/api/enqueue", host.url()),
        &[("content-type", "application/json")],
        Some(r#"["one","two"]"#),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let lines = root
        .wait_for_lines("both messages", |l| {
            l.iter()
                .filter(|x| x.contains(" one ") || x.contains(" two "))
                .count()
                == 2
        })
        .await;
    assert!(lines.iter().all(|l| l.contains("count=1")), "{lines:?}");
    eventually("the queue to drain", || async {
        (host.bus().list().unwrap()[0].active == 0).then_some(())
    })
    .await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_failing_message_is_redelivered_at_once_then_dead_lettered_at_max_delivery_count() {
    let root = AppRoot::new(
        &[("worker", work_app(false))],
        json!({"FLOWGRID_SB_MAX_DELIVERY_COUNT": "4"}),
    );
    let host = root.start().await;
    send(&host, "fail");
    let dead = eventually("the dead letter", || async {
        let d = host.bus().peek("work", true, 10).unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(
        dead[0].dead_letter_reason.as_deref(),
        Some("MaxDeliveryCountExceeded")
    );
    assert_eq!(dead[0].delivery_count, 4);
    let lines = root.lines();
    let counts: Vec<&String> = lines.iter().filter(|l| l.contains(" fail ")).collect();
    assert_eq!(counts.len(), 4, "{lines:?}");
    for (i, l) in counts.iter().enumerate() {
        assert!(l.contains(&format!("count={}", i + 1)), "{l}");
    }
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_killed_while_holding_a_message_gets_it_again_after_its_restart() {
    let root = AppRoot::new(&[("worker", work_app(false))], json!({}));
    let host = root.start().await;
    send(&host, "crash");
    let lines = root
        .wait_for_lines("the redelivery", |l| {
            l.iter().any(|x| x.contains(" crash count=2"))
        })
        .await;
    assert!(
        lines
            .iter()
            .any(|x| x.contains("crash count=1") && x.contains("crashing")),
        "{lines:?}"
    );
    let (_, status) = host.statuses().remove(0);
    assert_eq!(status.restarts, 1);
    host.shutdown().await;
}

#[tokio::test]
async fn messages_accepted_before_a_host_restart_are_delivered_after_it() {
    let root = AppRoot::new(
        &[("worker", work_app(false))],
        json!({"FIXTURE_EXIT_APPS": "worker"}),
    );
    let first = root.start().await;
    for i in 0..5 {
        send(&first, &format!("keep-{i}"));
    }
    first.shutdown().await;
    // Restart with a working handler.
    let settings = root.root().join("local.settings.json");
    let text = std::fs::read_to_string(&settings).unwrap().replace(
        "\"FIXTURE_EXIT_APPS\":\"worker\"",
        "\"FIXTURE_EXIT_APPS\":\"\"",
    );
    std::fs::write(&settings, text).unwrap();
    let second = root.start().await;
    let lines = root
        .wait_for_lines("all five", |l| {
            (0..5).all(|i| l.iter().any(|x| x.contains(&format!(" keep-{i} "))))
        })
        .await;
    assert_eq!(lines.len(), 5, "each message once: {lines:?}");
    second.shutdown().await;
}

#[tokio::test]
async fn a_message_locked_by_a_host_that_died_is_delivered_again_by_the_next_host() {
    let root = AppRoot::new(&[("worker", work_app(false))], json!({}));
    let host = root.start().await;
    host.bus().ensure_queue("work").unwrap();
    // Stop the first host before its pump can lock anything, then take a lock as a dying host would.
    host.shutdown().await;
    let bus =
        flowgrid_host::bus::Bus::open(&root.root().join("data/servicebus.db"), Default::default())
            .unwrap();
    bus.send(
        &Target::Queue("work".into()),
        Outgoing {
            body: b"orphan".to_vec(),
            ..Outgoing::default()
        },
    )
    .unwrap();
    let locked = bus.receive("work").unwrap().unwrap();
    assert_eq!(locked.delivery_count, 1);
    drop(bus);
    let host = root.start().await;
    let lines = root
        .wait_for_lines("the orphan", |l| l.iter().any(|x| x.contains(" orphan ")))
        .await;
    assert!(
        lines.iter().any(|x| x.contains(" orphan count=2")),
        "{lines:?}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_message_is_delivered_only_after_its_enqueue_time() {
    let root = AppRoot::new(&[("worker", work_app(false))], json!({}));
    let host = root.start().await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let later = Outgoing {
        body: b"later".to_vec(),
        scheduled_enqueue_time: Some(at),
        ..Outgoing::default()
    };
    host.bus()
        .send(&Target::Queue("work".into()), later)
        .unwrap();
    assert_eq!(
        host.bus()
            .list()
            .unwrap()
            .iter()
            .find(|e| e.entity == "work")
            .unwrap()
            .scheduled,
        1
    );
    send(&host, "now");
    let lines = root
        .wait_for_lines("both messages", |l| {
            l.iter().any(|x| x.contains(" now ")) && l.iter().any(|x| x.contains(" later "))
        })
        .await;
    let handled_at = |what: &str| -> i64 {
        let line = lines.iter().find(|x| x.contains(what)).unwrap();
        line.split("at_ms=").nth(1).unwrap().parse().unwrap()
    };
    assert!(
        handled_at(" later ") >= at.timestamp_millis(),
        "the scheduled message came before its time: {lines:?}"
    );
    assert!(handled_at(" now ") < handled_at(" later "));
    host.shutdown().await;
}

#[tokio::test]
async fn a_second_message_with_the_same_message_id_inside_the_window_is_delivered_once() {
    let root = AppRoot::new(&[("worker", work_app(false))], json!({}));
    let host = root.start().await;
    let m = |b: &str| Outgoing {
        body: b.as_bytes().to_vec(),
        message_id: Some("order-7".into()),
        application_properties: serde_json::from_value(json!({"tenant": "t1"})).unwrap(),
        ..Outgoing::default()
    };
    assert!(matches!(
        host.bus()
            .send(&Target::Queue("work".into()), m("first"))
            .unwrap(),
        SendOutcome::Accepted(_)
    ));
    assert_eq!(
        host.bus()
            .send(&Target::Queue("work".into()), m("second"))
            .unwrap(),
        SendOutcome::Duplicate
    );
    send(&host, "marker");
    let lines = root
        .wait_for_lines("both", |l| {
            l.iter().any(|x| x.contains(" marker ")) && l.iter().any(|x| x.contains(" first "))
        })
        .await;
    assert!(!lines.iter().any(|x| x.contains(" second ")));
    let first = lines.iter().find(|x| x.contains(" first ")).unwrap();
    assert!(
        first.contains("id=order-7") && first.contains(r#"props={"tenant":"t1"}"#),
        "{first}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn max_concurrent_calls_bounds_the_invocations_running_at_once() {
    let root = AppRoot::with_host_json(
        &[("worker", work_app(false))],
        json!({}),
        json!({"extensions": {"serviceBus": {"maxConcurrentCalls": 2}}}),
    );
    let host = root.start().await;
    for _ in 0..6 {
        send(&host, "slow:500");
    }
    let lines = root
        .wait_for_lines("six slow messages", |l| {
            l.iter().filter(|x| x.contains("slow:500")).count() == 6
        })
        .await;
    let max = lines
        .iter()
        .filter_map(|l| {
            l.split("max_in_flight=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
        })
        .filter_map(|v| v.parse::<u32>().ok())
        .max()
        .unwrap();
    assert_eq!(max, 2, "{lines:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn a_timer_runs_on_startup_fires_each_second_and_is_past_due_after_a_long_stop() {
    let tick = json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "*/1 * * * * *", "runOnStartup": true, "useMonitor": true}]});
    let root = AppRoot::new(&[("clock", vec![("Tick", tick)])], json!({}));
    let host = root.start().await;
    let lines = root.wait_for_lines("three ticks", |l| l.len() >= 3).await;
    assert!(
        lines[0].contains("past_due=false status=false"),
        "first run on startup has no status: {lines:?}"
    );
    assert!(lines[2].contains("status=true"), "{lines:?}");
    host.shutdown().await;
    // The stored next due time passes while the host is down: the next start fires once past due.
    let bus =
        flowgrid_host::bus::Bus::open(&root.root().join("data/servicebus.db"), Default::default())
            .unwrap();
    let mut status = bus
        .timer_status("clock/Tick")
        .unwrap()
        .expect("a stored schedule status");
    status.next = chrono::Utc::now() - chrono::Duration::minutes(5);
    bus.set_timer_status("clock/Tick", &status).unwrap();
    drop(bus);
    std::fs::write(&root.log, "").unwrap();
    let host = root.start().await;
    let lines = root
        .wait_for_lines("the past-due firing", |l| !l.is_empty())
        .await;
    assert!(lines[0].contains("past_due=true status=true"), "{lines:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn one_app_crashing_is_marked_failed_while_the_other_apps_keep_serving() {
    let root = AppRoot::new(
        &[
            ("edge", echo_app()),
            ("crashy", vec![("Crash", http_fn("crash", &["get"]))]),
        ],
        json!({"FIXTURE_EXIT_APPS": "crashy"}),
    );
    let host = root.start().await;
    let status = eventually("crashy to fail", || async {
        host.statuses()
            .into_iter()
            .find(|(n, s)| n == "crashy" && s.state == flowgrid_host::supervisor::State::Failed)
            .map(|(_, s)| s)
    })
    .await;
    assert_eq!(
        status.restarts, 2,
        "three errors: two restarts, then failed"
    );
    assert!(status.reason.unwrap().contains("exited with code 1"));
    let (s, _, _) = request("GET", &format!("{}/api/echo/still", host.url()), &[], None).await;
    assert_eq!(s, 200, "the other app keeps serving");
    let (s, hs, _) = request("GET", &format!("{}/api/crash", host.url()), &[], None).await;
    assert_eq!(s, 503);
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/problem+json")
    );
    let (s, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    assert_eq!(s, 503);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["apps"]["crashy"]["state"], "failed");
    assert_eq!(h["apps"]["crashy"]["restarts"], 2);
    assert_eq!(h["apps"]["edge"]["state"], "ready");
    assert_eq!(h["apps"]["edge"]["health"]["status"], 200);
    assert_eq!(h["apps"]["edge"]["health"]["body"]["app"], "edge");
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_exiting_with_code_zero_is_not_restarted() {
    let root = AppRoot::new(
        &[("quiet", vec![("Q", http_fn("q", &["get"]))])],
        json!({"FIXTURE_EXIT_APPS": "quiet", "FIXTURE_EXIT_CODE": "0"}),
    );
    let host = root.start().await;
    let status = eventually("quiet to stop", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.state == flowgrid_host::supervisor::State::Stopped)
    })
    .await;
    assert_eq!(status.restarts, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn health_reports_every_app_ready_with_its_deep_health() {
    let root = AppRoot::new(
        &[("edge", echo_app()), ("worker", work_app(true))],
        json!({}),
    );
    let host = root.start().await;
    let (s, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    assert_eq!(s, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "healthy");
    for app in ["edge", "worker"] {
        assert_eq!(h["apps"][app]["state"], "ready");
        assert_eq!(h["apps"][app]["health"]["body"]["status"], "healthy");
    }
    let (s, _, _) = request(
        "GET",
        &format!("{}/api/health/edge/live", host.url()),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200, "each app's own probes are ordinary functions");
    host.shutdown().await;
}

#[tokio::test]
async fn two_apps_claiming_the_same_route_fail_the_start_naming_both() {
    let root = AppRoot::new(
        &[
            ("a", vec![("One", http_fn("same/{id}", &["get"]))]),
            (
                "b",
                vec![("Two", http_fn("same/{other}", &["get", "post"]))],
            ),
        ],
        json!({}),
    );
    let err = flowgrid_host::Host::start(root.options(), &mut |_| {})
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("functions/b/Two/function.json") && err.contains("functions/a/One"),
        "{err}"
    );
}

#[tokio::test]
async fn an_undefined_connection_setting_fails_the_start_naming_file_and_field() {
    let f = json!({"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "msg", "queueName": "q", "connection": "Missing"}]});
    let root = AppRoot::new(&[("a", vec![("W", f)])], json!({}));
    let err = format!(
        "{:#}",
        flowgrid_host::Host::start(root.options(), &mut |_| {})
            .await
            .err()
            .unwrap()
    );
    assert!(
        err.contains("functions/a/W/function.json: bindings[0].connection"),
        "{err}"
    );
}

#[tokio::test]
async fn the_lock_of_a_message_being_handled_is_renewed_so_it_is_not_delivered_twice() {
    let root = AppRoot::new(
        &[("worker", work_app(false))],
        json!({"FLOWGRID_SB_LOCK_DURATION_SECS": "1"}),
    );
    let host = root.start().await;
    send(&host, "slow:2500");
    send(&host, "marker");
    root.wait_for_lines("the slow message", |l| {
        l.iter().any(|x| x.contains("slow:2500"))
    })
    .await;
    eventually("the queue to drain", || async {
        (host.bus().list().unwrap()[0].active == 0).then_some(())
    })
    .await;
    let lines = root.lines();
    let slow: Vec<&String> = lines.iter().filter(|x| x.contains("slow:2500")).collect();
    assert_eq!(slow.len(), 1, "{lines:?}");
    assert!(slow[0].contains("count=1"));
    host.shutdown().await;
}

#[tokio::test]
async fn lock_renewal_stops_at_max_auto_lock_renewal_duration_and_the_message_is_delivered_again() {
    let root = AppRoot::with_host_json(
        &[("worker", work_app(false))],
        json!({"FLOWGRID_SB_LOCK_DURATION_SECS": "1"}),
        json!({"extensions": {"serviceBus": {"maxAutoLockRenewalDuration": "00:00:01"}}}),
    );
    let host = root.start().await;
    send(&host, "slow:3500");
    let lines = root
        .wait_for_lines("a second delivery", |l| {
            l.iter().any(|x| x.contains("slow:3500 count=2"))
        })
        .await;
    assert!(
        lines.iter().any(|x| x.contains("slow:3500 count=1")),
        "{lines:?}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn exit_code_200_is_an_intentional_restart_that_never_marks_the_app_failed() {
    let root = AppRoot::new(
        &[("cycling", vec![("C", http_fn("c", &["get"]))])],
        json!({"FIXTURE_EXIT_APPS": "cycling", "FIXTURE_EXIT_CODE": "200"}),
    );
    let host = root.start().await;
    let status = eventually("five restarts", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.restarts >= 5)
    })
    .await;
    assert_ne!(
        status.state,
        flowgrid_host::supervisor::State::Failed,
        "{status:?}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_never_answers_within_the_initialization_timeout_is_restarted_then_failed() {
    let root = AppRoot::with_host_json(
        &[("silent", vec![("S", http_fn("s", &["get"]))])],
        json!({"FIXTURE_SILENT_APPS": "silent"}),
        json!({"customHandler": {"initializationTimeout": "00:00:00.300"}}),
    );
    let host = root.start().await;
    let status = eventually("silent to fail", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.state == flowgrid_host::supervisor::State::Failed)
    })
    .await;
    assert_eq!(status.restarts, 2);
    assert!(status.reason.unwrap().contains("initialization timeout"));
    host.shutdown().await;
}

#[tokio::test]
async fn a_topic_message_reaches_the_function_of_each_subscription() {
    let sub = |s: &str| {
        json!({"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "msg", "topicName": "events", "subscriptionName": s,
            "connection": "ServiceBusConnection"}]})
    };
    let root = AppRoot::new(
        &[
            ("a", vec![("Work", sub("a-sub"))]),
            ("b", vec![("Work", sub("b-sub"))]),
        ],
        json!({}),
    );
    let host = root.start().await;
    host.bus()
        .send(
            &Target::Topic("events".into()),
            Outgoing {
                body: b"fan-out".to_vec(),
                ..Outgoing::default()
            },
        )
        .unwrap();
    let lines = root
        .wait_for_lines("both subscribers", |l| {
            l.iter().any(|x| x.starts_with("a fan-out"))
                && l.iter().any(|x| x.starts_with("b fan-out"))
        })
        .await;
    assert_eq!(
        lines.iter().filter(|x| x.contains(" fan-out ")).count(),
        2,
        "one delivery per subscription: {lines:?}"
    );
    host.shutdown().await;
}

#[test]
fn the_repositorys_own_host_json_and_function_definitions_load_and_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config =
        flowgrid_host::config::Config::load(&root, &mut |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    assert!(names.contains(&"agents"), "{names:?}");
    assert_eq!(config.host.route_prefix, "api");
    assert!(config.host.forwarding);
}

#[tokio::test]
async fn a_function_timeout_restarts_the_handler_and_the_message_is_delivered_again() {
    let root = AppRoot::with_host_json(
        &[("worker", work_app(false))],
        json!({}),
        json!({"functionTimeout": "00:00:01"}),
    );
    let host = root.start().await;
    send(&host, "slow:1500");
    // The first delivery times out after 1 s (the handler is killed before it logs); the second runs
    // again in the restarted handler and times out too; the restarts show on the app.
    let status = eventually("a restart after the timeout", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.restarts >= 1 && s.state == flowgrid_host::supervisor::State::Ready)
    })
    .await;
    assert_eq!(status.reason, None);
    let redelivered = eventually("a second delivery", || async {
        let m = host.bus().peek("work", false, 1).unwrap();
        m.first().filter(|m| m.delivery_count >= 2).cloned()
    })
    .await;
    assert_eq!(redelivered.body, b"slow:1500".to_vec());
    assert!(
        root.lines().iter().all(|l| !l.contains("slow:1500")),
        "no invocation outlived its timeout: {:?}",
        root.lines()
    );
    host.shutdown().await;
}
