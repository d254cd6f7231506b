//! The AI spend ledger's conformance checks (`SpendStore`), run on every backend.

use std::sync::Arc;

use flowgrid_domain::TenantId;
use flowgrid_domain::store::SpendStore;

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).expect("tenant id")
}

/// A reservation is admitted while the spend is below the budget and refused once it is not;
/// a refused one adds nothing.
pub async fn reservations_stop_once_the_budget_is_reached(store: &dyn SpendStore) {
    let t = tenant("t-spend-1");
    assert_eq!(
        store
            .spent(&t, "2026-12")
            .await
            .expect("the ledger answers"),
        0
    );
    assert_eq!(
        store
            .reserve(&t, "2026-12", 400, 1000)
            .await
            .expect("the ledger answers"),
        Some(400)
    );
    assert_eq!(
        store
            .reserve(&t, "2026-12", 400, 1000)
            .await
            .expect("the ledger answers"),
        Some(800)
    );
    assert_eq!(
        store
            .reserve(&t, "2026-12", 400, 1000)
            .await
            .expect("the ledger answers"),
        Some(1200),
        "below the budget: admitted, may overshoot by one call"
    );
    assert_eq!(
        store
            .reserve(&t, "2026-12", 1, 1000)
            .await
            .expect("the ledger answers"),
        None,
        "at or past it: refused"
    );
    assert_eq!(
        store
            .spent(&t, "2026-12")
            .await
            .expect("the ledger answers"),
        1200,
        "a refusal adds nothing"
    );
    assert_eq!(
        store
            .reserve(&t, "2027-01", 1, 1000)
            .await
            .expect("the ledger answers"),
        Some(1),
        "a new month starts at 0"
    );
    assert_eq!(
        store
            .reserve(&t, "2026-11", 5, 0)
            .await
            .expect("the ledger answers"),
        None,
        "a budget of 0 admits nothing"
    );
}

/// Settling adjusts the spend both ways and never below 0.
pub async fn adjustments_settle_reservations_and_never_go_below_zero(store: &dyn SpendStore) {
    let t = tenant("t-spend-2");
    store
        .reserve(&t, "2026-12", 500, 10_000)
        .await
        .expect("the ledger answers");
    assert_eq!(
        store
            .adjust(&t, "2026-12", -380)
            .await
            .expect("the ledger answers"),
        120
    );
    assert_eq!(
        store
            .adjust(&t, "2026-12", 30)
            .await
            .expect("the ledger answers"),
        150
    );
    assert_eq!(
        store
            .adjust(&t, "2026-12", -1_000)
            .await
            .expect("the ledger answers"),
        0
    );
    assert_eq!(
        store
            .adjust(&t, "2026-10", 7)
            .await
            .expect("the ledger answers"),
        7,
        "adjusting an empty month creates it"
    );
}

/// One tenant's spend is not another's.
pub async fn tenants_have_their_own_ledgers(store: &dyn SpendStore) {
    let (a, b) = (tenant("t-spend-a"), tenant("t-spend-b"));
    store
        .reserve(&a, "2026-12", 999, 1000)
        .await
        .expect("the ledger answers");
    assert_eq!(
        store
            .spent(&b, "2026-12")
            .await
            .expect("the ledger answers"),
        0
    );
    assert_eq!(
        store
            .reserve(&b, "2026-12", 10, 1000)
            .await
            .expect("the ledger answers"),
        Some(10)
    );
}

/// Concurrent reservations are admitted one after the other: the spend passes the budget by
/// less than one reservation, and exactly as many are admitted as fit.
pub async fn concurrent_reservations_overshoot_by_at_most_one_call(store: Arc<dyn SpendStore>) {
    let t = tenant("t-spend-race");
    let (amount, budget, callers) = (300u64, 2_000u64, 16);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (store, t) = (store.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            store.reserve(&t, "2026-12", amount, budget).await
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("task").expect("reserve").is_some() {
            admitted += 1;
        }
    }
    let spent = store
        .spent(&t, "2026-12")
        .await
        .expect("the ledger answers");
    assert_eq!(
        admitted,
        budget.div_ceil(amount),
        "admitted while below the budget, no more"
    );
    assert_eq!(
        spent,
        admitted * amount,
        "every admitted reservation counted once"
    );
    assert!(
        spent < budget + amount,
        "overshoot {spent} is below one call's cost"
    );
}
