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

Any other query parameter becomes component metadata (``?maxLenApprox=1000``), except
``?operation=OP``: the operation of an output binding (``http://host/alerts?operation=post``;
default ``create``), taken out of the URL.

**Named components.** ``--component NAME=URI`` (``components={NAME: URI or Component}``, or a
``Component(..., name=NAME)``) declares a Dapr component with exactly that name, a DNS-1123
label; inputs, outputs and states use it as ``@NAME``, ``@NAME/TOPIC`` (a pub/sub topic other
than the declaration's) or ``@NAME?operation=OP`` (an output binding's operation). A declaration
stands alone, without a role, so its kind follows from the URI: a Kafka binding gets both
``topics`` and ``publishTopic``; ``redis://`` and ``memory://`` with a topic are pub/sub,
without one a state store; the consumer group defaults to the component's name, so functions
sharing a named input share its group (each event reaches one of them), as Dapr does with a
component whose ``consumerGroup`` is set.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError
from .spec import ComponentSpec

ROLES = ("input", "output", "state")
#: The role :func:`parse_uri` is given for a declaration (``--component NAME=URI``), which
#: has none of its own: the URI alone decides the kind.
DECLARATION = "component"
#: Dapr component names: DNS-1123 labels, what a Kubernetes ``Component`` name and a Dapr app
#: id accept everywhere (no dots, at most 63 characters).
_COMPONENT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_COMPONENT_NAME = 63
SCHEMES = ("memory", "kafka", "pubsub+kafka", "mqtt", "pubsub+mqtt", "redis", "nats", "amqp",
           "bindings+amqp", "cron", "http", "https", "postgresql", "postgres")
#: The kinds of component a function may call by name (:attr:`FunctionSpec.components`):
#: those of inputs, outputs and states, and secret stores, which have no role of their own.
CALLABLE_KINDS = ("bindings", "pubsub", "state", "secretstores")

#: The operations of each output binding type, as components-contrib's ``metadata.yaml``
#: lists them (``binding.operations``; ``shared/schemas/dapr-components-metadata``). Kept in
#: the package, since nothing outside it is there at run time; tests/test_declared_components.py
#: compares it to the schemas so it cannot drift. A type not listed is not checked.
BINDING_OPERATIONS: dict[str, tuple[str, ...]] = {
    "bindings.http": ("create", "get", "head", "post", "put", "patch", "delete", "options",
                      "trace"),
    "bindings.kafka": ("create",),
    "bindings.mqtt3": ("create", "read"),
    "bindings.postgres": ("exec", "query", "close"),
    "bindings.rabbitmq": ("create",),
    "bindings.redis": ("create", "get", "delete", "increment"),
}
#: daprd registers the PostgreSQL binding under both names.
_BINDING_ALIASES = {"bindings.postgresql": "bindings.postgres"}


