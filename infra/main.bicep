// Flowgrid on Azure: every app in functions/ as its own blue/green pair of Function Apps (Flex
// Consumption by default; one colour live, the other idle or a canary), in front of them API
// Management, behind them Cosmos DB, Blob Storage, Service Bus,
// Key Vault and Application Insights. Identity-based access only: every app has its own
// user-assigned managed identity with data-plane roles scoped to what that app uses, no keys.
//
// What is per app (apps, their Service Bus entities, their Key Vault secrets, the gateway's
// operations) comes from apps.json, which the offline checks (tests/tests/infra.rs) compare with
// the function.json files on every test run. See docs/deploy.md.

targetScope = 'resourceGroup'

@description('Azure region of every resource. Check that Flex Consumption offers the custom runtime there (docs/deploy.md), else set hostingPlan to ElasticPremium.')
param location string = resourceGroup().location

@description('Prefix of every resource name (lowercase letters and digits, 3-11 characters).')
@minLength(3)
@maxLength(11)
param prefix string = 'flowgrid'

@description('FlexConsumption (FC1, one plan per app) or ElasticPremium (one shared EP plan) for regions where Flex does not offer the custom runtime.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string = 'FlexConsumption'

@description('Always-ready instances per app for HTTP functions (Flex), or pre-warmed minimum instances (Elastic Premium). 0 = scale to zero.')
@minValue(0)
@maxValue(20)
param alwaysReadyInstances int = 0

@description('Memory of one Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of instances per app (Flex) or of the shared plan (Elastic Premium).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Elastic Premium plan size, used only when hostingPlan is ElasticPremium.')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('API Management tier: Consumption (pay per call), or BasicV2/StandardV2, which also get the per-colour backend circuit breakers (docs/deploy.md, "Canary, promote, rollback").')
@allowed([
  'Consumption'
  'BasicV2'
  'StandardV2'
])
param apimSku string = 'Consumption'

@description('API Management publisher e-mail (required by the service; receives its notifications).')
param publisherEmail string

@description('API Management publisher name.')
param publisherName string = 'Flowgrid'

@description('Browser origins allowed to call the gateway (CORS); empty: no CORS policy, so browsers on other origins are refused.')
param corsAllowedOrigins array = []

@description('Calls per tenant (per caller IP when there is no token) per rateLimitPeriodSeconds at the gateway.')
@minValue(1)
param rateLimitCalls int = 600

@description('Window of the per-tenant rate limit, in seconds.')
@minValue(1)
param rateLimitPeriodSeconds int = 60

@description('Largest request body the gateway forwards, in bytes.')
@minValue(1024)
@maxValue(4194304)
param maxRequestBodyBytes int = 1048576

@description('The aud every access token must carry (FLOWGRID_JWT_AUDIENCE).')
param jwtAudience string = 'flowgrid'

@description('Optional pinned JWKS document (FLOWGRID_JWT_JWKS); empty: the apps read the built-in issuer\'s keys from storage.')
param jwtJwks string = ''

@description('Lifetime of access tokens in seconds (FLOWGRID_ACCESS_TOKEN_TTL_SECS, 60-3600).')
@minValue(60)
@maxValue(3600)
param accessTokenTtlSeconds int = 900

@description('How long a handler trusts its cached revocation answer, in seconds (FLOWGRID_REVOCATION_CACHE_SECS, 0-60).')
@minValue(0)
@maxValue(60)
param revocationCacheSeconds int = 5

@description('External OpenID Connect issuers whose tokens are accepted (FLOWGRID_OIDC_ISSUERS): [{issuer, audience, tenantClaim?, rolesClaim?}]. The gateway validates only the built-in issuer\'s tokens and passes the others to the apps.')
param oidcIssuers array = []

@description('Model providers this deployment offers (FLOWGRID_AI_PROVIDERS of the Agents, Design and Execution apps): comma-separated of offline, openai, openai-chat, azure-openai, anthropic. Widen it when the Execution app gets the provider\'s key (docs/ai-providers.md); agents naming another provider are refused when saved.')
param aiProviders string = 'offline'

@description('Log filter of the handlers (FLOWGRID_LOG).')
param logFilter string = 'info'

@description('OTLP/HTTP endpoint of an OpenTelemetry Collector for the traces and request metrics of every Function App (host and handler); empty: Application Insights only (docs/observability.md).')
param otlpEndpoint string = ''

@description('Object id of the person or pipeline that deploys: Key Vault Secrets Officer on the vault to set the secrets, and on Elastic Premium Storage Blob Data Contributor on the package containers to upload them (docs/deploy.md); empty: none.')
param deployerPrincipalId string = ''

@description('Blue/green state per app (docs/deploy.md, "Canary, promote, rollback"): {"<app>": {"live": "blue" or "green", "greenWeight": 0-100}}; greenWeight is the percentage of tenants (FNV-1a of the tenant id into 100 buckets) and of token-less requests the green Function App gets. An app not named: blue live, green weight 0 (100 when green is live). flowgrid deploy passes the state recorded in API Management, so a redeploy keeps it.')
param colours object = {}

@description('Circuit breaker of each Function App behind the gateway: this many 5xx answers within circuitBreakerInterval trip it for circuitBreakerTripDuration (or the Retry-After the app sends).')
@minValue(1)
param circuitBreakerFailures int = 5

@description('ISO 8601 window in which circuitBreakerFailures trip the circuit breaker.')
param circuitBreakerInterval string = 'PT1M'

@description('ISO 8601 time a tripped circuit breaker stays open.')
param circuitBreakerTripDuration string = 'PT1M'

@description('Tags on every resource.')
param tags object = {
  application: 'flowgrid'
}

var manifest = loadJsonContent('apps.json')
var apps = manifest.apps
var suffix = uniqueString(resourceGroup().id)
var base = '${prefix}-${suffix}'
var flex = hostingPlan == 'FlexConsumption'

// The gateway's URL is known from its name alone, so the apps can carry the issuer URL without
// waiting for API Management (which itself needs the apps' host names).
var apimName = '${base}-apim'
var gatewayUrl = 'https://${apimName}.azure-api.net'
var issuer = '${gatewayUrl}/api/auth'

var cosmosDatabase = 'flowgrid'
var dataContainer = 'flowgrid'
// Blue/green: every app runs as two Function Apps, slot s = app s / 2 in colour s % 2, each with
// its own plan (Flex allows one app per plan) and its own deployment container.
var colourNames = [
  'blue'
  'green'
]
var appColours = [for app in apps: union({
  live: 'blue'
}, contains(colours, app.name) ? colours[app.name] : {})]
var liveColours = [for c in appColours: c.live]
var greenWeights = [for c in appColours: contains(c, 'greenWeight') ? c.greenWeight : (c.live == 'green' ? 100 : 0)]
var slots = [for s in range(0, 2 * length(apps)): {
  app: s / 2
  colour: colourNames[s % 2]
}]
var packageContainers = [for slot in slots: 'package-${apps[slot.app].name}-${slot.colour}']

resource identities 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = [for app in apps: {
  name: '${base}-${app.name}-id'
  location: location
  tags: tags
}]

// Role assignments take the identities' principal ids as module parameters: a module's
// parameters are known when it starts, which role assignment names (guid(...)) require.

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    name: base
    tags: tags
    principalIds: [for (app, i) in apps: identities[i].properties.principalId]
  }
}

