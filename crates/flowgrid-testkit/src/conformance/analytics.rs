//! Conformance checks for [`AnalyticsStore`] backends.

use chrono::{DateTime, Duration, Utc};
use flowgrid_domain::analytics::{Dimension, Granularity, RawEvent, Rollup};
use flowgrid_domain::events::{CloudEvent, PlatformEvent, StepUsage, TokenUsage};
use flowgrid_domain::job::{JobStatus, StepStatus};
use flowgrid_domain::store::AnalyticsStore;
use flowgrid_domain::store::analytics::refresh;
use flowgrid_domain::{AgentId, TenantId};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

const RETENTION: Duration = Duration::days(90);

/// A `job.finished` of `job` at `at` with one `llm` step of `tokens` in and out and `cost`.
pub fn finished(
    tenant: &TenantId,
    agent: AgentId,
    job: &str,
    at: DateTime<Utc>,
    status: JobStatus,
    tokens: u64,
    cost: u64,
) -> RawEvent {
    let event = CloudEvent::new(
        "execution",
        tenant,
        at,
        PlatformEvent::JobFinished {
            job_id: job.into(),
            agent_id: agent,
            status,
            duration_ms: 250,
            steps: vec![StepUsage {
                step_id: "ask".into(),
                kind: "llm".into(),
                status: StepStatus::Succeeded,
                attempts: 1,
                duration_ms: Some(40),
                tokens: Some(TokenUsage {
                    input: tokens,
                    output: tokens,
                    ..TokenUsage::default()
                }),
                cost_micro_usd: Some(cost),
                provider: Some("offline".into()),
                model: Some("offline-1".into()),
            }],
        },
    );
    RawEvent::of_platform(&event).expect("raw event")
}

fn hour_ago(n: i64) -> DateTime<Utc> {
    Granularity::Hour.start(Utc::now()) - Duration::hours(n) + Duration::minutes(7)
}

async fn overall(store: &dyn AnalyticsStore, t: &TenantId, g: Granularity) -> Vec<Rollup> {
    store
        .rollups(
            t,
            g,
            Utc::now() - Duration::days(70),
            Utc::now() + Duration::days(1),
            Some("overall"),
        )
        .await
        .expect("rollups")
}

/// An event stored twice is stored once: the second ingestion counts 0 and the rollups do not
/// move.
pub async fn an_event_ingested_twice_is_counted_once(store: &dyn AnalyticsStore) {
    let t = tenant("t-an-1");
    let e = finished(
        &t,
        AgentId::new(),
        "j1",
        hour_ago(1),
        JobStatus::Succeeded,
        5,
        9,
    );
    assert_eq!(
        store
            .ingest(std::slice::from_ref(&e), RETENTION)
            .await
            .expect("ingest"),
        1
    );
    assert_eq!(
        store
            .ingest(&[e.clone(), e], RETENTION)
            .await
            .expect("again"),
        0
    );
    assert_eq!(refresh(store, 100).await.expect("refresh"), 1);
    let hours = overall(store, &t, Granularity::Hour).await;
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].metrics.runs, 1);
    assert_eq!(hours[0].metrics.cost_micro_usd, 9);
    // Nothing stale is left; a second pass does nothing.
    assert_eq!(refresh(store, 100).await.expect("refresh"), 0);
}

/// Hours roll up into their day and month, exactly; per agent and per model too.
pub async fn hours_roll_up_into_days_and_months_exactly(store: &dyn AnalyticsStore) {
    let t = tenant("t-an-2");
    let (a, b) = (AgentId::new(), AgentId::new());
    let at = Granularity::Day.start(Utc::now()) - Duration::days(1) + Duration::hours(3);
    let events = vec![
        finished(&t, a, "j1", at, JobStatus::Succeeded, 10, 100),
        finished(
            &t,
            a,
            "j2",
            at + Duration::hours(5),
            JobStatus::Failed,
            20,
            200,
        ),
        finished(
            &t,
            b,
            "j3",
            at + Duration::hours(9),
            JobStatus::Succeeded,
            30,
            300,
        ),
    ];
    store.ingest(&events, RETENTION).await.expect("ingest");
    assert_eq!(refresh(store, 100).await.expect("refresh"), 3);
    let days = overall(store, &t, Granularity::Day).await;
    assert_eq!(days.len(), 1);
    let m = &days[0].metrics;
    assert_eq!((m.runs, m.failures, m.succeeded), (3, 1, 2));
    assert_eq!(
        (m.tokens.input, m.tokens.output, m.cost_micro_usd),
        (60, 60, 600)
    );
    assert_eq!(m.duration_ms.count(), 3);
    let months = overall(store, &t, Granularity::Month).await;
    assert_eq!(
        months.iter().map(|r| r.metrics.cost_micro_usd).sum::<u64>(),
        600
    );
    let agents = store
        .rollups(
            &t,
            Granularity::Day,
            at - Duration::days(1),
            at + Duration::days(1),
            Some("agent"),
        )
        .await
        .expect("agents");
    let of = |id: AgentId| {
        agents
            .iter()
            .find(|r| r.dimension == Dimension::Agent(id.to_string()))
            .map(|r| r.metrics.cost_micro_usd)
    };
    assert_eq!((of(a), of(b)), (Some(300), Some(300)));
    let models = store
        .rollups(
            &t,
            Granularity::Day,
            at - Duration::days(1),
            at + Duration::days(1),
            Some("model"),
        )
        .await
        .expect("models");
    assert_eq!(models.len(), 1);
    assert_eq!(
        models[0].dimension,
        Dimension::Model("offline/offline-1".into())
    );
    assert_eq!(models[0].metrics.llm_calls, 3);
}

