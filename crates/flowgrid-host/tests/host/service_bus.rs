//! The Service Bus trigger and output bindings: peek-lock, redelivery, dead letters, locks,
//! scheduled and duplicate messages, topics, and messages that outlive a host.

use flowgrid_host::bus::{Outgoing, SendOutcome, Target};
use serde_json::json;

use crate::apps::{send, work_app};
use crate::common::{AppRoot, eventually, request};

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
        let v = line.split("at_ms=").nth(1).unwrap();
        v.split(' ').next().unwrap().parse().unwrap()
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
    assert_eq!(
        status.reason.as_deref(),
        Some("restarted after a function timeout"),
        "the last restart's reason stays shown while it serves"
    );
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
