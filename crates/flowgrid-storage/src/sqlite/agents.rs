//! Agents on SQLite: table `agents` (the current agent, its name key unique per tenant) and
//! `agent_versions` (one immutable copy per version), migration 1.
//!
//! A row's `doc` is the agent's JSON as the API answers with it, written together with the row's
//! ETag, so a read by id serves it as stored ([`AgentStore::get_document`]). A change to the JSON
//! shape of [`Agent`] therefore needs a migration that re-encodes the stored documents.

use rusqlite::{TransactionBehavior, params};

use super::{Sqlite, current_etag, if_taken, new_etag, newest_first, require_etag};
use crate::codec::{from_doc, to_doc};
use crate::keyset::{self, ByCreated, ByVersion};
use flowgrid_domain::Error;
use flowgrid_domain::store::Condition;
use flowgrid_domain::store::{
    AgentDocument, AgentQuery, AgentStore, AgentVersionSummary, DueAgent, Page, next_fire,
};
use flowgrid_domain::{Agent, AgentId, TenantId};

/// The stored agent `doc` with `etag` (its row's; none on versions).
fn agent_from(doc: &str, etag: String) -> flowgrid_domain::Result<Agent> {
    Ok(Agent {
        etag,
        ..from_doc("agent", doc)?
    })
}

/// The current agent's row by key: a point read, its statement prepared once per connection.
const BY_ID: &str = "SELECT doc, etag FROM agents WHERE tenant_id = ?1 AND id = ?2";

