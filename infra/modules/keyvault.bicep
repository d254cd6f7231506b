// Key Vault with RBAC authorization (no access policies) holding the secrets the apps read
// through Key Vault references (`@Microsoft.KeyVault(...)` app settings, resolved by the
// platform with the app's user-assigned identity). The secrets' values are set once, outside the
// template (docs/deploy.md), so that redeploying never replaces them. Apps that read a secret get
// Key Vault Secrets User on the vault (a role on one secret would need the secret to exist
// before the first deployment); apps with no secrets get nothing.

import { roleIds } from 'roles.bicep'

param location string

@minLength(3)
@maxLength(24)
param name string

param tags object

@description('The apps of apps.json (secrets = {SETTING: secret name}).')
param apps array

@description('Principal id of each app\'s identity, in the order of apps.')
param principalIds array

var readerPrincipalIds = flatten(map(range(0, length(apps)), i => empty(apps[i].secrets) ? [] : [
  principalIds[i]
]))

@description('Object id of the deployer (Key Vault Secrets Officer, to set the secrets); empty: none.')
param deployerPrincipalId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in readerPrincipalIds: {
  name: guid(vault.id, principalId, roleIds['Key Vault Secrets User'])
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds['Key Vault Secrets User'])
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource deployer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, roleIds['Key Vault Secrets Officer'])
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds['Key Vault Secrets Officer'])
    principalId: deployerPrincipalId
  }
}

output name string = vault.name
