//! Conformance checks for [`JobStore`] backends.

use chrono::{Duration, Utc};
use flowgrid_domain::Error;
use flowgrid_domain::agent::ModelSettings;
use flowgrid_domain::plan::Plan;
use flowgrid_domain::store::jobs::{Created, JobStore};
use flowgrid_domain::store::{Job, JobId, JobQuery, JobStatus};
use flowgrid_domain::{AgentId, TenantId};
use serde_json::json;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

/// A queued job of `agent` in `tenant`, created `age_secs` seconds ago.
pub fn new_job(tenant_id: &TenantId, agent: AgentId, age_secs: i64, key: Option<&str>) -> Job {
    let at = Utc::now() - Duration::seconds(age_secs);
    Job {
        id: JobId::new(),
        tenant_id: tenant_id.clone(),
        agent_id: agent,
        agent_version: 1,
        trigger: "manual".into(),
        input: json!({"n": age_secs}),
        status: JobStatus::Queued,
        plan: Plan {
            format: 1,
            agent_id: agent,
            agent_version: 1,
            instructions: "x".into(),
            model: ModelSettings::default(),
            input_schema: None,
            steps: Vec::new(),
        },
        steps: Vec::new(),
        next_step: Some(0),
        output: None,
        error: None,
        attempts: 0,
        lease_until: None,
        lease_owner: None,
        idempotency_key: key.map(str::to_owned),
        request_hash: None,
        created_by: "tester".into(),
        created_at: at,
        started_at: None,
        finished_at: None,
        updated_at: at,
        etag: String::new(),
    }
}

async fn created(store: &dyn JobStore, job: &Job) -> Job {
    match store.create(job).await.expect("create") {
        Created::New(j) => j,
        Created::Existing(j) => panic!("expected a new job, got {j:?}"),
    }
}

async fn with_status(store: &dyn JobStore, job: Job, status: JobStatus) -> Job {
    let mut next = job.clone();
    next.status = status;
    if status == JobStatus::Running {
        next.lease_until = Some(Utc::now() + Duration::seconds(60));
        next.lease_owner = Some("w".into());
    }
    store.replace(&next, &job.etag).await.expect("replace")
}

pub async fn create_then_get_returns_the_job_with_an_etag(store: &dyn JobStore) {
    let t = tenant("t1");
    let job = created(store, &new_job(&t, AgentId::new(), 0, None)).await;
    assert!(!job.etag.is_empty());
    assert_eq!(store.get(&t, job.id).await.expect("get"), job);
    assert!(matches!(
        store.get(&t, JobId::new()).await,
        Err(Error::NotFound)
    ));
}

pub async fn another_tenants_job_is_not_found_anywhere(store: &dyn JobStore) {
    let (a, b) = (tenant("ta"), tenant("tb"));
    let job = created(store, &new_job(&a, AgentId::new(), 0, None)).await;
    assert!(matches!(store.get(&b, job.id).await, Err(Error::NotFound)));
    let mut forged = job.clone();
    forged.tenant_id = b.clone();
    assert!(matches!(
        store.replace(&forged, &job.etag).await,
        Err(Error::NotFound)
    ));
    let page = store
        .list(
            &b,
            &JobQuery {
                limit: 50,
                ..JobQuery::default()
            },
        )
        .await
        .expect("list");
    assert!(page.items.is_empty());
    assert_eq!(store.counts(&b).await.expect("counts"), (0, 0));
    assert_eq!(
        store.get(&a, job.id).await.expect("get").status,
        JobStatus::Queued
    );
}

pub async fn replace_with_a_stale_etag_fails_and_changes_nothing(store: &dyn JobStore) {
    let t = tenant("t1");
    let job = created(store, &new_job(&t, AgentId::new(), 0, None)).await;
    let running = with_status(store, job.clone(), JobStatus::Running).await;
    assert_ne!(running.etag, job.etag);
    let mut stale = job.clone();
    stale.status = JobStatus::Cancelled;
    assert!(matches!(
        store.replace(&stale, &job.etag).await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(
        store.get(&t, job.id).await.expect("get").status,
        JobStatus::Running
    );
}

pub async fn concurrent_claims_let_exactly_one_win(store: &dyn JobStore) {
    let t = tenant("t1");
    let job = created(store, &new_job(&t, AgentId::new(), 0, None)).await;
    let etag = job.etag.as_str();
    let base = &job;
    let claims = (0..8).map(|i| {
        let mut next = base.clone();
        next.status = JobStatus::Running;
        next.lease_owner = Some(format!("w{i}"));
        async move { store.replace(&next, etag).await }
    });
    let results = futures::future::join_all(claims).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::PreconditionFailed))
    );
}

pub async fn an_idempotency_key_returns_the_existing_job_within_the_window_per_tenant(
    store: &dyn JobStore,
) {
    let (a, b) = (tenant("ta"), tenant("tb"));
    let agent = AgentId::new();
    let first = created(store, &new_job(&a, agent, 0, Some("k"))).await;
    match store
        .create(&new_job(&a, agent, 0, Some("k")))
        .await
        .expect("create")
    {
        Created::Existing(j) => assert_eq!(j.id, first.id),
        Created::New(j) => panic!("a second job for the same key: {j:?}"),
    }
    created(store, &new_job(&b, agent, 0, Some("k"))).await;
    created(store, &new_job(&a, agent, 0, Some("other"))).await;
    assert_eq!(store.counts(&a).await.expect("counts"), (2, 0));
}

