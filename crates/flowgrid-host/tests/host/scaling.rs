//! The scale controller (issue 15, item 6): its rules with a fake clock, then per app through
//! a host with short intervals (assertions on decisions, never on speed); and the balancer's
//! failure rules (nginx `max_fails`/`fail_timeout`).

use std::time::{Duration, Instant};

use flowgrid_host::balance::{FailPolicy, FailState};
use flowgrid_host::scale::{Controller, Observed, Rules};
use serde_json::{Value, json};

use crate::apps::{echo_app, send, work_app};
use crate::common::{AppRoot, eventually, request};

fn rules(min: usize, max: usize) -> Rules {
    Rules {
        min,
        max,
        http_concurrency: 16,
        max_concurrent_calls: 16,
        scale_in_after: Duration::from_secs(30),
    }
}

fn seen(instances: usize, http: usize, queue: Option<u64>) -> Observed {
    Observed {
        instances,
        http_in_flight: http,
        queues: queue.map(|n| ("work".to_owned(), n)).into_iter().collect(),
    }
}

#[test]
fn http_instances_are_in_flight_requests_over_the_per_instance_concurrency() {
    let mut c = Controller::default();
    let now = Instant::now();
    let d = c.decide(&rules(1, 10), &seen(1, 40, None), now);
    assert_eq!((d.from, d.to, d.target), (1, 3, 3), "40 ÷ 16 rounded up");
    assert!(d.reason.starts_with("scale out"), "{}", d.reason);
    assert!(
        d.reason.contains("http 40 in flight ÷ 16 per instance = 3"),
        "{}",
        d.reason
    );
    let d = c.decide(&rules(1, 10), &seen(3, 48, None), now);
    assert_eq!((d.to, d.target), (3, 3), "48 ÷ 16 = 3: steady");
    assert!(d.reason.starts_with("steady"), "{}", d.reason);
    let d = c.decide(&rules(2, 10), &seen(2, 0, None), now);
    assert_eq!(d.target, 2, "never below the minimum");
}