def check_operation(type_: str, operation: str, where: str, key: str) -> None:
    """Refuse ``operation`` when ``type_``'s operations are known and it is not one of them
    (daprd would answer every call with an error; a deploy must not look fine)."""
    known = BINDING_OPERATIONS.get(_BINDING_ALIASES.get(type_, type_))
    if known is not None and operation not in known:
        raise ConfigError(f"{where}: operation {operation!r} is not one of the operations of "
                          f"{type_} ({', '.join(known)}); e.g. ?operation={known[0]}.", key=key)


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

    @property
    def kind(self) -> str:
        """``bindings``, ``pubsub`` or ``state``: the first part of the Dapr type."""
        return self.type.split(".", 1)[0]

    def definition(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """What Dapr's ``Component`` holds (type, version, metadata in any order): two
        declarations of one name must agree on it; topic and operation belong to each use."""
        return self.type, self.version, tuple(sorted((str(k), str(v))
                                                     for k, v in self.metadata.items()))

    def bind(self, name: str, role: str) -> ComponentSpec:
        """The :class:`ComponentSpec` for this component under ``name``; ``role``
        :data:`DECLARATION` binds a named component the function calls by name only."""
        kind = self.kind
        if role == DECLARATION:
            return self._callable(name)
        if kind not in ("bindings", "pubsub", "state"):
            raise ConfigError(f"Component type {self.type!r} of {role} {name!r} must start with "
                              f"bindings., pubsub. or state.", key=role)
        if role == "state" and kind != "state":
            raise ConfigError(f"State store {name!r} needs a state.* component, not {self.type!r}.",
                              key=role)
        if role != "state" and kind == "state":
            raise ConfigError(f"{role.title()} {name!r} cannot be a state store ({self.type!r}); "
                              f"declare it as a state store.", key=role)
        one_way = {"bindings.cron": "input", "bindings.http": "output"}.get(self.type)
        if one_way and role != one_way:
            raise ConfigError(f"{role.title()} {name!r}: a {self.type} component can only be "
                              f"an {one_way}.", key=role)
        if kind == "pubsub" and not self.topic and role != "state":
            how = (f"@{self.name}/TOPIC" if self.name else
                   "Component(..., topic=...) or the URI path")
            raise ConfigError(f"Pub/sub {role} {name!r} needs a topic ({how}).", key=role)
        output_binding = role == "output" and kind == "bindings"
        if self.operation and not output_binding and not self.name:
            # a named component may be shared by uses of other roles; there it does not apply
            raise ConfigError(f"{role.title()} {name!r}: an operation applies to output "
                              f"bindings only, not to a {role} of type {self.type!r}.", key=role)
        operation = (self.operation or "create") if output_binding else None
        if operation:
            check_operation(self.type, operation, f"{role.title()} {name!r}", role)
        return ComponentSpec(
            name=name, type=self.type, version=self.version,
            # in the order given: a manifest lists them as the user wrote them
            metadata=tuple((str(k), str(v)) for k, v in self.metadata.items()),
            topic=self.topic, operation=operation,
            output_metadata=tuple(sorted((str(k), str(v)) for k, v in
                                         self.output_metadata.items())),
            component=self.name or "")

    def _callable(self, name: str) -> ComponentSpec:
        """A declared component as the function's code calls it by ``name``: no topic or
        operation (each SDK call gives its own)."""
        if self.kind not in CALLABLE_KINDS:
            raise ConfigError(f"Component {name!r} has type {self.type!r}; a component must be "
                              f"a {', '.join(k + '.*' for k in CALLABLE_KINDS)} one.",
                              key="components")
        return ComponentSpec(name=name, type=self.type, version=self.version,
                             metadata=tuple((str(k), str(v)) for k, v in self.metadata.items()),
                             component=name)


def _bad(name: str, role: str, uri: str, why: str) -> ConfigError:
    return ConfigError(f"{role.title()} {name!r}: {uri!r} is not a usable component URI ({why}). "
                       f"Use one of {', '.join(s + '://' for s in SCHEMES)}, or an "
                       f"ofnotebook.Component(...).", key=role)


def _hostport(parts: Any, default_port: int) -> str:
    host = parts.hostname or "127.0.0.1"
    return f"{host}:{parts.port or default_port}"


def _pop_operation(name: str, role: str, uri: str) -> tuple[str | None, str]:
    """``?operation=OP`` out of ``uri``: the operation and the URI without it (the rest of the
    query kept byte for byte, as an HTTP binding's URL needs it)."""
    base, sep, query = uri.partition("?")
    if not sep:
        return None, uri
    kept, operation = [], None
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if unquote(key) == "operation":
            operation = unquote(value).strip()
        else:
            kept.append(item)
    if operation is None:
        return None, uri
    if role not in ("output", DECLARATION):
        raise _bad(name, role, uri, "?operation= applies to outputs only")
    if not operation:
        raise _bad(name, role, uri, "?operation= is empty; e.g. ?operation=post")
    return operation, base + ("?" + "&".join(kept) if kept else "")


def parse_uri(name: str, uri: str, role: str, *, app: str = "") -> Component:
    """The :class:`Component` a short URI stands for (see the module docstring); ``role``
    :data:`DECLARATION` parses a named component's declaration, whose kind the URI decides."""
    if role not in ROLES + (DECLARATION,):
        raise ConfigError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.", key="role")
    declared = role == DECLARATION
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep:
        head, colon, tail = uri.partition(":")
        if colon and head.lower() in SCHEMES:  # redis:/host, redis:host: a slash short
            raise _bad(name, role, uri, f"'{head}:' needs two slashes: write "
                                        f"{head}://{tail.lstrip('/')}")
    if not sep or scheme not in SCHEMES:
        raise _bad(name, role, uri, f"unknown scheme {scheme!r}" if sep else "no scheme")
    if scheme == "cron":  # no query: a cron schedule may contain '?'
        if role not in ("input", DECLARATION):
            raise _bad(name, role, uri, "cron can only trigger a function (an input)")
        schedule = unquote(rest).strip()
        if not schedule:
            raise _bad(name, role, uri, "no schedule")
        return Component("bindings.cron", {"schedule": schedule}, name=name if declared else None)
    operation, uri = _pop_operation(name, role, uri)
    try:  # urlsplit checks the port only when asked, with a message naming no URI
        parts = urlsplit(uri)
    except ValueError as exc:
        raise _bad(name, role, uri, str(exc)) from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise _bad(name, role, uri, "the port must be a number 1-65535, or left out for the "
                                    "scheme's default")
    component = _parse(name, uri, role, scheme, app)
    return dataclasses.replace(component, operation=operation, name=name if declared else None)


def _parse(name: str, uri: str, role: str, scheme: str, app: str) -> Component:
    declared = role == DECLARATION
    if scheme in ("http", "https"):
        if role not in ("output", DECLARATION):
            raise _bad(name, role, uri, "an HTTP URL can only be an output")
        if not urlsplit(uri).hostname:
            raise _bad(name, role, uri, f"no host; e.g. {scheme}://127.0.0.1:8000/path")
        return Component("bindings.http", {"url": uri})
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    path = unquote(parts.path.lstrip("/"))
    group = query.pop("group", "") or (f"{app}-{name}" if app else name)
    # a declaration names no role: without a topic, redis:// and memory:// are state stores
    topicless = not path and not (scheme == "memory" and parts.netloc)
    if role == "state" or (declared and topicless and scheme in ("redis", "memory")) or (
            declared and scheme in ("postgresql", "postgres")):
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
    # a declared pub/sub may leave the topic to each use (@NAME/TOPIC); a binding may not
    if not topic and not (declared and scheme in ("pubsub+kafka", "pubsub+mqtt", "nats",
                                                  "amqp")):
        raise _bad(name, role, uri, "the path must name the topic")
    topic_or_none = topic or None
    if scheme == "memory":
        return Component("pubsub.in-memory", {"bus": query.pop("bus", "default"), **query},
                         topic=topic)
    if scheme in ("kafka", "pubsub+kafka"):
        meta = {"brokers": _hostport(parts, 9092), "authType": "none", **query}
        if scheme == "pubsub+kafka":
            return Component("pubsub.kafka", {"consumerGroup": group, **meta},
                             topic=topic_or_none)
        if declared:  # either role: Dapr's Kafka binding reads `topics`, writes `publishTopic`
            return Component("bindings.kafka", {"topics": topic, "consumerGroup": group,
                                                "publishTopic": topic, **meta})
        key = "topics" if role == "input" else "publishTopic"
        extra = {"consumerGroup": group} if role == "input" else {}
        return Component("bindings.kafka", {key: topic, **extra, **meta})
    if scheme in ("mqtt", "pubsub+mqtt"):
        meta = {"url": f"tcp://{_hostport(parts, 1883)}", **query}
        if scheme == "pubsub+mqtt":
            return Component("pubsub.mqtt3", {"consumerID": group, **meta}, topic=topic_or_none)
        return Component("bindings.mqtt3", {"topic": topic, "consumerID": group, **meta})
    if scheme == "redis":
        return Component("pubsub.redis", {"redisHost": _hostport(parts, 6379),
                                          "redisPassword": parts.password or "",
                                          "consumerID": group, **query}, topic=topic)
    if scheme == "nats":
        return Component("pubsub.jetstream", {"natsURL": f"nats://{_hostport(parts, 4222)}",
                                              "durableName": group, **query}, topic=topic_or_none)
    auth = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
    connection = f"amqp://{auth}{_hostport(parts, 5672)}"
    if scheme == "bindings+amqp":
        return Component("bindings.rabbitmq", {"connectionString": connection,
                                               "queueName": topic, **query})
    # Queues that outlive their consumer keep unacknowledged events across restarts.
    return Component("pubsub.rabbitmq", {"connectionString": connection, "consumerID": group,
                                         "durable": "true", "deletedWhenUnused": "false",
                                         **query}, topic=topic_or_none)


# -- named components: declarations and @NAME references ---------------------------------------

def validate_component_name(name: str, where: str = "--component") -> str:
    """Return ``name`` if it can name a Dapr component (a DNS-1123 label), else raise."""
    if not isinstance(name, str) or not _COMPONENT_NAME_RE.match(name) or \
            len(name) > MAX_COMPONENT_NAME:
        suggestion = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "my-component"
        raise ConfigError(
            f"{where}: {name!r} is not a valid Dapr component name; use at most "
            f"{MAX_COMPONENT_NAME} lowercase letters, digits and '-', starting and ending with "
            f"a letter or digit (for example {suggestion[:MAX_COMPONENT_NAME]!r}).",
            key="components")
    return name


def _declared(name: str, value: Any) -> Component:
    """One declaration: ``name`` and a URI or a :class:`Component` (named so, or unnamed)."""
    validate_component_name(name)
    if isinstance(value, Component):
        if value.name not in (None, "", name):
            raise ConfigError(f"--component {name!r}: the Component given is named "
                              f"{value.name!r}; declare it under one name.", key="components")
        component = dataclasses.replace(value, name=name)
    elif not isinstance(value, str) or not value.strip():
        raise ConfigError(f"--component {name!r} needs a URI or an ofnotebook.Component "
                          f"(e.g. --component {name}=kafka://127.0.0.1:9092/logs).",
                          key="components")
    else:
        component = parse_uri(name, value.strip(), DECLARATION)
    component.bind(name, DECLARATION)  # a kind no function can use is refused here
    if component.operation and component.kind == "bindings":
        check_operation(component.type, component.operation, f"--component {name!r}",
                        "components")
    return component


def parse_components(items: Any) -> dict[str, Component]:
    """Named components from ``{"NAME": URI or Component}``, from ``["NAME=URI", ...]`` or
    from named ``Component`` objects in such a list; each is a :class:`Component` whose
    ``name`` is its Dapr name. Declaring one name twice differently is an error."""
    if not items:
        return {}
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        for item in [items] if isinstance(items, (str, Component)) else items:
            if isinstance(item, Component):
                if not item.name:
                    raise ConfigError("A Component in components=[...] needs a name "
                                      "(Component(..., name='my-component')).", key="components")
                pairs.append((item.name, item))
                continue
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--component {item!r} is not NAME=URI; write it as "
                                  f"--component {key.strip() or 'NAME'}=kafka://HOST:PORT/TOPIC "
                                  f"(or another component URI).", key="components")
            pairs.append((key.strip(), value))
    found: dict[str, Component] = {}
    for key, value in pairs:
        merge_declaration(found, _declared(key, value))
    return found


