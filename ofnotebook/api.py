"""The public Python API: ``deploy``, ``deployments``, ``stop``. The magics only call these."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from . import config
from .backends import active_backends, get_backend
from .backends.base import Backend, PhaseRecorder
from .capture import capture as capture_function
from .components import parse_items
from .errors import OfnotebookError
from .handle import FunctionHandle
from .package import package as build_package
from .spec import FunctionSpec, derive_name, parse_env

_handles: dict[tuple[str, str], FunctionHandle] = {}


def deploy(fn: Callable[..., Any], name: str | None = None, *, runtime: str | None = None,
           target: str | Backend | None = None, entry: str | None = None,
           env: Mapping[str, str] | Iterable[str] | None = None,
           requirements: Iterable[str] = (), port: int | None = None,
           version: str | None = None, inputs: Any = None, outputs: Any = None,
           states: Any = None, base_image: str | None = None,
           target_options: Mapping[str, Any] | None = None,
           on_event: Callable[[Any], None] | None = None) -> FunctionHandle:
    """Deploy ``fn`` and return a :class:`FunctionHandle` once it is ready.

    ``name`` defaults to ``fn``'s name made Kubernetes-valid (``my_func`` -> ``my-func``);
    ``target`` defaults to ``OFNOTEBOOK_TARGET`` or ``"local"``; ``env`` is ``{"K": "V"}`` or
    ``["K=V"]``; ``requirements`` adds distributions to the lock; ``port`` fixes the local
    port (the cluster port stays 8080). ``inputs``, ``outputs`` and ``states`` map names to
    component URIs or :class:`~ofnotebook.components.Component` objects
    (``{"logs": "kafka://127.0.0.1:9092/logs"}``; ``None`` means in-memory); inputs make the
    function asynchronous. ``base_image`` is the image targets build on (default
    ``OFNOTEBOOK_BASE_IMAGE`` or ``python:<major>.<minor>-slim`` of this Python).
    ``target_options`` go to the target (``{"registry": ..., "namespace": ...}``). Raises an :class:`~ofnotebook.errors.OfnotebookError` and leaves
    nothing running when any step fails.
    """
    target_obj = get_backend(target if target is not None else config.get("target"),
                             **dict(target_options or {}))
    target_name = target_obj.name or type(target_obj).__name__
    deploy_name = name or derive_name(getattr(fn, "__name__", "function"))
    spec_kwargs: dict[str, Any] = {
        "name": deploy_name,
        "inputs": parse_items(inputs, "input", app=deploy_name),
        "outputs": parse_items(outputs, "output", app=deploy_name),
        "states": parse_items(states, "state", app=deploy_name),
        "entry": entry or getattr(fn, "__name__", ""),
        "env": parse_env(env),
        "requirements": tuple(requirements),
    }
    if runtime is not None:
        spec_kwargs["runtime"] = runtime
    elif spec_kwargs["inputs"]:
        spec_kwargs["runtime"] = "async"
    if version is not None:
        spec_kwargs["version"] = version
    spec = FunctionSpec(**spec_kwargs)

    recorder = PhaseRecorder(sink=on_event)
    with recorder.phase("capture"):
        captured = capture_function(fn, runtime=spec.runtime, entry=spec.entry,
                                    requirements=spec.requirements,
                                    dapr=bool(spec.outputs or spec.states))
    with recorder.phase("package"):
        pkg = build_package(captured, spec, base_image=base_image)
    existing = _handles.get((target_name, spec.name))
    deployment = target_obj.deploy(pkg, env=spec.env_dict, local_port=port, recorder=recorder)
    reused = existing is not None and existing.deployment is deployment
    handle = FunctionHandle(fn, deployment=deployment, backend=target_obj, target=target_name,
                            events=list(recorder.events), timings=dict(recorder.timings),
                            reused=reused)
    handle.redeploy_args = {"name": spec.name, "runtime": runtime, "target": target,
                            "entry": entry, "env": env, "requirements": tuple(requirements),
                            "port": port, "version": version, "inputs": inputs,
                            "outputs": outputs, "states": states, "base_image": base_image,
                            "target_options": target_options}
    _handles[(target_name, spec.name)] = handle
    return handle


def redeploy(handle: FunctionHandle, on_event: Callable[[Any], None] | None = None) -> None:
    """Stop ``handle``'s deployment and deploy its function again; ``handle`` follows it."""
    handle.stop()
    fresh = deploy(handle.function, on_event=on_event, **handle.redeploy_args)
    handle._adopt(fresh)
    _handles[(handle.target, handle.name)] = handle


def deployments() -> list[FunctionHandle]:
    """The latest handle of every deployment this kernel manages, in deploy order."""
    live = {id(d) for backend in active_backends() for d in backend.deployments()}
    return [h for h in _handles.values() if id(h.deployment) in live]


def stop(name: str | None = None, *, all: bool = False) -> list[str]:
    """Stop deployment ``name`` (or every deployment with ``all=True``); return the names."""
    stopped = []
    for (target_name, dep_name), handle in list(_handles.items()):
        if all or dep_name == name:
            handle.stop()
            del _handles[(target_name, dep_name)]
            stopped.append(dep_name)
    if name is not None and not all and not stopped:
        known = ", ".join(sorted(n for _, n in _handles)) or "none"
        raise OfnotebookError(f"No deployment named {name!r}; running: {known}.")
    return stopped


def get(name: str) -> FunctionHandle:
    """The handle of deployment ``name``."""
    for (_, dep_name), handle in _handles.items():
        if dep_name == name:
            return handle
    known = ", ".join(sorted(n for _, n in _handles)) or "none"
    raise OfnotebookError(f"No deployment named {name!r}; running: {known}.")
