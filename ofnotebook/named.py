"""The kernel's named Dapr components, and the notebook's own Dapr client.

A component declared by name (``--component kafka-receiver=URI``, ``components={...}``, a
``Component(..., name=...)``) belongs to the kernel, not to one function: a later cell may use
it as ``@kafka-receiver`` without declaring it again, and the stand-in registers it under that
name for every client. The table is filled only by deploys that succeeded (a failed deploy
leaves nothing behind, not even its declarations) and by :func:`dapr_env`.

One name, one definition: declaring a name again with another type or metadata is an error
while something still uses the old one (a running function, or the notebook's client); once
nothing does, the new definition replaces it, so a typo in a URI is fixed by stopping the
function and deploying again.

:func:`dapr_env` registers the table with the kernel's stand-in as the component-only app
:data:`NOTEBOOK_APP` (no AppCallback port: it is a client, never called) and returns the
environment the unmodified Dapr SDK reads, for the notebook itself or a script beside it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Mapping

from .components import (DECLARATION, Component, describe, item_pairs, merge_declaration,
                         parse_components, validate_component_name)
from .errors import ConfigError
from .spec import ComponentSpec, FunctionSpec

#: The app id the notebook's own Dapr client is registered under with the stand-in; no local
#: deployment may take it.
NOTEBOOK_APP = "notebook"
_CLIENT = "the notebook's Dapr client (ofnotebook.dapr_env())"
_REGISTER_TIMEOUT = 20.0

#: Definition of a Dapr component: type, version, metadata (see ``Component.definition``).
Definition = tuple[str, str, tuple[tuple[str, str], ...]]

_table: dict[str, Component] = {}
#: What each client app (the notebook's, and apps registered with ``dapr_env(app_id=...)``)
#: registered, by app id.
_client_components: dict[str, dict[str, Definition]] = {}
_client_standin: Any = None  # the stand-in they registered with (a restarted one forgot them)


def declared() -> dict[str, Component]:
    """The kernel's named components (a copy), by name."""
    return dict(_table)


def declarations(components: Any, *item_sets: Any) -> dict[str, Component]:
    """What one deploy declares: ``components`` (``--component``) and the named
    ``Component`` values among its inputs, outputs and states (``item_sets``)."""
    found = parse_components(components)
    for items in item_sets:
        for _, value in item_pairs(items, "item"):
            if isinstance(value, Component) and value.name:
                merge_declaration(found, value)
    return found


def callable_components(own: Mapping[str, Component], used: Iterable[ComponentSpec]
                        ) -> tuple[ComponentSpec, ...]:
    """What a deploy's own declarations ``own`` add to its function beyond the components
    it ``used`` as inputs, outputs and states: the ones its code calls by name
    (:attr:`FunctionSpec.components`). Declarations of earlier cells stay the kernel's; a cron
    binding only triggers, so unused it is not the function's either."""
    taken = {c.component for c in used if c.component}
    return tuple(c.bind(name, DECLARATION) for name, c in sorted(own.items())
                 if name not in taken and c.type != "bindings.cron")


def spec_definitions(spec: FunctionSpec) -> dict[str, Definition]:
    """The named components ``spec`` uses, with their definitions."""
    return {c.component: _definition(c)
            for c in (*spec.inputs, *spec.outputs, *spec.states, *spec.components)
            if c.component}


def _definition(c: ComponentSpec) -> Definition:
    return c.type, c.version, tuple(sorted(c.metadata))


def _client_label(app_id: str) -> str:
    return _CLIENT if app_id == NOTEBOOK_APP else \
        f"the Dapr app {app_id!r} (ofnotebook.dapr_env(app_id={app_id!r}))"


def check(new: Mapping[str, Component], users: Mapping[str, Mapping[str, Definition]],
          *, client: str = "") -> None:
    """Refuse a declaration in ``new`` whose name something still uses with another
    definition: ``users`` maps each running function to its named components, and the
    client apps count too, but ``client`` (the one being registered anew)."""
    holders = dict(users)
    if _client_standin is not None and _client_standin.alive:
        holders.update((_client_label(app), used) for app, used in _client_components.items()
                       if app != client and used)
    for name, component in new.items():
        mine = component.definition()
        clashing = sorted(user for user, used in holders.items()
                          if name in used and used[name] != mine)
        if clashing:
            old = next(holders[user][name] for user in clashing)
            who = ", ".join(u if u.startswith("the ") else repr(u) for u in clashing)
            raise ConfigError(
                f"Component {name!r} is in use by {who} as {describe(old[0], old[2])}; it "
                f"cannot be declared again as {describe(mine[0], mine[2])}. Use the same "
                f"definition, give the new one another name, or stop what uses it first "
                f"(%function stop NAME).", key="components")


