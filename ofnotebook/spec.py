"""What to deploy, independent of where: :class:`FunctionSpec` and its component specs.

Specs are frozen, keyword-only dataclasses so that a spec can be hashed, compared and put into
a package digest; they import no other ofnotebook layer (but the runtime's constants, the
contract both sides share).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .config import DEFAULT_PORT, DEFAULT_RUNTIME, DEFAULT_VERSION
from .errors import ConfigError
from .runtime.bulk import MAX_AWAIT_MS

RUNTIMES = ("sync", "async")

#: Kubernetes-valid deployment names: an RFC 1035 label (a Service name must be one, so no
#: leading digit), kept short because the controller appends suffixes (``serving-xxxxx``,
#: ``-dapr``, the namespace) to build other names.
MAX_NAME_LENGTH = 40
#: What a process environment variable may be called (POSIX: letters, digits, '_').
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: ``spec.version`` becomes a label value on the cluster's objects, so it must be one.
MAX_VERSION_LENGTH = 63
_VERSION_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: ``--env`` names that usually hold a secret (the value would be written into the package,
#: the image and the manifests; ``--secret-env NAME`` keeps it out of every file)
_SECRET_NAME_RE = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$", re.IGNORECASE)
_CREDENTIAL_KEY_RE = re.compile(r"password|secret|token", re.IGNORECASE)
#: a URI's ``user:password@`` and a connection string's ``password=``
_CREDENTIAL_VALUE_RE = re.compile(r"://[^:/@\s]+:[^@\s]+@|password=\S", re.IGNORECASE)
#: ``--batch N``: Dapr's ``bulkSubscribe.maxMessagesCount`` is an int32 with no documented
#: maximum, but a whole batch travels in one gRPC message (4 MB by default, daprd's and the
#: runtime's limit), so ofnotebook caps it where 1 KB events still fit.
MAX_BATCH = 1000
#: ``--batch-wait MS`` (``maxAwaitDurationMs``): at most 10 s, under the brokers' redelivery
#: timeouts (Dapr's Redis Streams ``processingTimeout`` is 15 s), so an event waiting for its
#: batch is not handed out again meanwhile. 0 is not a wait daprd can be told: an unset
#: (zero) field means its default, 1000 ms.
MAX_BATCH_WAIT_MS = 10_000
#: The wait when ``--batch-wait`` is not given (the runtime's own default; short, since daprd
#: holds every partial batch that long).
DEFAULT_BATCH_WAIT_MS = MAX_AWAIT_MS
#: A pub/sub URI for the input bindings that have one: bindings have no bulk delivery.
_PUBSUB_FORM = {"bindings.kafka": "pubsub+kafka://HOST:PORT/TOPIC",
                "bindings.mqtt3": "pubsub+mqtt://HOST:PORT/TOPIC",
                "bindings.rabbitmq": "amqp://USER:PASS@HOST:PORT/TOPIC (a topic, not a queue)"}


def looks_secret(env_name: str) -> bool:
    """An environment variable name such as ``API_TOKEN``, ``DB_PASSWORD`` or ``OPENAI_KEY``."""
    return bool(_SECRET_NAME_RE.search(env_name))


def is_credential(key: str, value: object) -> bool:
    """A component metadata item that holds a credential: a key such as ``redisPassword``
    (with a value), or a value carrying one (``amqp://user:pass@host``, ``password=...``).
    On a cluster these go to a Kubernetes Secret, never into a manifest."""
    text = str(value)
    return bool(text) and bool(_CREDENTIAL_KEY_RE.search(key) or
                               _CREDENTIAL_VALUE_RE.search(text))


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name, else raise ``ConfigError``."""
    if not isinstance(name, str):
        raise ConfigError(
            f"The function name must be a string, not {type(name).__name__} ({name!r}); give "
            f"one such as 'my-func'.", key="name")
    if not name:
        raise ConfigError("The function name is empty; give one such as 'my-func'.", key="name")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"The function name {name!r} has {len(name)} characters; Kubernetes needs "
            f"{MAX_NAME_LENGTH} or fewer here. Pick a shorter name.", key="name")
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"The function name {name!r} is not valid for Kubernetes: use lowercase letters, "
            f"digits and '-', starting with a letter and ending with a letter or digit "
            f"(for example {derive_name(name)!r}).", key="name")
    return name


