//! Conformance checks for [`ConnectionStore`] backends.

use chrono::{Duration, Utc};
use flowgrid_domain::store::connections::{
    CallRecord, CircuitState, ConnectionHealth, update_health,
};
use flowgrid_domain::store::{Connection, ConnectionStore};
use flowgrid_domain::{Error, TenantId};
use serde_json::{Map, json};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

/// A ServiceNow connection `name` of `tenant`.
pub fn new_connection(tenant: &TenantId, name: &str) -> Connection {
    let mut config = Map::new();
    config.insert(
        "instanceUrl".into(),
        json!("https://example.service-now.com"),
    );
    config.insert("username".into(), json!("admin"));
    Connection {
        name: name.into(),
        tenant_id: tenant.clone(),
        kind: "servicenow".into(),
        auth: "basic".into(),
        config,
        is_default: false,
        secret: None,
        last_test: None,
        created_by: "tester".into(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
        etag: String::new(),
    }
}

fn call(ok: bool) -> CallRecord {
    CallRecord {
        at: Utc::now(),
        action: "test".into(),
        ok,
        status: if ok { 200 } else { 503 },
        latency_ms: 3,
        attempts: 1,
        error: (!ok).then(|| "upstream answered 503".into()),
    }
}

/// Insert, then get: the same connection with an ETag; a second insert of the name conflicts.
pub async fn insert_then_get_returns_the_connection_and_names_are_unique(
    store: &dyn ConnectionStore,
) {
    let t = tenant("t-conn-1");
    let c = store
        .insert(&new_connection(&t, "snow"))
        .await
        .expect("insert");
    assert!(!c.etag.is_empty());
    let got = store.get(&t, "snow").await.expect("get");
    assert_eq!(got, c);
    assert!(matches!(
        store.insert(&new_connection(&t, "snow")).await,
        Err(Error::Conflict(_))
    ));
    // The same name in another tenant is another connection.
    store
        .insert(&new_connection(&tenant("t-conn-2"), "snow"))
        .await
        .expect("other tenant");
}

/// Another tenant's connection is not found by get, replace, delete, health or list.
pub async fn another_tenants_connection_is_not_found_anywhere(store: &dyn ConnectionStore) {
    let (a, b) = (tenant("t-conn-a"), tenant("t-conn-b"));
    let c = store
        .insert(&new_connection(&a, "jira"))
        .await
        .expect("insert");
    assert!(matches!(store.get(&b, "jira").await, Err(Error::NotFound)));
    let mut moved = c.clone();
    moved.tenant_id = b.clone();
    assert!(matches!(
        store.replace(&moved, &c.etag).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.delete(&b, "jira", None).await,
        Err(Error::NotFound)
    ));
    assert!(
        store
            .list(&b, 50, None)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    update_health(store, &a, "jira", |h| {
        h.record(call(true), true, 3, Duration::seconds(30))
    })
    .await
    .expect("health");
    assert_eq!(store.health(&b, "jira").await.expect("health b"), None);
    assert!(store.get(&a, "jira").await.is_ok());
}

/// Replace needs the current ETag; a stale one changes nothing.
pub async fn replace_with_a_stale_etag_fails_and_changes_nothing(store: &dyn ConnectionStore) {
    let t = tenant("t-conn-3");
    let c = store
        .insert(&new_connection(&t, "gh"))
        .await
        .expect("insert");
    let mut next = c.clone();
    next.is_default = true;
    let saved = store.replace(&next, &c.etag).await.expect("replace");
    assert_ne!(saved.etag, c.etag);
    let mut stale = c.clone();
    stale.auth = "oauth".into();
    assert!(matches!(
        store.replace(&stale, &c.etag).await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(store.get(&t, "gh").await.expect("get"), saved);
}

/// List is in name order and pages without gaps or repeats.
pub async fn list_is_in_name_order_and_pages(store: &dyn ConnectionStore) {
    let t = tenant("t-conn-4");
    for name in ["e", "a", "d", "b", "c"] {
        store
            .insert(&new_connection(&t, name))
            .await
            .expect("insert");
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store.list(&t, 2, token.as_deref()).await.expect("list");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|c| c.name));
        match page.continuation_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert!(matches!(
        store.list(&t, 2, Some("forged")).await,
        Err(Error::BadRequest(_))
    ));
}

/// Delete honours the ETag and removes the health record with the connection.
pub async fn delete_honours_the_etag_and_removes_the_health(store: &dyn ConnectionStore) {
    let t = tenant("t-conn-5");
    let c = store
        .insert(&new_connection(&t, "h"))
        .await
        .expect("insert");
    update_health(store, &t, "h", |h| {
        h.record(call(false), true, 3, Duration::seconds(30))
    })
    .await
    .expect("health");
    assert!(matches!(
        store.delete(&t, "h", Some("stale")).await,
        Err(Error::PreconditionFailed)
    ));
    store.delete(&t, "h", Some(&c.etag)).await.expect("delete");
    assert!(matches!(store.get(&t, "h").await, Err(Error::NotFound)));
    assert_eq!(store.health(&t, "h").await.expect("health"), None);
    assert!(matches!(
        store.delete(&t, "h", None).await,
        Err(Error::NotFound)
    ));
}

/// Health records are created once, replaced by ETag, and concurrent updates all land: the
/// circuit state is shared by every instance through them.
pub async fn concurrent_health_updates_all_land(store: &dyn ConnectionStore) {
    let t = tenant("t-conn-6");
    let fresh = ConnectionHealth::new(t.clone(), "x");
    let saved = store.save_health(&fresh, None).await.expect("create");
    assert!(matches!(
        store.save_health(&fresh, None).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.save_health(&fresh, Some("stale")).await,
        Err(Error::PreconditionFailed)
    ));
    let updates = (0..4).map(|_| {
        update_health(store, &t, "x", |h| {
            h.record(call(false), true, 3, Duration::seconds(60))
        })
    });
    for result in futures::future::join_all(updates).await {
        result.expect("update");
    }
    let h = store.health(&t, "x").await.expect("read").expect("present");
    assert_ne!(h.etag, saved.etag);
    assert_eq!(h.consecutive_failures, 4);
    assert_eq!(h.recent.len(), 4);
    assert_eq!(h.circuit_at(Utc::now()), CircuitState::Open);
}
