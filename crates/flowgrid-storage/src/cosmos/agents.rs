//! Agents on Cosmos: the `agents` container, partition `/tenantId`.
//!
//! Three document types share the tenant's partition:
//! - `agent`: the current agent (`id` = the agent id), with `nameKey`, `status` and `sortKey`
//!   (creation time then id, fixed width, so one `ORDER BY` gives newest first with no composite
//!   index);
//! - `agentVersion`: one immutable copy per version (`id` = `<agent id>:v<version>`);
//! - `agentName`: the reservation of a name (`id` = `name-<sha256 of the lower-cased name>`).
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

use super::{
    BatchFailure, BatchOutcome, Cosmos, bare, charge, map_error, query_in, query_of, raw,
    run_batch, timed,
};
use azure_data_cosmos::models::TransactionalBatch;
use azure_data_cosmos::options::{BatchDeleteOptions, BatchReplaceOptions, Precondition};
use azure_data_cosmos::{FeedScope, Query};
use flowgrid_domain::store::Condition;
use flowgrid_domain::store::{
    AgentQuery, AgentStore, AgentVersionSummary, Page, decode_token, encode_token,
};
use flowgrid_domain::{Agent, AgentId, AgentStatus, TenantId};
use flowgrid_domain::{Error, Result};

/// The container's name.
pub(super) const CONTAINER: &str = "agents";

const TYPE_AGENT: &str = "agent";
const TYPE_VERSION: &str = "agentVersion";
const TYPE_NAME: &str = "agentName";

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
    agent: Agent,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

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

/// Only the id of a document (for deletes).
#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Where a listing page ended: the `sortKey` of its last agent.
#[derive(Serialize, Deserialize)]
struct AgentCursor {
    s: String,
}

