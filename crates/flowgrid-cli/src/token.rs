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

/// Parses a role name for clap.
pub fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role (viewer, editor, admin, owner)"))
}

/// Prints the token as the only line of stdout (so `TOKEN=$(flowgrid token ...)` works), with
/// a line on how to use it on stderr.
pub fn run(data_dir: &Path, args: &TokenArgs) -> anyhow::Result<()> {
    let ttl_minutes = args.ttl_minutes.clamp(1, 24 * 60);
    let token = mint(data_dir, &args.tenant, args.role, &args.user, ttl_minutes)?;
    eprintln!(
        "token for tenant {} as {} ({}), valid {ttl_minutes} min; use: -H \"Authorization: Bearer $TOKEN\"",
        args.tenant,
        args.role.as_str(),
        args.user,
    );
    println!("{token}");
    Ok(())
}

/// A development access token signed with the built-in issuer's current key in `data_dir`
/// (created with the folder when there is none; said on stderr). Its issuer is the one the
/// `flowgrid dev` running on that folder gives its apps (it follows `--port`), else
/// `FLOWGRID_JWT_ISSUER`, else the default.
pub fn mint(
    data_dir: &Path,
    tenant: &str,
    role: Role,
    user: &str,
    ttl_minutes: u64,
) -> anyhow::Result<String> {
    TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let running = flowgrid_host::devstate::DevState::read(data_dir);
    let config = Config::from_lookup(|name| match name {
        "FLOWGRID_DATA_DIR" => Some(data_dir.display().to_string()),
        "FLOWGRID_JWT_ISSUER" => std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| running.as_ref().map(|r| r.issuer.clone())),
        _ => std::env::var(name).ok(),
    })
    .context("reading settings")?;
    if config.jwt_jwks.is_some() {
        anyhow::bail!(
            "FLOWGRID_JWT_JWKS is set, so handlers trust only those keys and would reject a development token; \
             unset it to use the local development key"
        );
    }
    let existed = data_dir.exists();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key = runtime
        .block_on(DevKey::from_configured_store(&config))
        .context("loading the issuer's signing key")?;
    if !existed && data_dir.exists() {
        eprintln!(
            "flowgrid: created the data folder {} with a new signing key; `flowgrid dev` trusts its tokens when it runs on the same --data-dir",
            data_dir.display()
        );
    }
    let token = key.mint(&TokenRequest {
        tenant: tenant.to_owned(),
        role,
        user: user.to_owned(),
        issuer: config.jwt_issuer,
        audience: config.jwt_audience,
        ttl_secs: ttl_minutes * 60,
    })?;
    Ok(token)
}
