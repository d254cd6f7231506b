//! The pending API request counts' conformance checks (`ApiRequestCountStore`), run on every
//! backend.

use chrono::{DateTime, TimeZone, Utc};
use flowgrid_domain::TenantId;
use flowgrid_domain::store::{ApiRequestCount, ApiRequestCountStore};

fn minute(m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, m, 0)
        .single()
        .expect("a minute")
}

fn count(app: &str, instance: &str, tenant: &str, m: u32, route: &str, n: u64) -> ApiRequestCount {
    ApiRequestCount {
        app: app.into(),
        instance: instance.into(),
        tenant: TenantId::parse(tenant).expect("tenant id"),
        minute: minute(m),
        route: route.into(),
        status: 200,
        count: n,
    }
}

async fn pending(store: &dyn ApiRequestCountStore, app: &str) -> Vec<(ApiRequestCount, bool)> {
    store
        .pending_counts(app, 1_000)
        .await
        .expect("the store answers")
        .into_iter()
        .map(|p| (p.count, p.sent))
        .collect()
}

/// Rows of every instance of an app are listed, oldest minute first, with their counts; another
/// app's are not.
pub async fn counts_of_every_instance_are_listed_oldest_first(store: &dyn ApiRequestCountStore) {
    let a = count("auth", "i-1", "acme", 7, "GET /api/auth/me", 3);
    let b = count("auth", "i-2", "acme", 5, "GET /api/auth/me", 4);
    let c = count("auth", "i-2", "globex", 6, "POST /api/auth/users/{id}", 1);
    let other = count("agents", "i-1", "acme", 1, "GET /api/agents", 9);
    store
        .put_counts(std::slice::from_ref(&a))
        .await
        .expect("put");
    store
        .put_counts(&[b.clone(), c.clone(), other.clone()])
        .await
        .expect("put");
    let listed = pending(store, "auth").await;
    assert_eq!(
        listed,
        vec![(b, false), (c, false), (a, false)],
        "oldest minute first, every instance, counts as written"
    );
    assert_eq!(pending(store, "agents").await, vec![(other, false)]);
    assert!(pending(store, "design").await.is_empty());
}

/// Writing a key again (a retried write) changes nothing: neither the count nor the sent mark.
pub async fn a_repeated_write_of_a_key_changes_nothing(store: &dyn ApiRequestCountStore) {
    let first = count("design", "i-1", "acme", 3, "GET /api/design/models", 5);
    store
        .put_counts(std::slice::from_ref(&first))
        .await
        .expect("put");
    store
        .put_counts(std::slice::from_ref(&first))
        .await
        .expect("put again");
    let mut again = first.clone();
    again.count = 50;
    store
        .put_counts(&[again])
        .await
        .expect("put a different count");
    assert_eq!(pending(store, "design").await, vec![(first.clone(), false)]);
    store
        .mark_counts_sent(std::slice::from_ref(&first))
        .await
        .expect("mark");
    store
        .put_counts(std::slice::from_ref(&first))
        .await
        .expect("put after mark");
    assert_eq!(
        pending(store, "design").await,
        vec![(first.clone(), true)],
        "the sent mark stays"
    );
    let mut other_status = first.clone();
    other_status.status = 404;
    let mut other_instance = first.clone();
    other_instance.instance = "i-2".into();
    store
        .put_counts(&[other_status, other_instance])
        .await
        .expect("put");
    assert_eq!(
        pending(store, "design").await.len(),
        3,
        "status and instance are part of the key"
    );
}

/// Marks and deletes address rows by key; absent keys are skipped; a listing is bounded.
pub async fn marks_and_deletes_go_by_key_and_listings_are_bounded(
    store: &dyn ApiRequestCountStore,
) {
    let rows: Vec<ApiRequestCount> = (0..12)
        .map(|m| {
            count(
                "integrations",
                "i-1",
                "acme",
                m,
                "GET /api/integrations/catalog",
                1,
            )
        })
        .collect();
    store.put_counts(&rows).await.expect("put");
    let first_five = store.pending_counts("integrations", 5).await.expect("list");
    assert_eq!(
        first_five
            .iter()
            .map(|p| p.count.clone())
            .collect::<Vec<_>>(),
        rows[..5].to_vec(),
        "bounded, oldest first"
    );
    store.mark_counts_sent(&rows[..2]).await.expect("mark");
    let missing = count("integrations", "i-9", "acme", 30, "GET /x", 1);
    store
        .mark_counts_sent(std::slice::from_ref(&missing))
        .await
        .expect("marking an absent key is no error");
    let listed = pending(store, "integrations").await;
    assert_eq!(listed.len(), 12, "a mark adds no row");
    assert!(listed[..2].iter().all(|(_, sent)| *sent));
    assert!(listed[2..].iter().all(|(_, sent)| !*sent));

    let mut to_delete = rows[..3].to_vec();
    to_delete.push(missing);
    store.delete_counts(&to_delete).await.expect("delete");
    store
        .delete_counts(&rows[..3])
        .await
        .expect("deleting again is no error");
    let left: Vec<ApiRequestCount> = pending(store, "integrations")
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(left, rows[3..].to_vec());
}

/// Calls with more rows than one backend round trip takes (Cosmos batches 100): every row is
/// written, marked and deleted, and rows already there among them change nothing.
pub async fn many_rows_are_written_marked_and_deleted_in_one_call(
    store: &dyn ApiRequestCountStore,
) {
    let rows: Vec<ApiRequestCount> = (0..250)
        .map(|i| {
            count(
                "execution",
                &format!("i-{}", i % 3),
                "acme",
                i % 50,
                &format!("GET /api/execute/jobs/{i}"),
                u64::from(i) + 1,
            )
        })
        .collect();
    store.put_counts(&rows[..40]).await.expect("put some");
    store
        .mark_counts_sent(&rows[..10])
        .await
        .expect("mark some");
    store.put_counts(&rows).await.expect("put all");
    let listed = pending(store, "execution").await;
    assert_eq!(listed.len(), 250);
    assert_eq!(listed.iter().filter(|(_, sent)| *sent).count(), 10);
    let total: u64 = listed.iter().map(|(c, _)| c.count).sum();
    assert_eq!(total, (1..=250).sum::<u64>());
    store.mark_counts_sent(&rows).await.expect("mark all");
    assert!(
        pending(store, "execution")
            .await
            .iter()
            .all(|(_, sent)| *sent)
    );
    store.delete_counts(&rows).await.expect("delete all");
    assert!(pending(store, "execution").await.is_empty());
}
