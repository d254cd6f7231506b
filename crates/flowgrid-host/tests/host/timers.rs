//! The timer trigger.

use serde_json::json;

use crate::common::AppRoot;

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