/// Where a version listing page ended.
#[derive(Serialize, Deserialize)]
struct VersionCursor {
    v: u32,
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

/// Creation time (milliseconds, shifted to be non-negative, 20 digits) then id: sorts as
/// `(created_at, id)` does, like the SQLite backend's order.
fn sort_key(agent: &Agent) -> String {
    sort_key_of(agent.created_at.timestamp_millis(), &agent.id.to_string())
}

fn sort_key_of(created_ms: i64, id: &str) -> String {
    let ms = i128::from(created_ms) + (1i128 << 62);
    format!("{ms:020}|{id}")
}

fn version_id(id: AgentId, version: u32) -> String {
    format!("{id}:v{version}")
}

/// The reservation id of a lower-cased name: a hash, since names may hold characters Cosmos
/// ids may not (`/`, `\`, `?`, `#`) and may be longer than is comfortable in an id.
fn name_id(name_key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name_key.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("name-{hex}")
}

fn into_agent(doc: AgentDoc) -> Agent {
    let mut agent = doc.agent;
    agent.etag = bare(&doc.etag);
    agent
}

fn span(operation: &'static str, tenant: &TenantId) -> tracing::Span {
    tracing::info_span!(
        "cosmos",
        db.system = "cosmosdb",
        db.operation = operation,
        db.collection = CONTAINER,
        tenant.id = %tenant,
        db.cosmos.request_charge = tracing::field::Empty,
    )
}

impl Cosmos {
    /// The agent, the raw ETag of its document, and the request charge.
    async fn read_agent(&self, tenant: &TenantId, id: AgentId) -> Result<(Agent, String, f64)> {
        let c = &self.containers().await?.agents;
        let response = c
            .read_item(tenant.as_str().to_owned(), &id.to_string(), None)
            .await
            .map_err(|e| map_error(e, "reading an agent"))?;
        let units = response
            .headers()
            .request_charge()
            .map_or(0.0, |r| r.value());
        let doc: AgentDoc = response
            .into_model()
            .map_err(|e| Error::Internal(format!("decoding a stored agent: {e}")))?;
        if doc.kind != TYPE_AGENT || doc.tenant_id != tenant.as_str() {
            return Err(Error::NotFound);
        }
        let raw_etag = doc.etag.clone();
        Ok((into_agent(doc), raw_etag, units))
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
        query: Query,
        tenant: &TenantId,
        take: usize,
    ) -> Result<Vec<T>> {
        let c = &self.containers().await?.agents;
        query_in(
            c,
            query,
            FeedScope::partition(tenant.as_str().to_owned()),
            take,
        )
        .await
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

fn to_batch_error(e: azure_data_cosmos::CosmosError) -> Error {
    Error::Internal(format!("building a batch: {e}"))
}

#[async_trait::async_trait]
impl AgentStore for Cosmos {
    async fn insert(&self, agent: &Agent) -> Result<Agent> {
        let span = span("insert", &agent.tenant_id);
        timed("insert", self.limit(), async {
            let batch = TransactionalBatch::new(agent.tenant_id.as_str().to_owned())
                .create_item(name_doc(agent))
                .and_then(|b| b.create_item(agent_doc(agent)))
                .and_then(|b| b.create_item(version_doc(agent)))
                .map_err(to_batch_error)?;
            match self.run_batch(batch).await? {
                Ok((etags, units)) => {
                    charge(units);
                    let mut stored = agent.clone();
                    stored.etag = etags.get(1).cloned().flatten().ok_or_else(|| {
                        Error::Internal("the batch returned no ETag for the agent".into())
                    })?;
                    Ok(stored)
                }
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
        .instrument(span)
        .await
    }

    async fn get(&self, tenant: &TenantId, id: AgentId) -> Result<Agent> {
        timed("get", self.limit(), async {
            let (agent, _, units) = self.read_agent(tenant, id).await?;
            charge(units);
            Ok(agent)
        })
        .instrument(span("get", tenant))
        .await
    }

    async fn list(&self, tenant: &TenantId, query: &AgentQuery) -> Result<Page<Agent>> {
        let cursor: Option<AgentCursor> = query
            .continuation_token
            .as_deref()
            .map(decode_token)
            .transpose()?;
        let limit = query.limit as usize;
        timed("list", self.limit(), async {
            // Fixed text fragments only; every value is a parameter.
            let mut text =
                String::from("SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type");
            if query.status.is_some() {
                text.push_str(" AND c.status = @status");
            }
            if query.name_contains.is_some() {
                text.push_str(" AND CONTAINS(c.nameKey, @name)");
            }
            if cursor.is_some() {
                text.push_str(" AND c.sortKey < @after");
            }
            text.push_str(" ORDER BY c.sortKey DESC");
            let param = |e: azure_data_cosmos::CosmosError| {
                Error::Internal(format!("query parameter: {e}"))
            };
            let mut q = Query::from(text)
                .with_parameter("@tenant", tenant.as_str())
                .and_then(|q| q.with_parameter("@type", TYPE_AGENT))
                .map_err(param)?;
            if let Some(status) = query.status {
                q = q
                    .with_parameter("@status", status.as_str())
                    .map_err(param)?;
            }
            if let Some(name) = &query.name_contains {
                q = q
                    .with_parameter("@name", name.to_lowercase())
                    .map_err(param)?;
            }
            if let Some(c) = &cursor {
                q = q.with_parameter("@after", c.s.as_str()).map_err(param)?;
            }
            let docs: Vec<AgentDoc> = self.query(q, tenant, limit + 1).await?;
            let more = docs.len() > limit;
            let docs: Vec<AgentDoc> = docs.into_iter().take(limit).collect();
            let continuation_token = match (more, docs.last()) {
                (true, Some(last)) => Some(encode_token(&AgentCursor {
                    s: last.sort_key.clone(),
                })),
                _ => None,
            };
            Ok(Page {
                items: docs.into_iter().map(into_agent).collect(),
                continuation_token,
            })
        })
        .instrument(span("list", tenant))
        .await
    }

    async fn replace(&self, next: &Agent, expected_etag: &str) -> Result<Agent> {
        let tenant = &next.tenant_id;
        timed("replace", self.limit(), async {
            let (current, current_raw, read_units) = self.read_agent(tenant, next.id).await?;
            if current.etag != expected_etag {
                charge(read_units);
                return Err(Error::PreconditionFailed);
            }
            let renamed = current.name_key() != next.name_key();
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
                    Some(
                        BatchReplaceOptions::default()
                            .with_precondition(Precondition::if_match(raw(&current_raw))),
                    ),
                )
                .map_err(to_batch_error)?;
            meaning.push(Some(Error::PreconditionFailed));
            // A version that already exists means another writer got there first.
            batch = batch
                .create_item(version_doc(next))
                .map_err(to_batch_error)?;
            meaning.push(Some(Error::PreconditionFailed));
            if renamed {
                batch = batch.delete_item(name_id(&current.name_key()), None);
                meaning.push(None);
            }
            match self.run_batch(batch).await? {
                Ok((etags, units)) => {
                    charge(read_units + units);
                    let mut stored = next.clone();
                    stored.etag = etags.get(agent_index).cloned().flatten().ok_or_else(|| {
                        Error::Internal("the batch returned no ETag for the agent".into())
                    })?;
                    Ok(stored)
                }
                Err(f) => Err(failure_to_error(&f, &meaning)),
            }
        })
        .instrument(span("replace", tenant))
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        id: AgentId,
        if_match: Option<&Condition>,
    ) -> Result<()> {
        timed("delete", self.limit(), async {
            let (current, current_raw, units) = self.read_agent(tenant, id).await?;
            charge(units);
            if let Some(condition) = if_match
                && !condition.matches(&current.etag)
            {
                return Err(Error::PreconditionFailed);
            }
            let mut q = Query::from(
                "SELECT c.id FROM c WHERE c.tenantId = @tenant AND c.type = @type AND c.agentId = @agent",
            );
            for (name, value) in [
                ("@tenant", tenant.as_str().to_owned()),
                ("@type", TYPE_VERSION.to_owned()),
                ("@agent", id.to_string()),
            ] {
                q = q
                    .with_parameter(name, value)
                    .map_err(|e| Error::Internal(format!("query parameter: {e}")))?;
            }
            let versions: Vec<IdOnly> = self.query(q, tenant, usize::MAX).await?;
            let mut versions: Vec<String> = versions.into_iter().map(|v| v.id).collect();
            // The agent (conditioned on the ETag just checked) and its name go first, with as
            // many versions as fit: on Cosmos this is atomic.
            let inline: Vec<String> = versions
                .drain(..versions.len().min(BATCH_LIMIT - 2))
                .collect();
            let mut batch = TransactionalBatch::new(tenant.as_str().to_owned())
                .delete_item(
                    id.to_string(),
                    Some(
                        BatchDeleteOptions::default()
                            .with_precondition(Precondition::if_match(raw(&current_raw))),
                    ),
                )
                .delete_item(name_id(&current.name_key()), None);
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
            // More than a batch holds: the rest goes after. Should this fail half-way, the
            // leftover versions are unreachable (every read checks the agent first).
            self.delete_versions(tenant, versions).await
        })
        .instrument(span("delete", tenant))
        .await
    }

    async fn versions(
        &self,
        tenant: &TenantId,
        id: AgentId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<AgentVersionSummary>> {
        let cursor: Option<VersionCursor> = continuation_token.map(decode_token).transpose()?;
        let limit = limit as usize;
        timed("versions", self.limit(), async {
            // The agent must exist now: a deleted agent has no history to show.
            self.read_agent(tenant, id).await?;
            let mut text = String::from(
                "SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type AND c.agentId = @agent",
            );
            if cursor.is_some() {
                text.push_str(" AND c.version < @before");
            }
            text.push_str(" ORDER BY c.version DESC");
            let param = |e: azure_data_cosmos::CosmosError| {
                Error::Internal(format!("query parameter: {e}"))
            };
            let mut q = Query::from(text)
                .with_parameter("@tenant", tenant.as_str())
                .and_then(|q| q.with_parameter("@type", TYPE_VERSION))
                .and_then(|q| q.with_parameter("@agent", id.to_string()))
                .map_err(param)?;
            if let Some(c) = &cursor {
                q = q.with_parameter("@before", c.v).map_err(param)?;
            }
            let docs: Vec<VersionDoc> = self.query(q, tenant, limit + 1).await?;
            let more = docs.len() > limit;
            let items: Vec<AgentVersionSummary> = docs
                .iter()
                .take(limit)
                .map(|d| AgentVersionSummary::from(&d.agent))
                .collect();
            let continuation_token = match (more, items.last()) {
                (true, Some(last)) => Some(encode_token(&VersionCursor { v: last.version })),
                _ => None,
            };
            Ok(Page {
                items,
                continuation_token,
            })
        })
        .instrument(span("versions", tenant))
        .await
    }

    /// The one cross-tenant query of agents: a full-container scan filtered in its text by
    /// `type`, `scheduled` and `status` (no tenant filter: it is meant to see every tenant; each
    /// result carries its `tenantId`). Ordered by tenant then id, as on SQLite, after the read,
    /// since a cross-partition `ORDER BY` needs the query plan the SDK does not run.
    async fn scheduled(&self, limit: u32) -> Result<Vec<Agent>> {
        let span = tracing::info_span!(
            "cosmos",
            db.system = "cosmosdb",
            db.operation = "scheduled",
            db.collection = CONTAINER,
            db.cosmos.request_charge = tracing::field::Empty,
        );
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
        .instrument(span)
        .await
    }

    async fn version(&self, tenant: &TenantId, id: AgentId, version: u32) -> Result<Agent> {
        timed("version", self.limit(), async {
            let (_, _, read_units) = self.read_agent(tenant, id).await?;
            let c = &self.containers().await?.agents;
            let response = c
                .read_item(tenant.as_str().to_owned(), &version_id(id, version), None)
                .await
                .map_err(|e| map_error(e, "reading a version"))?;
            charge(
                read_units
                    + response
                        .headers()
                        .request_charge()
                        .map_or(0.0, |r| r.value()),
            );
            let doc: VersionDoc = response
                .into_model()
                .map_err(|e| Error::Internal(format!("decoding a stored version: {e}")))?;
            if doc.kind != TYPE_VERSION || doc.tenant_id != tenant.as_str() {
                return Err(Error::NotFound);
            }
            Ok(doc.agent)
        })
        .instrument(span("version", tenant))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_order_as_creation_time_then_id() {
        assert!(sort_key_of(999, "b") < sort_key_of(1_000, "a"));
        assert!(sort_key_of(-5, "z") < sort_key_of(0, "a"));
        assert!(sort_key_of(1_000, "a") < sort_key_of(1_000, "b"));
        assert!(sort_key_of(99_999_999_999_999, "a") > sort_key_of(1_000, "a"));
    }

    #[test]
    fn name_ids_are_valid_cosmos_ids_whatever_the_name() {
        let id = name_id("a/b\\c?d#e");
        assert!(!id.contains(['/', '\\', '?', '#']));
        assert_eq!(id.len(), "name-".len() + 64);
    }
}