// Functions runtime storage (AzureWebJobsStorage: host leases, timer schedules) and the
// deployment packages, one container per app.
module runtimeStorage 'modules/storage.bicep' = {
  name: 'runtime-storage'
  params: {
    location: location
    name: take('${replace(prefix, '-', '')}rt${suffix}', 24)
    tags: tags
    containers: packageContainers
    // The Functions host needs Blob Data Owner on its storage account (it makes its own
    // containers and blob leases); it covers the app's deployment container too.
    accountRoles: [for (app, i) in apps: {
      principalId: identities[i].properties.principalId
      role: 'Storage Blob Data Owner'
      principalType: 'ServicePrincipal'
    }]
    // Elastic Premium deploys upload the packages as the deployer (docs/deploy.md).
    containerRoles: flex || empty(deployerPrincipalId) ? [] : map(range(0, length(packageContainers)), i => {
      principalId: deployerPrincipalId
      container: packageContainers[i]
      role: 'Storage Blob Data Contributor'
      principalType: ''
    })
  }
}

// Flowgrid's own blobs (images, compiled artifacts): one container, every name under
// `<tenant id>/`, read and written by the handlers (BLOB_CONTAINER).
module dataStorage 'modules/storage.bicep' = {
  name: 'data-storage'
  params: {
    location: location
    name: take('${replace(prefix, '-', '')}data${suffix}', 24)
    tags: tags
    containers: [
      dataContainer
    ]
    accountRoles: []
    containerRoles: [for (app, i) in apps: {
      principalId: identities[i].properties.principalId
      container: dataContainer
      role: 'Storage Blob Data Contributor'
      principalType: 'ServicePrincipal'
    }]
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    name: '${base}-cosmos'
    tags: tags
    database: cosmosDatabase
    principalIds: [for (app, i) in apps: identities[i].properties.principalId]
  }
}