#[test]
fn queue_instances_are_length_over_max_concurrent_calls_at_most_four_added_per_decision() {
    let mut c = Controller::default();
    let now = Instant::now();
    let d = c.decide(&rules(1, 20), &seen(1, 0, Some(200)), now);
    assert_eq!(d.target, 13, "200 ÷ 16 rounded up");
    assert_eq!(d.to, 5, "at most 4 added per decision");
    assert!(
        d.reason
            .contains("work 200 messages ÷ maxConcurrentCalls 16 = 13"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("at most 4 added"), "{}", d.reason);
    let d = c.decide(&rules(1, 20), &seen(5, 0, Some(200)), now);
    assert_eq!(d.to, 9);
    let d = c.decide(&rules(1, 8), &seen(5, 0, Some(200)), now);
    assert_eq!((d.target, d.to), (8, 8), "clamped to the maximum");
    // HTTP and queue needs of one app add up.
    let d = c.decide(&rules(1, 20), &seen(1, 17, Some(17)), now);
    assert_eq!(d.target, 4, "2 for HTTP + 2 for the queue");
}

#[test]
fn scale_in_waits_for_the_target_to_stay_low_for_the_delay() {
    let mut c = Controller::default();
    let t0 = Instant::now();
    let r = rules(1, 10);
    let d = c.decide(&r, &seen(4, 0, Some(0)), t0);
    assert_eq!((d.to, d.target), (4, 1), "holds at first");
    assert!(d.reason.starts_with("holding"), "{}", d.reason);
    let d = c.decide(&r, &seen(4, 0, Some(0)), t0 + Duration::from_secs(29));
    assert_eq!(d.to, 4);
    // Load in between starts the wait again.
    let d = c.decide(&r, &seen(4, 64, None), t0 + Duration::from_secs(29));
    assert_eq!(d.to, 4);
    let d = c.decide(&r, &seen(4, 0, None), t0 + Duration::from_secs(31));
    assert_eq!(d.to, 4, "the delay restarted at 29 s");
    let d = c.decide(&r, &seen(4, 0, None), t0 + Duration::from_secs(61));
    assert_eq!((d.to, d.target), (1, 1));
    assert!(d.reason.starts_with("scale in"), "{}", d.reason);
}

#[test]
fn an_instance_failing_max_fails_times_within_fail_timeout_is_out_for_fail_timeout() {
    let policy = FailPolicy {
        max_fails: 2,
        fail_timeout: Duration::from_secs(10),
    };
    let t0 = Instant::now();
    let mut f = FailState::default();
    assert!(!f.failed(policy, t0));
    assert!(f.available(t0));
    // The first failure is outside the window of the next: counting starts again.
    assert!(!f.failed(policy, t0 + Duration::from_secs(11)));
    assert!(f.failed(policy, t0 + Duration::from_secs(12)));
    assert!(!f.available(t0 + Duration::from_secs(13)));
    assert!(f.available(t0 + Duration::from_secs(22)));
    // max_fails 0: never taken out (as nginx).
    let mut never = FailState::default();
    let off = FailPolicy {
        max_fails: 0,
        ..policy
    };
    assert!(!never.failed(off, t0) && !never.failed(off, t0));
    assert!(never.available(t0));
}

async fn health(host: &flowgrid_host::Host) -> Value {
    let (_, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    serde_json::from_str(&body).expect("health is JSON")
}

#[tokio::test]
async fn a_queue_backlog_scales_its_app_out_and_idle_scales_it_in_while_another_app_stays_at_its_minimum()
 {
    let root = AppRoot::with_host_json(
        &[("worker", work_app(false)), ("edge", echo_app())],
        json!({
            "FLOWGRID_INSTANCES": "1..4",
            "FLOWGRID_SCALE_INTERVAL_MS": "100",
            "FLOWGRID_SCALE_IN_AFTER_MS": "700",
        }),
        json!({"extensions": {"serviceBus": {"maxConcurrentCalls": 2}}}),
    );
    let host = root.start().await;
    for _ in 0..40 {
        send(&host, "slow:200");
    }
    let out = eventually("worker scaled out", || async {
        let h = health(&host).await;
        (h["apps"]["worker"]["scale"]["instances"].as_u64()? >= 2).then_some(h)
    })
    .await;
    let decisions = out["apps"]["worker"]["scale"]["decisions"]
        .as_array()
        .unwrap();
    let first = &decisions[0];
    assert_eq!(first["from"], 1, "{first}");
    assert!(first["to"].as_u64().unwrap() >= 2, "{first}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("messages ÷ maxConcurrentCalls 2"),
        "{first}"
    );
    let lines = root.wait_for_lines("40 messages", |l| l.len() >= 40).await;
    assert!(
        lines.iter().any(|l| !l.ends_with("instance=0")),
        "an added instance took messages"
    );
    let back = eventually("worker scaled in", || async {
        let h = health(&host).await;
        (h["apps"]["worker"]["scale"]["instances"] == 1).then_some(h)
    })
    .await;
    let decisions = back["apps"]["worker"]["scale"]["decisions"]
        .as_array()
        .unwrap();
    let last = decisions.last().unwrap();
    assert_eq!(last["to"], 1, "{last}");
    assert!(
        last["reason"].as_str().unwrap().starts_with("scale in"),
        "{last}"
    );
    assert_eq!(back["apps"]["worker"]["scale"]["target"], 1);
    // The other app never left its minimum and decided nothing.
    assert_eq!(back["apps"]["edge"]["scale"]["instances"], 1);
    assert_eq!(
        back["apps"]["edge"]["scale"]["decisions"],
        json!([]),
        "{back}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn requests_in_flight_scale_an_app_out_by_its_http_concurrency() {
    let root = AppRoot::new(
        &[("edge", echo_app())],
        json!({
            "FLOWGRID_INSTANCES": "edge=1..3",
            "FLOWGRID_HTTP_CONCURRENCY": "edge=2",
            "FLOWGRID_SCALE_INTERVAL_MS": "100",
        }),
    );
    let host = root.start().await;
    let url = format!("{}/api/echo/slow", host.url());
    let mut slow = Vec::new();
    for _ in 0..6 {
        let u = url.clone();
        slow.push(tokio::spawn(async move {
            request("GET", &u, &[("x-fixture-sleep-ms", "2500")], None)
                .await
                .0
        }));
    }
    let h = eventually("edge scaled out to 3", || async {
        let h = health(&host).await;
        (h["apps"]["edge"]["scale"]["instances"] == 3).then_some(h)
    })
    .await;
    let d = &h["apps"]["edge"]["scale"]["decisions"][0];
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("in flight ÷ 2 per instance"),
        "{d}"
    );
    assert_eq!(h["apps"]["edge"]["scale"]["max"], 3);
    for t in slow {
        assert_eq!(t.await.unwrap(), 200);
    }
    host.shutdown().await;
}

#[test]
fn the_strategies_choose_as_nginx_does() {
    use flowgrid_host::balance::{Balancer, Candidate, Strategy};
    let c = |ordinal, in_flight| Candidate { ordinal, in_flight };
    let three = [c(0, 0), c(1, 0), c(2, 0)];
    let rr = Balancer::new(Strategy::RoundRobin);
    let picks: Vec<usize> = (0..6)
        .map(|_| rr.choose(&three, None, 3).unwrap())
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    let lc = Balancer::new(Strategy::LeastConnections);
    assert_eq!(lc.choose(&[c(0, 3), c(1, 1), c(2, 2)], None, 3), Some(1));
    let tied: Vec<usize> = (0..4)
        .map(|_| lc.choose(&[c(0, 1), c(1, 0), c(2, 0)], None, 3).unwrap())
        .collect();
    assert!(tied.iter().all(|i| *i != 0), "{tied:?}");
    assert!(
        tied.contains(&1) && tied.contains(&2),
        "ties take turns: {tied:?}"
    );
    // IP hash: one client, one instance; when it is out, the next ordinal, and back after.
    let ip = Balancer::new(Strategy::IpHash);
    let home = ip.choose(&three, Some("10.1.2.3"), 3).unwrap();
    for _ in 0..5 {
        assert_eq!(ip.choose(&three, Some("10.1.2.3"), 3), Some(home));
    }
    let without: Vec<Candidate> = three
        .iter()
        .copied()
        .filter(|x| x.ordinal != home)
        .collect();
    let moved = without[ip.choose(&without, Some("10.1.2.3"), 3).unwrap()].ordinal;
    assert_eq!(moved, if home == 2 { 0 } else { home + 1 });
    assert_eq!(ip.choose(&three, Some("10.1.2.3"), 3), Some(home));
    // Smooth weighted round robin, weights 5:1:1 (nginx's example order: a a b a c a a).
    let w = Balancer::new(Strategy::parse("weighted-round-robin:5:1:1").unwrap());
    let order: String = (0..7)
        .map(|_| char::from(b'a' + w.choose(&three, None, 3).unwrap() as u8))
        .collect();
    assert_eq!(order, "aabacaa");
    assert_eq!(
        Strategy::parse("least-conn").unwrap().name(),
        "least-connections"
    );
    assert!(Strategy::parse("weighted:101").is_err());
}
