//! The timers (the reaper, schedules) and the `agent-compiled` subscription, driven directly
//! and through their functions with envelope payloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::events::{AgentCompiled, CloudEvent};
use flowgrid_domain::store::{
    AgentDocument, AgentQuery, AgentStore, AgentVersionSummary, Condition, DueAgent, JobStatus,
    Page,
};
use flowgrid_domain::{Agent, AgentId, AgentInput};
use flowgrid_http::auth::Role;
use serde_json::json;

use crate::engine::transform_agent;
use crate::helpers::{ExecApp, job_id};

#[tokio::test]
async fn the_reaper_re_enqueues_lost_messages_and_fails_jobs_whose_workers_keep_dying() {
    let app = ExecApp::with(&[("FLOWGRID_JOB_MAX_CLAIMS", "2")]).await;
    let agent = app.agent("t1", transform_agent()).await;
    let token = app.token("t1", Role::Editor);
    let lost = job_id(
        &app.submit(&token, &agent, json!({"name": "x", "n": 1}), None)
            .await,
    );
    let dying = job_id(
        &app.submit(&token, &agent, json!({"name": "y", "n": 1}), None)
            .await,
    );
    app.queue.lock().unwrap().clear(); // both messages lost
    let job = app.job("t1", &dying).await;
    let mut crashed = job.clone();
    crashed.status = JobStatus::Running;
    crashed.attempts = 2;
    crashed.lease_owner = Some("dead".into());
    crashed.lease_until = Some(Utc::now() - chrono::Duration::seconds(5));
    app.stores()
        .jobs
        .replace(&crashed, &job.etag)
        .await
        .unwrap();
    // Now: the job whose workers keep dying fails with the reason, and the slot it frees is
    // offered to the tenant's oldest waiting job.
    let now_messages = app
        .state()
        .engine
        .reap(Utc::now(), Duration::from_secs(60))
        .await
        .unwrap()
        .messages;
    let failed = app.job("t1", &dying).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.error.unwrap().contains("interrupted 2 times"));
    assert_eq!(now_messages, vec![json!({"tenantId": "t1", "jobId": lost})]);
    // That message is lost too; a minute later the reaper re-enqueues the waiting job, once.
    let later = Utc::now() + chrono::Duration::seconds(120);
    let messages = app
        .state()
        .engine
        .reap(later, Duration::from_secs(60))
        .await
        .unwrap()
        .messages;
    assert_eq!(messages, vec![json!({"tenantId": "t1", "jobId": lost})]);
    let repeat = app
        .state()
        .engine
        .reap(later, Duration::from_secs(60))
        .await
        .unwrap()
        .messages;
    assert!(
        repeat.is_empty(),
        "re-enqueued at most once a period: {repeat:?}"
    );
    app.queue.lock().unwrap().extend(messages);
    app.drain().await;
    assert_eq!(app.job("t1", &lost).await.status, JobStatus::Succeeded);
    // Through the timer function too: nothing stale now, so nothing is sent.
    let (status, answer) = app
        .invoke(
            "ReapJobs",
            json!({"Data": {"timer": {}}, "Metadata": {}}),
            "r1",
        )
        .await;
    assert!(status.is_success());
    assert!(answer["Outputs"].get("out").is_none(), "{answer}");
}