pub async fn an_expired_idempotency_key_may_be_reused(store: &dyn JobStore) {
    let t = tenant("t1");
    let agent = AgentId::new();
    let old = created(store, &new_job(&t, agent, 25 * 3600, Some("k"))).await;
    let fresh = created(store, &new_job(&t, agent, 0, Some("k"))).await;
    assert_ne!(old.id, fresh.id);
    assert_eq!(
        store.get(&t, old.id).await.expect("old job kept").id,
        old.id
    );
}

pub async fn list_is_newest_first_filters_and_pages(store: &dyn JobStore) {
    let t = tenant("t1");
    let (a1, a2) = (AgentId::new(), AgentId::new());
    let mut ids = Vec::new();
    for i in 0..5 {
        let agent = if i % 2 == 0 { a1 } else { a2 };
        ids.push(created(store, &new_job(&t, agent, 100 - i, None)).await);
    }
    with_status(store, ids[1].clone(), JobStatus::Running).await;
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list(
                &t,
                &JobQuery {
                    limit: 2,
                    continuation_token: token.clone(),
                    ..JobQuery::default()
                },
            )
            .await
            .expect("list");
        seen.extend(page.items.iter().map(|j| j.id));
        match page.continuation_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let expected: Vec<JobId> = ids.iter().rev().map(|j| j.id).collect();
    assert_eq!(seen, expected, "newest first, no gaps or repeats");
    let of_a1 = store
        .list(
            &t,
            &JobQuery {
                agent_id: Some(a1),
                limit: 50,
                ..JobQuery::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(of_a1.items.len(), 3);
    let running = store
        .list(
            &t,
            &JobQuery {
                status: Some(JobStatus::Running),
                limit: 50,
                ..JobQuery::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(
        running.items.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1].id]
    );
    let forged = store
        .list(
            &t,
            &JobQuery {
                limit: 2,
                continuation_token: Some("forged".into()),
                ..JobQuery::default()
            },
        )
        .await;
    assert!(matches!(forged, Err(Error::BadRequest(_))));
}

pub async fn counts_oldest_queued_and_stale_jobs(store: &dyn JobStore) {
    let t = tenant("t1");
    let agent = AgentId::new();
    let old_queued = created(store, &new_job(&t, agent, 300, None)).await;
    let new_queued = created(store, &new_job(&t, agent, 0, None)).await;
    let running = created(store, &new_job(&t, agent, 200, None)).await;
    let mut expired = running.clone();
    expired.status = JobStatus::Running;
    expired.lease_until = Some(Utc::now() - Duration::seconds(5));
    store
        .replace(&expired, &running.etag)
        .await
        .expect("replace");
    let live = created(store, &new_job(&t, agent, 100, None)).await;
    with_status(store, live, JobStatus::Running).await;
    assert_eq!(store.counts(&t).await.expect("counts"), (2, 2));
    assert_eq!(
        store.oldest_queued(&t, 1).await.expect("oldest"),
        vec![old_queued.id]
    );
    let now = Utc::now();
    let stale = store
        .stale(now, now - Duration::seconds(60), 10)
        .await
        .expect("stale");
    let ids: Vec<JobId> = stale.iter().map(|s| s.id).collect();
    assert!(
        ids.contains(&old_queued.id) && ids.contains(&running.id),
        "{stale:?}"
    );
    assert!(
        !ids.contains(&new_queued.id),
        "queued for less than a minute"
    );
    assert_eq!(ids.len(), 2, "a live lease is not stale");
}

pub async fn agent_stats_count_runs_since_and_running(store: &dyn JobStore) {
    let t = tenant("t1");
    let agent = AgentId::new();
    let empty = store
        .agent_stats(&t, agent, Utc::now() - Duration::hours(24))
        .await
        .expect("stats");
    assert_eq!(
        (empty.last_run_at, empty.runs_since, empty.running),
        (None, 0, 0)
    );
    let ancient = created(store, &new_job(&t, agent, 48 * 3600, None)).await;
    with_status(store, ancient, JobStatus::Succeeded).await;
    let ok = created(store, &new_job(&t, agent, 30, None)).await;
    with_status(store, ok, JobStatus::Succeeded).await;
    let bad = created(store, &new_job(&t, agent, 20, None)).await;
    with_status(store, bad, JobStatus::Failed).await;
    let run = created(store, &new_job(&t, agent, 10, None)).await;
    with_status(store, run, JobStatus::Running).await;
    created(store, &new_job(&t, AgentId::new(), 0, None)).await;
    let stats = store
        .agent_stats(&t, agent, Utc::now() - Duration::hours(24))
        .await
        .expect("stats");
    assert_eq!(stats.runs_since, 3);
    assert_eq!(stats.finished_since, 2);
    assert_eq!(stats.succeeded_since, 1);
    assert_eq!(stats.running, 1);
    assert!(stats.last_run_at.is_some());
    let other = store
        .agent_stats(&tenant("t2"), agent, Utc::now() - Duration::hours(24))
        .await
        .expect("stats");
    assert_eq!(other.runs_since, 0);
}