def merge_declaration(table: dict[str, Component], component: Component,
                      users: str = "") -> None:
    """Add named ``component`` to ``table``; one already there under its name must have the
    same :meth:`~Component.definition` (``users`` says who uses that one, for the message)."""
    assert component.name
    known = table.get(component.name)
    if known is not None and known.definition() != component.definition():
        raise ConfigError(
            f"Component {component.name!r} is declared twice with different definitions "
            f"({_describe(known)}{users} and now {_describe(component)}); give the same "
            f"definition, or another name to the new one.", key="components")
    table[component.name] = component


def describe(type_: str, metadata: Iterable[tuple[str, Any]]) -> str:
    """``type {key=value, ...}`` for a message, passwords masked (an error is shown and
    logged; a broker's password must not be)."""
    def shown(key: str, value: Any) -> str:
        if any(word in key.lower() for word in ("password", "secret", "token")):
            return "***"
        text = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", str(value))
        return re.sub(r"(password=)\S+", r"\1***", text)
    return f"{type_} {{{', '.join(f'{k}={shown(k, v)}' for k, v in metadata)}}}"


def _describe(component: Component) -> str:
    return describe(component.type, component.metadata.items())


@dataclass(frozen=True)
class Reference:
    """``@NAME[/TOPIC][?operation=OP]``: a use of the named component ``NAME``."""

    name: str
    topic: str | None = None
    operation: str | None = None


