//! `flowgrid admin`: tenant bootstrap and signing-key rotation, straight against storage
//! (no HTTP, no token needed: whoever can read the data folder or the settings is an operator).

use anyhow::Context;
use flowgrid_auth::Stores;
use flowgrid_domain::config::Config;

/// `flowgrid admin` subcommands.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Create a tenant and its owner; prints the tenant id and the owner's one-time password.
    CreateTenant(CreateTenantArgs),
    /// Make a new signing key current for the built-in issuer (older keys stay published until
    /// the tokens they signed have expired).
    RotateKeys(RotateKeysArgs),
}

/// Arguments of `flowgrid admin create-tenant`.
#[derive(clap::Args)]
pub struct CreateTenantArgs {
    /// Display name of the tenant.
    #[arg(long)]
    name: String,
    /// Email of the tenant's owner.
    #[arg(long)]
    admin_email: String,
    /// Print `{"tenantId","email","password"}` instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `flowgrid admin rotate-keys`.
#[derive(clap::Args)]
pub struct RotateKeysArgs {
    /// Print `{"kid","published"}` instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs an admin command against the storage of `data_dir` and the other settings.
pub fn run(data_dir: &std::path::Path, command: &AdminCommand) -> anyhow::Result<()> {
    if let AdminCommand::CreateTenant(args) = command {
        check_create_tenant(args)?;
    }
    let dir = data_dir.display().to_string();
    let config = Config::from_lookup(|name| {
        if name == "FLOWGRID_DATA_DIR" {
            Some(dir.clone())
        } else {
            std::env::var(name).ok()
        }
    })
    .context("reading settings")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stores = Stores::open(&config).await.context("opening storage")?;
        match command {
            AdminCommand::CreateTenant(args) => create_tenant(&stores, args).await,
            AdminCommand::RotateKeys(args) => rotate_keys(&config, &stores, args).await,
        }
    })
}

/// The error of a field given as `flag`, naming the flag (`--admin-email: is not an email address`).
fn flag_error(flag: &str, e: &flowgrid_domain::Error) -> anyhow::Error {
    match e {
        flowgrid_domain::Error::Validation(fields) => anyhow::anyhow!(
            "{flag}: {}",
            fields
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        flowgrid_domain::Error::BadRequest(m) => anyhow::anyhow!("{flag}: {m}"),
        other => anyhow::anyhow!("{flag}: {other}"),
    }
}

/// Checks the arguments before anything is stored; each error names its flag.
fn check_create_tenant(args: &CreateTenantArgs) -> anyhow::Result<()> {
    flowgrid_domain::Email::parse(&args.admin_email)
        .map_err(|e| flag_error("--admin-email", &e))?;
    flowgrid_domain::Tenant::create(&args.name, chrono::Utc::now())
        .map_err(|e| flag_error("--name", &e))?;
    Ok(())
}

async fn create_tenant(stores: &Stores, args: &CreateTenantArgs) -> anyhow::Result<()> {
    let created = flowgrid_auth::admin::create_tenant(stores, &args.name, &args.admin_email)
        .await
        .map_err(|e| match e {
            flowgrid_domain::Error::Conflict(m) => anyhow::anyhow!("--admin-email: {m}"),
            other => anyhow::anyhow!("{other}"),
        })?;
    if args.json {
        println!("{}", serde_json::to_string(&created)?);
    } else {
        eprintln!(
            "Tenant {:?} created with owner {}.",
            args.name, created.email
        );
        eprintln!("The password is shown once; log in with POST /api/auth/login.");
        println!("tenant id: {}", created.tenant_id);
        println!("email:     {}", created.email);
        println!("password:  {}", created.password);
    }
    Ok(())
}

async fn rotate_keys(
    config: &Config,
    stores: &Stores,
    args: &RotateKeysArgs,
) -> anyhow::Result<()> {
    let (kid, published) = flowgrid_auth::admin::rotate_keys(config, stores)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "kid": kid, "published": published })
        );
    } else {
        println!("new signing key: {kid}");
        println!("published keys:  {}", published.join(", "));
    }
    Ok(())
}
