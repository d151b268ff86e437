"""The public Python API: ``deploy``, ``deployments``, ``stop``, ``dapr_env``. The magics only
call these.

A deploy is decided once, here: :func:`plan` settles the target, the name and the runtime
(what a view's header shows before anything runs), then :meth:`Plan.deploy` builds the spec,
captures, packages and hands the package to the target. The handle gets the frozen
:class:`~ofnotebook.request.DeployRequest` it came from and the callable that redeploys it, so
it never calls back up into this module.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from . import config, display, named
from .config import DEFAULT_RUNTIME, DEFAULT_VERSION
from .backends import active_backends, get_backend
from .backends.base import Backend, EventSink, PhaseEvent, PhaseRecorder
from .capture import capture as capture_function
from .cluster import cluster_settings
from .components import Component, parse_items
from .errors import BackendUnavailableError, ConfigError, DeployError, OfnotebookError
from .handle import FunctionHandle
from .includes import collect as collect_includes, warnings as include_warnings
from .manifests import check_settings
from .package import package as build_package
from .request import DeployRequest
from .spec import (BatchSpec, FunctionSpec, derive_name, looks_secret, parse_env,
                   validate_name, validate_version)

_handles: dict[tuple[str, str], FunctionHandle] = {}


def batch_of(request: DeployRequest) -> BatchSpec | None:
    """The :class:`BatchSpec` ``request`` asks for (raises ``ConfigError`` for a bad value, or
    ``batch_wait_ms`` without ``batch``); None for a function of one event at a time."""
    size, wait = request.batch, request.batch_wait_ms
    if size is None:
        if wait is not None:
            raise ConfigError(f"--batch-wait {wait} is how long a batch waits to fill, but "
                              f"no --batch N was given; add one (--batch 100 --batch-wait "
                              f"{wait}, batch=100), or drop --batch-wait.", key="batch_wait_ms")
        return None
    return BatchSpec(size=size) if wait is None else BatchSpec(size=size, wait_ms=wait)


def _check_batch_shape(fn: Callable[..., Any], runtime: str, signature: str | None,
                       batch: BatchSpec) -> None:
    """A batch function is called ``f(ctx, events)`` (the ``ctx_data`` shape, ``async def``
    too): any other shape would get a list where it expects one event, or no list at all."""
    from .runtime.shapes import CALLS, ShapeError, detect, unwrap

    name = getattr(fn, "__name__", "f")
    try:
        shape: str | None = detect(fn, runtime, signature)
    except (ShapeError, TypeError, ValueError):
        shape = None
    if shape == "ctx_data":
        return
    try:
        written = f"{name}{inspect.signature(unwrap(fn))}"
    except (TypeError, ValueError):
        written = f"{name}(...)"
    found = f"{CALLS[shape]}, the {shape} shape" if shape else "not a shape it can call"
    raise ConfigError(f"--batch {batch.size} calls the function as f(ctx, events), with a list "
                      f"of up to {batch.size} events, but {written} is {found}; write it as "
                      f"def {name}(ctx, events) (the context, then the list), or deploy it "
                      f"without --batch.", key="batch")


@dataclass(frozen=True)
class Plan:
    """What ``deploy`` decided before doing anything: the target (``backend``, and its name
    ``target``), the deployment ``name`` and the ``runtime``. ``deploy`` then runs it."""

    function: Callable[..., Any]
    request: DeployRequest
    backend: Backend
    target: str
    name: str
    runtime: str

    def declarations(self) -> dict[str, Component]:
        """The named components this deploy declares (``components`` and named
        ``Component`` values), checked against what running functions and the notebook's
        client use under those names (raises ``ConfigError``)."""
        request = self.request
        own = named.declarations(request.components, request.inputs, request.outputs,
                                 request.states)
        named.check(own, _named_users(exclude=(self.target, self.name)))
        return own

    def spec(self) -> FunctionSpec:
        """The :class:`FunctionSpec` of this plan (raises ``ConfigError`` on a bad item);
        ``@NAME`` items use this deploy's declarations, then the kernel's."""
        request, name = self.request, self.name
        if name == named.NOTEBOOK_APP and self.target in ("local", "container"):
            raise ConfigError(f"The name {name!r} is the app id of the notebook's own Dapr "
                              f"client with the local stand-in; pick another name.", key="name")
        own = self.declarations()
        usable = {**named.declared(), **own}
        inputs = parse_items(request.inputs, "input", app=name, components=usable)
        outputs = parse_items(request.outputs, "output", app=name, components=usable)
        states = parse_items(request.states, "state", app=name, components=usable)
        return FunctionSpec(
            name=name, runtime=self.runtime, inputs=inputs, outputs=outputs, states=states,
            components=named.callable_components(own, (*inputs, *outputs, *states)),
            entry=request.entry or str(getattr(self.function, "__name__", "")),
            env=parse_env(request.env), requirements=request.requirements,
            secret_env=tuple(dict.fromkeys(request.secret_env)), batch=batch_of(request),
            version=request.version if request.version is not None else DEFAULT_VERSION)

    def deploy(self, on_event: EventSink | None = None) -> FunctionHandle:
        """Capture, package and deploy; return the handle once the function is ready."""
        spec = self.spec()
        cluster, _ = cluster_settings(dict(self.request.target_options or {}))
        if cluster is not None:  # checked here on every target, not first at export
            check_settings(spec, cluster)
        secret_values = read_secrets(spec.name, spec.secret_env)
        recorder = PhaseRecorder(sink=on_event)
        for warning in env_warnings(spec):
            recorder.emit(PhaseEvent("capture", "progress", time.time(),
                                     detail=f"warning: {warning}"))
        with recorder.phase("capture"):
            captured = capture_function(self.function, runtime=spec.runtime, entry=spec.entry,
                                        requirements=spec.requirements,
                                        # async runtimes lock the Dapr SDK already
                                        dapr=spec.uses_components,
                                        signature=self.request.signature,
                                        target=self.target)  # local: the kernel's packages
            included = collect_includes(self.request.include)
            if included:  # listed in the capture report, warned like the globals
                captured = dataclasses.replace(
                    captured, files=included,
                    warnings=captured.warnings + tuple(include_warnings(included)))
        for warning in captured.warnings:  # big or secret-like globals, body imports, pins
            recorder.emit(PhaseEvent("capture", "progress", time.time(),
                                     detail=f"warning: {warning}"))
        with recorder.phase("package"):
            pkg = build_package(captured, spec, base_image=self.request.base_image,
                                included=included)
        existing = _handles.get((self.target, spec.name))
        # secret values reach the target in memory only: never the package
        deployment = self.backend.deploy(pkg, env={**spec.env_dict, **secret_values},
                                         local_port=self.request.port, recorder=recorder)
        reused = existing is not None and existing.deployment is deployment
        handle = FunctionHandle(self.function, deployment=deployment, backend=self.backend,
                                target=self.target, events=list(recorder.events),
                                timings=dict(recorder.timings), reused=reused,
                                request=dataclasses.replace(self.request, name=spec.name),
                                redeploy=_redeploy)
        _handles[(self.target, spec.name)] = handle
        named.remember(self.declarations())
        display.register_in_notebook()
        return handle


def env_warnings(spec: FunctionSpec) -> list[str]:
    """One warning for the ``--env`` names that look like secrets: their values are written
    into the package, the image and the manifests."""
    names = [k for k, _ in spec.env if looks_secret(k)]
    if not names:
        return []
    return [f"--env {', '.join(names)} looks like a secret: its value is written into the "
            f"package, the image and the exported yaml. Use --secret-env {names[0]} "
            f"(secret_env=[{names[0]!r}]) instead: the value is read from the kernel's "
            f"environment at deploy and kept out of every file."]


def _interactive() -> bool:
    """Whether a prompt can be answered: a Jupyter kernel whose front end allows input, or
    a terminal."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is not None:
        return bool(getattr(kernel, "_allow_stdin", False))
    return bool(sys.stdin is not None and sys.stdin.isatty())


