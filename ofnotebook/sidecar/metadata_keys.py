"""The metadata keys daprd reads for each component type, from components-contrib's
``metadata.yaml`` files (``shared/schemas/dapr-components-metadata``): each type's own keys and
those of its authentication profiles, and the names of the built-in profiles it accepts.

Data only; ``metadata.py`` reads it. ``tests/sidecar/test_metadata.py`` rebuilds the table from
the schemas and fails, printing the new table, when they drift apart.
"""

from __future__ import annotations

#: type -> (built-in authentication profiles, the keys of the type and its profiles)
SCHEMA_KEYS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    'bindings.cron': ((), frozenset({
        'schedule'
    })),
    'bindings.http': ((), frozenset({
        'MTLSClientCert', 'MTLSClientKey', 'MTLSRenegotiation', 'MTLSRootCA', 'errorIfNot2XX',
        'maxResponseBodySize', 'responseTimeout', 'securityToken', 'securityTokenHeader', 'url'
    })),
    'bindings.kafka': (('aws',), frozenset({
        'authType', 'awsAccessKey', 'awsIamRoleArn', 'awsSecretKey', 'awsSessionToken',
        'awsStsSessionName', 'brokers', 'caCert', 'clientCert',
        'clientConnectionKeepAliveInterval', 'clientConnectionTopicMetadataRefreshInterval',
        'clientID', 'clientKey', 'compression', 'consumeRetryEnabled', 'consumeRetryInterval',
        'consumerGroup', 'consumerGroupRebalanceStrategy', 'dialTimeout', 'disableTls',
        'escapeHeaders', 'excludeHeaderMetaRegex', 'heartbeatInterval', 'initialOffset',
        'maxMessageBytes', 'metadataTimeout', 'oidcAudience', 'oidcClientAssertionCert',
        'oidcClientAssertionKey', 'oidcClientID', 'oidcClientSecret', 'oidcExtensions', 'oidcKid',
        'oidcResource', 'oidcScopes', 'oidcTokenEndpoint', 'producerRequiredAcks',
        'producerRetryMax', 'publishTopic', 'readTimeout', 'saslMechanism', 'saslPassword',
        'saslUsername', 'schemaCachingEnabled', 'schemaLatestVersionCacheTTL',
        'schemaRegistryAPIKey', 'schemaRegistryAPISecret', 'schemaRegistryURL', 'sessionTimeout',
        'skipVerify', 'topics', 'useAvroJSON', 'version', 'writeTimeout'
    })),
    'bindings.mqtt3': ((), frozenset({
        'backOffMaxRetries', 'caCert', 'cleanSession', 'clientCert', 'clientKey', 'consumerID',
        'retain', 'topic', 'url'
    })),
    'bindings.postgres': (('aws', 'azuread'), frozenset({
        'awsAccessKey', 'awsSecretKey', 'connectionMaxIdleTime', 'connectionString', 'database',
        'host', 'hostaddr', 'maxConns', 'password', 'port', 'queryExecMode', 'sslRootCert',
        'timeout', 'useAWSIAM', 'useAzureAD', 'user'
    })),
    'bindings.rabbitmq': ((), frozenset({
        'caCert', 'clientCert', 'clientKey', 'contentType', 'deleteWhenUnused', 'durable',
        'exclusive', 'externalSasl', 'host', 'maxPriority', 'prefetchCount', 'queueName',
        'reconnectWaitInSeconds', 'ttl'
    })),
    'bindings.redis': (('azuread',), frozenset({
        'clientCert', 'clientKey', 'dialTimeout', 'enableTLS', 'failover', 'idleCheckFrequency',
        'idleTimeout', 'insecureSkipTLSVerify', 'maxConnAge', 'minIdleConns', 'oidcAudience',
        'oidcCACert', 'oidcClientAssertionCert', 'oidcClientAssertionKey', 'oidcClientID',
        'oidcKid', 'oidcResource', 'oidcScopes', 'oidcTokenEndpoint', 'poolSize', 'poolTimeout',
        'readTimeout', 'redisDB', 'redisHost', 'redisMaxRetries', 'redisMaxRetryInterval',
        'redisMinRetryInterval', 'redisPassword', 'redisPort', 'redisType', 'redisUsername',
        'sentinelMasterName', 'sentinelPassword', 'sentinelUsername', 'useEntraID', 'useOIDC',
        'writeTimeout'
    })),
    'pubsub.in-memory': ((), frozenset()),
    'pubsub.jetstream': ((), frozenset({
        'ackPolicy', 'ackWait', 'apiPrefix', 'backOff', 'concurrency', 'deliverPolicy', 'domain',
        'durableName', 'flowControl', 'heartbeat', 'jwt', 'maxAckPending', 'maxDeliver',
        'memoryStorage', 'name', 'natsURL', 'queueGroupName', 'rateLimit', 'replicas', 'seedKey',
        'startSequence', 'startTime', 'streamName', 'tls_client_cert', 'tls_client_key', 'token'
    })),
    'pubsub.kafka': (('aws',), frozenset({
        'authType', 'awsAccessKey', 'awsIamRoleArn', 'awsSecretKey', 'awsSessionToken',
        'awsStsSessionName', 'brokers', 'caCert', 'channelBufferSize', 'clientCert',
        'clientConnectionKeepAliveInterval', 'clientConnectionTopicMetadataRefreshInterval',
        'clientID', 'clientKey', 'compression', 'consumeRetryEnabled', 'consumeRetryInterval',
        'consumerFetchDefault', 'consumerFetchMin', 'consumerGroup',
        'consumerGroupRebalanceStrategy', 'dialTimeout', 'disableTls', 'escapeHeaders',
        'excludeHeaderMetaRegex', 'heartbeatInterval', 'initialOffset', 'maxMessageBytes',
        'metadataTimeout', 'oidcAudience', 'oidcClientAssertionCert', 'oidcClientAssertionKey',
        'oidcClientID', 'oidcClientSecret', 'oidcExtensions', 'oidcKid', 'oidcResource',
        'oidcScopes', 'oidcTokenEndpoint', 'producerRequiredAcks', 'producerRetryMax',
        'readTimeout', 'saslMechanism', 'saslPassword', 'saslUsername', 'schemaCachingEnabled',
        'schemaLatestVersionCacheTTL', 'schemaRegistryAPIKey', 'schemaRegistryAPISecret',
        'schemaRegistryURL', 'sessionTimeout', 'skipVerify', 'useAvroJSON', 'version',
        'writeTimeout'
    })),
    'pubsub.mqtt3': ((), frozenset({
        'caCert', 'cleanSession', 'clientCert', 'clientKey', 'qos', 'retain', 'url'
    })),
    'pubsub.rabbitmq': ((), frozenset({
        'autoAck', 'caCert', 'clientCert', 'clientKey', 'clientName', 'concurrency',
        'connectionString', 'deletedWhenUnused', 'deliveryMode', 'durable', 'enableDeadLetter',
        'exchangeKind', 'heartBeat', 'hostname', 'maxLen', 'maxLenBytes', 'password',
        'prefetchCount', 'protocol', 'publishMessagePropertiesToMetadata', 'publisherConfirm',
        'reconnectWaitSeconds', 'requeueInFailure', 'saslExternal', 'ttlInSeconds', 'username'
    })),
    'pubsub.redis': (('azuread',), frozenset({
        'clientCert', 'clientKey', 'concurrency', 'consumerID', 'dialTimeout', 'enableTLS',
        'failover', 'idleCheckFrequency', 'idleTimeout', 'insecureSkipTLSVerify', 'maxConnAge',
        'maxLenApprox', 'minIdleConns', 'oidcAudience', 'oidcCACert', 'oidcClientAssertionCert',
        'oidcClientAssertionKey', 'oidcClientID', 'oidcKid', 'oidcResource', 'oidcScopes',
        'oidcTokenEndpoint', 'poolSize', 'poolTimeout', 'processingTimeout', 'queueDepth',
        'readTimeout', 'redeliverInterval', 'redisDB', 'redisHost', 'redisMaxRetries',
        'redisMaxRetryInterval', 'redisMinRetryInterval', 'redisPassword', 'redisPort',
        'redisType', 'redisUsername', 'sentinelMasterName', 'sentinelPassword',
        'sentinelUsername', 'streamTTL', 'useEntraID', 'useOIDC', 'writeTimeout'
    })),
    'state.in-memory': ((), frozenset()),
    'state.postgresql': (('aws', 'azuread'), frozenset({
        'awsAccessKey', 'awsSecretKey', 'cleanupInterval', 'connectionMaxIdleTime',
        'connectionString', 'database', 'host', 'hostaddr', 'maxConns', 'metadataTableName',
        'password', 'port', 'queryExecMode', 'sslRootCert', 'tableName', 'tablePrefix', 'timeout',
        'useAWSIAM', 'useAzureAD', 'user'
    })),
    'state.redis': (('azuread',), frozenset({
        'clientCert', 'clientKey', 'dialTimeout', 'enableTLS', 'failover', 'idleCheckFrequency',
        'idleTimeout', 'insecureSkipTLSVerify', 'maxConnAge', 'minIdleConns', 'oidcAudience',
        'oidcCACert', 'oidcClientAssertionCert', 'oidcClientAssertionKey', 'oidcClientID',
        'oidcKid', 'oidcResource', 'oidcScopes', 'oidcTokenEndpoint', 'poolSize', 'poolTimeout',
        'processingTimeout', 'queryIndexes', 'readTimeout', 'redeliverInterval', 'redisDB',
        'redisHost', 'redisMaxRetries', 'redisMaxRetryInterval', 'redisMinRetryInterval',
        'redisPassword', 'redisPort', 'redisType', 'redisUsername', 'sentinelMasterName',
        'sentinelPassword', 'sentinelUsername', 'ttlInSeconds', 'useEntraID', 'useOIDC',
        'writeTimeout'
    })),
}
