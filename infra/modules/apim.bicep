// API Management (Consumption) in front of the apps: one API under /api whose operations are
// exactly the HTTP functions of every app (infra/apps.json, checked against the function.json
// files by tests/tests/infra.rs), each sent to its app's Function App. The API's policy
// (api-policy.xml) sets the correlation id, validates bearer tokens against the Auth app's
// JWKS, limits calls per tenant, limits body size and, when origins are given, answers CORS.

param location string
param name string
param tags object
param publisherEmail string
param publisherName string

@description('[{app, url}]: the base URL (…/api) of each app\'s Function App.')
param backends array

@description('[{app, function, method, urlTemplate, parameters}].')
param operations array

@description('OpenID configuration of the Auth app (its jwks_uri gives the signing keys).')
param openIdConfigurationUrl string
param issuer string
param audience string

@description('External issuers also accepted: [{issuer, audience}].')
param oidcIssuers array

param corsAllowedOrigins array
param rateLimitCalls int
param rateLimitPeriodSeconds int
param maxRequestBodyBytes int

resource service 'Microsoft.ApiManagement/service@2023-05-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Consumption'
    capacity: 0
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
  }
}

resource appBackends 'Microsoft.ApiManagement/service/backends@2023-05-01-preview' = [for b in backends: {
  parent: service
  name: b.app
  properties: {
    url: b.url
    protocol: 'http'
    tls: {
      validateCertificateChain: true
      validateCertificateName: true
    }
  }
}]

resource api 'Microsoft.ApiManagement/service/apis@2023-05-01-preview' = {
  parent: service
  name: 'flowgrid'
  properties: {
    displayName: 'Flowgrid'
    path: 'api'
    protocols: [
      'https'
    ]
    subscriptionRequired: false
  }
}

var corsPolicy = empty(corsAllowedOrigins) ? '' : '<cors allow-credentials="false"><allowed-origins>${join(map(corsAllowedOrigins, o => '<origin>${o}</origin>'), '')}</allowed-origins><allowed-methods preflight-result-max-age="600"><method>GET</method><method>POST</method><method>PUT</method><method>DELETE</method></allowed-methods><allowed-headers><header>Authorization</header><header>Content-Type</header><header>If-Match</header><header>If-None-Match</header><header>Idempotency-Key</header><header>X-Correlation-Id</header><header>traceparent</header></allowed-headers><expose-headers><header>ETag</header><header>Location</header><header>Retry-After</header><header>X-Correlation-Id</header></expose-headers></cors>'

var openIdConfigs = join(concat([
  '<openid-config url="${openIdConfigurationUrl}" />'
], map(oidcIssuers, i => '<openid-config url="${i.issuer}/.well-known/openid-configuration" />')), '')
var audiences = join(map(union([
  audience
], map(oidcIssuers, i => i.audience)), a => '<audience>${a}</audience>'), '')
var issuers = join(map(concat([
  issuer
], map(oidcIssuers, i => i.issuer)), i => '<issuer>${i}</issuer>'), '')

var policy = replace(replace(replace(replace(replace(replace(replace(replace(loadTextContent('api-policy.xml'),
  '__CORS__', corsPolicy),
  '__OPENID_CONFIGS__', openIdConfigs),
  '__AUDIENCES__', audiences),
  '__ISSUERS__', issuers),
  '__CALLS__', string(rateLimitCalls)),
  '__PERIOD__', string(rateLimitPeriodSeconds)),
  '__MAX_BODY__', string(maxRequestBodyBytes)),
  '<!-- Policy of the Flowgrid API (every operation). Placeholders __NAME__ are filled by apim.bicep. -->', '')

resource apiPolicy 'Microsoft.ApiManagement/service/apis/policies@2023-05-01-preview' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: policy
  }
}

resource apiOperations 'Microsoft.ApiManagement/service/apis/operations@2023-05-01-preview' = [for op in operations: {
  parent: api
  name: toLower('${op.app}-${op.function}-${op.method}')
  properties: {
    displayName: '${op.app} ${op.function} (${op.method})'
    method: op.method
    urlTemplate: op.urlTemplate
    templateParameters: map(op.parameters, p => {
      name: p
      type: 'string'
      required: true
    })
  }
}]

resource operationPolicies 'Microsoft.ApiManagement/service/apis/operations/policies@2023-05-01-preview' = [for (op, i) in operations: {
  parent: apiOperations[i]
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: '<policies><inbound><base /><set-backend-service backend-id="${op.app}" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>'
  }
  dependsOn: [
    appBackends
  ]
}]

output gatewayUrl string = service.properties.gatewayUrl
