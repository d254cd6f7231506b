//! Identifiers.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A tenant id: 1–64 characters of `[A-Za-z0-9_-]`. It always comes from a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant id.
    pub fn parse(s: &str) -> Result<Self> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(Error::BadRequest(format!("{s:?} is not a tenant id")))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agent id: a UUID (v7 for new agents, so ids sort by creation time).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct AgentId(uuid::Uuid);

impl AgentId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        AgentId(uuid::Uuid::now_v7())
    }

    /// Parses an id from a path segment; anything but a UUID is a 400.
    pub fn parse(s: &str) -> Result<Self> {
        uuid::Uuid::try_parse(s).map(AgentId).map_err(|_| {
            Error::BadRequest(format!("{:?} is not an agent id (a UUID)", truncate(s)))
        })
    }
}

impl Default for AgentId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_reject_separators_and_empty() {
        assert!(TenantId::parse("acme-01_x").is_ok());
        for bad in ["", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn agent_ids_must_be_uuids() {
        let id = AgentId::new();
        assert_eq!(AgentId::parse(&id.to_string()).unwrap(), id);
        assert!(AgentId::parse("not-a-uuid").is_err());
    }
}
