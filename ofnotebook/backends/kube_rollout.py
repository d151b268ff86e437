"""Watching one applied Function until OpenFunction serves the applied spec.

Reference openfunction-contract.md §2.2: the build ``Skipped``/``Succeeded``, the serving
``Running`` with ``lastSuccessfulResourceRef == resourceRef``, a new ``resourceRef`` after a
spec change (states still about the old ones say nothing about the new spec); async servings
say Running early, so their pods must be ready too. An in-cluster build is its own phase, its
pod's log streamed into it (:mod:`.kube_build`). Every state change is a phase event.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Protocol

from ..errors import DeployError
from .base import PhaseEvent, PhaseRecorder
from .kube_api import KubeApi
from .kube_build import BuildFollower


class _Target(Protocol):
    """What a rollout uses of the kubernetes target (which imports this module)."""

    api: KubeApi
    core: Any
    custom: Any
    namespace: str
    timeout: float

    def _pods_ready(self, name: str, ref: str, deadline: float) -> bool: ...

    def _wait_pods(self, name: str, ref: str, deadline: float) -> None: ...

READY_BUILD = ("Skipped", "Succeeded")
TERMINAL = ("Failed", "Timeout", "Canceled")
WATCH_WINDOW = 2  # s: how long one watch request stays open before the pods are looked at


def meta(obj: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    """``obj.metadata[key]`` (``default`` when absent, or when there is no object)."""
    return (obj or {}).get("metadata", {}).get(key, default)


class Rollout:
    """Watching one applied Function until its serving for the applied spec is ready.
    ``stale`` is the (serving, build) resourceRefs from before a spec change: states still
    about them say nothing about the new spec."""

    def __init__(self, backend: _Target, name: str, stale: tuple[str, str] | None,
                 is_async: bool, recorder: PhaseRecorder, deadline: float) -> None:
        self.backend, self.name, self.stale, self.is_async = backend, name, stale, is_async
        self.recorder, self.deadline = recorder, deadline
        self.last, self.starting = "", ""
        self.follower: BuildFollower | None = None  # an in-cluster build's log, as it runs
        self.build_started = 0.0

    def _follow_build(self, build: dict[str, Any]) -> None:
        """A new in-cluster build: its own phase, and its pod's log streamed into it."""
        state, builder = build.get("state", ""), build.get("resourceRef", "")
        if self.follower is None and builder and state in ("Created", "Building"):
            self.build_started = time.perf_counter()
            self.recorder.emit(PhaseEvent("build", "started", time.time(),
                                          detail=f"in the cluster ({builder})"))
            self.follower = BuildFollower(
                self.backend.core, self.backend.custom, self.backend.namespace, builder,
                on_line=lambda line: self.recorder.emit(
                    PhaseEvent("build", "progress", time.time(), detail=line)))
        elif self.follower is not None and state in READY_BUILD + TERMINAL:
            self.follower.stop()
            finished = "finished" if state in READY_BUILD else "failed"
            self.recorder.emit(PhaseEvent(
                "build", finished, time.time(), time.perf_counter() - self.build_started,
                detail=f"{state} in {build.get('buildDuration') or '?'}"))

    def stop_following(self) -> None:
        if self.follower is not None:
            self.follower.stop(wait=0.5)

    def build_lines(self) -> list[str]:
        return list(self.follower.lines) if self.follower is not None else []

    def check(self, fn: dict[str, Any]) -> dict[str, Any] | None:
        """``fn`` when it is ready; raises on a terminal state of the new serving."""
        name, status = self.name, fn.get("status") or {}
        build, serving = status.get("build") or {}, status.get("serving") or {}
        ref, state, built = serving.get("resourceRef", ""), serving.get("state", ""), \
            build.get("state", "")
        new_serving = self.stale is None or ref != self.stale[0]
        new_build = self.stale is None or build.get("resourceRef", "") != self.stale[1]
        seen = f"build {built or '-'} · serving {state or '-'}"
        if (new_serving or new_build) and seen != self.last:
            self.recorder.emit(PhaseEvent("deploy", "progress", time.time(), detail=seen))
            self.last = seen
        if new_build and build:
            self._follow_build(build)
        for what, part, new in (("build", build, new_build), ("serving", serving, new_serving)):
            if new and part.get("state") in TERMINAL:
                lines = self.build_lines() if what == "build" else []
                raise DeployError(
                    f"Function {name!r}: the {what} is {part.get('state')} "
                    f"({part.get('reason') or ''}: {part.get('message') or 'no message'}). "
                    f"See kubectl describe function {name} -n {self.backend.namespace}.",
                    function_name=name, last_logs=lines[-12:])
        if (built in READY_BUILD and new_serving and state == "Running" and ref
                and serving.get("lastSuccessfulResourceRef") == ref):
            if self.is_async:
                with self.recorder.phase("ready", detail="pods"):
                    self.backend._wait_pods(name, ref, self.deadline)
            return fn
        self.starting = ref if (self.is_async and state == "Starting" and new_serving) else ""
        if self.starting:
            self.backend._pods_ready(name, ref, self.deadline)  # raises on a crashing pod
        return None

    def wait(self, fn: dict[str, Any]) -> dict[str, Any]:
        ready = self.check(fn)
        if ready is not None:
            return ready
        for kind, obj in self.backend.api.follow(self.name, meta(fn, "resourceVersion", ""),
                                                 self.deadline, WATCH_WINDOW):
            if kind == "DELETED":
                raise DeployError(f"Function {self.name!r} was deleted while it was starting.",
                                  function_name=self.name)
            if obj is None:
                if self.starting:  # between watch windows: how are the async pods doing?
                    self.backend._pods_ready(self.name, self.starting, self.deadline)
                continue
            ready = self.check(obj)
            if ready is not None:
                return ready
        raise DeployError(f"Function {self.name!r} was not ready within "
                          f"{self.backend.timeout:g} s (last: {self.last or 'no status'}); "
                          f"OFNOTEBOOK_START_TIMEOUT sets the wait.", function_name=self.name)
