// Cosmos DB for NoSQL, serverless, Entra ID only (local/key auth off). One database, and one
// container per kind the storage layer uses: the list must equal `CONTAINERS` in
// crates/flowgrid-core/src/store/cosmos/mod.rs (checked by tests/tests/infra.rs), each
// partitioned by `/tenantId` (`PARTITION_KEY` there).
//
// The handlers only read and write documents (`COSMOS_CREATE_CONTAINERS=false`), with the
// built-in Data Contributor role scoped to the database.

param location string
param name string
param tags object
param database string

@description('Identities that read and write documents (Cosmos DB Built-in Data Contributor on the database).')
param principalIds array

// Indexing: only the paths the queries filter or sort on are indexed; everything else (agent
// definitions are large) is excluded, which keeps writes cheap. `defaultTtl` -1 turns TTL on
// with no default expiry (documents carrying `ttl` expire); absent = TTL off.
//
// agents: `c.tenantId = @tenant AND c.type = @type [AND c.status = @status]
// [AND CONTAINS(c.nameKey, @name)] [AND c.sortKey < @after] ORDER BY c.sortKey DESC`, and
// versions by `c.agentId` ordered by `c.version DESC`; the schedule timer's cross-tenant scan
// `c.type = @type AND c.scheduled = true AND c.status != @disabled`. Agents and their versions
// never expire.
//
// jobs: `c.tenantId = @tenant AND c.type = @type [AND c.agentId = @agent] [AND c.status = @status]
// [AND c.sortKey < @after] ORDER BY c.sortKey DESC` (and ASC for the oldest queued), run figures
// by `c.createdMs`, and the reaper's cross-tenant scan on `c.status`, `c.leaseMs` and
// `c.updatedMs`. Jobs are kept (their history is the run log).
//
// tenants: point reads only. users: `c.tenantId = @tenant AND c.type = @type [AND c.sortKey >
// @after] ORDER BY c.sortKey`, and login's cross-tenant `c.type = @type AND c.emailKey = @email`.
// sessions: a user's live sessions (`c.userId`, `c.revokedMs`), the presented refresh token's
// cross-tenant `c.hash = @hash`, and the purge's `c.expiresMs < @now`; TTL on: sessions and
// refresh tokens carry `ttl` (their end plus an hour). tokens: the fixed partitions `_issuer`
// (signing keys) and `_revoked` (the session denylist, with `ttl`), read by `c.type` and
// `c.untilMs`; TTL on.
// events (Analytics' raw events): `c.tenantId = @tenant AND c.type = @type AND c.timeMs` ranges,
// the purge's cross-tenant `c.expiresMs < @now`; TTL on: each event carries `ttl` (the retention,
// FLOWGRID_ANALYTICS_RETENTION_DAYS). usage (rollups and stale-hour marks): rollups by
// `c.granularity`, `c.periodMs` and `c.dimension` in the tenant's partition, and the rollup
// timer's cross-tenant `c.type = @type ORDER BY c.hourMs`; rollups are kept.
// requestCounts (every app's pending API request counts, one fixed partition `_app:<app>` per
// app): `c.tenantId = @pk AND c.type = @type ORDER BY c.minuteMs` in the app's partition; rows
// are deleted once the app's FlushApiRequests timer has sent them twice.
var containers = [
  {
    name: 'agents'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/status/?'
      '/nameKey/?'
      '/sortKey/?'
      '/agentId/?'
      '/version/?'
      '/scheduled/?'
      '/fireDoc/?'
      '/nextFireMs/?'
    ]
    defaultTtl: null
  }
  {
    name: 'jobs'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/status/?'
      '/agentId/?'
      '/sortKey/?'
      '/createdMs/?'
      '/updatedMs/?'
      '/leaseMs/?'
    ]
    defaultTtl: null
  }
  {
    name: 'tenants'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
    ]
    defaultTtl: null
  }
  {
    name: 'users'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/sortKey/?'
      '/emailKey/?'
    ]
    defaultTtl: null
  }
  {
    name: 'sessions'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/userId/?'
      '/revokedMs/?'
      '/hash/?'
      '/expiresMs/?'
    ]
    defaultTtl: -1
  }
  {
    name: 'tokens'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/untilMs/?'
    ]
    defaultTtl: -1
  }
  {
    name: 'connections'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
    ]
    defaultTtl: null
  }
  {
    name: 'events'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/timeMs/?'
      '/expiresMs/?'
    ]
    defaultTtl: -1
  }
  {
    name: 'usage'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/granularity/?'
      '/periodMs/?'
      '/dimension/?'
      '/hourMs/?'
    ]
    defaultTtl: null
  }
  {
    name: 'requestCounts'
    indexedPaths: [
      '/tenantId/?'
      '/type/?'
      '/minuteMs/?'
    ]
    defaultTtl: null
  }
]

var partitionKeyPath = '/tenantId'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
  }
}

resource db 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: database
  properties: {
    resource: {
      id: database
    }
  }
}

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [for c in containers: {
  parent: db
  name: c.name
  properties: {
    resource: union({
      id: c.name
      partitionKey: {
        paths: [
          partitionKeyPath
        ]
        kind: 'Hash'
        version: 2
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: map(c.indexedPaths, p => {
          path: p
        })
        excludedPaths: [
          {
            path: '/*'
          }
          {
            path: '/"_etag"/?'
          }
        ]
      }
    }, c.defaultTtl == null ? {} : {
      defaultTtl: c.defaultTtl
    })
  }
}]

// Built-in "Cosmos DB Built-in Data Contributor": data-plane reads and writes, no account or
// container management.
var dataContributor = '00000000-0000-0000-0000-000000000002'

resource dataAssignments 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = [for principalId in principalIds: {
  parent: account
  name: guid(account.id, db.id, principalId, dataContributor)
  properties: {
    principalId: principalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributor}'
    scope: '${account.id}/dbs/${database}'
  }
}]

output name string = account.name
output endpoint string = account.properties.documentEndpoint
