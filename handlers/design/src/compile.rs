//! Compiled plans as immutable artifacts in Blob Storage.
//!
//! An artifact is the JSON of [`Artifact`]: the plan format, the agent and its version, the
//! compiler's version, the SHA-256 of the plan's JSON, and the plan. It holds no time, so
//! compiling the same version again with the same compiler gives the same bytes, the same hash,
//! the same blob name (`compiled/{agentId}/v{version}/{hash}.json`) and the same `agent-compiled`
//! event id: compiling is idempotent.

use flowgrid_domain::AgentId;
use flowgrid_domain::blob::BlobName;
use flowgrid_domain::plan::{PLAN_FORMAT, Plan};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::image::sha256_hex;

/// The compiler's version: the version of this build.
pub const COMPILER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A compiled agent as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// The plan format.
    pub plan_format: u32,
    /// The agent.
    pub agent_id: AgentId,
    /// The version compiled.
    pub agent_version: u32,
    /// The compiler's version.
    pub compiler_version: String,
    /// SHA-256 (hex) of the plan's JSON (compact, members sorted).
    pub content_hash: String,
    /// The plan, its object members in sorted order (the plan holds maps whose order is not
    /// stable; sorted, the same plan is always the same bytes).
    pub plan: Value,
}

/// `value` with every object's members in sorted order.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl Artifact {
    /// The artifact of `plan`.
    pub fn of(plan: Plan) -> flowgrid_domain::Result<Artifact> {
        let encode = |e: serde_json::Error| {
            flowgrid_domain::Error::Internal(format!("encoding a plan: {e}"))
        };
        let value = canonical(&serde_json::to_value(&plan).map_err(encode)?);
        let json = serde_json::to_vec(&value).map_err(encode)?;
        Ok(Artifact {
            plan_format: PLAN_FORMAT,
            agent_id: plan.agent_id,
            agent_version: plan.agent_version,
            compiler_version: COMPILER_VERSION.to_owned(),
            content_hash: sha256_hex(&json),
            plan: value,
        })
    }

    /// Its blob's name.
    pub fn blob_name(&self) -> flowgrid_domain::Result<BlobName> {
        BlobName::parse(&format!(
            "compiled/{}/v{}/{}.json",
            self.agent_id, self.agent_version, self.content_hash
        ))
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> flowgrid_domain::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| flowgrid_domain::Error::Internal(format!("encoding an artifact: {e}")))
    }
}
