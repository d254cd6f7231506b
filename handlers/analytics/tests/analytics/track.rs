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
