//! Conformance checks for [`AgentStore`] backends.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use flowgrid_domain::Error;
use flowgrid_domain::store::{AgentQuery, AgentStore};
use flowgrid_domain::{Agent, AgentId, AgentInput, AgentStatus, TenantId};
use flowgrid_http::etag::Condition;
use serde_json::json;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

/// A valid new agent named `name` in `tenant`, created `age_secs` seconds ago.
pub fn new_agent(tenant_id: &TenantId, name: &str, age_secs: i64) -> Agent {
    let input: AgentInput = serde_json::from_value(
        json!({"name": name, "definition": {"instructions": format!("be {name}")}}),
    )
    .expect("input");
    Agent::create(
        tenant_id.clone(),
        input.validate().expect("valid"),
        "tester",
        Utc::now() - Duration::seconds(age_secs),
    )
}

fn renamed(agent: &Agent, name: &str) -> Agent {
    let input: AgentInput =
        serde_json::from_value(json!({"name": name, "definition": {"instructions": "changed"}}))
            .expect("input");
    agent.replaced(input.validate().expect("valid"), "editor", Utc::now())
}

fn query(limit: u32) -> AgentQuery {
    AgentQuery {
        limit,
        ..AgentQuery::default()
    }
}

pub async fn insert_then_get_returns_the_agent_with_an_etag(store: &dyn AgentStore) {
    let t = tenant("t1");
    let stored = store
        .insert(&new_agent(&t, "alpha", 0))
        .await
        .expect("insert");
    assert!(!stored.etag.is_empty());
    let read = store.get(&t, stored.id).await.expect("get");
    assert_eq!(read, stored);
    assert!(matches!(
        store.get(&t, AgentId::new()).await,
        Err(Error::NotFound)
    ));
}

