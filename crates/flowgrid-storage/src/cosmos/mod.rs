//! The production backend: Azure Cosmos DB (NoSQL API) through the official `azure_data_cosmos`
//! crate.
//!
//! Layout: one database (`COSMOS_DATABASE`), one container per aggregate ([`CONTAINERS`]), every
//! container partitioned by `/tenantId`, so every document of a tenant lives in the tenant's
//! logical partition and a point read or a transactional batch never crosses tenants.
//!
//! Rules every query here follows: parameters only (no value is ever spliced into query text),
//! and `c.tenantId = @tenant` in the text of every query even though the query is also scoped
//! to the tenant's partition. Real Cosmos scopes by partition; the local emulator ignores the
//! scope, so the text filter is what keeps tenants apart there (and a second guard on Cosmos).
//!
//! Failures map to the same domain errors as the SQLite backend: 404 → `NotFound`, 412 →
//! `PreconditionFailed`, 409 → `Conflict`, and anything that means "Cosmos is not answering"
//! (connection refused, timeouts, 5xx, 401/403 from a wrong key, throttling that outlasted the
//! retries) → `Unavailable`, which the HTTP layer turns into 503 problem+json. Throttled
//! requests (429) are retried by the SDK's driver, honouring `x-ms-retry-after-ms` (up to 9
//! retries and 30 s of waiting, the SDK defaults), all within [`OPERATION_TIMEOUT`].
//!
//! The database and containers are created when missing, on first use rather than at process
//! start, so a handler started while Cosmos is unreachable still starts, answers readiness with
//! 503, and recovers by itself once Cosmos answers (`COSMOS_CREATE_CONTAINERS=false` skips the
//! creation for accounts where the app's identity may not manage containers).

mod agents;
mod analytics;
mod api_requests;
mod connections;
mod document;
mod jobs;
mod revocations;
mod sessions;
mod signing_keys;
mod spend;
mod tenants;
mod users;

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{Secret, TokenCredential};
use azure_data_cosmos::models::{ContainerProperties, TimeToLive};
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, EndToEndOperationLatencyPolicy, OperationOptions,
    Region, ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, ContainerClient, CosmosClient, CosmosError, CosmosRuntime,
    RoutingStrategy,
};
use tokio::sync::OnceCell;

use document::{map_error, timed};

use flowgrid_domain::config::CosmosSettings;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::{Error, Result};

/// Every container the backend uses, by kind. Infrastructure (Bicep, issue 7) must create
/// exactly these, each with partition key [`PARTITION_KEY`].
///
/// `agents` holds an aggregate's three document types, told apart by `type`: the agent
/// (`agent`), its immutable versions (`agentVersion`) and its name reservation (`agentName`).
/// Keeping them in one container and one partition is what lets a create, a replace or a delete
/// change all three in one atomic transactional batch (batches cannot span containers).
///
/// `jobs` holds jobs (`job`) and their idempotency-key reservations (`jobKey`), again in the
/// tenant's partition so that a create with a key is one batch.
///
/// `tenants` holds tenants; `users` the users (`user`) and the reservations of their emails
/// (`userEmail`), so that a create or an email change is one batch; `sessions` the login
/// sessions (`session`) and their refresh tokens (`refreshToken`), one batch per rotation; and
/// `tokens` the two kinds that belong to no tenant, each in a fixed partition of its own: the
/// built-in issuer's signing keys (`_issuer`) and the session denylist (`_revoked`). No tenant
/// document ever goes into `tokens`, so a tenant id can never meet those fixed partitions.
/// `sessions` and `tokens` have TTL on (documents carry `ttl`, see [`TTL_CONTAINERS`]).
///
/// `requestCounts` holds the apps' pending API request counts, in a fixed partition per app
/// (`_app:<app>`, which no tenant id can be), and nothing else.
///
/// Kinds of the design still to come (connections, events, usage) are added here as their
/// storage traits gain a Cosmos implementation.
pub const CONTAINERS: &[&str] = &[
    AGENTS,
    JOBS,
    TENANTS,
    USERS,
    SESSIONS,
    TOKENS,
    CONNECTIONS,
    EVENTS,
    USAGE,
    REQUEST_COUNTS,
];

/// The containers whose documents expire (TTL on with no default: `defaultTtl` -1; each
/// document sets its own `ttl`). The Bicep must set `defaultTtl: -1` on exactly these.
pub const TTL_CONTAINERS: &[&str] = &[SESSIONS, TOKENS, EVENTS];

