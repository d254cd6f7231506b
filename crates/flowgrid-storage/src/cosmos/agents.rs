//! Agents on Cosmos: the `agents` container, partition `/tenantId`.
//!
//! Three document types share the tenant's partition:
//! - `agent`: the current agent (`id` = the agent id), with `nameKey`, `status` and `sortKey`
//!   (creation time then id, fixed width, so one `ORDER BY` gives newest first with no composite
//!   index);
//! - `agentVersion`: one immutable copy per version (`id` = `<agent id>:v<version>`);
//! - `agentName`: the reservation of a name (`id` = `name-<sha256 of the lower-cased name>`);
//! - `agentFire`: the agent's next fire time on schedule (`id` = `fire-<agent id>`,
//!   `nextFireMs`, null when it does not fire), written in the same batch as the agent, and
//!   moved on by the schedule timer without touching the agent (so its ETag stays). The timer's
//!   cross-tenant query reads the indexed `nextFireMs` range that is due, nothing else. Agents
//!   stored before fire documents existed (`fireDoc` absent) are found by one indexed query and
//!   treated as due at once; the timer then writes their fire document and marks them.
//!
//! Names are unique per tenant because two reservations cannot have the same `id` in one
//! partition: creating one is a create-if-absent that answers 409 when taken. (A Cosmos unique
//! key policy on `/nameKey` would do the same on real Cosmos, but the emulator does not enforce
//! unique keys, and a reservation document works the same on both.)
//!
//! Every write that touches several documents is one transactional batch in the tenant's
//! partition: on Cosmos it is atomic, so a failed write leaves nothing behind. The emulator
//! stops a batch at the first failing operation but does not roll back the ones before it, so
//! the operations are ordered with the ones that may fail first (reservation, then the
//! If-Match replace). What the emulator can still leave behind is an unused name reservation
//! after a lost race; real Cosmos cannot.

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::document::{
    BatchFailure, BatchOutcome, IdOnly, bare, batch_etag, delete_doc, delete_if_match, document,
    hashed_id, map_error, newest_first, query_in, query_of, query_partition, read_doc,
    replace_if_match, require_etag, run_batch, sort_key_of, span, timed, to_batch_error,
    write_if_match,
};
use super::{AGENTS, Cosmos};
use crate::keyset::{self, BySortKey, ByVersion};
use azure_data_cosmos::FeedScope;
use azure_data_cosmos::models::TransactionalBatch;
use chrono::{DateTime, Utc};
use flowgrid_domain::store::Condition;
use flowgrid_domain::store::{
    AgentQuery, AgentStore, AgentVersionSummary, DueAgent, Page, next_fire,
};
use flowgrid_domain::{Agent, AgentId, AgentStatus, TenantId};
use flowgrid_domain::{Error, Result};
use serde_json::json;

const TYPE_AGENT: &str = "agent";
const TYPE_VERSION: &str = "agentVersion";
const TYPE_NAME: &str = "agentName";
const TYPE_FIRE: &str = "agentFire";

/// Operations per transactional batch (the service's limit).
const BATCH_LIMIT: usize = 100;

/// The current agent.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    name_key: String,
    status: String,
    sort_key: String,
    /// Whether the agent has a schedule (for the cross-tenant scan of [`AgentStore::scheduled`]).
    #[serde(default)]
    scheduled: bool,
    /// Whether the agent's `agentFire` document is kept (false on agents stored before).
    #[serde(default)]
    fire_doc: bool,
    agent: Agent,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(AgentDoc, TYPE_AGENT, "agent");

/// One immutable version.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    agent_id: String,
    version: u32,
    agent: Agent,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(VersionDoc, TYPE_VERSION, "agent version");

/// An agent's next fire time.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FireDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    agent_id: String,
    next_fire_ms: Option<i64>,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(FireDoc, TYPE_FIRE, "agent fire time");