def parse_reference(value: Any, name: str, role: str) -> Reference | None:
    """The :class:`Reference` ``value`` is, or ``None`` when it is not an ``@NAME``."""
    if not isinstance(value, str) or not value.startswith("@"):
        return None
    body, _, query = value[1:].partition("?")
    component, _, topic = body.partition("/")
    where = f"{role.title()} {name!r} ({value!r})"
    validate_component_name(component, where)
    operation = None
    for key, item in parse_qsl(query, keep_blank_values=True):
        if key != "operation" or not item:
            raise ConfigError(f"{where}: a reference takes only ?operation=OP; the "
                              f"component's metadata goes in its declaration.", key=role)
        if role != "output":
            raise ConfigError(f"{where}: an operation applies to outputs only.", key=role)
        operation = item
    return Reference(component, unquote(topic) or None, operation)


def resolve(name: str, reference: Reference, role: str,
            components: Mapping[str, Component]) -> Component:
    """The declared component ``reference`` names, with the use's topic and operation."""
    component = components.get(reference.name)
    if component is None:
        declared = ", ".join(sorted(components)) or "none"
        raise ConfigError(
            f"{role.title()} {name!r} uses component {reference.name!r}, which is not "
            f"declared (declared: {declared}). Declare it with --component "
            f"{reference.name}=URI (components={{{reference.name!r}: ...}} in Python).",
            key=role)
    if reference.topic and component.kind != "pubsub":
        raise ConfigError(f"{role.title()} {name!r}: @{reference.name}/{reference.topic} "
                          f"gives a topic, but {reference.name!r} is a {component.type} "
                          f"component; only pub/sub takes one.", key=role)
    return dataclasses.replace(component, topic=reference.topic or component.topic,
                               operation=reference.operation or component.operation)


