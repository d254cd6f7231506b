// Flowgrid on Azure: every app in functions/ as its own Function App (Flex Consumption by
// default), in front of them API Management, behind them Cosmos DB, Blob Storage, Service Bus,
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
var packageContainers = [for app in apps: 'package-${app.name}']

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
    containerRoles: flex || empty(deployerPrincipalId) ? [] : map(range(0, length(apps)), i => {
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

module functionApps 'modules/functionapp.bicep' = [for (app, i) in apps: {
  name: 'app-${app.name}'
  params: {
    location: location
    name: '${base}-${app.name}'
    tags: union(tags, {
      'flowgrid-app': app.name
    })
    flex: flex
    premiumPlanId: flex ? '' : premiumPlan.id
    alwaysReadyInstances: alwaysReadyInstances
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    identityId: identities[i].id
    identityClientId: identities[i].properties.clientId
    runtimeStorageName: runtimeStorage.outputs.name
    runtimeBlobEndpoint: runtimeStorage.outputs.blobEndpoint
    packageContainer: packageContainers[i]
    packageBlob: '${app.name}.zip'
    appInsightsConnectionString: monitoring.outputs.connectionString
    otlpEndpoint: otlpEndpoint
    serviceBusConnections: app.serviceBusConnections
    serviceBusNamespace: hasServiceBus ? serviceBus.outputs.fullyQualifiedNamespace : ''
    secrets: app.secrets
    ownSettings: contains(app.settings, 'FLOWGRID_AI_PROVIDERS') ? union(app.settings, { FLOWGRID_AI_PROVIDERS: aiProviders }) : app.settings
    keyVaultName: keyVault.outputs.name
    flowgridSettings: {
      FLOWGRID_DATA_DIR: '/tmp/flowgrid'
      FLOWGRID_STORE: 'cosmos'
      COSMOS_ENDPOINT: cosmos.outputs.endpoint
      COSMOS_DATABASE: cosmosDatabase
      COSMOS_CREATE_CONTAINERS: 'false'
      AZURE_CLIENT_ID: identities[i].properties.clientId
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

module gateway 'modules/apim.bicep' = {
  name: 'gateway'
  params: {
    location: location
    name: apimName
    tags: tags
    publisherEmail: publisherEmail
    publisherName: publisherName
    backends: [for (app, i) in apps: {
      app: app.name
      url: 'https://${functionApps[i].outputs.hostName}/api'
    }]
    operations: manifest.operations
    openIdConfigurationUrl: 'https://${functionApps[authIndex].outputs.hostName}/api/auth/.well-known/openid-configuration'
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

@description('The Function App of each app, by app name (for the zip deploys).')
output functionAppNames array = [for (app, i) in apps: {
  app: app.name
  name: functionApps[i].outputs.name
}]

@description('FlexConsumption or ElasticPremium: how the apps are deployed (docs/deploy.md).')
output hostingPlan string = hostingPlan

@description('The storage account holding the deployment packages (Elastic Premium deploys upload there).')
output packageStorageAccount string = runtimeStorage.outputs.name

@description('The Key Vault holding the secrets the apps read (docs/deploy.md sets them).')
output keyVaultName string = keyVault.outputs.name

@description('The Cosmos DB account.')
output cosmosAccount string = cosmos.outputs.name