def validate_version(version: str) -> str:
    """Return ``version`` if it is a Kubernetes label value (what the cluster makes of it),
    else raise ``ConfigError`` here rather than at the API server after the image build."""
    if not isinstance(version, str):
        raise ConfigError(f"The version must be a string, not {type(version).__name__} "
                          f"({version!r}); give one such as 'v1.0.0'.", key="version")
    if len(version) > MAX_VERSION_LENGTH or not _VERSION_RE.match(version):
        raise ConfigError(
            f"The version {version!r} is not a Kubernetes label value: use at most "
            f"{MAX_VERSION_LENGTH} letters, digits, '-', '_' or '.', starting and ending with a "
            f"letter or digit (such as 'v1.0.0').", key="version")
    return version


def derive_name(python_name: str) -> str:
    """Turn a Python identifier into a deployment name: ``greetUser_v2`` -> ``greet-user-v2``."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", python_name).lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    text = text[:MAX_NAME_LENGTH].rstrip("-")
    if not text or not text[0].isalpha():
        text = ("fn-" + text).strip("-")[:MAX_NAME_LENGTH].rstrip("-")
    return text or "fn"


@dataclass(frozen=True, kw_only=True)
class ComponentSpec:
    """A Dapr component as the function sees it: an input, an output or a state store.

    ``name`` is the name the function code uses (``ctx.send("notify", ...)``); ``type`` and
    ``version`` and ``metadata`` map 1:1 to a Dapr ``Component`` spec. ``topic`` applies to
    pub/sub; ``operation`` and ``output_metadata`` (sent with every event) to output bindings.
    ``component`` is the Dapr component's own name when the user named it (``--component``,
    ``Component(..., name=)``): the Dapr SDK may call it by that name, and a cluster gets it as
    a standalone ``Component``; empty, the name is generated as OpenFunction does. In
    :attr:`FunctionSpec.components` ``type`` may also be a ``secretstores.*`` one.
    """

    name: str
    type: str
    version: str = "v1"
    metadata: tuple[tuple[str, str], ...] = ()
    topic: str | None = None
    operation: str | None = None
    output_metadata: tuple[tuple[str, str], ...] = ()
    component: str = ""

    @property
    def kind(self) -> str:
        """``bindings``, ``pubsub``, ``state`` (or ``secretstores``): the first part of the
        Dapr type."""
        return self.type.split(".", 1)[0]


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class BatchSpec:
    """``--batch N --batch-wait MS``: the function is called as ``f(ctx, events)`` with up to
    ``size`` events at once, a partial batch waiting up to ``wait_ms`` to fill. Written into
    the package manifest as ``batch: {size, waitMs}``, which the runtime declares as its
    subscriptions' ``bulkSubscribe`` (runtime/bulk.py), on every target."""

    size: int
    wait_ms: int = DEFAULT_BATCH_WAIT_MS

    def __post_init__(self) -> None:
        if not _whole(self.size) or not 1 <= self.size <= MAX_BATCH:
            raise ConfigError(
                f"--batch {self.size!r} is not a batch size; give a whole number of events from "
                f"1 to {MAX_BATCH} (one batch is one gRPC message), such as --batch 100 "
                f"(batch=100).", key="batch")
        if not _whole(self.wait_ms) or not 1 <= self.wait_ms <= MAX_BATCH_WAIT_MS:
            raise ConfigError(
                f"--batch-wait {self.wait_ms!r} is not a wait; give the milliseconds a partial "
                f"batch may wait to fill, from 1 to {MAX_BATCH_WAIT_MS} (0 would read as unset, "
                f"and daprd then waits its default 1000 ms), such as --batch-wait 50 "
                f"(batch_wait_ms=50).", key="batch_wait_ms")

    def manifest(self) -> dict[str, int]:
        """The package manifest's ``batch`` (what runtime/bulk.py's ``batch_settings`` reads)."""
        return {"size": self.size, "waitMs": self.wait_ms}

    def __str__(self) -> str:
        return f"batch {self.size} (wait {self.wait_ms} ms)"


