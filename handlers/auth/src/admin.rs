//! What the `flowgrid admin` commands do, without HTTP: bootstrap a tenant with its owner, and
//! rotate the built-in issuer's signing keys.

use crate::Stores;
use chrono::Utc;
use flowgrid_domain::config::Config;
use flowgrid_domain::{Email, Tenant, User, UserId};
use flowgrid_domain::{Error, Result};
use flowgrid_http::auth::Role;
use flowgrid_http::auth::keyring::{self, KeyEncryptionKey};
use serde::Serialize;

use crate::password::{Params, Passwords, random_token};

/// A new tenant and the one-time password of its owner.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTenant {
    /// The tenant id.
    pub tenant_id: String,
    /// The owner's email.
    pub email: String,
    /// The owner's generated password, shown once (only its hash is stored).
    pub password: String,
}

impl std::fmt::Debug for CreatedTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedTenant")
            .field("tenant_id", &self.tenant_id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Creates tenant `name` with an owner `admin_email` holding a generated password.
pub async fn create_tenant(
    stores: &Stores,
    name: &str,
    admin_email: &str,
) -> Result<CreatedTenant> {
    create_tenant_with(stores, name, admin_email, Params::PRODUCTION).await
}

/// [`create_tenant`] with explicit password-hash parameters.
pub async fn create_tenant_with(
    stores: &Stores,
    name: &str,
    admin_email: &str,
    params: Params,
) -> Result<CreatedTenant> {
    let email = Email::parse(admin_email)?;
    let now = Utc::now();
    let tenant = Tenant::create(name, now)?;
    let password = random_token(15)?;
    let passwords = tokio::task::spawn_blocking(move || Passwords::new(params))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let owner = User {
        id: UserId::new(),
        tenant_id: tenant.id.clone(),
        email: email.clone(),
        roles: vec![Role::Owner.as_str().to_owned()],
        disabled: false,
        password_hash: Some(passwords.hash(&password).await?),
        one_time_token: None,
        created_at: now,
        updated_at: now,
        etag: String::new(),
    };
    stores.tenants.insert(&tenant).await?;
    stores.users.insert(&owner).await?;
    Ok(CreatedTenant {
        tenant_id: tenant.id.as_str().to_owned(),
        email: email.as_str().to_owned(),
        password,
    })
}

/// Makes a new signing key current; returns the new key id and the ids still published.
pub async fn rotate_keys(config: &Config, stores: &Stores) -> Result<(String, Vec<String>)> {
    if config.jwt_jwks.is_some() {
        return Err(Error::Config(
            "FLOWGRID_JWT_JWKS is set: handlers trust only those keys, so a new stored key would \
             not verify; rotate the keys in that setting instead"
                .into(),
        ));
    }
    let kek = KeyEncryptionKey::from_config(config)?;
    let kid = keyring::rotate(stores.signing_keys.as_ref(), &kek).await?;
    let published = keyring::published_jwks(&stores.signing_keys.list().await?, Utc::now())
        .keys
        .into_iter()
        .filter_map(|k| k.common.key_id)
        .collect();
    Ok((kid, published))
}