fn fire_id(id: AgentId) -> String {
    format!("fire-{id}")
}

fn fire_doc(agent: &Agent, next_fire_ms: Option<i64>) -> FireDoc {
    FireDoc {
        id: fire_id(agent.id),
        tenant_id: agent.tenant_id.as_str().to_owned(),
        kind: TYPE_FIRE.into(),
        agent_id: agent.id.to_string(),
        next_fire_ms,
        etag: String::new(),
    }
}

/// A name reservation.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NameDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    agent_id: String,
    name_key: String,
}

fn agent_doc(agent: &Agent) -> AgentDoc {
    let mut stored = agent.clone();
    stored.etag = String::new();
    AgentDoc {
        id: agent.id.to_string(),
        tenant_id: agent.tenant_id.as_str().to_owned(),
        kind: TYPE_AGENT.into(),
        name_key: agent.name_key(),
        status: agent.status.as_str().into(),
        sort_key: sort_key(agent),
        scheduled: agent.schedule.is_some(),
        fire_doc: true,
        agent: stored,
        etag: String::new(),
    }
}

fn version_doc(agent: &Agent) -> VersionDoc {
    let mut stored = agent.clone();
    stored.etag = String::new();
    VersionDoc {
        id: version_id(agent.id, agent.version),
        tenant_id: agent.tenant_id.as_str().to_owned(),
        kind: TYPE_VERSION.into(),
        agent_id: agent.id.to_string(),
        version: agent.version,
        agent: stored,
        etag: String::new(),
    }
}

fn name_doc(agent: &Agent) -> NameDoc {
    NameDoc {
        id: name_id(&agent.name_key()),
        tenant_id: agent.tenant_id.as_str().to_owned(),
        kind: TYPE_NAME.into(),
        agent_id: agent.id.to_string(),
        name_key: agent.name_key(),
    }
}

/// The agent's `sortKey`: creation time then id.
fn sort_key(agent: &Agent) -> String {
    sort_key_of(agent.created_at.timestamp_millis(), &agent.id.to_string())
}

fn version_id(id: AgentId, version: u32) -> String {
    format!("{id}:v{version}")
}

/// The reservation id of a lower-cased name.
fn name_id(name_key: &str) -> String {
    hashed_id("name", name_key)
}

fn into_agent(doc: AgentDoc) -> Agent {
    let mut agent = doc.agent;
    agent.etag = bare(&doc.etag);
    agent
}

impl Cosmos {
    /// The agent's document (with the raw ETag it was read with), or `NotFound`.
    async fn read_agent(&self, tenant: &TenantId, id: AgentId) -> Result<AgentDoc> {
        let c = &self.containers().await?.agents;
        read_doc(c, tenant.as_str(), &id.to_string())
            .await?
            .ok_or(Error::NotFound)
    }

    /// Runs `batch` in the agents container; `Ok(Err(..))` names the operation that failed.
    async fn run_batch(&self, batch: TransactionalBatch) -> Result<BatchOutcome> {
        run_batch(&self.containers().await?.agents, batch).await
    }

    /// Deletes version documents of `id` in batches (after the agent itself is gone).
    async fn delete_versions(&self, tenant: &TenantId, ids: Vec<String>) -> Result<()> {
        for chunk in ids.chunks(BATCH_LIMIT) {
            let mut batch = TransactionalBatch::new(tenant.as_str().to_owned());
            for id in chunk {
                batch = batch.delete_item(id.clone(), None);
            }
            if let Err(f) = self.run_batch(batch).await? {
                // 404: already gone. Anything else leaves history behind that no call can see
                // (reads check the agent first); log it for an operator.
                if f.status != 404 {
                    tracing::warn!(
                        status = f.status,
                        "could not delete all versions of a deleted agent"
                    );
                }
            }
        }
        Ok(())
    }