def to_spec(name: str, value: Any, role: str, *, app: str = "",
            components: Mapping[str, Component] | None = None) -> ComponentSpec:
    """A :class:`ComponentSpec` from a URI, an ``@NAME`` of ``components``, a
    :class:`Component`, a spec, or ``None``."""
    if isinstance(value, ComponentSpec):
        return value
    if value is None or value == "":
        value = Component("state.in-memory" if role == "state" else "pubsub.in-memory",
                          {"bus": "default"}, topic=None if role == "state" else name)
    elif isinstance(value, str):
        reference = parse_reference(value, name, role)
        value = (resolve(name, reference, role, components or {}) if reference else
                 parse_uri(name, value, role, app=app))
    if not isinstance(value, Component):
        raise ConfigError(f"{role.title()} {name!r}: expected a URI string, an @COMPONENT or "
                          f"an ofnotebook.Component, got {type(value).__name__}.", key=role)
    if value.name:
        validate_component_name(value.name, f"{role.title()} {name!r}")
    return value.bind(name, role)


def item_pairs(items: Any, role: str) -> list[tuple[str, Any]]:
    """``{"logs": "kafka://..."}`` or ``["logs=kafka://...", "events"]`` as (name, value)."""
    if not items:
        return []
    if isinstance(items, Mapping):
        return list(items.items())
    pairs = []
    for item in [items] if isinstance(items, str) else items:
        key, _, value = str(item).partition("=")
        pairs.append((key.strip(), value.strip() or None))
    return pairs


def parse_items(items: Mapping[str, Any] | list[str] | tuple[str, ...] | None, role: str, *,
                app: str = "", components: Mapping[str, Component] | None = None
                ) -> tuple[ComponentSpec, ...]:
    """``{"logs": "kafka://..."}`` or ``["logs=kafka://...", "events"]`` to specs;
    ``@NAME`` values use the named ``components``."""
    seen = set()
    specs = []
    for key, value in item_pairs(items, role):
        if not key or key in seen:
            raise ConfigError(f"{role.title()} names must be unique and non-empty; got {key!r}.",
                              key=role)
        seen.add(key)
        specs.append(to_spec(key, value, role, app=app, components=components))
    return tuple(specs)
