// Service Bus (Standard: topics need it) with local (SAS key) auth off, and exactly the queues,
// topics and subscriptions the function.json files name (infra/apps.json, checked by
// tests/tests/infra.rs). Entity settings are what the code and host.json assume
// (../shared reference: reliability rules §5):
// - PeekLock with a 1-minute lock, renewed by the Functions host up to
//   `maxAutoLockRenewalDuration` (host.json, 5 minutes);
// - a failed invocation abandons the message; after `maxDeliveryCount` (10) deliveries Service
//   Bus dead-letters it;
// - producers set `MessageId` (= job id), so duplicate detection (10-minute window) drops
//   producer retries.
// Roles: Data Sender on each entity an app's output bindings name, Data Receiver on each queue
// or subscription an app's triggers name; nothing namespace-wide.

import { roleIds } from 'roles.bicep'

param location string
param name string
param tags object

@description('Queue names.')
param queues array

@description('Topics: [{name, subscriptions: [name]}].')
param topics array

@description('The apps of apps.json: sends = queue or topic names, receives = queue names or "topic/subscription".')
param apps array

@description('Principal id of each app\'s identity, in the order of apps.')
param principalIds array

var senders = flatten(map(range(0, length(apps)), i => map(apps[i].sends, entity => {
  principalId: principalIds[i]
  entity: entity
})))
var receivers = flatten(map(range(0, length(apps)), i => map(apps[i].receives, entity => {
  principalId: principalIds[i]
  entity: entity
})))

var lockDuration = 'PT1M'
var maxDeliveryCount = 10
var duplicateDetectionWindow = 'PT10M'

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource queueEntities 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for q in queues: {
  parent: namespace
  name: q
  properties: {
    lockDuration: lockDuration
    maxDeliveryCount: maxDeliveryCount
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    deadLetteringOnMessageExpiration: true
    requiresSession: false
  }
}]

resource topicEntities 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = [for t in topics: {
  parent: namespace
  name: t.name
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
  }
}]

var subscriptions = flatten(map(topics, t => map(t.subscriptions, s => {
  topic: t.name
  name: s
})))

resource subscriptionEntities 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = [for s in subscriptions: {
  name: '${name}/${s.topic}/${s.name}'
  properties: {
    lockDuration: lockDuration
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    deadLetteringOnFilterEvaluationExceptions: true
    requiresSession: false
  }
  dependsOn: [
    topicEntities
  ]
}]

var queueSenders = filter(senders, s => contains(queues, s.entity))
var topicSenders = filter(senders, s => !contains(queues, s.entity))
var queueReceivers = filter(receivers, r => !contains(r.entity, '/'))
var subscriptionReceivers = filter(receivers, r => contains(r.entity, '/'))

resource sendQueues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = [for s in queueSenders: {
  parent: namespace
  name: s.entity
}]

resource sendTopics 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' existing = [for s in topicSenders: {
  parent: namespace
  name: s.entity
}]

resource receiveQueues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = [for r in queueReceivers: {
  parent: namespace
  name: r.entity
}]

resource receiveSubscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' existing = [for r in subscriptionReceivers: {
  name: '${name}/${r.entity}'
}]

resource queueSendAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (s, i) in queueSenders: {
  name: guid(sendQueues[i].id, s.principalId, roleIds['Azure Service Bus Data Sender'])
  scope: sendQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds['Azure Service Bus Data Sender'])
    principalId: s.principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    queueEntities
  ]
}]

resource topicSendAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (s, i) in topicSenders: {
  name: guid(sendTopics[i].id, s.principalId, roleIds['Azure Service Bus Data Sender'])
  scope: sendTopics[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds['Azure Service Bus Data Sender'])
    principalId: s.principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    topicEntities
  ]
}]

resource queueReceiveAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (r, i) in queueReceivers: {
  name: guid(receiveQueues[i].id, r.principalId, roleIds['Azure Service Bus Data Receiver'])
  scope: receiveQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds['Azure Service Bus Data Receiver'])
    principalId: r.principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    queueEntities
  ]
}]

resource subscriptionReceiveAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (r, i) in subscriptionReceivers: {
  name: guid(receiveSubscriptions[i].id, r.principalId, roleIds['Azure Service Bus Data Receiver'])
  scope: receiveSubscriptions[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds['Azure Service Bus Data Receiver'])
    principalId: r.principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    subscriptionEntities
  ]
}]

output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
