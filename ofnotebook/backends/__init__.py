"""Targets by name: a read-only registry of dotted paths, imported on first use.

A backend object given by the caller always wins over a name. Third-party targets register
through the ``ofnotebook.backends`` entry-point group. Backends needing an extra (docker,
kubernetes) import it inside their own module, so ``%load_ext ofnotebook`` stays light.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import threading
from types import MappingProxyType
from typing import Any, Mapping

from ..cluster import SETTINGS, cluster_settings, hashable
from ..errors import BackendUnavailableError, ConfigError
from .base import Backend

_known: dict[str, tuple[str, str]] = {
    "local": ("ofnotebook.backends.local:LocalBackend", "it ships with ofnotebook"),
    "container": ("ofnotebook.backends.container:ContainerBackend",
                  "pip install 'ofnotebook[docker]'"),
    "yaml": ("ofnotebook.backends.gitops:YamlBackend", "pip install 'ofnotebook[kubernetes]'"),
    "kubernetes": ("ofnotebook.backends.kubernetes:KubernetesBackend",
                   "pip install 'ofnotebook[kubernetes]'"),
}
#: name -> (dotted path, install hint); read-only view.
known_backends: Mapping[str, tuple[str, str]] = MappingProxyType(_known)
_instances: dict[tuple[str, Any], Backend] = {}
_lock = threading.Lock()


def register_backend(name: str, path: str, hint: str = "", *, clobber: bool = False) -> None:
    """Register ``"module:Class"`` under ``name``; re-registering needs ``clobber=True``."""
    if name in _known and not clobber and _known[name][0] != path:
        raise ValueError(f"Backend {name!r} is already registered as {_known[name][0]!r}; "
                         f"pass clobber=True to replace it.")
    _known[name] = (path, hint)


def _entry_point_backends() -> None:
    for ep in importlib.metadata.entry_points(group="ofnotebook.backends"):
        _known.setdefault(ep.name, (ep.value, f"provided by {ep.dist.name if ep.dist else '?'}"))


#: option keys the magic spells differently (``_TARGET_OPTIONS`` in magics), with the
#: target that takes them, so a refusal names the flag the user wrote and where it belongs.
_FLAGS = {"folder": "--out (folder=, for --target yaml only)"}


def _flag(key: str) -> str:
    return _FLAGS.get(key, "--" + key.replace("_", "-"))


def get_backend(target: str | Backend, **options: Any) -> Backend:
    """The backend for ``target``: the object itself, or the kernel-wide instance of a name
    (one per distinct ``options``, such as ``registry=`` or ``namespace=``).

    The cluster settings among ``options`` (:data:`~ofnotebook.cluster.SETTINGS`, plain
    values or ``options=ClusterOptions(...)``) are coerced into one ``ClusterOptions`` for
    every target, so a bad value fails here; a target whose constructor takes ``options``
    (kubernetes, yaml) gets it, the others (local, container) ignore it, so a cell written
    for the cluster still runs locally. Any other option the target does not take is
    refused."""
    if isinstance(target, Backend):
        return target
    given = {k: v for k, v in options.items() if v is not None}
    key = (target, hashable(given))
    with _lock:
        if key in _instances:
            return _instances[key]
        if target not in _known:
            _entry_point_backends()
        if target not in _known:
            raise BackendUnavailableError(
                f"Unknown target {target!r}; available: {', '.join(sorted(_known))}.")
        path, hint = _known[target]
        module_name, _, class_name = path.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"Target {target!r} needs a package that is not installed ({exc.name}); "
                f"{hint}.") from exc
        cluster, own = cluster_settings(given)
        accepted = set(inspect.signature(cls).parameters)
        if cluster is not None and "options" in accepted:
            own["options"] = cluster
        unknown = sorted(set(own) - accepted)
        if unknown:
            known = sorted(accepted | set(SETTINGS))
            close = difflib.get_close_matches(unknown[0], known, n=1)
            raise ConfigError(
                f"Target {target!r} takes no {', '.join(_flag(u) for u in unknown)}"
                f" option{f' (did you mean {close[0]!r}?)' if close else ''}; it takes: "
                f"{', '.join(sorted(accepted)) or 'none'} and the cluster settings "
                f"({', '.join(sorted(SETTINGS))}).", key=unknown[0])
        backend: Backend = cls(**own)
        _instances[key] = backend
        return backend


def active_backends() -> list[Backend]:
    """Backends instantiated in this kernel, for listing and stopping deployments."""
    with _lock:
        return list(_instances.values())


__all__ = ["Backend", "active_backends", "get_backend", "known_backends", "register_backend"]
