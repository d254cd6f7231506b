//! The AI spend ledger: what each tenant's model calls cost in each calendar month (UTC), in
//! micro-dollars, against the monthly AI budget of the tenant's plan.
//!
//! A call is admitted by [`SpendStore::reserve`], which adds the call's largest possible cost
//! (its prompt and `maxTokens` at the model's price) only while the month's spend is still
//! below the budget, in one atomic step; afterwards [`SpendStore::adjust`] settles the
//! reservation to the real cost. Concurrent calls are admitted one after the other, so the spend
//! can pass the budget by at most one call's reservation, never by one call per caller.

use chrono::{DateTime, Datelike, Utc};

use crate::Result;
use crate::TenantId;

/// The ledger's month of `at`: `YYYY-MM` (UTC).
pub fn month_of(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// The monthly AI budget of a plan, in micro-dollars (`None`: no limit).
///
/// | plan | budget |
/// |---|---|
/// | `free` (and any unknown plan) | $5 |
/// | `team` | $200 |
/// | `business` | $2,000 |
/// | `enterprise` | no limit |
pub fn monthly_ai_budget_micro_usd(plan: &str) -> Option<u64> {
    match plan {
        "enterprise" => None,
        "business" => Some(2_000_000_000),
        "team" => Some(200_000_000),
        _ => Some(5_000_000),
    }
}

/// AI spend per tenant and month.
#[async_trait::async_trait]
pub trait SpendStore: Send + Sync {
    /// Micro-dollars spent (and reserved) by `tenant` in `month` (0 when nothing yet).
    async fn spent(&self, tenant: &TenantId, month: &str) -> Result<u64>;

    /// Adds `amount` to the month's spend if, and only if, the spend is below `budget` — in one
    /// atomic step. Returns the new total, or `None` (nothing added) when the spend had already
    /// reached the budget.
    async fn reserve(
        &self,
        tenant: &TenantId,
        month: &str,
        amount: u64,
        budget: u64,
    ) -> Result<Option<u64>>;

    /// Adds `delta` (negative: a reservation settled below its estimate) to the month's spend,
    /// which never goes below 0; returns the new total.
    async fn adjust(&self, tenant: &TenantId, month: &str, delta: i64) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months_and_plans_carry_budgets() {
        let at = DateTime::parse_from_rfc3339("2026-12-31T23:59:59-01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(month_of(at), "2027-01");
        assert_eq!(monthly_ai_budget_micro_usd("free"), Some(5_000_000));
        assert_eq!(monthly_ai_budget_micro_usd("enterprise"), None);
        assert_eq!(monthly_ai_budget_micro_usd("no-such-plan"), Some(5_000_000));
    }
}