/// A late event reopens its hour: the hour, its day and its month are recomputed.
pub async fn a_late_event_reopens_its_hour(store: &dyn AnalyticsStore) {
    let t = tenant("t-an-3");
    let agent = AgentId::new();
    let at = hour_ago(30);
    store
        .ingest(
            &[finished(&t, agent, "j1", at, JobStatus::Succeeded, 1, 10)],
            RETENTION,
        )
        .await
        .expect("ingest");
    refresh(store, 100).await.expect("refresh");
    store
        .ingest(
            &[finished(
                &t,
                agent,
                "j2",
                at + Duration::minutes(1),
                JobStatus::Failed,
                1,
                5,
            )],
            RETENTION,
        )
        .await
        .expect("late");
    let stale = store.stale_hours(100).await.expect("stale");
    assert!(
        stale
            .iter()
            .any(|s| s.tenant_id == t && s.hour == Granularity::Hour.start(at))
    );
    refresh(store, 100).await.expect("refresh");
    for g in [Granularity::Hour, Granularity::Day, Granularity::Month] {
        let r = overall(store, &t, g).await;
        assert_eq!(r.iter().map(|r| r.metrics.runs).sum::<u64>(), 2, "{g:?}");
        assert_eq!(
            r.iter().map(|r| r.metrics.failures).sum::<u64>(),
            1,
            "{g:?}"
        );
        assert_eq!(
            r.iter().map(|r| r.metrics.cost_micro_usd).sum::<u64>(),
            15,
            "{g:?}"
        );
    }
}

/// A mark changed after it was read is not cleared: the hour stays stale.
pub async fn a_stale_mark_that_moved_on_is_not_cleared(store: &dyn AnalyticsStore) {
    let t = tenant("t-an-4");
    let at = hour_ago(2);
    let agent = AgentId::new();
    store
        .ingest(
            &[finished(&t, agent, "j1", at, JobStatus::Succeeded, 1, 1)],
            RETENTION,
        )
        .await
        .expect("ingest");
    let read = store.stale_hours(100).await.expect("stale");
    let mine = read
        .into_iter()
        .find(|s| s.tenant_id == t)
        .expect("stale hour");
    store
        .ingest(
            &[finished(&t, agent, "j2", at, JobStatus::Succeeded, 1, 1)],
            RETENTION,
        )
        .await
        .expect("ingest");
    assert!(!store.clear_stale(&mine).await.expect("clear"));
    let now = store.stale_hours(100).await.expect("stale");
    let fresh = now
        .into_iter()
        .find(|s| s.tenant_id == t)
        .expect("still stale");
    assert!(store.clear_stale(&fresh).await.expect("clear"));
}

/// Another tenant's events and rollups are never read.
pub async fn another_tenants_events_and_rollups_are_not_seen(store: &dyn AnalyticsStore) {
    let (a, b) = (tenant("t-an-5a"), tenant("t-an-5b"));
    let at = hour_ago(1);
    // The same event id in two tenants is two events.
    let ea = finished(&a, AgentId::new(), "same", at, JobStatus::Succeeded, 1, 3);
    let eb = finished(&b, AgentId::new(), "same", at, JobStatus::Succeeded, 1, 4);
    assert_eq!(store.ingest(&[ea, eb], RETENTION).await.expect("ingest"), 2);
    refresh(store, 100).await.expect("refresh");
    let events = store
        .events(&a, at - Duration::hours(1), at + Duration::hours(1))
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert!(events.iter().all(|e| e.tenant_id == a));
    let ra = overall(store, &a, Granularity::Day).await;
    let rb = overall(store, &b, Granularity::Day).await;
    assert_eq!(ra.iter().map(|r| r.metrics.cost_micro_usd).sum::<u64>(), 3);
    assert_eq!(rb.iter().map(|r| r.metrics.cost_micro_usd).sum::<u64>(), 4);
}

/// Events past their retention are purged; younger ones stay.
pub async fn expired_events_are_purged(store: &dyn AnalyticsStore) {
    let t = tenant("t-an-6");
    let agent = AgentId::new();
    let old = finished(
        &t,
        agent,
        "old",
        Utc::now() - Duration::days(3),
        JobStatus::Succeeded,
        1,
        1,
    );
    let young = finished(
        &t,
        agent,
        "young",
        Utc::now() - Duration::hours(1),
        JobStatus::Succeeded,
        1,
        1,
    );
    store
        .ingest(&[old, young], Duration::days(2))
        .await
        .expect("ingest");
    assert!(store.purge_expired(Utc::now()).await.expect("purge") >= 1);
    let left = store
        .events(
            &t,
            Utc::now() - Duration::days(10),
            Utc::now() + Duration::hours(1),
        )
        .await
        .expect("events");
    assert_eq!(left.len(), 1);
    assert!(left[0].id.ends_with(":young"));
}