def read_secrets(function: str, names: Iterable[str]) -> dict[str, str]:
    """The ``--secret-env`` values: the kernel's environment, else a prompt (``getpass``, the
    value not echoed); unset with no one to ask, one ``DeployError`` naming both fixes."""
    import getpass

    values = {}
    for name in names:
        value = os.environ.get(name)
        if value is None and _interactive():
            value = getpass.getpass(f"Value of {name} for {function!r} (--secret-env): ")
        if value is None:
            raise DeployError(
                f"--secret-env {name}: {name} is not set in the kernel's environment, and "
                f"there is no prompt to ask for it here. Set it before deploying "
                f"(os.environ[{name!r}] = ..., or export {name}=... before starting Jupyter), "
                f"or run the cell in a notebook that can prompt for it.",
                function_name=function)
        values[name] = value
    return values


def plan(fn: Callable[..., Any], request: DeployRequest) -> Plan:
    """Decide the target, name and runtime of deploying ``fn`` as ``request`` asks (raises
    ``BackendUnavailableError``/``ConfigError`` for an unknown target or a bad option)."""
    config.check()
    _check_arguments(request)
    target = request.target if request.target is not None else config.get("target")
    try:
        backend = get_backend(target, **dict(request.target_options or {}))
    except BackendUnavailableError as exc:
        if request.target is None and os.environ.get("OFNOTEBOOK_TARGET"):
            raise BackendUnavailableError(f"{exc} (from OFNOTEBOOK_TARGET: set it to one of "
                                          f"those, or unset it for local)") from None
        raise
    runtime = request.runtime if request.runtime is not None else \
        "async" if request.inputs else DEFAULT_RUNTIME
    if runtime == "async" and not request.inputs:
        raise ConfigError(
            "An async function runs only when an input triggers it, and this one has none; "
            "give one (--input NAME=URI, inputs={'NAME': 'URI'}), or use runtime 'sync' for a "
            "function called over HTTP.", key="runtime")
    planned = Plan(function=fn, request=request, backend=backend,
                   target=backend.name or type(backend).__name__,
                   name=request.name or derive_name(getattr(fn, "__name__", "function")),
                   runtime=runtime)
    batch = batch_of(request)
    if batch is not None:  # every refusal of --batch here, before a view shows the deploy
        planned.spec()  # a sync function, a binding input
        _check_batch_shape(fn, runtime, request.signature, batch)
    return planned


