//! `POST /api/analytics/track`: batches of tenants' own events, all or none.

use chrono::{Duration, Utc};
use flowgrid_http::auth::Role;
use serde_json::json;

use crate::{start, tick};

#[tokio::test]
async fn a_batch_is_stored_once_and_counted_as_custom_events() {
    let app = start().await;
    let token = app.token("acme", Role::Editor);
    let now = Utc::now();
    let batch = json!({"events": [
        {"type": "clicked", "timestamp": now, "id": "c-1", "numbers": {"items": 3}},
        {"type": "viewed", "timestamp": now - Duration::hours(2), "id": "c-2", "properties": {"page": "home"}},
    ]});
    let r = app
        .post_json("/api/analytics/track", &token, batch.clone())
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["accepted"], 2);
    let again = app.post_json("/api/analytics/track", &token, batch).await;
    assert_eq!(again.body["accepted"], 0);
    assert_eq!(again.body["duplicates"], 2);
    tick(&app).await;
    let u = app
        .get("/api/analytics/usage/acme?granularity=month", &token)
        .await;
    assert_eq!(u.body["totals"]["customEvents"], 2, "{}", u.text);
}

#[tokio::test]
async fn one_bad_item_refuses_the_whole_batch_naming_item_and_field() {
    let app = start().await;
    let token = app.token("acme", Role::Editor);
    let now = Utc::now();
    let too_big = "x".repeat(5_000);
    for (bad, field) in [
        (
            json!({"type": "ok", "timestamp": now - Duration::days(30)}),
            "events[1].timestamp",
        ),
        (
            json!({"type": "no spaces", "timestamp": now}),
            "events[1].type",
        ),
        (
            json!({"type": "ok", "timestamp": now, "properties": {"blob": too_big}}),
            "events[1].properties",
        ),
        (
            json!({"type": "ok", "timestamp": now, "agentId": "nope"}),
            "events[1].agentId",
        ),
    ] {
        let batch = json!({"events": [{"type": "fine", "timestamp": now}, bad]});
        let r = app.post_json("/api/analytics/track", &token, batch).await;
        assert_eq!(r.status, 422, "{field}: {}", r.text);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.text);
    }
    let wrong_type =
        json!({"events": [{"type": "fine", "timestamp": now}, {"type": 5, "timestamp": now}]});
    let r = app
        .post_json("/api/analytics/track", &token, wrong_type)
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("events[1].type"), "{}", r.text);
    let many: Vec<_> = (0..101)
        .map(|_| json!({"type": "x", "timestamp": now}))
        .collect();
    let r = app
        .post_json("/api/analytics/track", &token, json!({"events": many}))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["errors"][0]["field"], "events");
    // Nothing of any refused batch was stored.
    tick(&app).await;
    let u = app
        .get("/api/analytics/usage/acme?granularity=month", &token)
        .await;
    assert_eq!(u.body["totals"]["customEvents"], 0, "{}", u.text);
    assert_eq!(u.body["totals"]["events"], 0);
    // Viewers read but do not track.
    let viewer = app.token("acme", Role::Viewer);
    let r = app
        .post_json(
            "/api/analytics/track",
            &viewer,
            json!({"events": [{"type": "x", "timestamp": now}]}),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn tracked_numbers_are_summed_per_type_and_name_overall_and_per_agent() {
    let app = start().await;
    let token = app.token("acme", Role::Editor);
    let agent = flowgrid_domain::AgentId::new().to_string();
    let now = Utc::now() - Duration::minutes(1);
    let batch = json!({"events": [
        {"type": "checkout", "timestamp": now, "agentId": agent, "numbers": {"amount": 12.5, "items": 2}},
        {"type": "checkout", "timestamp": now, "numbers": {"amount": 7.25, "items": 1}},
        {"type": "checkout", "timestamp": now, "agentId": agent, "numbers": {"amount": -1.75}},
        {"type": "viewed", "timestamp": now},
    ]});
    let r = app.post_json("/api/analytics/track", &token, batch).await;
    assert_eq!(r.status, 202, "{}", r.text);
    tick(&app).await;
    let u = app
        .get("/api/analytics/usage/acme?granularity=month", &token)
        .await;
    let custom = &u.body["totals"]["custom"];
    assert_eq!(custom["checkout"]["events"], 3, "{}", u.text);
    assert_eq!(
        custom["checkout"]["numbers"]["amount"],
        json!({"count": 3, "sum": 18.0, "min": -1.75, "max": 12.5})
    );
    assert_eq!(
        custom["checkout"]["numbers"]["items"],
        json!({"count": 2, "sum": 3.0, "min": 1.0, "max": 2.0})
    );
    assert_eq!(custom["viewed"], json!({"events": 1, "numbers": {}}));
    // The same sums in every granularity.
    for g in ["hour", "day"] {
        let u = app
            .get(
                &format!("/api/analytics/usage/acme?granularity={g}"),
                &token,
            )
            .await;
        assert_eq!(&u.body["totals"]["custom"], custom, "{g}");
    }
    // Per agent: only the agent's events.
    let by_agent = app
        .get(
            "/api/analytics/usage/acme?granularity=month&groupBy=agent",
            &token,
        )
        .await;
    let series = by_agent.body["series"].as_array().expect("series");
    let mine: Vec<_> = series.iter().filter(|p| p["key"] == agent).collect();
    assert_eq!(mine.len(), 1, "{}", by_agent.text);
    assert_eq!(
        mine[0]["custom"]["checkout"]["numbers"]["amount"],
        json!({"count": 2, "sum": 10.75, "min": -1.75, "max": 12.5})
    );
    // Another tenant sees none of it.
    let other = app.token("globex", Role::Viewer);
    let theirs = app
        .get("/api/analytics/usage/globex?granularity=month", &other)
        .await;
    assert!(
        theirs.body["totals"].get("custom").is_none(),
        "{}",
        theirs.text
    );
}
