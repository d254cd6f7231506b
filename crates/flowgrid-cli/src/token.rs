//! `flowgrid token`: a development access token.

use std::path::Path;

use anyhow::Context;
use flowgrid_domain::TenantId;
use flowgrid_domain::config::Config;
use flowgrid_http::auth::{DevKey, Role, TokenRequest};

/// Arguments of `flowgrid token`.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// Tenant id the token is for (1-64 characters of A-Z a-z 0-9 _ -).
    #[arg(long)]
    tenant: String,
    /// Role: viewer, editor, admin or owner.
    #[arg(long, default_value = "editor", value_parser = parse_role)]
    role: Role,
    /// Subject (user id) of the token.
    #[arg(long, default_value = "dev-user")]
    user: String,
    /// Lifetime in minutes.
    #[arg(long, default_value_t = 60)]
    ttl_minutes: u64,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role (viewer, editor, admin, owner)"))
}

/// Prints the token as the last line of stdout, with a line on how to use it before it.
pub fn run(data_dir: &Path, args: &TokenArgs) -> anyhow::Result<()> {
    TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let config = Config::from_lookup(|name| match name {
        "FLOWGRID_DATA_DIR" => Some(data_dir.display().to_string()),
        _ => std::env::var(name).ok(),
    })
    .context("reading settings")?;
    if config.jwt_jwks.is_some() {
        anyhow::bail!(
            "FLOWGRID_JWT_JWKS is set, so handlers trust only those keys and would reject a development token; \
             unset it to use the local development key"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key = runtime
        .block_on(DevKey::from_configured_store(&config))
        .context("loading the issuer's signing key")?;
    let token = key.mint(&TokenRequest {
        tenant: args.tenant.clone(),
        role: args.role,
        user: args.user.clone(),
        issuer: config.jwt_issuer,
        audience: config.jwt_audience,
        ttl_secs: args.ttl_minutes.clamp(1, 24 * 60) * 60,
    })?;
    eprintln!(
        "token for tenant {} as {} ({}), valid {} min; use: -H \"Authorization: Bearer $TOKEN\"",
        args.tenant,
        args.role.as_str(),
        args.user,
        args.ttl_minutes.clamp(1, 24 * 60)
    );
    println!("{token}");
    Ok(())
}
