//! Several instances of an app (issue 15, items 4 and 5): each its own process and port, its own
//! restarts; the gateway's four strategies; an idempotent request whose instance died goes to
//! another; Service Bus messages spread over the instances (competing consumers).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::{echo_app, send, work_app};
use crate::common::{AppRoot, eventually, request};

fn sigkill(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill(1) runs")
        .success();
    assert!(ok, "kill -KILL {pid}");
}

/// The instance (its `FLOWGRID_INSTANCE`) that answered an echo.
fn answered_by(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("echo JSON: {body}"));
    v["env"]["FLOWGRID_INSTANCE"]
        .as_str()
        .unwrap_or_else(|| panic!("no instance in {v}"))
        .to_owned()
}

async fn get_echo(url: &str, headers: &[(&str, &str)]) -> String {
    let (s, _, body) = request("GET", url, headers, None).await;
    assert_eq!(s, 200, "{body}");
    answered_by(&body)
}

async fn health(host: &flowgrid_host::Host) -> Value {
    let (_, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    serde_json::from_str(&body).expect("health is JSON")
}

#[tokio::test]
async fn an_app_runs_its_minimum_of_instances_each_its_own_process_port_and_restarts() {
    let root = AppRoot::new(
        &[("edge", echo_app()), ("other", work_app(false))],
        json!({"FLOWGRID_INSTANCES": "edge=3"}),
    );
    let host = root.start().await;
    let instances = host
        .instances()
        .into_iter()
        .find(|(a, _)| a == "edge")
        .map(|(_, i)| i)
        .expect("edge");
    assert_eq!(instances.len(), 3);
    let mut pids: Vec<_> = instances.iter().map(|s| s.pid.unwrap()).collect();
    let mut ports: Vec<_> = instances.iter().map(|s| s.port.unwrap()).collect();
    pids.dedup();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        (pids.len(), ports.len()),
        (3, 3),
        "one process and port each"
    );
    let others = host.instances();
    let other = others.iter().find(|(a, _)| a == "other").unwrap();
    assert_eq!(other.1.len(), 1, "an app not named keeps one instance");

    // Round robin (the default): each instance in turn.
    let url = format!("{}/api/echo/rr", host.url());
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(get_echo(&url, &[]).await);
    }
    let mut counts = BTreeMap::new();
    for i in &order {
        *counts.entry(i.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "{order:?}");
    assert!(counts.values().all(|c| *c == 2), "{order:?}");
    assert_ne!(order[0], order[1], "{order:?}");

    // Killing one instance restarts that one only; the app keeps answering meanwhile.
    let victim = instances[1].pid.unwrap();
    sigkill(victim);
    for _ in 0..6 {
        get_echo(&url, &[]).await;
    }
    let after = eventually("instance 1 restarted", || async {
        let all = host.instances();
        let edge = all.into_iter().find(|(a, _)| a == "edge").unwrap().1;
        (edge[1].restarts == 1
            && edge[1].state == flowgrid_host::supervisor::State::Ready
            && edge[1].pid != Some(victim))
        .then_some(edge)
    })
    .await;
    assert_eq!(after[0].restarts, 0);
    assert_eq!(after[2].restarts, 0);
    let h = health(&host).await;
    let list = h["apps"]["edge"]["instances"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{h}");
    assert_eq!(list[1]["instance"], 1);
    assert_eq!(list[1]["restarts"], 1, "{h}");
    assert!(
        list[1]["reason"].as_str().unwrap().contains("killed"),
        "{h}"
    );
    assert_eq!(h["apps"]["edge"]["scale"]["instances"], 3);
    assert_eq!(h["apps"]["edge"]["scale"]["balance"], "round-robin");
    assert_eq!(h["apps"]["edge"]["state"], "ready");
    host.shutdown().await;
}

#[tokio::test]
async fn the_command_line_sets_instances_and_strategy_over_the_settings() {
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({"FLOWGRID_INSTANCES": "edge=3", "FLOWGRID_BALANCE": "edge=ip-hash"}),
    );
    let mut opts = root.options();
    opts.scaling.instances = vec!["edge=2..5".into()];
    opts.scaling.balance = vec!["edge=weighted-round-robin:3:1".into()];
    let host = flowgrid_host::Host::start(opts, &mut |_| {}).await.unwrap();
    host.settle(Duration::from_secs(20)).await;
    let h = health(&host).await;
    assert_eq!(h["apps"]["edge"]["scale"]["min"], 2, "{h}");
    assert_eq!(h["apps"]["edge"]["scale"]["max"], 5, "{h}");
    assert_eq!(
        h["apps"]["edge"]["scale"]["balance"],
        "weighted-round-robin:3:1"
    );
    assert_eq!(h["apps"]["edge"]["instances"][0]["weight"], 3);
    assert_eq!(h["apps"]["edge"]["instances"][1]["weight"], 1);
    // Smooth weighted round robin: 3 of every 4 requests to instance 0, never 3 in a row.
    let url = format!("{}/api/echo/w", host.url());
    let mut order = String::new();
    for _ in 0..8 {
        order.push_str(&get_echo(&url, &[]).await);
    }
    assert_eq!(order, "00100010", "nginx's smooth order for weights 3:1");
    host.shutdown().await;
}

