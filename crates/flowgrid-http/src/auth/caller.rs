//! The authenticated caller of a request, and what their roles allow.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::TokenVerifier;
use crate::RequestContext;
use flowgrid_domain::TenantId;
use flowgrid_domain::{Error, Result, Role};

/// Who is calling: the verified subject, tenant and roles of the bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant every storage call of this request is scoped to.
    pub tenant: TenantId,
    /// The token's `sub`.
    pub subject: String,
    /// The highest role the token grants, if any.
    pub role: Option<Role>,
    /// The token's session id (`sid`), when present.
    pub session_id: Option<String>,
}

impl Caller {
    /// Succeeds when the caller holds `needed` or a higher role; 403 otherwise.
    pub fn require(&self, needed: Role) -> Result<()> {
        match self.role {
            Some(role) if role >= needed => Ok(()),
            _ => Err(Error::Forbidden(format!(
                "This action needs the {} role.",
                needed.as_str()
            ))),
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<TokenVerifier>: axum::extract::FromRef<S>,
{
    type Rejection = crate::ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier: Arc<TokenVerifier> = axum::extract::FromRef::from_ref(state);
        let token = bearer_token(parts)?;
        let caller = verifier.authenticate(token).await?.into_caller()?;
        if let Some(context) = parts.extensions.get::<RequestContext>() {
            context.set_tenant(caller.tenant.as_str());
        }
        Ok(caller)
    }
}

fn bearer_token(parts: &Parts) -> Result<&str> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthorized("no Authorization header".into()))?
        .to_str()
        .map_err(|_| Error::Unauthorized("Authorization header is not ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        Error::Unauthorized("Authorization header is not `Bearer <token>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthorized(
            "Authorization scheme is not Bearer".into(),
        ));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_viewer_editor_admin_owner() {
        assert!(
            Role::Viewer < Role::Editor && Role::Editor < Role::Admin && Role::Admin < Role::Owner
        );
        let caller = Caller {
            tenant: TenantId::parse("t1").unwrap(),
            subject: "u".into(),
            role: Some(Role::Editor),
            session_id: None,
        };
        assert!(caller.require(Role::Viewer).is_ok());
        assert!(caller.require(Role::Editor).is_ok());
        assert!(matches!(
            caller.require(Role::Admin),
            Err(Error::Forbidden(_))
        ));
    }
}
