// A storage account with shared-key access off (Entra ID only), its blob containers, and the
// data-plane roles on it: per account where the Functions host needs it, otherwise per container.

import { roleIds } from 'roles.bicep'

param location string

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

param tags object

@description('Blob containers to create.')
param containers array

@description('Roles on the whole account: [{principalId, role, principalType}] (principalType empty: let Azure find it).')
param accountRoles array

@description('Roles on one container: [{principalId, container, role, principalType}].')
param containerRoles array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in containers: {
  parent: blobService
  name: container
  properties: {
    publicAccess: 'None'
  }
}]

resource accountAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for r in accountRoles: {
  name: guid(account.id, r.principalId, roleIds[r.role])
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds[r.role])
    principalId: r.principalId
    principalType: empty(r.principalType) ? null : r.principalType
  }
}]

resource scopedContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for r in containerRoles: {
  parent: blobService
  name: r.container
}]

resource containerAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (r, i) in containerRoles: {
  name: guid(scopedContainers[i].id, r.principalId, roleIds[r.role])
  scope: scopedContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds[r.role])
    principalId: r.principalId
    principalType: empty(r.principalType) ? null : r.principalType
  }
  dependsOn: [
    blobContainers
  ]
}]

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
