//! The AI spend ledger on SQLite: table `ai_spend` (migration 6), one row per tenant and month.
//! A reservation is one statement (an upsert whose update is conditioned on the spend being
//! below the budget), so concurrent processes cannot both pass a check made before a write.

use rusqlite::{OptionalExtension, params};

use super::Sqlite;
use flowgrid_domain::TenantId;
use flowgrid_domain::store::SpendStore;

#[async_trait::async_trait]
impl SpendStore for Sqlite {
    async fn spent(&self, tenant: &TenantId, month: &str) -> flowgrid_domain::Result<u64> {
        let (tenant, month) = (tenant.as_str().to_owned(), month.to_owned());
        self.run(move |conn| {
            let spent: Option<i64> = conn
                .prepare_cached(
                    "SELECT micro_usd FROM ai_spend WHERE tenant_id = ?1 AND month = ?2",
                )?
                .query_row(params![tenant, month], |r| r.get(0))
                .optional()?;
            Ok(spent.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn reserve(
        &self,
        tenant: &TenantId,
        month: &str,
        amount: u64,
        budget: u64,
    ) -> flowgrid_domain::Result<Option<u64>> {
        if budget == 0 {
            return Ok(None);
        }
        let (tenant, month) = (tenant.as_str().to_owned(), month.to_owned());
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        let budget = i64::try_from(budget).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let total: Option<i64> = conn
                .prepare_cached(
                    "INSERT INTO ai_spend (tenant_id, month, micro_usd) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, month) DO UPDATE SET micro_usd = micro_usd + ?3
                     WHERE micro_usd < ?4
                     RETURNING micro_usd",
                )?
                .query_row(params![tenant, month, amount, budget], |r| r.get(0))
                .optional()?;
            Ok(total.map(|t| t.max(0) as u64))
        })
        .await
    }

    async fn adjust(
        &self,
        tenant: &TenantId,
        month: &str,
        delta: i64,
    ) -> flowgrid_domain::Result<u64> {
        let (tenant, month) = (tenant.as_str().to_owned(), month.to_owned());
        self.run(move |conn| {
            let total: i64 = conn
                .prepare_cached(
                    "INSERT INTO ai_spend (tenant_id, month, micro_usd) VALUES (?1, ?2, MAX(?3, 0))
                     ON CONFLICT (tenant_id, month) DO UPDATE SET micro_usd = MAX(micro_usd + ?3, 0)
                     RETURNING micro_usd",
                )?
                .query_row(params![tenant, month, delta], |r| r.get(0))?;
            Ok(total.max(0) as u64)
        })
        .await
    }
}
