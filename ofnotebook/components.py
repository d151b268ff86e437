"""Dapr components from short URIs or Python objects, for inputs, outputs and state stores.

``kafka://127.0.0.1:9092/logs?group=g`` is shorthand for a ``bindings.kafka`` component with
``brokers``, ``topics``/``publishTopic``, ``consumerGroup`` and ``authType: none``;
:class:`Component` maps 1:1 to a Dapr ``Component`` spec (type, version, metadata) for full
control. With no URI an input or output is an in-memory pub/sub topic on the local target.

======================  ===========================  ======================================
scheme                  component type               path / notes
======================  ===========================  ======================================
``memory://TOPIC``      pubsub.in-memory             ``?bus=NAME`` to isolate (local only)
``kafka://H:P/TOPIC``   bindings.kafka               ``?group=``, ``?initialOffset=oldest``
``pubsub+kafka://``     pubsub.kafka                 topic from the path
``mqtt://H:P/TOPIC``    bindings.mqtt3               ``pubsub+mqtt://`` for pubsub.mqtt3
``redis://H:P/STREAM``  pubsub.redis (state.redis    a state store takes no path
                        for a state store)
``nats://H:P/SUBJECT``  pubsub.jetstream
``amqp://U:P@H:P/T``    pubsub.rabbitmq              ``bindings+amqp://.../QUEUE`` for a queue
``cron://SCHEDULE``     bindings.cron (input only)   ``cron://@every 10s``, ``cron://*/5 * * * *``
``http(s)://...``       bindings.http (output only)  the URL itself
``postgresql://U@H:P/DB``  state.postgresql          state stores only
======================  ===========================  ======================================

Any other query parameter becomes component metadata (``?maxLenApprox=1000``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError
from .spec import ComponentSpec

ROLES = ("input", "output", "state")
SCHEMES = ("memory", "kafka", "pubsub+kafka", "mqtt", "pubsub+mqtt", "redis", "nats", "amqp",
           "bindings+amqp", "cron", "http", "https", "postgresql", "postgres")


@dataclass(frozen=True)
class Component:
    """A Dapr component spec in Python: ``Component("bindings.kafka", {"brokers": ...})``.

    ``topic`` is the pub/sub topic; ``operation`` the output-binding operation (default
    ``create``); ``output_metadata`` is sent with every output event. ``name`` gives the Dapr
    component exactly that name (the Dapr SDK may call it by it; a cluster gets a standalone
    ``Component``); without it the name is generated per function, as OpenFunction does.
    """

    type: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    version: str = "v1"
    topic: str | None = None
    operation: str | None = None
    output_metadata: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    def bind(self, name: str, role: str) -> ComponentSpec:
        """The :class:`ComponentSpec` for this component under ``name``."""
        kind = self.type.split(".", 1)[0]
        if kind not in ("bindings", "pubsub", "state"):
            raise ConfigError(f"Component type {self.type!r} of {role} {name!r} must start with "
                              f"bindings., pubsub. or state.", key=role)
        if role == "state" and kind != "state":
            raise ConfigError(f"State store {name!r} needs a state.* component, not {self.type!r}.",
                              key=role)
        if role != "state" and kind == "state":
            raise ConfigError(f"{role.title()} {name!r} cannot be a state store ({self.type!r}); "
                              f"declare it as a state store.", key=role)
        if kind == "pubsub" and not self.topic and role != "state":
            raise ConfigError(f"Pub/sub {role} {name!r} needs a topic (Component(..., topic=...) "
                              f"or the URI path).", key=role)
        operation = self.operation or ("create" if role == "output" and kind == "bindings" else None)
        return ComponentSpec(
            name=name, type=self.type, version=self.version,
            # in the order given: a manifest lists them as the user wrote them
            metadata=tuple((str(k), str(v)) for k, v in self.metadata.items()),
            topic=self.topic, operation=operation,
            output_metadata=tuple(sorted((str(k), str(v)) for k, v in
                                         self.output_metadata.items())),
            component=self.name or "")


def _bad(name: str, role: str, uri: str, why: str) -> ConfigError:
    return ConfigError(f"{role.title()} {name!r}: {uri!r} is not a usable component URI ({why}). "
                       f"Use one of {', '.join(s + '://' for s in SCHEMES)}, or an "
                       f"ofnotebook.Component(...).", key=role)


def _hostport(parts: Any, default_port: int) -> str:
    host = parts.hostname or "127.0.0.1"
    return f"{host}:{parts.port or default_port}"


def parse_uri(name: str, uri: str, role: str, *, app: str = "") -> Component:
    """The :class:`Component` a short URI stands for (see the module docstring)."""
    if role not in ROLES:
        raise ConfigError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.", key="role")
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise _bad(name, role, uri, f"unknown scheme {scheme!r}" if sep else "no scheme")
    if scheme == "cron":
        if role != "input":
            raise _bad(name, role, uri, "cron can only trigger a function (an input)")
        schedule = unquote(rest).strip()
        if not schedule:
            raise _bad(name, role, uri, "no schedule")
        return Component("bindings.cron", {"schedule": schedule})
    if scheme in ("http", "https"):
        if role != "output":
            raise _bad(name, role, uri, "an HTTP URL can only be an output")
        return Component("bindings.http", {"url": uri})
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    path = unquote(parts.path.lstrip("/"))
    group = query.pop("group", "") or (f"{app}-{name}" if app else name)
    if role == "state":
        if scheme == "redis":
            return Component("state.redis", {"redisHost": _hostport(parts, 6379),
                                             "redisPassword": parts.password or "", **query})
        if scheme in ("postgresql", "postgres"):
            conn = (f"host={parts.hostname or '127.0.0.1'} port={parts.port or 5432} "
                    f"user={parts.username or 'postgres'} dbname={path or 'postgres'}")
            if parts.password:
                conn += f" password={parts.password}"
            return Component("state.postgresql", {"connectionString": conn, **query})
        if scheme == "memory":
            return Component("state.in-memory", {"bus": query.pop("bus", "default"), **query})
        raise _bad(name, role, uri, "state stores can be redis://, postgresql:// or memory://")
    if scheme in ("postgresql", "postgres"):
        raise _bad(name, role, uri, "postgresql:// is for state stores")
    topic = path or (parts.netloc if scheme == "memory" else "")
    if not topic:
        raise _bad(name, role, uri, "the path must name the topic")
    if scheme == "memory":
        return Component("pubsub.in-memory", {"bus": query.pop("bus", "default"), **query},
                         topic=topic)
    if scheme in ("kafka", "pubsub+kafka"):
        meta = {"brokers": _hostport(parts, 9092), "authType": "none", **query}
        if scheme == "pubsub+kafka":
            return Component("pubsub.kafka", {"consumerGroup": group, **meta}, topic=topic)
        key = "topics" if role == "input" else "publishTopic"
        extra = {"consumerGroup": group} if role == "input" else {}
        return Component("bindings.kafka", {key: topic, **extra, **meta})
    if scheme in ("mqtt", "pubsub+mqtt"):
        meta = {"url": f"tcp://{_hostport(parts, 1883)}", **query}
        if scheme == "pubsub+mqtt":
            return Component("pubsub.mqtt3", {"consumerID": group, **meta}, topic=topic)
        return Component("bindings.mqtt3", {"topic": topic, "consumerID": group, **meta})
    if scheme == "redis":
        return Component("pubsub.redis", {"redisHost": _hostport(parts, 6379),
                                          "redisPassword": parts.password or "",
                                          "consumerID": group, **query}, topic=topic)
    if scheme == "nats":
        return Component("pubsub.jetstream", {"natsURL": f"nats://{_hostport(parts, 4222)}",
                                              "durableName": group, **query}, topic=topic)
    auth = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
    connection = f"amqp://{auth}{_hostport(parts, 5672)}"
    if scheme == "bindings+amqp":
        return Component("bindings.rabbitmq", {"connectionString": connection,
                                               "queueName": topic, **query})
    # Queues that outlive their consumer keep unacknowledged events across restarts.
    return Component("pubsub.rabbitmq", {"connectionString": connection, "consumerID": group,
                                         "durable": "true", "deletedWhenUnused": "false",
                                         **query}, topic=topic)


def to_spec(name: str, value: Any, role: str, *, app: str = "") -> ComponentSpec:
    """A :class:`ComponentSpec` from a URI, a :class:`Component`, a spec, or ``None``."""
    if isinstance(value, ComponentSpec):
        return value
    if value is None or value == "":
        value = Component("state.in-memory" if role == "state" else "pubsub.in-memory",
                          {"bus": "default"}, topic=None if role == "state" else name)
    elif isinstance(value, str):
        value = parse_uri(name, value, role, app=app)
    if not isinstance(value, Component):
        raise ConfigError(f"{role.title()} {name!r}: expected a URI string or an "
                          f"ofnotebook.Component, got {type(value).__name__}.", key=role)
    return value.bind(name, role)


def parse_items(items: Mapping[str, Any] | list[str] | tuple[str, ...] | None, role: str, *,
                app: str = "") -> tuple[ComponentSpec, ...]:
    """``{"logs": "kafka://..."}`` or ``["logs=kafka://...", "events"]`` to specs."""
    if not items:
        return ()
    pairs: list[tuple[str, Any]]
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            key, _, value = str(item).partition("=")
            pairs.append((key.strip(), value.strip() or None))
    seen = set()
    specs = []
    for key, value in pairs:
        if not key or key in seen:
            raise ConfigError(f"{role.title()} names must be unique and non-empty; got {key!r}.",
                              key=role)
        seen.add(key)
        specs.append(to_spec(key, value, role, app=app))
    return tuple(specs)