_ITEMS_FIX = "a mapping {'NAME': 'URI'} or a list of 'NAME=URI' strings"


def _check_arguments(request: DeployRequest) -> None:
    """Refuse an argument of the wrong type, naming the fix, before it is iterated (an int is
    a ``TypeError`` deep inside, a string a list of characters). A single ``'NAME=URI'``
    string is one item, as the magic's ``--input NAME=URI`` is."""
    if request.name is not None:
        validate_name(request.name)
    for field in ("inputs", "outputs", "states", "components"):
        value = getattr(request, field)
        if value is not None and not isinstance(value, (str, Mapping, tuple, Component)):
            raise ConfigError(f"{field}={value!r} is {type(value).__name__}; give {_ITEMS_FIX}, "
                              f"such as {field}={{'events': 'memory://events'}}.", key=field)
    if request.env is not None and not isinstance(request.env, (Mapping, tuple)):
        raise ConfigError(f"env={request.env!r} is {type(request.env).__name__}; give a mapping "
                          f"{{'KEY': 'VALUE'}} or a list of 'KEY=VALUE' strings.", key="env")
    port = request.port
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 < port < 65536):
        raise ConfigError(f"port={port!r} is not a TCP port; give a number 1-65535 "
                          f"(or none, for a free one).", key="port")
    if request.version is not None:
        validate_version(request.version)
    if request.entry is not None and not (isinstance(request.entry, str)
                                          and request.entry.isidentifier()):
        raise ConfigError(f"entry={request.entry!r} is not a Python name; give the name the "
                          f"function is defined with (such as 'predict'), or leave it out.",
                          key="entry")
    if request.base_image:
        from .registry.reference import Reference, RegistryError

        try:
            Reference.parse(request.base_image)
        except RegistryError as exc:
            raise ConfigError(f"--base-image: {exc} For example python:3.11-slim or "
                              f"127.0.0.1:5000/team/base:1.0.", key="base_image") from None


def _refuse_string(field: str, value: Any, example: str) -> None:
    """A string where a list is expected would be taken one character at a time."""
    if isinstance(value, (str, bytes)):
        raise ConfigError(f"{field}={value!r} is a string, but {field} is a list; write "
                          f"{field}=[{value!r}] (for example {field}={example}).", key=field)