pub async fn another_tenants_agent_is_not_found_anywhere(store: &dyn AgentStore) {
    let (a, b) = (tenant("ta"), tenant("tb"));
    let agent = store
        .insert(&new_agent(&a, "secret", 0))
        .await
        .expect("insert");
    assert!(matches!(
        store.get(&b, agent.id).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.version(&b, agent.id, 1).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.versions(&b, agent.id, 10, None).await,
        Err(Error::NotFound)
    ));
    let mut forged = renamed(&agent, "stolen");
    forged.tenant_id = b.clone();
    assert!(matches!(
        store.replace(&forged, &agent.etag).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.delete(&b, agent.id, None).await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        store.get(&a, agent.id).await.expect("still there"),
        agent,
        "nothing changed for the owner"
    );
}

pub async fn names_are_unique_per_tenant_case_insensitively(store: &dyn AgentStore) {
    let (a, b) = (tenant("ua"), tenant("ub"));
    store
        .insert(&new_agent(&a, "Triage", 0))
        .await
        .expect("first");
    assert!(matches!(
        store.insert(&new_agent(&a, "triage", 0)).await,
        Err(Error::Conflict(_))
    ));
    store
        .insert(&new_agent(&b, "triage", 0))
        .await
        .expect("another tenant may use the name");
    assert_eq!(
        store.list(&a, &query(10)).await.expect("list").items.len(),
        1
    );
}

pub async fn replace_with_the_current_etag_records_the_next_version(store: &dyn AgentStore) {
    let t = tenant("r1");
    let v1 = store
        .insert(&new_agent(&t, "one", 0))
        .await
        .expect("insert");
    let v2 = store
        .replace(&renamed(&v1, "two"), &v1.etag)
        .await
        .expect("replace");
    assert_eq!(v2.version, 2);
    assert_ne!(v2.etag, v1.etag);
    assert_eq!(store.get(&t, v1.id).await.expect("get").name, "two");
    let old = store.version(&t, v1.id, 1).await.expect("version 1 kept");
    assert_eq!(old.name, "one");
    assert_eq!(
        store.version(&t, v1.id, 2).await.expect("version 2").name,
        "two"
    );
    assert!(matches!(
        store.version(&t, v1.id, 3).await,
        Err(Error::NotFound)
    ));
}

pub async fn replace_with_a_stale_etag_fails_and_changes_nothing(store: &dyn AgentStore) {
    let t = tenant("r2");
    let v1 = store
        .insert(&new_agent(&t, "one", 0))
        .await
        .expect("insert");
    let v2 = store
        .replace(&renamed(&v1, "two"), &v1.etag)
        .await
        .expect("replace");
    let stale = renamed(&v1, "three");
    assert!(matches!(
        store.replace(&stale, &v1.etag).await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(store.get(&t, v1.id).await.expect("get"), v2);
    let mut gone = new_agent(&t, "never-stored", 0);
    gone.version = 2;
    assert!(matches!(
        store.replace(&gone, "x").await,
        Err(Error::NotFound)
    ));
}

pub async fn replace_onto_a_taken_name_conflicts(store: &dyn AgentStore) {
    let t = tenant("r3");
    store
        .insert(&new_agent(&t, "taken", 0))
        .await
        .expect("insert");
    let other = store
        .insert(&new_agent(&t, "other", 0))
        .await
        .expect("insert");
    assert!(matches!(
        store.replace(&renamed(&other, "TAKEN"), &other.etag).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.get(&t, other.id).await.expect("get"),
        other,
        "nothing changed"
    );
    assert!(
        matches!(store.version(&t, other.id, 2).await, Err(Error::NotFound)),
        "no history entry"
    );
}

pub async fn concurrent_replaces_from_one_version_let_exactly_one_win(store: &dyn AgentStore) {
    let t = tenant("r4");
    let v1 = store
        .insert(&new_agent(&t, "race", 0))
        .await
        .expect("insert");
    let attempts: Vec<_> = (0..8).map(|i| renamed(&v1, &format!("race-{i}"))).collect();
    let results = futures_join(store, &attempts, &v1.etag).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(Error::PreconditionFailed))),
        "{results:?}"
    );
    assert_eq!(store.get(&t, v1.id).await.expect("get").version, 2);
}

/// Runs every replace at once (all polled together), not one after another.
async fn futures_join(
    store: &dyn AgentStore,
    attempts: &[Agent],
    etag: &str,
) -> Vec<Result<Agent, Error>> {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    type Pending<'a> = Pin<Box<dyn Future<Output = Result<Agent, Error>> + Send + 'a>>;
    let mut pending: Vec<Option<Pending<'_>>> = attempts
        .iter()
        .map(|a| Some(store.replace(a, etag)))
        .collect();
    let mut results: Vec<Option<Result<Agent, Error>>> = attempts.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(fut) = slot
                && let Poll::Ready(r) = fut.as_mut().poll(cx)
            {
                *result = Some(r);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

pub async fn list_is_newest_first_and_pages_without_gaps_or_repeats(store: &dyn AgentStore) {
    let t = tenant("l1");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            store
                .insert(&new_agent(&t, &format!("agent-{i}"), 100 - i))
                .await
                .expect("insert")
                .id,
        );
    }
    ids.reverse(); // newest first
    let mut seen = Vec::new();
    let mut q = query(3);
    let mut pages = 0;
    loop {
        let page = store.list(&t, &q).await.expect("list");
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|a| a.id));
        match page.continuation_token {
            Some(token) => q.continuation_token = Some(token),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
}

pub async fn list_filters_by_status_and_name_text(store: &dyn AgentStore) {
    let t = tenant("l2");
    store
        .insert(&new_agent(&t, "Incident triage", 0))
        .await
        .expect("insert");
    store
        .insert(&new_agent(&t, "100% coverage", 0))
        .await
        .expect("insert");
    let mut active = new_agent(&t, "release notes", 0);
    active.status = AgentStatus::Active;
    store.insert(&active).await.expect("insert");

    let by_status = store
        .list(
            &t,
            &AgentQuery {
                status: Some(AgentStatus::Active),
                limit: 10,
                ..AgentQuery::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(
        by_status
            .items
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["release notes"]
    );

    assert_eq!(
        names(store, &t, "TRIAGE").await,
        HashSet::from(["Incident triage".to_owned()])
    );
    assert_eq!(
        names(store, &t, "%").await,
        HashSet::from(["100% coverage".to_owned()]),
        "% is literal"
    );
    assert_eq!(names(store, &t, "_").await, HashSet::new(), "_ is literal");
}

async fn names(store: &dyn AgentStore, t: &TenantId, text: &str) -> HashSet<String> {
    let q = AgentQuery {
        name_contains: Some(text.into()),
        limit: 10,
        ..AgentQuery::default()
    };
    store
        .list(t, &q)
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|a| a.name)
        .collect()
}

pub async fn list_never_shows_another_tenants_agents(store: &dyn AgentStore) {
    let (a, b) = (tenant("la"), tenant("lb"));
    store
        .insert(&new_agent(&a, "mine", 0))
        .await
        .expect("insert");
    store
        .insert(&new_agent(&b, "theirs", 0))
        .await
        .expect("insert");
    let page = store.list(&a, &query(50)).await.expect("list");
    assert_eq!(page.items.len(), 1);
    assert!(page.items.iter().all(|x| x.tenant_id == a));
    let search = store
        .list(
            &a,
            &AgentQuery {
                name_contains: Some("theirs".into()),
                limit: 50,
                ..AgentQuery::default()
            },
        )
        .await
        .expect("list");
    assert!(search.items.is_empty());
}

pub async fn a_forged_continuation_token_is_a_bad_request(store: &dyn AgentStore) {
    let t = tenant("f1");
    let q = AgentQuery {
        continuation_token: Some("not a token!".into()),
        limit: 5,
        ..AgentQuery::default()
    };
    assert!(matches!(
        store.list(&t, &q).await,
        Err(Error::BadRequest(_))
    ));
}

pub async fn delete_honours_if_match_and_removes_the_history(store: &dyn AgentStore) {
    let t = tenant("d1");
    let v1 = store
        .insert(&new_agent(&t, "doomed", 0))
        .await
        .expect("insert");
    let v2 = store
        .replace(&renamed(&v1, "doomed-2"), &v1.etag)
        .await
        .expect("replace");
    let stale = Condition::Tags(vec![v1.etag.clone()]);
    assert!(matches!(
        store.delete(&t, v1.id, Some(&stale)).await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(store.get(&t, v1.id).await.expect("still there"), v2);
    store
        .delete(&t, v1.id, Some(&Condition::Tags(vec![v2.etag.clone()])))
        .await
        .expect("delete");
    assert!(matches!(store.get(&t, v1.id).await, Err(Error::NotFound)));
    assert!(matches!(
        store.version(&t, v1.id, 1).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.delete(&t, v1.id, None).await,
        Err(Error::NotFound)
    ));
    store
        .insert(&new_agent(&t, "doomed", 0))
        .await
        .expect("the name is free again");
}

pub async fn versions_are_listed_newest_first_and_paged(store: &dyn AgentStore) {
    let t = tenant("v1");
    let mut current = store.insert(&new_agent(&t, "v", 0)).await.expect("insert");
    for i in 2..=5 {
        current = store
            .replace(&renamed(&current, &format!("v{i}")), &current.etag)
            .await
            .expect("replace");
    }
    let first = store
        .versions(&t, current.id, 2, None)
        .await
        .expect("page 1");
    assert_eq!(
        first.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        [5, 4]
    );
    let token = first.continuation_token.expect("more pages");
    let second = store
        .versions(&t, current.id, 2, Some(&token))
        .await
        .expect("page 2");
    assert_eq!(
        second.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2]
    );
    let third = store
        .versions(&t, current.id, 2, second.continuation_token.as_deref())
        .await
        .expect("page 3");
    assert_eq!(
        third.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1]
    );
    assert!(third.continuation_token.is_none());
}

pub async fn scheduled_lists_agents_with_a_schedule_across_tenants(store: &dyn AgentStore) {
    use flowgrid_domain::Schedule;
    let every_minute = || Some(Schedule::parse("0 * * * * *").expect("schedule"));
    let mut wanted = Vec::new();
    for t in [tenant("sa"), tenant("sb")] {
        let mut on = new_agent(&t, "on a schedule", 30);
        on.schedule = every_minute();
        on.status = AgentStatus::Active;
        let on = store.insert(&on).await.expect("insert");
        wanted.push((t.clone(), on.id));
        store
            .insert(&new_agent(&t, "no schedule", 20))
            .await
            .expect("insert");
        let mut off = new_agent(&t, "disabled", 10);
        off.schedule = every_minute();
        off.status = AgentStatus::Disabled;
        store.insert(&off).await.expect("insert");
    }
    let found = store.scheduled(100).await.expect("scheduled");
    let mut got: Vec<(TenantId, AgentId)> =
        found.iter().map(|a| (a.tenant_id.clone(), a.id)).collect();
    got.sort_by_key(|(t, id)| (t.as_str().to_owned(), id.to_string()));
    wanted.sort_by_key(|(t, id)| (t.as_str().to_owned(), id.to_string()));
    assert_eq!(got, wanted);
    assert!(found.iter().all(|a| !a.etag.is_empty()));
    assert_eq!(store.scheduled(1).await.expect("scheduled").len(), 1);
}

/// `due` is the schedule timer's read: the active agents whose next fire time has come, across
/// tenants, and nothing else; `advance_schedule` moves a fire time on without a new version,
/// and only from the time it was read; an edit keeps an unhandled earlier fire time.
pub async fn due_lists_only_active_agents_whose_fire_time_has_come(store: &dyn AgentStore) {
    use flowgrid_domain::Schedule;
    let schedule = |s: &str| Some(Schedule::parse(s).expect("schedule"));
    let now = Utc::now();
    let mut wanted = Vec::new();
    for t in [tenant("da"), tenant("db")] {
        let mut on = new_agent(&t, "every minute", 600);
        on.schedule = schedule("0 * * * * *");
        on.status = AgentStatus::Active;
        let on = store.insert(&on).await.expect("insert");
        wanted.push((t.clone(), on.id));
        let mut yearly = new_agent(&t, "yearly", 600);
        yearly.schedule = schedule("0 0 0 1 1 *");
        yearly.status = AgentStatus::Active;
        if next_fire_of(&yearly) > now {
            store.insert(&yearly).await.expect("insert");
        }
        for (name, status) in [
            ("draft", AgentStatus::Draft),
            ("off", AgentStatus::Disabled),
        ] {
            let mut not_active = new_agent(&t, name, 600);
            not_active.schedule = schedule("0 * * * * *");
            not_active.status = status;
            store.insert(&not_active).await.expect("insert");
        }
        store
            .insert(&new_agent(&t, "no schedule", 600))
            .await
            .expect("insert");
    }
    let due = store.due(now, 100).await.expect("due");
    let mut got: Vec<(TenantId, AgentId)> = due
        .iter()
        .map(|d| (d.agent.tenant_id.clone(), d.agent.id))
        .collect();
    got.sort_by_key(|(t, id)| (t.as_str().to_owned(), id.to_string()));
    wanted.sort_by_key(|(t, id)| (t.as_str().to_owned(), id.to_string()));
    assert_eq!(got, wanted, "only the active agents whose time has come");
    assert!(
        due.iter()
            .all(|d| d.next_fire <= now && !d.agent.etag.is_empty())
    );
    assert_eq!(store.due(now, 1).await.expect("due").len(), 1, "limit");

    // Moving one on: not due now, due again later; its version and ETag stay.
    let first = &due[0];
    let later = now + Duration::hours(1);
    store
        .advance_schedule(
            &first.agent.tenant_id,
            first.agent.id,
            first.next_fire,
            Some(later),
        )
        .await
        .expect("advance");
    let after = store.due(now, 100).await.expect("due");
    assert!(after.iter().all(|d| d.agent.id != first.agent.id));
    assert_eq!(after.len(), due.len() - 1);
    let stored = store
        .get(&first.agent.tenant_id, first.agent.id)
        .await
        .expect("get");
    assert_eq!(
        stored.etag, first.agent.etag,
        "a fire time is not a version"
    );
    assert_eq!(stored.version, first.agent.version);
    let back = store
        .due(later + Duration::seconds(1), 100)
        .await
        .expect("due");
    assert!(back.iter().any(|d| d.agent.id == first.agent.id));
    // From a stale time: nothing moves.
    store
        .advance_schedule(
            &first.agent.tenant_id,
            first.agent.id,
            first.next_fire,
            None,
        )
        .await
        .expect("advance");
    assert!(
        store
            .due(later + Duration::seconds(1), 100)
            .await
            .expect("due")
            .iter()
            .any(|d| d.agent.id == first.agent.id)
    );

    // An edit keeping the schedule keeps the unhandled fire time; a draft does not fire.
    let second = &due[1];
    let mut edited = second.agent.clone();
    edited.version += 1;
    edited.description = "edited".into();
    edited.updated_at = Utc::now();
    let edited = store
        .replace(&edited, &second.agent.etag)
        .await
        .expect("replace");
    assert!(
        store
            .due(now, 100)
            .await
            .expect("due")
            .iter()
            .any(|d| d.agent.id == second.agent.id),
        "the edit kept the due time"
    );
    let mut draft = edited.clone();
    draft.version += 1;
    draft.status = AgentStatus::Draft;
    let draft = store.replace(&draft, &edited.etag).await.expect("replace");
    assert!(
        store
            .due(later, 100)
            .await
            .expect("due")
            .iter()
            .all(|d| d.agent.id != draft.id),
        "a draft does not fire"
    );
    store
        .delete(&first.agent.tenant_id, first.agent.id, None)
        .await
        .expect("delete");
    assert!(
        store
            .due(later + Duration::seconds(1), 100)
            .await
            .expect("due")
            .iter()
            .all(|d| d.agent.id != first.agent.id),
        "a deleted agent does not fire"
    );
}

fn next_fire_of(agent: &Agent) -> chrono::DateTime<Utc> {
    flowgrid_domain::store::next_fire(agent, agent.updated_at).expect("fires")
}