// Service Bus only when some function names a queue or topic (none do before the execution and
// analytics apps exist), so nothing is deployed that no app uses.
var hasServiceBus = !empty(manifest.queues) || !empty(manifest.topics)

module serviceBus 'modules/servicebus.bicep' = if (hasServiceBus) {
  name: 'servicebus'
  params: {
    location: location
    name: '${base}-sb'
    tags: tags
    queues: manifest.queues
    topics: manifest.topics
    apps: apps
    principalIds: [for (app, i) in apps: identities[i].properties.principalId]
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    name: take('${replace(prefix, '-', '')}kv${suffix}', 24)
    tags: tags
    apps: apps
    principalIds: [for (app, i) in apps: identities[i].properties.principalId]
    deployerPrincipalId: deployerPrincipalId
  }
}

resource premiumPlan 'Microsoft.Web/serverfarms@2024-04-01' = if (!flex) {
  name: '${base}-plan'
  location: location
  tags: tags
  kind: 'elastic'
  sku: {
    name: premiumSku
    tier: 'ElasticPremium'
  }
  properties: {
    reserved: true
    maximumElasticWorkerCount: maximumInstanceCount
  }
}

// Both colours of an app share its identity and settings; the idle colour has its timer and
// Service Bus functions disabled (only the live colour consumes) and no always-ready instances.
module functionApps 'modules/functionapp.bicep' = [for (slot, s) in slots: {
  name: 'app-${apps[slot.app].name}-${slot.colour}'
  params: {
    location: location
    name: '${base}-${apps[slot.app].name}-${slot.colour}'
    tags: union(tags, {
      'flowgrid-app': apps[slot.app].name
      'flowgrid-colour': slot.colour
    })
    flex: flex
    premiumPlanId: flex ? '' : premiumPlan.id
    alwaysReadyInstances: liveColours[slot.app] == slot.colour ? alwaysReadyInstances : 0
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    identityId: identities[slot.app].id
    identityClientId: identities[slot.app].properties.clientId
    runtimeStorageName: runtimeStorage.outputs.name
    runtimeBlobEndpoint: runtimeStorage.outputs.blobEndpoint
    packageContainer: packageContainers[s]
    packageBlob: '${apps[slot.app].name}.zip'
    disabledFunctions: liveColours[slot.app] == slot.colour ? [] : apps[slot.app].triggers
    appInsightsConnectionString: monitoring.outputs.connectionString
    otlpEndpoint: otlpEndpoint
    serviceBusConnections: apps[slot.app].serviceBusConnections
    serviceBusNamespace: hasServiceBus ? serviceBus.outputs.fullyQualifiedNamespace : ''
    secrets: apps[slot.app].secrets
    ownSettings: contains(apps[slot.app].settings, 'FLOWGRID_AI_PROVIDERS') ? union(apps[slot.app].settings, { FLOWGRID_AI_PROVIDERS: aiProviders }) : apps[slot.app].settings
    keyVaultName: keyVault.outputs.name
    flowgridSettings: {
      FLOWGRID_DATA_DIR: '/tmp/flowgrid'
      FLOWGRID_STORE: 'cosmos'
      COSMOS_ENDPOINT: cosmos.outputs.endpoint
      COSMOS_DATABASE: cosmosDatabase
      COSMOS_CREATE_CONTAINERS: 'false'
      AZURE_CLIENT_ID: identities[slot.app].properties.clientId
      FLOWGRID_BLOBS: 'azure'
      BLOB_ENDPOINT: dataStorage.outputs.blobEndpoint
      BLOB_CONTAINER: dataContainer
      FLOWGRID_JWT_ISSUER: issuer
      FLOWGRID_JWT_AUDIENCE: jwtAudience
      FLOWGRID_JWT_JWKS: jwtJwks
      FLOWGRID_ACCESS_TOKEN_TTL_SECS: string(accessTokenTtlSeconds)
      FLOWGRID_REVOCATION_CACHE_SECS: string(revocationCacheSeconds)
      FLOWGRID_OIDC_ISSUERS: empty(oidcIssuers) ? '' : string(oidcIssuers)
      FLOWGRID_LOG: logFilter
    }
  }
}]