def deploy(fn: Callable[..., Any], name: str | None = None, *, runtime: str | None = None,
           target: str | Backend | None = None, entry: str | None = None,
           env: Mapping[str, str] | Iterable[str] | None = None,
           requirements: Iterable[str] = (), port: int | None = None,
           version: str | None = None, inputs: Any = None, outputs: Any = None,
           states: Any = None, base_image: str | None = None,
           signature: str | None = None, include: Iterable[str] = (),
           components: Any = None, target_options: Mapping[str, Any] | None = None,
           secret_env: Iterable[str] = (), batch: int | None = None,
           batch_wait_ms: int | None = None,
           on_event: EventSink | None = None) -> FunctionHandle:
    """Deploy ``fn`` and return a :class:`FunctionHandle` once it is ready.

    ``name`` defaults to ``fn``'s name made Kubernetes-valid (``my_func`` -> ``my-func``);
    ``target`` defaults to ``OFNOTEBOOK_TARGET`` or ``"local"``; ``env`` is ``{"K": "V"}`` or
    ``["K=V"]``; ``requirements`` adds distributions to the lock; ``port`` fixes the local
    port (the cluster port stays 8080). ``inputs``, ``outputs`` and ``states`` map names to
    component URIs or :class:`~ofnotebook.components.Component` objects
    (``{"logs": "kafka://127.0.0.1:9092/logs"}``; ``None`` means in-memory); inputs make the
    function asynchronous. ``base_image`` is the image targets build on (default
    ``OFNOTEBOOK_BASE_IMAGE`` or ``python:<major>.<minor>-slim`` of this Python).
    ``signature`` overrides the detected call shape (``"cloudevent"``, ``"background"``, ...;
    see :data:`~ofnotebook.capture.SIGNATURES`). ``include`` lists files or folders, relative
    to the working directory, packaged with the function at the same relative path.
    ``components`` declares Dapr components by their exact name (``{"kafka-receiver":
    "kafka://..."}`` or ``["kafka-receiver=kafka://..."]``), which inputs, outputs and states
    of this and later deploys use as ``"@kafka-receiver"`` (``"@NAME/TOPIC"`` for another
    pub/sub topic, ``"@NAME?operation=post"`` for an output binding's operation); a named
    ``Component(..., name=...)`` given as a value declares itself.
    ``target_options`` go to the target (``{"registry": ..., "namespace": ...}``, and the
    cluster settings of :class:`~ofnotebook.manifests.ClusterOptions` as plain values).
    ``secret_env`` names variables whose values are read from ``os.environ`` (or a prompt)
    at deploy and never written: the process or container environment, a Kubernetes Secret
    ``<name>-env`` on the cluster, a ``secretKeyRef`` and its ``kubectl create secret``
    command in the yaml bundle; a ``VAR=SECRET:KEY`` item references an existing Secret
    instead (``target_options={'secrets': ...}``). ``batch=N`` calls ``fn(ctx, events)`` with
    lists of up to N events of its pub/sub inputs (one bulk delivery), ``batch_wait_ms`` the
    longest a partial batch waits to fill (default 20; docs/bulk.md). Raises an
    :class:`~ofnotebook.errors.OfnotebookError` and leaves nothing running when any step
    fails.
    """
    _refuse_string("requirements", requirements, "['numpy', 'pandas==2.2.2']")
    _refuse_string("env", env, "['KEY=VALUE'] or {'KEY': 'VALUE'}")
    _refuse_string("secret_env", secret_env, "['API_TOKEN']")
    names, references = split_secret_env(secret_env)
    if references:
        given = dict(target_options or {})
        given["secrets"] = [*_as_items(given.get("secrets")), *references]
        target_options = given
    request = DeployRequest(name=name, runtime=runtime, target=target, entry=entry, env=env,
                      requirements=tuple(requirements), port=port, version=version,
                      inputs=inputs, outputs=outputs, states=states, base_image=base_image,
                      signature=signature,
                      include=tuple(include) if not isinstance(include, str) else (include,),
                      components=components, target_options=target_options,
                      secret_env=names, batch=batch, batch_wait_ms=batch_wait_ms)
    return plan(fn, request).deploy(on_event)


def split_secret_env(items: Iterable[str]) -> tuple[tuple[str, ...], list[str]]:
    """``--secret-env`` items: bare ``NAME`` s (the value from the kernel) and
    ``VAR=SECRET:KEY`` references to an existing Kubernetes Secret."""
    names: list[str] = []
    references: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"secret_env item {item!r} is {type(item).__name__}; give "
                              f"variable names such as secret_env=['API_TOKEN'].",
                              key="secret_env")
        (references if "=" in item else names).append(item)
    return tuple(names), references


def _as_items(value: Any) -> list[Any]:
    """``secrets`` as a list of ``VAR=SECRET:KEY`` items (a mapping's items so written)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [f"{k}={v if isinstance(v, str) else ':'.join(v)}" for k, v in value.items()]
    return [value] if isinstance(value, str) else list(value)


def _redeploy(handle: FunctionHandle, on_event: EventSink | None) -> None:
    """What ``handle.redeploy`` runs: stop, deploy its request again, follow the new one."""
    assert handle.request is not None  # set with this callable, in Plan.deploy
    handle.stop()
    fresh = plan(handle.function, handle.request).deploy(on_event)
    handle.adopt(fresh)
    _handles[(handle.target, handle.name)] = handle


def redeploy(handle: FunctionHandle, on_event: EventSink | None = None) -> None:
    """Stop ``handle``'s deployment and deploy its function again with the same request;
    ``handle`` follows the new one, so a name bound in the notebook (and its view) stays
    valid across the redeploy the view's button asks for."""
    handle.redeploy(on_event)