/// Agents, their versions and their name reservations ([`agents`]).
const AGENTS: &str = "agents";
/// Jobs and their idempotency-key reservations ([`jobs`]).
const JOBS: &str = "jobs";
/// Tenants ([`tenants`]).
const TENANTS: &str = "tenants";
/// Users and their email reservations ([`users`]).
const USERS: &str = "users";
/// Sessions and their refresh tokens ([`sessions`]).
const SESSIONS: &str = "sessions";
/// What belongs to no tenant, in fixed partitions: the signing keys ([`signing_keys`]) and the
/// session denylist ([`revocations`]).
const TOKENS: &str = "tokens";

/// Integration connections and their health records ([`connections`]).
const CONNECTIONS: &str = "connections";

/// Analytics' raw events, each with its `ttl` (the retention) ([`analytics`]).
const EVENTS: &str = "events";
/// Analytics' rollups and stale-hour marks ([`analytics`]).
const USAGE: &str = "usage";
/// Every app's pending API request counts, one fixed partition per app ([`api_requests`]).
const REQUEST_COUNTS: &str = "requestCounts";

/// The partition key path of every container.
pub const PARTITION_KEY: &str = "/tenantId";

/// Upper bound of one storage call, retries included; beyond it the call is `Unavailable`.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound of the first use: building the client (it reads the account), creating the
/// database and containers when missing, and loading the partition topology.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The well-known key of the Cosmos DB emulators (public, documented by Microsoft).
pub const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DF2nQq9Xe7F9kmvtw0Q8xOk7z7dQ1tRSBmoQwz5oxuL84g==";

/// A Cosmos account opened by this process; cheap to clone.
#[derive(Clone)]
pub struct Cosmos {
    inner: Arc<Inner>,
}

struct Inner {
    account: AccountReference,
    pool: ConnectionPoolOptions,
    database: String,
    create: bool,
    containers: OnceCell<Containers>,
}

/// The account's client and the container clients, ready for data operations.
struct Containers {
    client: CosmosClient,
    agents: ContainerClient,
    jobs: ContainerClient,
    tenants: ContainerClient,
    users: ContainerClient,
    sessions: ContainerClient,
    tokens: ContainerClient,
    connections: ContainerClient,
    events: ContainerClient,
    usage: ContainerClient,
    request_counts: ContainerClient,
}

impl Cosmos {
    /// Checks the settings and prepares the client for the account in `settings`. Does not
    /// contact the account (building the SDK client does, so that waits too): the client is
    /// built, and the database and containers checked (and created when allowed), on first use.
    pub async fn open(settings: &CosmosSettings) -> Result<Cosmos> {
        let setting = |name: &str, e: &dyn std::fmt::Display| {
            flowgrid_domain::config::setting_error(name, &e.to_string())
        };
        let endpoint: AccountEndpoint = settings
            .endpoint
            .parse()
            .map_err(|e: CosmosError| setting("COSMOS_ENDPOINT", &e))?;
        let local = is_local(endpoint.url());
        let account = match &settings.key {
            Some(key) => AccountReference::with_authentication_key(
                endpoint,
                Secret::new(key.expose().to_owned()),
            ),
            None => AccountReference::with_credential(endpoint, managed_identity(settings)?),
        };
        let mut pool = ConnectionPoolOptions::builder();
        if local {
            // The local emulator: self-signed certificate, HTTP/1.1 only (Node's https server).
            pool = pool
                .with_server_certificate_validation(
                    ServerCertificateValidation::RequiredUnlessEmulator,
                )
                .with_is_http2_allowed(false)
                .with_gateway_v2_disabled(true);
        }
        let pool = pool.build().map_err(|e| setting("COSMOS_ENDPOINT", &e))?;
        Ok(Cosmos {
            inner: Arc::new(Inner {
                account,
                pool,
                database: settings.database.clone(),
                create: settings.create_containers,
                containers: OnceCell::new(),
            }),
        })
    }