def remember(new: Mapping[str, Component]) -> None:
    """Add a successful deploy's declarations to the kernel's table."""
    _table.update(new)


def client_spec(components: Mapping[str, Component], app_id: str = NOTEBOOK_APP,
                served: bool = False) -> FunctionSpec:
    """The registration of a client app (the notebook's, by default): every named component
    as an output (a binding, pub/sub or secret store it may call) or a state store; cron
    bindings only trigger functions, so a client has no use for them. ``served``: the app
    serves AppCallback (``dapr.ext.grpc.App``), so the stand-in asks it for its
    subscriptions (registered as an async app)."""
    outputs: list[ComponentSpec] = []
    states: list[ComponentSpec] = []
    for name, c in sorted(components.items()):
        if c.type == "bindings.cron":
            continue
        spec = ComponentSpec(name=name, type=c.type, version=c.version,
                             metadata=tuple((str(k), str(v)) for k, v in c.metadata.items()),
                             topic=c.topic, component=name)
        (states if c.kind == "state" else outputs).append(spec)
    return FunctionSpec(name=app_id, runtime="async" if served else "sync",
                        outputs=tuple(outputs), states=tuple(states))


def dapr_env(components: Any, users: Mapping[str, Mapping[str, Definition]], *,
             export: bool, app_id: str = NOTEBOOK_APP, app_port: int | None = None,
             taken: Iterable[str] = ()) -> dict[str, str]:
    """See :func:`ofnotebook.api.dapr_env`: declare ``components``, register the table as the
    client app ``app_id`` (serving AppCallback on ``app_port``, if given), return (and with
    ``export``, set) the SDK's environment. ``taken``: the app ids of local deployments."""
    global _client_standin
    from .backends.standin import get_standin

    _check_app(app_id, app_port, taken)
    new = declarations(components)
    check(new, users, client=app_id)
    table = {**_table, **new}
    spec = client_spec(table, app_id, served=bool(app_port))
    standin = get_standin()
    if standin is not _client_standin:  # a new stand-in knows none of the old clients
        _client_components.clear()
    standin.register(app_id, app_port or 0, spec, _REGISTER_TIMEOUT)
    _table.update(new)
    _client_standin = standin
    _client_components[app_id] = spec_definitions(spec)
    env = standin.client_env(app_id)
    if export:
        export_env(env)
    return env


def _check_app(app_id: str, app_port: int | None, taken: Iterable[str]) -> None:
    """Refuse an app id that is no DNS label, or is a local deployment's (registering it
    would replace that function's registration), and a port that is no TCP port."""
    validate_component_name(app_id, "dapr_env(app_id=...)")
    if app_id != NOTEBOOK_APP and app_id in set(taken):
        raise ConfigError(f"dapr_env(app_id={app_id!r}): a local deployment is called "
                          f"{app_id!r}, and the stand-in knows each app by its id; give the "
                          f"app another id, or stop that function first.", key="app_id")
    if app_port is not None and not (isinstance(app_port, int) and 0 < app_port < 65536):
        raise ConfigError(f"dapr_env(app_port={app_port!r}) is not a TCP port; give the port "
                          f"the app's AppCallback server listens on "
                          f"(dapr.ext.grpc.App().run(PORT)), 1-65535.", key="app_port")
    if app_port and app_id == NOTEBOOK_APP:
        raise ConfigError(f"dapr_env(app_port={app_port}) needs app_id: the notebook's own "
                          f"client ({NOTEBOOK_APP!r}) is never called; name the app that "
                          f"serves on that port (app_id='my-app').", key="app_id")


def export_env(env: Mapping[str, str]) -> None:
    """Set ``env`` in ``os.environ`` and, when the Dapr SDK is imported already, in
    ``dapr.conf.settings``: dapr 1.19 reads the environment at each use, but a value assigned
    on ``settings`` wins over it, and older SDKs read the environment once at import."""
    os.environ.update(env)
    conf = sys.modules.get("dapr.conf")
    settings = getattr(conf, "settings", None)
    if settings is None:
        return
    defaults = sys.modules.get("dapr.conf.global_settings")
    for key, value in env.items():
        default = getattr(defaults, key, None)
        if defaults is not None and not hasattr(defaults, key):
            continue  # not a setting of this SDK version
        try:
            typed: Any = type(default)(value) if default is not None else value
        except ValueError:
            typed = value
        setattr(settings, key, typed)


def users_of(specs: Iterable[tuple[str, FunctionSpec]]) -> dict[str, dict[str, Definition]]:
    """``{function name: its named components}`` for the running ``specs``."""
    return {name: used for name, spec in specs if (used := spec_definitions(spec))}