#[tokio::test]
async fn a_schedule_fires_once_per_due_time_whatever_the_number_of_timer_firings() {
    let app = ExecApp::new().await;
    let agent = app
        .agent_with(
            "t1",
            json!({"name": "cron", "status": "active", "schedule": "0 * * * * *", "definition": transform_agent()}),
            600,
        )
        .await;
    let now = Utc::now();
    let first = app
        .state()
        .engine
        .run_schedules(now, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    let again = app
        .state()
        .engine
        .run_schedules(now, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    let (_, answer) = app
        .invoke(
            "RunSchedules",
            json!({"Data": {"timer": {}}, "Metadata": {}}),
            "s1",
        )
        .await;
    assert_eq!(first.len(), 1);
    assert!(again.is_empty(), "the same due time does not fire twice");
    assert!(
        answer["Outputs"]
            .get("out")
            .is_none_or(|o| o.as_array().is_some_and(|a| a.len() <= 1))
    );
    let next_minute = now + chrono::Duration::seconds(60);
    let later = app
        .state()
        .engine
        .run_schedules(next_minute, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    assert_eq!(later.len(), 1, "the next due time fires");
    let tenant = TenantId::parse("t1").unwrap();
    let jobs = app
        .stores()
        .jobs
        .list(
            &tenant,
            &flowgrid_domain::store::JobQuery {
                agent_id: Some(agent.id),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(jobs.items.iter().all(|j| j.trigger == "schedule"));
    assert!((2..=3).contains(&jobs.items.len()), "{}", jobs.items.len());
}

#[tokio::test]
async fn agent_compiled_messages_pin_the_version_runs_use() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", transform_agent()).await;
    let compiled = AgentCompiled {
        agent_id: agent.id,
        version: 1,
    };
    let tenant = TenantId::parse("t1").unwrap();
    let msg = CloudEvent::new("design", &tenant, Utc::now(), compiled)
        .to_json()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let envelope = json!({"Data": {"msg": base64::engine::general_purpose::STANDARD.encode(&msg)}, "Metadata": {}});
    let (status, _) = app.invoke("AgentCompiled", envelope.clone(), "c1").await;
    assert!(status.is_success());
    app.invoke("AgentCompiled", envelope, "c2").await; // a duplicate is harmless
    let marked = app.stores().agents.get(&tenant, agent.id).await.unwrap();
    assert_eq!(marked.compiled_version, Some(1));
    assert_eq!(marked.version, 2, "one new version, not two");
    let id = job_id(
        &app.submit(
            &app.token("t1", Role::Editor),
            &marked,
            json!({"name": "z", "n": 0}),
            None,
        )
        .await,
    );
    assert_eq!(app.job("t1", &id).await.agent_version, 1);
}

#[tokio::test]
async fn only_active_agents_fire_on_schedule() {
    let app = ExecApp::new().await;
    for status in ["draft", "disabled", "active"] {
        app.agent_with(
            "t1",
            json!({"name": status, "status": status, "schedule": "0 * * * * *", "definition": transform_agent()}),
            600,
        )
        .await;
    }
    let fired = app
        .state()
        .engine
        .run_schedules(Utc::now(), Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    assert_eq!(fired.len(), 1, "only the active agent: {fired:?}");
    let tenant = TenantId::parse("t1").unwrap();
    let jobs = app
        .stores()
        .jobs
        .list(
            &tenant,
            &flowgrid_domain::store::JobQuery {
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let active = app
        .stores()
        .agents
        .list(
            &tenant,
            &AgentQuery {
                status: Some(flowgrid_domain::AgentStatus::Active),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1);
    assert_eq!(jobs.items[0].agent_id, active.items[0].id);
}

/// An agent store that counts the agents it hands out (every read that returns agents).
struct Counting {
    inner: Arc<dyn AgentStore>,
    read: AtomicUsize,
}

impl Counting {
    fn count(&self, n: usize) {
        self.read.fetch_add(n, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl AgentStore for Counting {
    async fn insert(&self, agent: &Agent) -> flowgrid_domain::Result<Agent> {
        self.inner.insert(agent).await
    }
    async fn get(&self, tenant: &TenantId, id: AgentId) -> flowgrid_domain::Result<Agent> {
        self.count(1);
        self.inner.get(tenant, id).await
    }
    async fn get_document(
        &self,
        tenant: &TenantId,
        id: AgentId,
    ) -> flowgrid_domain::Result<AgentDocument> {
        self.count(1);
        self.inner.get_document(tenant, id).await
    }
    async fn list(
        &self,
        tenant: &TenantId,
        query: &AgentQuery,
    ) -> flowgrid_domain::Result<Page<Agent>> {
        let page = self.inner.list(tenant, query).await?;
        self.count(page.items.len());
        Ok(page)
    }
    async fn replace(&self, next: &Agent, expected_etag: &str) -> flowgrid_domain::Result<Agent> {
        self.inner.replace(next, expected_etag).await
    }
    async fn delete(
        &self,
        tenant: &TenantId,
        id: AgentId,
        if_match: Option<&Condition>,
    ) -> flowgrid_domain::Result<()> {
        self.inner.delete(tenant, id, if_match).await
    }
    async fn versions(
        &self,
        tenant: &TenantId,
        id: AgentId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> flowgrid_domain::Result<Page<AgentVersionSummary>> {
        self.inner
            .versions(tenant, id, limit, continuation_token)
            .await
    }
    async fn version(
        &self,
        tenant: &TenantId,
        id: AgentId,
        version: u32,
    ) -> flowgrid_domain::Result<Agent> {
        self.count(1);
        self.inner.version(tenant, id, version).await
    }
    async fn scheduled(&self, limit: u32) -> flowgrid_domain::Result<Vec<Agent>> {
        let agents = self.inner.scheduled(limit).await?;
        self.count(agents.len());
        Ok(agents)
    }
    async fn due(
        &self,
        now: chrono::DateTime<Utc>,
        limit: u32,
    ) -> flowgrid_domain::Result<Vec<DueAgent>> {
        let due = self.inner.due(now, limit).await?;
        self.count(due.len());
        Ok(due)
    }
    async fn advance_schedule(
        &self,
        tenant: &TenantId,
        id: AgentId,
        from: chrono::DateTime<Utc>,
        to: Option<chrono::DateTime<Utc>>,
    ) -> flowgrid_domain::Result<()> {
        self.inner.advance_schedule(tenant, id, from, to).await
    }
}

#[tokio::test]
async fn a_tick_over_ten_thousand_scheduled_agents_reads_only_the_due_ones() {
    let app = ExecApp::new().await;
    let store = app.stores().agents.clone();
    let created = Utc::now() - chrono::Duration::seconds(600);
    let tenant = TenantId::parse("t1").unwrap();
    const ALL: usize = 10_000;
    const DUE: usize = 7;
    for i in 0..ALL {
        // Most fire once a year on 1 January; DUE of them every minute.
        let schedule = if i < DUE {
            "0 * * * * *"
        } else {
            "0 0 0 1 1 *"
        };
        let input: AgentInput = serde_json::from_value(json!({
            "name": format!("agent-{i}"), "status": "active", "schedule": schedule,
            "definition": transform_agent()
        }))
        .unwrap();
        let agent = Agent::create(tenant.clone(), input.validate().unwrap(), "t", created);
        store.insert(&agent).await.unwrap();
    }
    let counting = Arc::new(Counting {
        inner: store,
        read: AtomicUsize::new(0),
    });
    let mut engine = app.state().engine.clone();
    engine.stores.agents = counting.clone();
    let now = Utc::now();
    let fired = engine
        .run_schedules(now, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    assert_eq!(fired.len(), DUE);
    let read = counting.read.load(Ordering::SeqCst);
    println!("a tick over {ALL} scheduled agents read {read} agent(s), {DUE} due");
    assert_eq!(read, DUE, "the tick read only the due agents");
    // The next tick in the same minute reads nothing: their next fire times moved on.
    counting.read.store(0, Ordering::SeqCst);
    let again = engine
        .run_schedules(now, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    assert!(again.is_empty());
    assert_eq!(counting.read.load(Ordering::SeqCst), 0);
}