    /// The client and container clients, making the database and containers first when
    /// allowed. A failure is not remembered: the next call tries again.
    async fn containers(&self) -> Result<&Containers> {
        self.inner
            .containers
            .get_or_try_init(|| async {
                timed("open containers", INIT_TIMEOUT, async {
                    let client = self.client().await?;
                    if self.inner.create {
                        self.create_missing(&client).await?;
                    }
                    let db = client.database_client(self.inner.database.as_str());
                    let open = |name: &'static str| {
                        let db = &db;
                        async move {
                            db.container_client(name, None)
                                .await
                                .map_err(|e| map_error(e, "opening a container"))
                        }
                    };
                    Ok(Containers {
                        agents: open(AGENTS).await?,
                        jobs: open(JOBS).await?,
                        tenants: open(TENANTS).await?,
                        users: open(USERS).await?,
                        sessions: open(SESSIONS).await?,
                        tokens: open(TOKENS).await?,
                        connections: open(CONNECTIONS).await?,
                        events: open(EVENTS).await?,
                        usage: open(USAGE).await?,
                        request_counts: open(REQUEST_COUNTS).await?,
                        client,
                    })
                })
                .await
            })
            .await
    }

    /// Builds the SDK client (it reads the account's properties, so Cosmos must answer).
    async fn client(&self) -> Result<CosmosClient> {
        let mut operation = OperationOptions::default();
        operation.end_to_end_latency_policy =
            Some(EndToEndOperationLatencyPolicy::new(OPERATION_TIMEOUT));
        let runtime = CosmosRuntime::builder()
            .with_connection_pool(self.inner.pool.clone())
            .build()
            .await
            .map_err(|e| Error::Internal(format!("cosmos runtime: {e}")))?;
        CosmosClient::builder()
            .with_runtime(runtime)
            .with_default_operation_options(operation)
            // JSON on the wire: the emulator cannot read the binary encoding, and nothing here
            // needs it.
            .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
            .build(
                self.inner.account.clone(),
                RoutingStrategy::ProximityTo(Region::EAST_US),
            )
            .await
            .map_err(|e| map_error(e, "connecting to the account"))
    }

    /// Creates the database and every container in [`CONTAINERS`] that does not exist yet.
    async fn create_missing(&self, client: &CosmosClient) -> Result<()> {
        match client.create_database(&self.inner.database, None).await {
            Ok(_) => {
                tracing::info!(cosmos.database = %self.inner.database, "created the Cosmos database")
            }
            Err(e) if e.status().is_conflict() => {}
            Err(e) => return Err(map_error(e, "creating the database")),
        }
        let db = client.database_client(self.inner.database.as_str());
        for name in CONTAINERS {
            let mut properties = ContainerProperties::new(*name, PARTITION_KEY.into());
            if TTL_CONTAINERS.contains(name) {
                properties = properties.with_default_ttl(TimeToLive::NoDefault);
            }
            match db.create_container(properties, None).await {
                Ok(_) => tracing::info!(cosmos.container = name, "created a Cosmos container"),
                Err(e) if e.status().is_conflict() => {}
                Err(e) => return Err(map_error(e, "creating a container")),
            }
        }
        Ok(())
    }

    /// The time budget of one call: longer while the first use is still to come.
    fn limit(&self) -> Duration {
        if self.inner.containers.initialized() {
            OPERATION_TIMEOUT
        } else {
            INIT_TIMEOUT + OPERATION_TIMEOUT
        }
    }

    /// The database's name (for tests and tools).
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// Deletes the whole database (for tests and tools).
    pub async fn delete_database(&self) -> Result<()> {
        self.containers()
            .await?
            .client
            .database_client(self.inner.database.as_str())
            .delete(None)
            .await
            .map(|_| ())
            .map_err(|e| map_error(e, "deleting the database"))
    }
}

#[async_trait::async_trait]
impl HealthCheck for Cosmos {
    fn name(&self) -> &'static str {
        "storage"
    }

    /// Opens the containers (once) and reads a document that does not exist: a 404 proves the
    /// account, database and container answer.
    async fn check(&self) -> Result<()> {
        let containers = self.containers().await?;
        let probe = containers
            .agents
            .read_item("health".to_owned(), "health-probe", None);
        match tokio::time::timeout(OPERATION_TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.status().is_not_found() => Ok(()),
            Ok(Err(e)) => Err(map_error(e, "health probe")),
            Err(_) => Err(Error::Unavailable("cosmos: health probe timed out".into())),
        }
    }
}

/// The managed identity of the process (user-assigned when `AZURE_CLIENT_ID` is set).
fn managed_identity(settings: &CosmosSettings) -> Result<Arc<dyn TokenCredential>> {
    use azure_identity::{
        ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    };
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
        ..Default::default()
    };
    let credential = ManagedIdentityCredential::new(Some(options))
        .map_err(|e| flowgrid_domain::config::setting_error("AZURE_CLIENT_ID", &e.to_string()))?;
    Ok(credential)
}

/// Whether `url` points at this machine (the emulator).
pub(crate) fn is_local(url: &url::Url) -> bool {
    matches!(
        url.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_ids_are_valid_cosmos_ids_whatever_the_input() {
        for id in [
            super::users::email_id("a/b\\c?d#e@x"),
            super::sessions::refresh_id("a/b"),
            super::signing_keys::key_id("k/1"),
            super::revocations::revoked_id("s#1"),
        ] {
            assert!(!id.contains(['/', '\\', '?', '#']), "{id}");
            assert!(id.len() < 80, "{id}");
        }
    }
}
