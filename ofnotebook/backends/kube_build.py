"""Following OpenFunction's in-cluster build (``--build cluster``) while it runs.

The chain is ``Function.status.build.resourceRef`` (a ``Builder``) -> ``Builder.status.
resourceRef["shipwright.io/buildRun"]`` -> the Tekton pod labelled
``buildrun.shipwright.io/name=<BuildRun>`` -> its step containers in order
(``step-source-default`` unpacks the bundle, ``step-build-and-push`` runs kaniko,
``step-results``): reference/engine-less-builds.md A.2.4. By default the controller deletes a
successful Builder at once, and its pod with it, so the lines are kept here as they stream:
the handle still shows the last build's log after the cluster has forgotten it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .base import stream_lines

BUILDER = ("core.openfunction.io", "v1beta2", "builders")
BUILDRUN_KEY = "shipwright.io/buildRun"
POD_LABEL = "buildrun.shipwright.io/name"
STEPS = ("step-source-default", "step-build-and-push", "step-results")
MAX_LINES = 2000


class BuildFollower:
    """Streams one Builder's pod logs into ``lines`` (and ``on_line``) in step order."""

    def __init__(self, core: Any, custom: Any, namespace: str, builder: str,
                 on_line: Callable[[str], None] = lambda line: None) -> None:
        self.core, self.custom, self.namespace, self.builder = core, custom, namespace, builder
        self.on_line = on_line
        self.lines: list[str] = []
        self.pod = ""
        self._response: Any = None  # the open log stream, closed by stop()
        self._buildrun_name = ""
        self._waiting: dict[str, str] = {}  # step -> the waiting reason already told
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ofnotebook-build-{builder}",
                                        daemon=True)
        self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Stop following: a stream that is finishing gets ``wait`` seconds to drain, then
        the open log request is closed, so the thread ends even while the build still runs
        (a deploy that timed out or was interrupted)."""
        self._thread.join(wait)
        self._done.set()
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:
                pass
        self._thread.join(wait)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _add(self, line: str) -> None:
        self.lines.append(line)
        del self.lines[:-MAX_LINES]
        self.on_line(line)

    def _buildrun(self) -> str:
        try:
            builder = self.custom.get_namespaced_custom_object(*BUILDER[:2], self.namespace,
                                                               BUILDER[2], self.builder)
        except Exception as exc:
            if getattr(exc, "status", None) == 403:  # the build runs on; only its log is hidden
                self._add(f"(the build's log cannot be shown: the account may not get "
                          f"builders in API group {BUILDER[0]}; grant it as "
                          f"docs/kubernetes-rbac.yaml does)")
                self._done.set()
            return ""
        refs = (builder.get("status") or {}).get("resourceRef") or {}
        return str(refs.get(BUILDRUN_KEY) or "")

    def _run(self) -> None:
        buildrun = ""
        while not self._done.is_set() and not self.pod:
            buildrun = self._buildrun_name = buildrun or self._buildrun()
            if buildrun:
                try:
                    pods = self.core.list_namespaced_pod(
                        self.namespace, label_selector=f"{POD_LABEL}={buildrun}").items
                except Exception:
                    pods = []
                if pods:
                    self.pod = pods[0].metadata.name
                    break
            self._done.wait(0.2)
        for step in STEPS:
            if self._done.is_set():
                return
            self._follow_step(step)

    def _follow_step(self, step: str) -> None:
        """One container's log, from its start to its end. A step that has not started yet
        answers 400 (``is waiting to start``): ask again, less and less often, and say once
        why it waits (``ImagePullBackOff`` of the bundle, say) so a stuck build is visible."""
        pause = 0.2
        while not self._done.is_set():
            try:
                stream = self.core.read_namespaced_pod_log(
                    self.pod, self.namespace, container=step, follow=True,
                    _preload_content=False)
            except Exception as exc:
                if getattr(exc, "status", None) == 400:
                    self._tell_waiting(step)
                    self._done.wait(pause)
                    pause = min(pause * 1.5, 3.0)
                    continue
                return  # 404: the pod went (pruned after success) or the step does not exist
            self._response = stream
            for line in stream_lines(stream.stream()):
                self._add(f"[{step.removeprefix('step-')}] {line.rstrip()}")
            self._response = None
            return

    def _tell_waiting(self, step: str) -> None:
        try:  # by the BuildRun's label: the Role lets the user list pods, not get one
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{POD_LABEL}={self._buildrun_name}").items
        except Exception:
            return
        statuses = [c for pod in pods if pod.status for c in pod.status.container_statuses or []]
        for status in statuses:
            waiting = status.state.waiting if status.name == step and status.state else None
            reason = getattr(waiting, "reason", "") or ""
            if reason and reason not in ("PodInitializing", "ContainerCreating") \
                    and self._waiting.get(step) != reason:
                self._waiting[step] = reason
                message = getattr(waiting, "message", "") or ""
                self._add(f"[{step.removeprefix('step-')}] waiting: {reason}"
                          f"{': ' + message if message else ''}")