#[tokio::test]
async fn a_malformed_instances_or_balance_setting_starts_nothing_and_names_it() {
    for (values, says) in [
        (
            json!({"FLOWGRID_INSTANCES": "edge=4..2"}),
            "minimum is above",
        ),
        (
            json!({"FLOWGRID_INSTANCES": "nope=2"}),
            "no app named \"nope\"",
        ),
        (
            json!({"FLOWGRID_BALANCE": "edge=fastest"}),
            "is not a strategy",
        ),
        (
            json!({"FLOWGRID_BALANCE": "weighted:0:1"}),
            "not a whole number from 1 to 100",
        ),
    ] {
        let root = AppRoot::new(&[("edge", echo_app())], values);
        let err = match flowgrid_host::Host::start(root.options(), &mut |_| {}).await {
            Ok(_) => panic!("started with a malformed setting ({says})"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(says), "{err}");
        assert!(err.contains("FLOWGRID_"), "names the setting: {err}");
    }
}

#[tokio::test]
async fn least_connections_sends_requests_to_the_instance_with_fewer_in_flight() {
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({"FLOWGRID_INSTANCES": "edge=2", "FLOWGRID_BALANCE": "edge=least-connections"}),
    );
    let host = root.start().await;
    let url = format!("{}/api/echo/lc", host.url());
    let slow_url = url.clone();
    let slow = tokio::spawn(async move {
        let (s, _, body) = request("GET", &slow_url, &[("x-fixture-sleep-ms", "1500")], None).await;
        assert_eq!(s, 200);
        answered_by(&body)
    });
    // Wait until the slow request is in flight on an instance.
    eventually("the slow request in flight", || async {
        let h = health(&host).await;
        (h["apps"]["edge"]["scale"]["httpInFlight"] == 1).then_some(())
    })
    .await;
    let mut quick = Vec::new();
    for _ in 0..4 {
        quick.push(get_echo(&url, &[]).await);
    }
    let busy = slow.await.unwrap();
    assert!(
        quick.iter().all(|i| *i != busy),
        "every quick request avoided the busy instance {busy}: {quick:?}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn ip_hash_keeps_a_client_on_one_instance_and_spreads_clients() {
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({"FLOWGRID_INSTANCES": "edge=3", "FLOWGRID_BALANCE": "edge=ip-hash"}),
    );
    let host = root.start().await;
    let url = format!("{}/api/echo/ip", host.url());
    let mut seen = std::collections::BTreeSet::new();
    for c in 1..=12 {
        let ip = format!("10.0.0.{c}");
        let first = get_echo(&url, &[("x-forwarded-for", &ip)]).await;
        for _ in 0..3 {
            assert_eq!(
                get_echo(&url, &[("x-forwarded-for", &format!("{ip}, 192.168.1.1"))]).await,
                first,
                "client {ip} stays on its instance"
            );
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "12 clients on one instance: {seen:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn an_idempotent_request_whose_instance_dies_is_answered_by_another_and_a_post_is_not_retried()
 {
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({"FLOWGRID_INSTANCES": "edge=2"}),
    );
    let host = root.start().await;
    let url = format!("{}/api/echo/die", host.url());
    let all_ready = || async {
        let h = health(&host).await;
        let list = h["apps"]["edge"]["instances"].as_array().cloned()?;
        list.iter().all(|i| i["state"] == "ready").then_some(())
    };
    let deaths = || {
        root.lines()
            .iter()
            .filter(|l| l.starts_with("died instance=0"))
            .count()
    };
    // Instance 0 dies mid-request; every request is answered by instance 1. Round robin
    // usually sends each of these to instance 0 first (the retry takes the next turn); when
    // a restart's timing gives instance 1 the first turn, the request is sent again until
    // instance 0 has died under it.
    for (method, headers) in [
        ("GET", vec![]),
        ("PUT", vec![]),
        ("DELETE", vec![]),
        ("POST", vec![("idempotency-key", "k-1")]),
    ] {
        let before = deaths();
        for _ in 0..5 {
            eventually("both instances ready", all_ready).await;
            let mut hs = vec![("x-fixture-die-instance", "0")];
            hs.extend(headers.iter().copied());
            let (s, _, body) = request(method, &url, &hs, Some("{\"a\":1}")).await;
            assert_eq!(s, 200, "{method} answered by the other instance: {body}");
            assert_eq!(answered_by(&body), "1");
            let v: Value = serde_json::from_str(&body).unwrap();
            if method != "GET" && method != "DELETE" {
                assert_eq!(v["body"], "{\"a\":1}", "the body is sent again");
            }
            if deaths() > before {
                break;
            }
        }
        assert!(
            deaths() > before,
            "{method}: instance 0 never died under it"
        );
    }
    // A POST without an idempotency key is not sent twice: one death, a 500.
    eventually("both instances ready", all_ready).await;
    let before = root.lines().len();
    let (s, hs, _) = request(
        "POST",
        &url,
        &[("x-fixture-die-instance", "0,1")],
        Some("{}"),
    )
    .await;
    assert_eq!(s, 500);
    assert_eq!(
        crate::common::header(&hs, "content-type"),
        Some("application/problem+json")
    );
    let new: Vec<String> = root.lines()[before..].to_vec();
    assert_eq!(new.len(), 1, "sent once: {new:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn queue_messages_are_spread_over_the_instances_each_bounded_by_max_concurrent_calls() {
    let root = AppRoot::with_host_json(
        &[("worker", work_app(false))],
        json!({"FLOWGRID_INSTANCES": "worker=3"}),
        json!({"extensions": {"serviceBus": {"maxConcurrentCalls": 2}}}),
    );
    let host = root.start().await;
    for _ in 0..36 {
        send(&host, "slow:150");
    }
    let lines = root.wait_for_lines("36 messages", |l| l.len() >= 36).await;
    let mut per_instance = BTreeMap::new();
    for l in &lines {
        let instance = l.rsplit("instance=").next().unwrap_or_default().to_owned();
        *per_instance.entry(instance).or_insert(0) += 1;
        let max: usize = l
            .split("max_in_flight=")
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(max <= 2, "maxConcurrentCalls per instance: {l}");
    }
    assert_eq!(
        per_instance.len(),
        3,
        "every instance took messages: {per_instance:?}"
    );
    assert_eq!(lines.len(), 36, "each message once: {lines:#?}");
    host.shutdown().await;
}
