//! The schema's history: migration `n` takes a database from `user_version` `n - 1` to `n`.
//! Append only; a released migration never changes.

/// Every migration, in order.
pub(super) const MIGRATIONS: &[&str] = &[
    AGENTS,
    IDENTITY,
    JOBS,
    CONNECTIONS,
    FIRE_TIMES,
    AI_SPEND,
    ANALYTICS,
    API_REQUEST_COUNTS,
];

/// 1: agents and their version history.
const AGENTS: &str = "
    CREATE TABLE agents (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        name_key TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        etag TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX agents_by_name ON agents (tenant_id, name_key);
    CREATE INDEX agents_by_created ON agents (tenant_id, created_ms DESC, id DESC);
    CREATE TABLE agent_versions (
        tenant_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, agent_id, version)
    ) WITHOUT ROWID;";

/// 2: tenants, users, sessions, refresh tokens, signing keys, revoked sessions.
const IDENTITY: &str = "
    CREATE TABLE tenants (
        id TEXT NOT NULL PRIMARY KEY,
        doc TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE users (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        email_key TEXT NOT NULL,
        etag TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX users_by_email ON users (email_key, tenant_id);
    CREATE TABLE sessions (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_user ON sessions (tenant_id, user_id);
    CREATE TABLE refresh_tokens (
        hash TEXT NOT NULL PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        issued_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_ms INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX refresh_tokens_by_session ON refresh_tokens (tenant_id, session_id);
    CREATE TABLE signing_keys (
        kid TEXT NOT NULL PRIMARY KEY,
        alg TEXT NOT NULL,
        public_jwk TEXT NOT NULL,
        encrypted_private TEXT NOT NULL,
        kek_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        retired_ms INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE revoked_sessions (
        sid TEXT NOT NULL PRIMARY KEY,
        until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;";

/// 3: jobs (the Execution app).
const JOBS: &str = "
    CREATE TABLE jobs (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        lease_ms INTEGER,
        idem_key TEXT,
        etag TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX jobs_by_idem_key ON jobs (tenant_id, idem_key) WHERE idem_key IS NOT NULL;
    CREATE INDEX jobs_by_status ON jobs (status, tenant_id, created_ms);
    CREATE INDEX jobs_by_agent ON jobs (tenant_id, agent_id, created_ms DESC);
    CREATE INDEX jobs_by_created ON jobs (tenant_id, created_ms DESC, id DESC);
";

/// 4: integration connections and their health records (the Integrations app); `id` is the
/// connection's name.
const CONNECTIONS: &str = "
    CREATE TABLE connections (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        etag TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE TABLE connection_health (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        etag TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
";

/// 5: each agent's next fire time on schedule (ms since the epoch; NULL: it does not fire), in
/// an index, so the schedule timer reads only the agents that are due. Active agents with a
/// schedule stored before get 0 (due at once): the first tick handles them as it did before and
/// stores their real next fire time.
const FIRE_TIMES: &str = "
    ALTER TABLE agents ADD COLUMN next_fire_ms INTEGER;
    CREATE INDEX agents_by_next_fire ON agents (next_fire_ms) WHERE next_fire_ms IS NOT NULL;
    UPDATE agents SET next_fire_ms = 0
        WHERE status = 'active' AND json_extract(doc, '$.schedule') IS NOT NULL;
";

/// 7: Analytics: raw events (one row per tenant and event id, expiring at `expires_ms`), the
/// hours whose rollups are stale (`mark` changes on each ingestion into the hour), and the
/// rollups by tenant, granularity, period and dimension.
const ANALYTICS: &str = "
    CREATE TABLE analytics_events (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX analytics_events_by_time ON analytics_events (tenant_id, time_ms);
    CREATE INDEX analytics_events_by_expiry ON analytics_events (expires_ms);
    CREATE TABLE analytics_stale (
        tenant_id TEXT NOT NULL,
        hour_ms INTEGER NOT NULL,
        mark TEXT NOT NULL,
        PRIMARY KEY (tenant_id, hour_ms)
    ) WITHOUT ROWID;
    CREATE TABLE analytics_rollups (
        tenant_id TEXT NOT NULL,
        granularity TEXT NOT NULL,
        period_ms INTEGER NOT NULL,
        dimension TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, granularity, period_ms, dimension, key)
    ) WITHOUT ROWID;
";

/// 6: the AI spend ledger, micro-dollars per tenant and calendar month (`YYYY-MM`).
const AI_SPEND: &str = "
    CREATE TABLE ai_spend (
        tenant_id TEXT NOT NULL,
        month TEXT NOT NULL,
        micro_usd INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, month)
    ) WITHOUT ROWID;
";

/// 8: the pending API request counts of every app's instances (one row per app, instance,
/// tenant, minute, route and status), until the app's `FlushApiRequests` timer has sent them
/// twice (`sent` 1 after the first).
const API_REQUEST_COUNTS: &str = "
    CREATE TABLE api_request_counts (
        app TEXT NOT NULL,
        instance TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        minute_ms INTEGER NOT NULL,
        route TEXT NOT NULL,
        status INTEGER NOT NULL,
        count INTEGER NOT NULL,
        sent INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app, instance, tenant_id, minute_ms, route, status)
    ) WITHOUT ROWID;
    CREATE INDEX api_request_counts_by_minute ON api_request_counts (app, minute_ms);
";