    /// Runs a parameterized query in the tenant's partition, returning up to `take` items.
    async fn query<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        text: impl Into<String>,
        params: Vec<(&'static str, serde_json::Value)>,
        tenant: &TenantId,
        take: usize,
    ) -> Result<Vec<T>> {
        let c = &self.containers().await?.agents;
        query_partition(c, query_of(text, params)?, tenant.as_str(), take).await
    }
}

fn failure_to_error(f: &BatchFailure, what: &[Option<Error>]) -> Error {
    match f.status {
        404 => Error::NotFound,
        412 => Error::PreconditionFailed,
        409 => what
            .get(f.index)
            .and_then(|e| e.as_ref())
            .map(clone_error)
            .unwrap_or_else(|| Error::Conflict("An agent with this name already exists.".into())),
        status => Error::Internal(format!("batch operation failed with {status}")),
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::PreconditionFailed => Error::PreconditionFailed,
        _ => Error::Internal(e.to_string()),
    }
}

fn name_taken() -> Option<Error> {
    Some(Error::Conflict(
        "An agent with this name already exists.".into(),
    ))
}

#[async_trait::async_trait]
impl AgentStore for Cosmos {
    async fn insert(&self, agent: &Agent) -> Result<Agent> {
        let tenant = agent.tenant_id.as_str();
        timed("insert", self.limit(), async {
            let batch = TransactionalBatch::new(tenant.to_owned())
                .create_item(name_doc(agent))
                .and_then(|b| b.create_item(agent_doc(agent)))
                .and_then(|b| b.create_item(version_doc(agent)))
                .and_then(|b| {
                    let next = next_fire(agent, agent.updated_at).map(|t| t.timestamp_millis());
                    b.upsert_item(fire_doc(agent, next), None)
                })
                .map_err(to_batch_error)?;
            match self.run_batch(batch).await? {
                Ok(etags) => Ok(Agent {
                    etag: batch_etag(&etags, 1, "agent")?,
                    ..agent.clone()
                }),
                Err(f) => Err(failure_to_error(
                    &f,
                    &[
                        name_taken(),
                        Some(Error::Conflict(
                            "An agent with this id already exists.".into(),
                        )),
                        Some(Error::Conflict(
                            "An agent with this id already exists.".into(),
                        )),
                    ],
                )),
            }
        })
        .instrument(span("insert", AGENTS, tenant))
        .await
    }

    async fn get(&self, tenant: &TenantId, id: AgentId) -> Result<Agent> {
        timed("get", self.limit(), async {
            Ok(into_agent(self.read_agent(tenant, id).await?))
        })
        .instrument(span("get", AGENTS, tenant.as_str()))
        .await
    }

    async fn list(&self, tenant: &TenantId, query: &AgentQuery) -> Result<Page<Agent>> {
        let after: Option<BySortKey> = keyset::after(query.continuation_token.as_deref())?;
        timed("list", self.limit(), async {
            let mut filters = Vec::new();
            if let Some(status) = query.status {
                filters.push(("c.status = @status", "@status", json!(status.as_str())));
            }
            if let Some(name) = &query.name_contains {
                let name = json!(name.to_lowercase());
                filters.push(("CONTAINS(c.nameKey, @name)", "@name", name));
            }
            let c = &self.containers().await?.agents;
            let sort_key = |d: &AgentDoc| d.sort_key.clone();
            newest_first(
                c,
                tenant.as_str(),
                filters,
                after,
                query.limit,
                sort_key,
                into_agent,
            )
            .await
        })
        .instrument(span("list", AGENTS, tenant.as_str()))
        .await
    }

