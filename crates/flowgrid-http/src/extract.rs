//! Typed path parameters: `Id<AgentId>` reads the route's `{id}` and parses it, so a handler
//! never sees a raw string and a malformed id is a problem+json 400 before the handler runs.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use flowgrid_domain::store::JobId;
use flowgrid_domain::{AgentId, Error, Result, UserId};

use crate::ApiError;

/// A value read from one named path parameter.
pub trait PathParam: Sized {
    /// The parameter's name in the route template (`id` in `agents/{id}`).
    const NAME: &'static str;
    /// Parses the (percent-decoded) segment; a bad one is a 400 naming what was expected.
    fn parse(segment: &str) -> Result<Self>;
}

/// The path parameter `T::NAME`, parsed.
#[derive(Debug, Clone, Copy)]
pub struct Id<T>(pub T);

impl<T, S> FromRequestParts<S> for Id<T>
where
    T: PathParam,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::BadRequest("The path is not valid UTF-8.".into()))?;
        let segment = params
            .iter()
            .find_map(|(name, value)| (name == T::NAME).then_some(value))
            .ok_or_else(|| Error::Internal(format!("the route has no {{{}}}", T::NAME)))?;
        Ok(Id(T::parse(segment)?))
    }
}

impl PathParam for AgentId {
    const NAME: &'static str = "id";
    fn parse(segment: &str) -> Result<Self> {
        AgentId::parse(segment)
    }
}

impl PathParam for UserId {
    const NAME: &'static str = "id";
    fn parse(segment: &str) -> Result<Self> {
        UserId::parse(segment)
    }
}

impl PathParam for JobId {
    const NAME: &'static str = "jobId";
    fn parse(segment: &str) -> Result<Self> {
        JobId::parse(segment)
    }
}

/// An agent version number from `{version}`: 1, 2, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub u32);

impl PathParam for Version {
    const NAME: &'static str = "version";
    fn parse(segment: &str) -> Result<Self> {
        segment
            .parse::<u32>()
            .ok()
            .filter(|v| *v >= 1)
            .map(Version)
            .ok_or_else(|| {
                Error::BadRequest(format!("{segment:?} is not a version number (1, 2, ...)"))
            })
    }
}
