"""Component drivers by Dapr component type, imported on first use."""

from __future__ import annotations

import importlib

from .base import ComponentConfig, ComponentError, Driver

_DRIVERS: dict[str, str] = {
    "pubsub.in-memory": "memory:MemoryDriver",
    "bindings.in-memory": "memory:MemoryDriver",
    "state.in-memory": "memory:MemoryDriver",
    "bindings.cron": "cron:CronDriver",
    "bindings.http": "http:HttpDriver",
    "pubsub.redis": "redis:RedisDriver",
    "bindings.redis": "redis:RedisDriver",
    "state.redis": "redis:RedisDriver",
    "bindings.kafka": "kafka:KafkaDriver",
    "pubsub.kafka": "kafka:KafkaDriver",
    "bindings.mqtt3": "mqtt:MqttDriver",
    "pubsub.mqtt3": "mqtt:MqttDriver",
    "bindings.mqtt": "mqtt:MqttDriver",
    "pubsub.mqtt": "mqtt:MqttDriver",
    "pubsub.jetstream": "jetstream:JetStreamDriver",
    "pubsub.rabbitmq": "rabbitmq:RabbitMQDriver",
    "bindings.rabbitmq": "rabbitmq:RabbitMQDriver",
    "state.postgresql": "postgresql:PostgresDriver",
    "bindings.postgresql": "postgresql:PostgresDriver",
    "bindings.postgres": "postgresql:PostgresDriver",
    "secretstores.local.env": "secrets:EnvSecretStore",
    "secretstores.local.file": "secrets:FileSecretStore",
}

SUPPORTED_TYPES = tuple(sorted(_DRIVERS))


def create_driver(component: ComponentConfig) -> Driver:
    """A driver for ``component``; an unsupported type names the supported ones."""
    path = _DRIVERS.get(component.type.lower())
    if path is None:
        raise ComponentError(
            f"component {component.name!r}: type {component.type!r} cannot run on the local "
            f"target (it can still be deployed to Kubernetes); supported locally: "
            f"{', '.join(SUPPORTED_TYPES)}")
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise ComponentError(
            f"component {component.name!r} ({component.type}) needs {exc.name!r}; install the "
            f"broker clients with: pip install 'ofnotebook[brokers]'") from exc
    cls: type[Driver] = getattr(module, class_name)
    return cls(component)


__all__ = ["ComponentConfig", "ComponentError", "Driver", "SUPPORTED_TYPES", "create_driver"]