    async fn replace(&self, next: &Agent, expected_etag: &str) -> Result<Agent> {
        let tenant = &next.tenant_id;
        timed("replace", self.limit(), async {
            let current = self.read_agent(tenant, next.id).await?;
            require_etag(&current, expected_etag)?;
            // The next fire time from now, unless the schedule is unchanged and its stored
            // (earlier) fire time has not been handled yet: an edit does not skip a due time.
            let c = &self.containers().await?.agents;
            let stored_fire: Option<FireDoc> =
                read_doc(c, tenant.as_str(), &fire_id(next.id)).await?;
            let fresh = next_fire(next, next.updated_at).map(|t| t.timestamp_millis());
            let next_fire_ms = match (fresh, stored_fire.and_then(|f| f.next_fire_ms)) {
                (Some(fresh), Some(stored))
                    if stored < fresh
                        && current.fire_doc
                        && current.agent.schedule == next.schedule =>
                {
                    Some(stored)
                }
                (fresh, _) => fresh,
            };
            let renamed = current.agent.name_key() != next.name_key();
            let mut batch = TransactionalBatch::new(tenant.as_str().to_owned());
            let mut meaning = Vec::new();
            if renamed {
                batch = batch.create_item(name_doc(next)).map_err(to_batch_error)?;
                meaning.push(name_taken());
            }
            let agent_index = meaning.len();
            batch = batch
                .replace_item(
                    next.id.to_string(),
                    agent_doc(next),
                    replace_if_match(&current.etag),
                )
                .map_err(to_batch_error)?;
            meaning.push(Some(Error::PreconditionFailed));
            // A version that already exists means another writer got there first.
            batch = batch
                .create_item(version_doc(next))
                .map_err(to_batch_error)?;
            meaning.push(Some(Error::PreconditionFailed));
            batch = batch
                .upsert_item(fire_doc(next, next_fire_ms), None)
                .map_err(to_batch_error)?;
            meaning.push(None);
            if renamed {
                batch = batch.delete_item(name_id(&current.agent.name_key()), None);
                meaning.push(None);
            }
            match self.run_batch(batch).await? {
                Ok(etags) => Ok(Agent {
                    etag: batch_etag(&etags, agent_index, "agent")?,
                    ..next.clone()
                }),
                Err(f) => Err(failure_to_error(&f, &meaning)),
            }
        })
        .instrument(span("replace", AGENTS, tenant.as_str()))
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        id: AgentId,
        if_match: Option<&Condition>,
    ) -> Result<()> {
        timed("delete", self.limit(), async {
            let current = self.read_agent(tenant, id).await?;
            if let Some(condition) = if_match
                && !condition.matches(&bare(&current.etag))
            {
                return Err(Error::PreconditionFailed);
            }
            let versions: Vec<IdOnly> = self
                .query(
                    "SELECT c.id FROM c WHERE c.tenantId = @tenant AND c.type = @type AND c.agentId = @agent",
                    vec![
                        ("@tenant", json!(tenant.as_str())),
                        ("@type", json!(TYPE_VERSION)),
                        ("@agent", json!(id.to_string())),
                    ],
                    tenant,
                    usize::MAX,
                )
                .await?;
            let mut versions: Vec<String> = versions.into_iter().map(|v| v.id).collect();
            // The agent (conditioned on the ETag just checked) and its name go first, with as
            // many versions as fit: on Cosmos this is atomic.
            let inline: Vec<String> = versions
                .drain(..versions.len().min(BATCH_LIMIT - 2))
                .collect();
            let mut batch = TransactionalBatch::new(tenant.as_str().to_owned())
                .delete_item(id.to_string(), delete_if_match(&current.etag))
                .delete_item(name_id(&current.agent.name_key()), None);
            for v in inline {
                batch = batch.delete_item(v, None);
            }
            if let Err(f) = self.run_batch(batch).await? {
                return Err(match (f.index, f.status) {
                    (_, 412) => Error::PreconditionFailed,
                    (0, 404) | (usize::MAX, 404) => Error::NotFound,
                    (_, status) => Error::Internal(format!("deleting an agent failed with {status}")),
                });
            }
            // The fire time (absent on agents stored before fire documents: not in the batch,
            // where a missing document would fail it). A leftover one is dropped by `due`.
            let c = &self.containers().await?.agents;
            delete_doc(c, tenant.as_str(), &fire_id(id)).await?;
            // More than a batch holds: the rest goes after. Should this fail half-way, the
            // leftover versions are unreachable (every read checks the agent first).
            self.delete_versions(tenant, versions).await
        })
        .instrument(span("delete", AGENTS, tenant.as_str()))
        .await
    }

