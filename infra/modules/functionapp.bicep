// One colour (blue or green) of one Flowgrid app as a Function App running its custom-handler
// binary (`handler` in the package), with the app's user-assigned identity and identity-based
// settings only. main.bicep deploys two per app (docs/deploy.md, "Canary, promote, rollback"):
// the idle colour gets `disabledFunctions`, so only the live colour consumes queues and timers.
//
// Flex Consumption (default): one FC1 plan per app (Flex allows one app per plan), runtime
// `custom` 1.0 in `functionAppConfig`, the package pulled from the app's blob container with the
// identity. Flex must not get FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION,
// WEBSITE_RUN_FROM_PACKAGE or WEBSITE_CONTENT* settings.
// Elastic Premium (regions where Flex lacks the custom runtime): the shared EP plan, with those
// settings, running from the package blob (`<container>/<app>.zip`) read with the identity.

param location string
param name string
param tags object

@description('true: Flex Consumption; false: the Elastic Premium plan premiumPlanId.')
param flex bool
param premiumPlanId string
param alwaysReadyInstances int
param instanceMemoryMB int
param maximumInstanceCount int

@description('Resource id and client id of the app\'s user-assigned managed identity.')
param identityId string
param identityClientId string

@description('Storage account of the Functions runtime (AzureWebJobsStorage) and of the packages.')
param runtimeStorageName string
param runtimeBlobEndpoint string
param packageContainer string

@description('Blob name of the package in packageContainer (Elastic Premium runs from it).')
param packageBlob string

param appInsightsConnectionString string

@description('OTLP/HTTP endpoint (an OpenTelemetry Collector) that the Functions host and the handler export traces and request metrics to, besides Application Insights; empty: none (docs/observability.md).')
param otlpEndpoint string = ''

@description('Service Bus connection names (app-setting prefixes) the app\'s function.json files use.')
param serviceBusConnections array
param serviceBusNamespace string

@description('Settings read from Key Vault: {SETTING: secret name}.')
param secrets object
param keyVaultName string

@description('The settings Flowgrid\'s code reads (crates/flowgrid-core/src/config.rs).')
param flowgridSettings object

@description('The app\'s own settings (its handler\'s settings table), from apps.json.')
param ownSettings object

@description('Functions the host must not trigger (AzureWebJobs.<name>.Disabled = true): the timer and Service Bus functions of the idle colour; empty for the live colour.')
param disabledFunctions array = []

// What the Functions host itself reads: its storage and telemetry, by identity.
var hostSettings = {
  AzureWebJobsStorage__accountName: runtimeStorageName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// OpenTelemetry: host.json's telemetryMode sends the host's traces and logs to Application
// Insights; with an endpoint, the host and the handler (which inherits the app settings) also
// export over OTLP/HTTP protobuf (docs/observability.md).
var otelSettings = empty(otlpEndpoint) ? {} : {
  OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint
  OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf'
}

var premiumSettings = flex ? {} : {
  FUNCTIONS_WORKER_RUNTIME: 'custom'
  FUNCTIONS_EXTENSION_VERSION: '~4'
  WEBSITE_RUN_FROM_PACKAGE: '${runtimeBlobEndpoint}${packageContainer}/${packageBlob}'
  WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID: identityId
}

// Identity-based Service Bus connections: `<connection>__fullyQualifiedNamespace` etc.
var connectionSettings = toObject(flatten(map(serviceBusConnections, c => [
  {
    name: '${c}__fullyQualifiedNamespace'
    value: serviceBusNamespace
  }
  {
    name: '${c}__credential'
    value: 'managedidentity'
  }
  {
    name: '${c}__clientId'
    value: identityClientId
  }
])), s => s.name, s => s.value)

var secretSettings = toObject(items(secrets), s => s.key, s => '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${s.value})')

// The Functions host's documented switch for one function; HTTP functions stay on in both colours.
var triggerSettings = toObject(disabledFunctions, f => 'AzureWebJobs.${f}.Disabled', f => 'true')

var appSettings = union(hostSettings, otelSettings, premiumSettings, connectionSettings, flowgridSettings, ownSettings, secretSettings, triggerSettings)

resource flexPlan 'Microsoft.Web/serverfarms@2024-04-01' = if (flex) {
  name: '${name}-plan'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var flexConfig = {
  functionAppConfig: {
    deployment: {
      storage: {
        type: 'blobContainer'
        value: '${runtimeBlobEndpoint}${packageContainer}'
        authentication: {
          type: 'UserAssignedIdentity'
          userAssignedIdentityResourceId: identityId
        }
      }
    }
    scaleAndConcurrency: {
      maximumInstanceCount: maximumInstanceCount
      instanceMemoryMB: instanceMemoryMB
      alwaysReady: alwaysReadyInstances > 0 ? [
        {
          name: 'http'
          instanceCount: alwaysReadyInstances
        }
      ] : []
    }
    runtime: {
      name: 'custom'
      version: '1.0'
    }
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: union({
    serverFarmId: flex ? flexPlan.id : premiumPlanId
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: union({
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: map(items(appSettings), s => {
        name: s.key
        value: s.value
      })
    }, flex ? {} : {
      linuxFxVersion: ''
      minimumElasticInstanceCount: max(alwaysReadyInstances, 1)
      functionAppScaleLimit: maximumInstanceCount
    })
  }, flex ? flexConfig : {})
}

// Deployments authenticate with Entra ID; no publishing passwords.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = site.name
output hostName string = site.properties.defaultHostName