var authIndex = indexOf(map(apps, a => a.name), 'auth')
// The slot of each app's live colour.
var liveSlots = [for (app, i) in apps: 2 * i + (liveColours[i] == 'green' ? 1 : 0)]

module gateway 'modules/apim.bicep' = {
  name: 'gateway'
  params: {
    location: location
    name: apimName
    tags: tags
    sku: apimSku
    publisherEmail: publisherEmail
    publisherName: publisherName
    backends: [for (app, i) in apps: {
      app: app.name
      blueUrl: 'https://${functionApps[2 * i].outputs.hostName}/api'
      greenUrl: 'https://${functionApps[2 * i + 1].outputs.hostName}/api'
      live: liveColours[i]
      greenWeight: greenWeights[i]
    }]
    circuitBreakerFailures: circuitBreakerFailures
    circuitBreakerInterval: circuitBreakerInterval
    circuitBreakerTripDuration: circuitBreakerTripDuration
    operations: manifest.operations
    openIdConfigurationUrl: 'https://${functionApps[liveSlots[authIndex]].outputs.hostName}/api/auth/.well-known/openid-configuration'
    issuer: issuer
    audience: jwtAudience
    corsAllowedOrigins: corsAllowedOrigins
    rateLimitCalls: rateLimitCalls
    rateLimitPeriodSeconds: rateLimitPeriodSeconds
    maxRequestBodyBytes: maxRequestBodyBytes
    oidcIssuers: oidcIssuers
  }
}

@description('The gateway every client calls: routes under /api.')
output gatewayUrl string = gatewayUrl

@description('The Function Apps of each app, by app name: name = the live colour\'s (for the zip deploys), blue and green.')
output functionAppNames array = [for (app, i) in apps: {
  app: app.name
  name: functionApps[liveSlots[i]].outputs.name
  blue: functionApps[2 * i].outputs.name
  green: functionApps[2 * i + 1].outputs.name
}]

@description('The API Management service: its named values <app>-green-weight and <app>-live record each app\'s blue/green state.')
output gatewayName string = apimName

@description('Resource id of the API Management service (its backend pools are updated through it).')
output gatewayResourceId string = resourceId('Microsoft.ApiManagement/service', apimName)

@description('Application Insights (requests by cloud_RoleName = Function App name: per-colour error rate and latency).')
output appInsightsName string = monitoring.outputs.appInsightsName

@description('FlexConsumption or ElasticPremium: how the apps are deployed (docs/deploy.md).')
output hostingPlan string = hostingPlan

@description('The storage account holding the deployment packages (Elastic Premium deploys upload there).')
output packageStorageAccount string = runtimeStorage.outputs.name

@description('The Key Vault holding the secrets the apps read (docs/deploy.md sets them).')
output keyVaultName string = keyVault.outputs.name

@description('The Cosmos DB account.')
output cosmosAccount string = cosmos.outputs.name