@dataclass(frozen=True, kw_only=True)
class FunctionSpec:
    """Everything about a deployment except the code: name, runtime, env, ports, components."""

    name: str
    runtime: str = DEFAULT_RUNTIME
    entry: str = ""
    version: str = DEFAULT_VERSION
    port: int = DEFAULT_PORT
    env: tuple[tuple[str, str], ...] = ()
    requirements: tuple[str, ...] = ()
    inputs: tuple[ComponentSpec, ...] = ()
    outputs: tuple[ComponentSpec, ...] = ()
    states: tuple[ComponentSpec, ...] = field(default=())
    #: Components declared by name in this deploy that are no input, output or state: the
    #: function's code calls them through the Dapr SDK by that name (``invoke_binding(
    #: "kafka-server", ...)``, ``get_secret("vault", ...)``), as OpenFunction's and Dapr's
    #: samples do. The function context has no field for them (neither has the controller's).
    components: tuple[ComponentSpec, ...] = ()
    #: ``--secret-env NAME``: variables whose values the target gets at deploy, in memory
    #: (the process or container environment, a Kubernetes Secret); only the names are here.
    secret_env: tuple[str, ...] = ()
    #: ``--batch N``: called with lists of events (pub/sub inputs only); None: one at a time.
    batch: BatchSpec | None = None

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_version(self.version)
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"Unknown runtime {self.runtime!r}; use one of {', '.join(RUNTIMES)}.",
                key="runtime")
        if not (isinstance(self.port, int) and 0 < self.port < 65536):
            raise ConfigError(f"Port {self.port!r} is not a TCP port; use 1-65535.", key="port")
        if self.runtime == "sync" and self.inputs:
            raise ConfigError(
                f"Function {self.name!r} has inputs ({', '.join(c.name for c in self.inputs)}), "
                f"which only trigger asynchronous functions; use runtime 'async'.", key="runtime")
        for key in [k for k, _ in self.env] + list(self.secret_env):
            if not (isinstance(key, str) and _ENV_NAME_RE.match(key)):
                raise ConfigError(
                    f"Environment variable name {key!r} is not valid; use letters, digits "
                    f"and '_', not starting with a digit.", key="env")
        both = sorted(set(self.env_dict) & set(self.secret_env))
        if both:
            raise ConfigError(
                f"{', '.join(both)} is given both as --env and as --secret-env; keep only "
                f"--secret-env {both[0]} (its value stays out of every file).", key="env")
        if self.batch is not None:
            self._check_batch()

    def _check_batch(self) -> None:
        """A batch is what one bulk delivery of a pub/sub topic carries: a sync function has
        none, and an input binding has no bulk delivery in Dapr (it would only ever get
        batches of one), so both are refused rather than silently unbatched."""
        if self.runtime != "async":
            raise ConfigError(
                f"--batch: {self.name!r} is a synchronous function, called over HTTP one request "
                f"at a time; batches come from pub/sub inputs: give one (--input "
                f"events=redis://127.0.0.1:6379/events), or deploy it without --batch.",
                key="batch")
        for c in self.inputs:
            if c.kind != "pubsub":
                form = _PUBSUB_FORM.get(c.type)
                fix = (f"take it as a pub/sub topic (--input {c.name}={form})" if form else
                       f"deploy {c.name!r} as another function, without --batch")
                raise ConfigError(
                    f"--batch: input {c.name!r} is a Dapr input binding ({c.type}), and "
                    f"bindings have no bulk delivery, so the function would only ever get "
                    f"batches of one; {fix}.", key="batch")

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def uses_components(self) -> bool:
        """Declares Dapr components (inputs, outputs, state stores, or components it calls by
        name): in a cluster the Function gets a Dapr sidecar and its components; in the
        image, the Dapr SDK."""
        return bool(self.inputs or self.outputs or self.states or self.components)

    @property
    def needs_dapr(self) -> bool:
        """Talks to a Dapr API when it runs: every async function (Dapr calls it through the
        AppCallback service, even with no component) and any function with components. The
        local and container targets start the kernel's stand-in for these."""
        return self.runtime == "async" or self.uses_components


def parse_env(items: Mapping[str, str] | Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """Accept ``{"K": "V"}`` or ``["K=V", ...]`` and return sorted ``(K, V)`` pairs."""
    if not items:
        return ()
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        pairs = []
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep or not key:
                example = f"--env KEY{item}" if sep else f"--env {item or 'KEY'}=value"
                raise ConfigError(
                    f"--env {item!r} is not KEY=VALUE; write it as {example}.", key="env")
            if key in dict(pairs):
                raise ConfigError(f"--env {key} is given twice ({key}={dict(pairs)[key]}, "
                                  f"{item}); give each variable once.", key="env")
            pairs.append((key, value))
    for key, _ in pairs:
        if not ENV_NAME.match(key):
            raise ConfigError(
                f"--env {key!r} is not an environment variable name: use letters, digits and "
                f"'_', not starting with a digit (such as "
                f"{re.sub(r'[^A-Za-z0-9_]', '_', key).lstrip('0123456789') or 'MY_VAR'!r}).",
                key="env")
    return tuple(sorted(dict(pairs).items()))