def deployments() -> list[FunctionHandle]:
    """The latest handle of every deployment this kernel manages, in deploy order: what
    ``%function list`` shows, so a function deployed in a forgotten cell can still be found
    (and stopped). Deployments a backend dropped are left out."""
    live = {id(d) for backend in active_backends() for d in backend.deployments()}
    return [h for h in _handles.values() if id(h.deployment) in live]


def stop(name: str | None = None, *, all: bool = False) -> list[str]:
    """Stop deployment ``name`` (or every deployment with ``all=True``); return the names.

    By name, not by handle, so a cell can stop what an earlier cell deployed without holding
    its handle; an unknown name is an error listing the running ones, since a typo must not
    look like a stop."""
    stopped = []
    for (target_name, dep_name), handle in list(_handles.items()):
        if all or dep_name == name:
            handle.stop()
            del _handles[(target_name, dep_name)]
            stopped.append(dep_name)
    if name is not None and not all and not stopped:
        known = ", ".join(sorted(n for _, n in _handles)) or "none"
        raise OfnotebookError(f"No deployment named {name!r}; running: {known}.")
    if all:
        _release_idle()
    return stopped


def _release_idle() -> None:
    """After ``stop --all``: stop the warm standby runtime and, once no deployment of any
    target uses it, the local Dapr stand-in; the next deploy starts both again."""
    from .backends.standin import stop_standin
    from .backends.standin_user import StandInUser

    backends = active_backends()
    for backend in backends:
        backend.release_idle()
    if not any(isinstance(d, StandInUser) and d.standin is not None and d.status != "stopped"
               for b in backends for d in b.deployments()):
        stop_standin()


def get(name: str) -> FunctionHandle:
    """The handle of deployment ``name``: to reach a function deployed in another cell (or
    whose variable was rebound) without redeploying it; an unknown name lists the running
    ones."""
    for (_, dep_name), handle in _handles.items():
        if dep_name == name:
            return handle
    known = ", ".join(sorted(n for _, n in _handles)) or "none"
    raise OfnotebookError(f"No deployment named {name!r}; running: {known}.")


def _named_users(exclude: tuple[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The named components each running deployment uses (but ``exclude``, the one a
    redeploy replaces), for the one-definition-per-name check."""
    return named.users_of((dep_name, handle.package.spec)
                          for (target, dep_name), handle in _handles.items()
                          if (target, dep_name) != exclude
                          and any(d is handle.deployment for d in handle.backend.deployments()))


def declared_components() -> dict[str, Component]:
    """The named components this kernel knows (declared by deploys that succeeded or by
    :func:`dapr_env`), by name: what ``@NAME`` may refer to without declaring it again."""
    return named.declared()


def dapr_env(components: Any = None, *, export: bool = False, app_id: str | None = None,
             app_port: int | None = None) -> dict[str, str]:
    """The environment that points the unmodified Dapr SDK at this kernel's local stand-in.

    Starts the stand-in if it is not running and registers every named component of the
    kernel (and ``components``, declared here as for :func:`deploy`) for the notebook's own
    client, app id ``notebook``: ``DaprClient().invoke_binding("kafka-binding", ...)`` in the
    notebook, or a script run with ``env={**os.environ, **ofnotebook.dapr_env()}``, reaches
    them by name. Returns ``DAPR_GRPC_ENDPOINT``, ``DAPR_HTTP_ENDPOINT``, ``DAPR_RUNTIME_HOST``,
    the ports and ``DAPR_API_TOKEN``, the client's own (the stand-in tells callers apart by
    it, so the notebook's calls are never taken for a function's). ``export=True`` also sets
    them in ``os.environ`` and in an imported ``dapr.conf.settings`` (what ``%function dapr``
    does). Call it again after declaring more components, or after the stand-in restarted.

    ``app_id`` registers another client app under that id instead, with its own token: the
    user's own Dapr app, in this process or a script beside it. With ``app_port``, the port
    its AppCallback server (``dapr.ext.grpc.App().run(app_port)``, started first) listens
    on, the stand-in asks it for its ``ListTopicSubscriptions`` / ``ListInputBindings`` as
    daprd does and delivers the topics it subscribes to on the kernel's named pub/sub
    components (``@app.subscribe(pubsub_name="orders-bus", topic="t")``).
    """
    taken = [n for (target, n) in _handles if target in ("local", "container")]
    return named.dapr_env(components, _named_users(), export=export,
                          app_id=app_id or named.NOTEBOOK_APP, app_port=app_port, taken=taken)