/// The document and ETag of the tenant's agent `id`; [`Error::NotFound`] when there is none.
fn load(
    conn: &rusqlite::Connection,
    tenant: &TenantId,
    id: &str,
) -> super::Result<(String, String)> {
    Ok(conn
        .prepare_cached(BY_ID)?
        .query_row(params![tenant.as_str(), id], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Whether `doc` is the JSON written with this row: it opens with the row's id and tenant and
/// closes with the row's ETag ([`Agent`]'s first and last fields, as serde writes them).
fn written_with_row(doc: &str, tenant: &TenantId, id: &str, etag: &str) -> bool {
    let head = (|| {
        doc.strip_prefix("{\"id\":\"")?
            .strip_prefix(id)?
            .strip_prefix("\",\"tenantId\":\"")?
            .strip_prefix(tenant.as_str())?
            .strip_prefix("\",")
    })();
    let tail = (|| {
        doc.strip_suffix("\"}")?
            .strip_suffix(etag)?
            .strip_suffix(",\"etag\":\"")
    })();
    head.is_some() && tail.is_some()
}

fn name_taken() -> Error {
    Error::Conflict("An agent with this name already exists.".into())
}

fn like_pattern(text: &str) -> String {
    let escaped: String = text
        .to_lowercase()
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}

#[async_trait::async_trait]
impl AgentStore for Sqlite {
    async fn insert(&self, agent: &Agent) -> flowgrid_domain::Result<Agent> {
        let mut agent = agent.clone();
        agent.etag = new_etag();
        self.run(move |conn| {
            let doc = to_doc("agent", &agent)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO agents (tenant_id, id, name_key, status, created_ms, etag, doc, next_fire_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    agent.tenant_id.as_str(),
                    agent.id.to_string(),
                    agent.name_key(),
                    agent.status.as_str(),
                    agent.created_at.timestamp_millis(),
                    agent.etag,
                    doc,
                    next_fire(&agent, agent.updated_at).map(|t| t.timestamp_millis()),
                ],
            )
            .map_err(|e| if_taken(e, name_taken()))?;
            tx.execute(
                "INSERT INTO agent_versions (tenant_id, agent_id, version, doc) VALUES (?1, ?2, ?3, ?4)",
                params![agent.tenant_id.as_str(), agent.id.to_string(), agent.version, doc],
            )?;
            tx.commit()?;
            Ok(agent)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: AgentId) -> flowgrid_domain::Result<Agent> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let (doc, etag) = load(conn, &tenant, &id.to_string())?;
            Ok(agent_from(&doc, etag)?)
        })
        .await
    }

    /// The stored JSON as it is, when it was written with the row (the same bytes as encoding
    /// the decoded agent again, which a test pins); otherwise the agent decoded and encoded.
    async fn get_document(
        &self,
        tenant: &TenantId,
        id: AgentId,
    ) -> flowgrid_domain::Result<AgentDocument> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let id = id.to_string();
            let (doc, etag) = load(conn, &tenant, &id)?;
            if written_with_row(&doc, &tenant, &id, &etag) {
                return Ok(AgentDocument { json: doc, etag });
            }
            Ok(AgentDocument::of(&agent_from(&doc, etag)?)?)
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        query: &AgentQuery,
    ) -> flowgrid_domain::Result<Page<Agent>> {
        let tenant = tenant.clone();
        let cursor: Option<ByCreated> = keyset::after(query.continuation_token.as_deref())?;
        let status = query.status.map(|s| s.as_str());
        let name = query.name_contains.as_deref().map(like_pattern);
        let limit = query.limit;
        self.run(move |conn| {
            let (c, i) = cursor
                .map(|c| (Some(c.c), Some(c.i)))
                .unwrap_or((None, None));
            let mut stmt = conn.prepare_cached(
                "SELECT doc, etag, created_ms, id FROM agents
                     WHERE tenant_id = ?1
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR name_key LIKE ?3 ESCAPE '\\')
                       AND (?4 IS NULL OR created_ms < ?4 OR (created_ms = ?4 AND id < ?5))
                     ORDER BY created_ms DESC, id DESC
                     LIMIT ?6",
            )?;
            newest_first(
                &mut stmt,
                params![tenant.as_str(), status, name, c, i, i64::from(limit) + 1],
                limit,
                agent_from,
            )
        })
        .await
    }

    async fn replace(&self, next: &Agent, expected_etag: &str) -> flowgrid_domain::Result<Agent> {
        let mut agent = next.clone();
        agent.etag = new_etag();
        let expected = expected_etag.to_owned();
        self.run(move |conn| {
            let doc = to_doc("agent", &agent)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_etag(&tx, "agents", agent.tenant_id.as_str(), &agent.id.to_string(), &expected)?;
            // The next fire time from now, unless the schedule is unchanged and its stored
            // (earlier) fire time has not been handled yet: an edit does not skip a due time.
            tx.execute(
                "UPDATE agents SET name_key = ?3, status = ?4, etag = ?5, doc = ?6,
                    next_fire_ms = CASE
                        WHEN ?7 IS NULL THEN NULL
                        WHEN next_fire_ms IS NOT NULL AND next_fire_ms < ?7
                             AND json_extract(doc, '$.schedule') IS ?8 THEN next_fire_ms
                        ELSE ?7 END
                 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    agent.tenant_id.as_str(),
                    agent.id.to_string(),
                    agent.name_key(),
                    agent.status.as_str(),
                    agent.etag,
                    doc,
                    next_fire(&agent, agent.updated_at).map(|t| t.timestamp_millis()),
                    agent.schedule.as_ref().map(|s| s.as_str().to_owned()),
                ],
            )
            .map_err(|e| if_taken(e, name_taken()))?;
            // A version that already exists means another writer got there first.
            tx.execute(
                "INSERT INTO agent_versions (tenant_id, agent_id, version, doc) VALUES (?1, ?2, ?3, ?4)",
                params![agent.tenant_id.as_str(), agent.id.to_string(), agent.version, doc],
            )
            .map_err(|e| if_taken(e, Error::PreconditionFailed))?;
            tx.commit()?;
            Ok(agent)
        })
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        id: AgentId,
        if_match: Option<&Condition>,
    ) -> flowgrid_domain::Result<()> {
        let tenant = tenant.clone();
        let if_match = if_match.cloned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let etag = current_etag(&tx, "agents", tenant.as_str(), &id.to_string())?;
            if let Some(condition) = if_match
                && !condition.matches(&etag)
            {
                return Err(Error::PreconditionFailed.into());
            }
            tx.execute(
                "DELETE FROM agents WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), id.to_string()],
            )?;
            tx.execute(
                "DELETE FROM agent_versions WHERE tenant_id = ?1 AND agent_id = ?2",
                params![tenant.as_str(), id.to_string()],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn versions(
        &self,
        tenant: &TenantId,
        id: AgentId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> flowgrid_domain::Result<Page<AgentVersionSummary>> {
        let tenant = tenant.clone();
        let cursor: Option<ByVersion> = keyset::after(continuation_token)?;
        self.run(move |conn| {
            // The agent must exist now: a deleted agent has no history to show.
            conn.query_row(
                "SELECT 1 FROM agents WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), id.to_string()],
                |_| Ok(()),
            )?;
            let rows = conn
                .prepare_cached(
                    "SELECT doc, version FROM agent_versions
                     WHERE tenant_id = ?1 AND agent_id = ?2 AND (?3 IS NULL OR version < ?3)
                     ORDER BY version DESC LIMIT ?4",
                )?
                .query_map(
                    params![
                        tenant.as_str(),
                        id.to_string(),
                        cursor.map(|c| c.v),
                        i64::from(limit) + 1
                    ],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keyset::page(
                rows,
                limit as usize,
                |(_, version)| ByVersion { v: *version },
                |(doc, _)| Ok(AgentVersionSummary::from(&agent_from(&doc, String::new())?)),
            )?)
        })
        .await
    }

    async fn scheduled(&self, limit: u32) -> flowgrid_domain::Result<Vec<Agent>> {
        self.run(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT doc, etag FROM agents WHERE json_extract(doc, '$.schedule') IS NOT NULL
                     AND status != 'disabled' ORDER BY tenant_id, id LIMIT ?1",
                )?
                .query_map(params![limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .map(|(doc, etag)| agent_from(&doc, etag))
                .collect::<flowgrid_domain::Result<_>>()?)
        })
        .await
    }

    /// One range read of the `agents_by_next_fire` index: rows not due are not read.
    async fn due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> flowgrid_domain::Result<Vec<DueAgent>> {
        self.run(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT doc, etag, next_fire_ms FROM agents INDEXED BY agents_by_next_fire
                     WHERE next_fire_ms IS NOT NULL AND next_fire_ms <= ?1
                     ORDER BY next_fire_ms LIMIT ?2",
                )?
                .query_map(params![now.timestamp_millis(), limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .map(|(doc, etag, ms)| {
                    Ok(DueAgent {
                        agent: agent_from(&doc, etag)?,
                        next_fire: chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                    })
                })
                .collect::<flowgrid_domain::Result<_>>()?)
        })
        .await
    }

    async fn advance_schedule(
        &self,
        tenant: &TenantId,
        id: AgentId,
        from: chrono::DateTime<chrono::Utc>,
        to: Option<chrono::DateTime<chrono::Utc>>,
    ) -> flowgrid_domain::Result<()> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            conn.prepare_cached(
                "UPDATE agents SET next_fire_ms = ?4
                 WHERE tenant_id = ?1 AND id = ?2 AND next_fire_ms = ?3",
            )?
            .execute(params![
                tenant.as_str(),
                id.to_string(),
                from.timestamp_millis(),
                to.map(|t| t.timestamp_millis())
            ])?;
            Ok(())
        })
        .await
    }

    async fn version(
        &self,
        tenant: &TenantId,
        id: AgentId,
        version: u32,
    ) -> flowgrid_domain::Result<Agent> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let doc: String = conn.query_row(
                "SELECT v.doc FROM agent_versions v JOIN agents a ON a.tenant_id = v.tenant_id AND a.id = v.agent_id
                 WHERE v.tenant_id = ?1 AND v.agent_id = ?2 AND v.version = ?3",
                params![tenant.as_str(), id.to_string(), version],
                |r| r.get(0),
            )?;
            Ok(agent_from(&doc, String::new())?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use flowgrid_domain::AgentInput;

    use super::*;

    async fn store_with_agent() -> (tempfile::TempDir, Sqlite, Agent) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
        let input: AgentInput = serde_json::from_value(serde_json::json!({
            "name": "Incident \"triage\" — ünïcödé 🚨",
            "description": "Line one\nline two\twith a tab and a \\ backslash",
            "schedule": "0 */5 * * * *",
            "definition": {
                "instructions": "Answer using the runbook: \"quote\" / slash",
                "capabilities": ["search", "summarize"],
                "inputSchema": {"type": "object", "properties": {"n": {"type": "number", "maximum": 1.5e3}}},
                "steps": [{"id": "t", "kind": "transform", "output": {"x": 0.1, "y": [1, -2, 3.25], "z": null}}]
            }
        }))
        .unwrap();
        let tenant = TenantId::parse("tenant-1").unwrap();
        let agent = Agent::create(tenant, input.validate().unwrap(), "u1", Utc::now());
        let agent = db.insert(&agent).await.unwrap();
        (dir, db, agent)
    }

    #[tokio::test]
    async fn agents_stored_before_fire_times_are_due_at_once_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut agent = store_with_agent().await.2;
        agent.status = flowgrid_domain::AgentStatus::Active;
        agent.etag = "e1".into();
        {
            // A database at the schema before fire times, with one active scheduled agent.
            let conn = rusqlite::Connection::open(&path).unwrap();
            let before = &super::super::schema::MIGRATIONS[..4];
            for migration in before {
                conn.execute_batch(migration).unwrap();
            }
            conn.pragma_update(None, "user_version", before.len() as i64)
                .unwrap();
            conn.execute(
                "INSERT INTO agents (tenant_id, id, name_key, status, created_ms, etag, doc)
                 VALUES (?1, ?2, ?3, 'active', 0, 'e1', ?4)",
                params![
                    agent.tenant_id.as_str(),
                    agent.id.to_string(),
                    agent.name_key(),
                    to_doc("agent", &agent).unwrap()
                ],
            )
            .unwrap();
        }
        let db = Sqlite::open(&path).await.unwrap();
        let due = db.due(Utc::now(), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].agent.id, agent.id);
        assert_eq!(due[0].next_fire.timestamp_millis(), 0, "due at once");
        let plan: String = db
            .run(|conn| {
                Ok(conn.query_row(
                    "EXPLAIN QUERY PLAN SELECT doc FROM agents WHERE next_fire_ms IS NOT NULL AND next_fire_ms <= 1",
                    [],
                    |r| r.get::<_, String>(3),
                )?)
            })
            .await
            .unwrap();
        assert!(plan.contains("agents_by_next_fire"), "{plan}");
    }

    #[tokio::test]
    async fn the_stored_document_is_the_json_of_the_agent_it_decodes_to() {
        let (_dir, db, agent) = store_with_agent().await;
        let (tenant, id) = (agent.tenant_id.clone(), agent.id.to_string());
        let (doc, etag) = db.read(move |conn| load(conn, &tenant, &id)).await.unwrap();
        // Served as stored, not through the decode-and-encode fallback.
        assert!(written_with_row(
            &doc,
            &agent.tenant_id,
            &agent.id.to_string(),
            &etag
        ));
        let document = db.get_document(&agent.tenant_id, agent.id).await.unwrap();
        assert_eq!(document.json, doc);
        let decoded = db.get(&agent.tenant_id, agent.id).await.unwrap();
        assert_eq!(document, AgentDocument::of(&decoded).unwrap());
        let next = decoded.replaced(
            serde_json::from_value::<AgentInput>(
                serde_json::json!({"name": "n2", "definition": {"instructions": "i"}}),
            )
            .unwrap()
            .validate()
            .unwrap(),
            "u2",
            Utc::now(),
        );
        let next = db.replace(&next, &decoded.etag).await.unwrap();
        let document = db.get_document(&agent.tenant_id, agent.id).await.unwrap();
        assert_eq!(document, AgentDocument::of(&next).unwrap());
    }

    #[tokio::test]
    async fn a_document_not_written_with_its_row_is_decoded_and_encoded_again() {
        let (_dir, db, agent) = store_with_agent().await;
        let id = agent.id.to_string();
        db.run(move |conn| {
            conn.execute(
                "UPDATE agents SET etag = 'moved' WHERE id = ?1",
                params![id],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let document = db.get_document(&agent.tenant_id, agent.id).await.unwrap();
        assert_eq!(document.etag, "moved");
        let json: serde_json::Value = serde_json::from_str(&document.json).unwrap();
        assert_eq!(json["etag"], "moved");
        assert_eq!(
            document,
            AgentDocument::of(&db.get(&agent.tenant_id, agent.id).await.unwrap()).unwrap()
        );
    }

    #[tokio::test]
    async fn the_document_of_another_tenants_agent_is_not_found() {
        let (_dir, db, agent) = store_with_agent().await;
        let other = TenantId::parse("tenant-2").unwrap();
        assert!(matches!(
            db.get_document(&other, agent.id).await,
            Err(Error::NotFound)
        ));
    }
}
