// API Management (Consumption) in front of the apps: one API under /api whose operations are
// exactly the HTTP functions of every app (infra/apps.json, checked against the function.json
// files by tests/tests/infra.rs), each sent to its app's blue or green Function App. The API's
// policy (api-policy.xml) sets the correlation id, validates bearer tokens against the Auth app's
// JWKS, puts the token's tenant in one of 100 buckets, limits calls per tenant, limits body size
// and, when origins are given, answers CORS.
//
// Blue/green (docs/deploy.md, "Canary, promote, rollback"): per app a backend per colour, each
// with a circuit breaker, and a weighted pool of the two. An operation sends a request with a
// tenant to green when the tenant's bucket is below the named value <app>-green-weight, else to
// blue (sticky per tenant, the local host's rule); a request without a token goes to the pool,
// which spreads by the same weights per request. Shifting weight is one named-value update (and
// the pool's weights), no redeploy; <app>-live records which colour consumes queues and timers.

param location string
param name string
param tags object

@description('Consumption, BasicV2 or StandardV2. The backend circuit breakers are deployed on the v2 tiers only: API Management documents them as not supported in the Consumption tier.')
param sku string = 'Consumption'

param publisherEmail string
param publisherName string

@description('[{app, blueUrl, greenUrl, live, greenWeight}]: the base URLs (…/api) of each app\'s blue and green Function Apps, its live colour and the percentage of its traffic green gets.')
param backends array

@description('5xx answers within circuitBreakerInterval that trip a Function App\'s circuit breaker.')
param circuitBreakerFailures int
param circuitBreakerInterval string
param circuitBreakerTripDuration string

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
    name: sku
    capacity: sku == 'Consumption' ? 0 : 1
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
  }
}

// One backend per app and colour: <app>-blue, <app>-green.
var colourBackends = flatten(map(backends, b => [
  {
    name: '${b.app}-blue'
    url: b.blueUrl
  }
  {
    name: '${b.app}-green'
    url: b.greenUrl
  }
]))

// A Function App answering 5xx this often is taken out (API Management answers 503 for it, or
// the pool picks the other colour) for the trip duration or the Retry-After it sends.
var circuitBreaker = {
  rules: [
    {
      name: 'server-errors'
      failureCondition: {
        count: circuitBreakerFailures
        interval: circuitBreakerInterval
        statusCodeRanges: [
          {
            min: 500
            max: 599
          }
        ]
        errorReasons: [
          'Server errors'
        ]
      }
      tripDuration: circuitBreakerTripDuration
      acceptRetryAfter: true
    }
  ]
}
var circuitBreakers = sku != 'Consumption'

resource appBackends 'Microsoft.ApiManagement/service/backends@2024-05-01' = [for b in colourBackends: {
  parent: service
  name: b.name
  properties: union({
    type: 'Single'
    url: b.url
    protocol: 'http'
    tls: {
      validateCertificateChain: true
      validateCertificateName: true
    }
  }, circuitBreakers ? {
    circuitBreaker: circuitBreaker
  } : {})
}]

// The pool of an app's two colours, weighted like the per-tenant choice: <app>-pool.
resource appPools 'Microsoft.ApiManagement/service/backends@2024-05-01' = [for b in backends: {
  parent: service
  name: '${b.app}-pool'
  properties: {
    type: 'Pool'
    description: 'Blue/green pool of ${b.app}'
    pool: {
      services: [
        {
          id: '/backends/${b.app}-blue'
          priority: 1
          weight: 100 - b.greenWeight
        }
        {
          id: '/backends/${b.app}-green'
          priority: 1
          weight: b.greenWeight
        }
      ]
    }
  }
  dependsOn: [
    appBackends
  ]
}]

// The per-app state, read by the operations' policies (green weight) and by flowgrid deploy.
resource greenWeightValues 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = [for b in backends: {
  parent: service
  name: '${b.app}-green-weight'
  properties: {
    displayName: '${b.app}-green-weight'
    value: string(b.greenWeight)
    secret: false
  }
}]

resource liveColourValues 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = [for b in backends: {
  parent: service
  name: '${b.app}-live'
  properties: {
    displayName: '${b.app}-live'
    value: b.live
    secret: false
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

// Each operation's backend: with a tenant (tenantBucket, set by api-policy.xml from the validated
// token's tid), green when its bucket is below the app's green weight, else blue; without one,
// the app's pool. `>` rather than `<`: the expression sits in an XML attribute.
resource operationPolicies 'Microsoft.ApiManagement/service/apis/operations/policies@2023-05-01-preview' = [for (op, i) in operations: {
  parent: apiOperations[i]
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: '<policies><inbound><base /><choose><when condition="@(!context.Variables.ContainsKey("tenantBucket"))"><set-backend-service backend-id="${op.app}-pool" /></when><when condition="@(int.Parse("{{${op.app}-green-weight}}") > (int)context.Variables["tenantBucket"])"><set-backend-service backend-id="${op.app}-green" /></when><otherwise><set-backend-service backend-id="${op.app}-blue" /></otherwise></choose></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>'
  }
  dependsOn: [
    appBackends
    appPools
    greenWeightValues
  ]
}]

output gatewayUrl string = service.properties.gatewayUrl
