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

from .components import (Component, describe, item_pairs, merge_declaration,
                         parse_components)
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
_client_components: dict[str, Definition] = {}  # what the notebook's client registered
_client_standin: Any = None  # the stand-in it registered with (a restarted one forgot it)


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


def spec_definitions(spec: FunctionSpec) -> dict[str, Definition]:
    """The named components ``spec`` uses, with their definitions."""
    return {c.component: _definition(c) for c in (*spec.inputs, *spec.outputs, *spec.states)
            if c.component}


def _definition(c: ComponentSpec) -> Definition:
    return c.type, c.version, tuple(sorted(c.metadata))


def check(new: Mapping[str, Component], users: Mapping[str, Mapping[str, Definition]],
          *, client: bool = True) -> None:
    """Refuse a declaration in ``new`` whose name something still uses with another
    definition: ``users`` maps each running function to its named components, and the
    notebook's client counts too unless ``client`` is false (it is being registered anew)."""
    holders = dict(users)
    if client and _client_components and _client_standin is not None and \
            _client_standin.alive:
        holders[_CLIENT] = _client_components
    for name, component in new.items():
        mine = component.definition()
        clashing = sorted(user for user, used in holders.items()
                          if name in used and used[name] != mine)
        if clashing:
            old = next(holders[user][name] for user in clashing)
            who = ", ".join(repr(u) if u != _CLIENT else u for u in clashing)
            raise ConfigError(
                f"Component {name!r} is in use by {who} as {describe(old[0], old[2])}; it "
                f"cannot be declared again as {describe(mine[0], mine[2])}. Use the same "
                f"definition, give the new one another name, or stop what uses it first "
                f"(%function stop NAME).", key="components")


def remember(new: Mapping[str, Component]) -> None:
    """Add a successful deploy's declarations to the kernel's table."""
    _table.update(new)


def client_spec(components: Mapping[str, Component]) -> FunctionSpec:
    """The registration of the notebook's client: every named component as an output (a
    binding or pub/sub it may call) or a state store; cron bindings only trigger functions,
    so the client has no use for them."""
    outputs: list[ComponentSpec] = []
    states: list[ComponentSpec] = []
    for name, c in sorted(components.items()):
        if c.type == "bindings.cron":
            continue
        spec = ComponentSpec(name=name, type=c.type, version=c.version,
                             metadata=tuple((str(k), str(v)) for k, v in c.metadata.items()),
                             topic=c.topic, component=name)
        (states if c.kind == "state" else outputs).append(spec)
    return FunctionSpec(name=NOTEBOOK_APP, outputs=tuple(outputs), states=tuple(states))


def dapr_env(components: Any, users: Mapping[str, Mapping[str, Definition]], *,
             export: bool) -> dict[str, str]:
    """See :func:`ofnotebook.api.dapr_env`: declare ``components``, register the table as the
    notebook's client, return (and with ``export``, set) the SDK's environment."""
    global _client_standin
    from .backends.standin import get_standin

    new = declarations(components)
    check(new, users, client=False)
    table = {**_table, **new}
    spec = client_spec(table)
    standin = get_standin()
    standin.register(NOTEBOOK_APP, 0, spec, _REGISTER_TIMEOUT)
    _table.update(new)
    _client_standin = standin
    _client_components.clear()
    _client_components.update(spec_definitions(spec))
    env = standin.client_env(NOTEBOOK_APP)
    if export:
        export_env(env)
    return env


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