    async fn versions(
        &self,
        tenant: &TenantId,
        id: AgentId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<AgentVersionSummary>> {
        let cursor: Option<ByVersion> = keyset::after(continuation_token)?;
        let limit = limit as usize;
        timed("versions", self.limit(), async {
            // The agent must exist now: a deleted agent has no history to show.
            self.read_agent(tenant, id).await?;
            let mut text = String::from(
                "SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type AND c.agentId = @agent",
            );
            let mut params = vec![
                ("@tenant", json!(tenant.as_str())),
                ("@type", json!(TYPE_VERSION)),
                ("@agent", json!(id.to_string())),
            ];
            if let Some(c) = &cursor {
                text.push_str(" AND c.version < @before");
                params.push(("@before", json!(c.v)));
            }
            text.push_str(" ORDER BY c.version DESC");
            let docs: Vec<VersionDoc> = self.query(text, params, tenant, limit + 1).await?;
            keyset::page(
                docs,
                limit,
                |d| ByVersion { v: d.version },
                |d| Ok(AgentVersionSummary::from(&d.agent)),
            )
        })
        .instrument(span("versions", AGENTS, tenant.as_str()))
        .await
    }

    /// The one cross-tenant query of agents: a full-container scan filtered in its text by
    /// `type`, `scheduled` and `status` (no tenant filter: it is meant to see every tenant; each
    /// result carries its `tenantId`). Ordered by tenant then id, as on SQLite, after the read,
    /// since a cross-partition `ORDER BY` needs the query plan the SDK does not run.
    async fn scheduled(&self, limit: u32) -> Result<Vec<Agent>> {
        timed("scheduled", self.limit(), async {
            let q = query_of(
                "SELECT * FROM c WHERE c.type = @type AND c.scheduled = true AND c.status != @disabled",
                vec![
                    ("@type", TYPE_AGENT.into()),
                    ("@disabled", AgentStatus::Disabled.as_str().into()),
                ],
            )?;
            let c = &self.containers().await?.agents;
            let docs: Vec<AgentDoc> = query_in(c, q, FeedScope::full_container(), usize::MAX).await?;
            let mut agents: Vec<Agent> = docs.into_iter().map(into_agent).collect();
            agents.sort_by(|a, b| {
                (a.tenant_id.as_str(), a.id.to_string()).cmp(&(b.tenant_id.as_str(), b.id.to_string()))
            });
            agents.truncate(limit as usize);
            Ok(agents)
        })
        .instrument(span("scheduled", AGENTS, ""))
        .await
    }

    /// Two indexed cross-partition queries: fire documents whose `nextFireMs` has come, and
    /// agents stored before fire documents existed; then a point read of each due agent.
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueAgent>> {
        timed("due", self.limit(), async {
            let c = &self.containers().await?.agents;
            let q = query_of(
                "SELECT * FROM c WHERE c.type = @type AND c.nextFireMs <= @now",
                vec![
                    ("@type", TYPE_FIRE.into()),
                    ("@now", json!(now.timestamp_millis())),
                ],
            )?;
            let mut fires: Vec<FireDoc> =
                query_in(c, q, FeedScope::full_container(), limit as usize).await?;
            fires.sort_by_key(|f| f.next_fire_ms);
            let mut due = Vec::new();
            for fire in fires {
                let (Ok(id), Ok(tenant), Some(ms)) = (
                    AgentId::parse(&fire.agent_id),
                    TenantId::parse(&fire.tenant_id),
                    fire.next_fire_ms,
                ) else {
                    continue;
                };
                match self.read_agent(&tenant, id).await {
                    Ok(doc) => due.push(DueAgent {
                        agent: into_agent(doc),
                        next_fire: DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                    }),
                    Err(Error::NotFound) => {
                        delete_doc(c, tenant.as_str(), &fire.id).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            let left = (limit as usize).saturating_sub(due.len());
            if left > 0 {
                let q = query_of(
                    "SELECT * FROM c WHERE c.type = @type AND c.scheduled = true \
                     AND c.status = @active AND NOT IS_DEFINED(c.fireDoc)",
                    vec![
                        ("@type", TYPE_AGENT.into()),
                        ("@active", AgentStatus::Active.as_str().into()),
                    ],
                )?;
                let legacy: Vec<AgentDoc> =
                    query_in(c, q, FeedScope::full_container(), left).await?;
                due.extend(legacy.into_iter().map(|doc| DueAgent {
                    agent: into_agent(doc),
                    next_fire: DateTime::<Utc>::UNIX_EPOCH,
                }));
            }
            Ok(due)
        })
        .instrument(span("due", AGENTS, ""))
        .await
    }

    async fn advance_schedule(
        &self,
        tenant: &TenantId,
        id: AgentId,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<()> {
        timed("advance_schedule", self.limit(), async {
            let c = &self.containers().await?.agents;
            let current = self.read_agent(tenant, id).await?;
            let to_ms = to.map(|t| t.timestamp_millis());
            if !current.fire_doc {
                // Stored before fire documents: write its own, then mark the agent (once; its
                // ETag changes this one time).
                let fire = fire_doc(&current.agent, to_ms);
                c.upsert_item(tenant.as_str().to_owned(), &fire.id.clone(), fire, None)
                    .await
                    .map_err(|e| map_error(e, "writing an agent fire time"))?;
                let etag = current.etag.clone();
                let marked = AgentDoc {
                    fire_doc: true,
                    ..current
                };
                match c
                    .replace_item(
                        tenant.as_str().to_owned(),
                        &id.to_string(),
                        marked,
                        write_if_match(&etag),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.status().is_precondition_failed() => {}
                    Err(e) => return Err(map_error(e, "marking an agent")),
                }
                return Ok(());
            }
            let Some(fire): Option<FireDoc> = read_doc(c, tenant.as_str(), &fire_id(id)).await?
            else {
                return Ok(());
            };
            if fire.next_fire_ms != Some(from.timestamp_millis()) {
                return Ok(());
            }
            let etag = fire.etag.clone();
            let next = FireDoc {
                next_fire_ms: to_ms,
                ..fire
            };
            match c
                .replace_item(
                    tenant.as_str().to_owned(),
                    &next.id.clone(),
                    next,
                    write_if_match(&etag),
                )
                .await
            {
                Ok(_) => Ok(()),
                // Moved by an edit meanwhile: the edit's time stands.
                Err(e) if e.status().is_precondition_failed() => Ok(()),
                Err(e) => Err(map_error(e, "moving an agent fire time")),
            }
        })
        .instrument(span("advance_schedule", AGENTS, tenant.as_str()))
        .await
    }

    async fn version(&self, tenant: &TenantId, id: AgentId, version: u32) -> Result<Agent> {
        timed("version", self.limit(), async {
            self.read_agent(tenant, id).await?;
            let c = &self.containers().await?.agents;
            let doc: VersionDoc = read_doc(c, tenant.as_str(), &version_id(id, version))
                .await?
                .ok_or(Error::NotFound)?;
            Ok(doc.agent)
        })
        .instrument(span("version", AGENTS, tenant.as_str()))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_ids_are_valid_cosmos_ids_whatever_the_name() {
        let id = name_id("a/b\\c?d#e");
        assert!(!id.contains(['/', '\\', '?', '#']));
        assert_eq!(id.len(), "name-".len() + 64);
    }
}
