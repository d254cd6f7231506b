//! Pending API request counts on SQLite: table `api_request_counts` (migration 8), one row per
//! (app, instance, tenant, minute, route, status). Writes are `INSERT OR IGNORE` in one
//! transaction, so a repeated write of a key keeps the row as it was.

use rusqlite::{TransactionBehavior, params};

use super::Sqlite;
use crate::codec::{ms, time};
use flowgrid_domain::store::api_requests::MAX_PENDING;
use flowgrid_domain::store::{ApiRequestCount, ApiRequestCountStore, PendingCount};
use flowgrid_domain::{Result, TenantId};

/// The key columns of `c`, in the table's key order.
fn key(c: &ApiRequestCount) -> (String, String, String, i64, String, u16) {
    (
        c.app.clone(),
        c.instance.clone(),
        c.tenant.as_str().to_owned(),
        ms(c.minute),
        c.route.clone(),
        c.status,
    )
}

const WHERE_KEY: &str = "app = ?1 AND instance = ?2 AND tenant_id = ?3 AND minute_ms = ?4
     AND route = ?5 AND status = ?6";

#[async_trait::async_trait]
impl ApiRequestCountStore for Sqlite {
    async fn put_counts(&self, counts: &[ApiRequestCount]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let counts = counts.to_vec();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO api_request_counts
                     (app, instance, tenant_id, minute_ms, route, status, count, sent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
                )?;
                for c in &counts {
                    let (app, instance, tenant, minute, route, status) = key(c);
                    let count = i64::try_from(c.count).unwrap_or(i64::MAX);
                    insert.execute(params![app, instance, tenant, minute, route, status, count])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn pending_counts(&self, app: &str, limit: u32) -> Result<Vec<PendingCount>> {
        let app = app.to_owned();
        let limit = limit.clamp(1, MAX_PENDING);
        self.run(move |conn| {
            let mut q = conn.prepare_cached(
                "SELECT instance, tenant_id, minute_ms, route, status, count, sent
                 FROM api_request_counts WHERE app = ?1
                 ORDER BY minute_ms, instance, tenant_id, route, status LIMIT ?2",
            )?;
            let rows = q.query_map(params![app, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, u16>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (instance, tenant, minute, route, status, count, sent) = row?;
                out.push(PendingCount {
                    count: ApiRequestCount {
                        app: app.clone(),
                        instance,
                        tenant: TenantId::parse(&tenant)?,
                        minute: time(minute),
                        route,
                        status,
                        count: count.max(0) as u64,
                    },
                    sent: sent != 0,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn mark_counts_sent(&self, counts: &[ApiRequestCount]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let counts = counts.to_vec();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut mark = tx.prepare_cached(&format!(
                    "UPDATE api_request_counts SET sent = 1 WHERE {WHERE_KEY}"
                ))?;
                for c in &counts {
                    let (app, instance, tenant, minute, route, status) = key(c);
                    mark.execute(params![app, instance, tenant, minute, route, status])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete_counts(&self, counts: &[ApiRequestCount]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let counts = counts.to_vec();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut delete = tx
                    .prepare_cached(&format!("DELETE FROM api_request_counts WHERE {WHERE_KEY}"))?;
                for c in &counts {
                    let (app, instance, tenant, minute, route, status) = key(c);
                    delete.execute(params![app, instance, tenant, minute, route, status])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
