"""The embedded ``local`` target: each function runs the runtime in a subprocess of this Python.

Speed comes from a *standby* process: a runtime that has already imported Flask and cloudpickle
and bound a free 127.0.0.1 port, waiting on stdin for a package. A deploy hands it the package
(a few milliseconds) and starts the next standby in the background. A re-run with the same
package digest and environment reuses the running process; a changed one replaces it once the
new process answers its health probe.

No process outlives the kernel: each is stopped at exit (atexit, SIGTERM then SIGKILL), and each
watches its parent PID and exits on its own if the kernel is killed.

Functions that talk Dapr are registered with the kernel's stand-in once they answer; one whose
component cannot start is not deployed, and the error names the component. A sync function
without components is registered too when the stand-in already runs (a few milliseconds, no
drivers), so other functions reach it by app id with service invocation; the stand-in is never
started for that alone, but starting it for a later function registers the ones running.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from typing import ClassVar, Mapping

from .. import config
from ..context import context_env
from ..errors import DeployError
from ..package import Package
from ..runtime import HEALTH_PATH
from ..spec import FunctionSpec
from .base import (FAILED, RUNNING, STOPPED, BufferedDeployment, LogBuffer,
                   PhaseRecorder, TrackedBackend)
from . import standin_warnings
from .processes import STOP_GRACE, child_env, terminate
from .standin import StandIn, StandInUser, current_standin, get_standin

_LIVE_PROCESSES: "weakref.WeakSet[RuntimeProcess]" = weakref.WeakSet()


class RuntimeProcess:
    """One ``python -m ofnotebook.runtime --standby`` subprocess and its log buffer."""

    def __init__(self, *, log_lines: int) -> None:
        self.log_buffer = LogBuffer(log_lines)
        self.logs = self.log_buffer.lines
        self._port_ready = threading.Event()
        self.exited = threading.Event()
        self.port: int | None = None
        self.returncode: int | None = None
        self.stopping = False
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "ofnotebook.runtime", "--standby",
             "--parent-pid", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=child_env(), start_new_session=True, text=True, encoding="utf-8",
            errors="replace", bufsize=1)
        _LIVE_PROCESSES.add(self)
        self._reader = threading.Thread(target=self._read, name=f"ofnotebook-log-{self.proc.pid}",
                                        daemon=True)
        self._reader.start()
        self._finalizer = weakref.finalize(self, terminate, self.proc)

    @property
    def pid(self) -> int:
        """The process's PID, for messages and for the tests' leak check."""
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if self.port is None and line.startswith('{"standby":'):
                self.port = int(json.loads(line)["standby"])
                self._port_ready.set()
                continue
            self.log_buffer.append(line)
        self.proc.stdout.close()
        self.returncode = self.proc.wait()
        self.exited.set()
        self._port_ready.set()

    def wait_standby(self, timeout: float) -> int:
        """Block until the process announced its port; raise ``DeployError`` if it did not."""
        self._port_ready.wait(timeout)
        if self.port is None:
            self.stop()
            raise DeployError(
                "The local runtime process did not start within "
                f"{timeout:.0f} s (OFNOTEBOOK_START_TIMEOUT). Last output:\n"
                + "\n".join(list(self.logs)[-20:]))
        return self.port

    def send(self, order: dict[str, object]) -> None:
        """Hand the standby process one JSON line (the package to load): stdin, because the
        process is already started and waiting, which is what makes a deploy fast."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Terminate, then kill after the grace period (the finalizer, which also runs at
        exit), and let the log reader finish so the last lines are kept."""
        self.stopping = True
        self._finalizer()
        self._reader.join(timeout=STOP_GRACE)


def _wait_healthy(process: RuntimeProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.exited.is_set():
            break
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=min(2.0, timeout))
        try:
            conn.request("GET", HEALTH_PATH)
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            time.sleep(0.005)
        finally:
            conn.close()
    process.exited.wait(0.2)  # let the reader collect the last lines of a crash
    raise DeployError("not ready")


def deployment_key(package: Package, env: Mapping[str, str]) -> tuple[object, ...]:
    """What decides whether a running deployment can be reused as it is."""
    spec = package.spec
    return (package.digest, tuple(sorted(env.items())),
            repr((spec.inputs, spec.outputs, spec.states, spec.components)))


def _wait_listening(process: RuntimeProcess, port: int, timeout: float) -> None:
    """An async function serves gRPC: ready once it said it serves and its port accepts
    connections (another process listening on that port must not pass for it)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not process.exited.is_set():
        if not any(line.startswith("ofnotebook runtime: serving") for line in process.logs):
            time.sleep(0.01)
            continue
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    process.exited.wait(0.2)
    raise DeployError("not ready")


def _lost_its_port(process: RuntimeProcess) -> bool:
    """True when the runtime exited because its port was taken between the standby's release
    and gRPC's bind (a race with other processes picking free ports)."""
    text = "\n".join(process.logs).lower()
    return process.exited.is_set() and ("failed to bind" in text or
                                        "address already in use" in text)


class LocalDeployment(StandInUser, BufferedDeployment):
    """A function served by a local runtime process (and the stand-in, for Dapr functions)."""

    def __init__(self, name: str, package: Package, process: RuntimeProcess, port: int,
                 env: Mapping[str, str], standin: StandIn | None = None) -> None:
        self.name = name
        self.package = package
        self.process = process
        self.log_buffer = process.log_buffer
        self.port = port
        self.env = dict(env)
        is_async = package.spec.runtime == "async"
        self.url = f"grpc://127.0.0.1:{port}" if is_async else f"http://127.0.0.1:{port}/"
        self._stopped = False
        self._attach_standin(standin)
        #: The stand-in a function without Dapr components is listed with, for invocation.
        self.listed_in: StandIn | None = None

    @property
    def key(self) -> tuple[object, ...]:
        """Package digest and environment: equal keys mean an unchanged redeploy, which
        reuses this process."""
        return deployment_key(self.package, self.env)

    @property
    def status(self) -> str:
        if self._stopped:
            return STOPPED
        if self.process.exited.is_set():
            return FAILED
        return RUNNING

    @property
    def failure(self) -> str | None:
        if self.status != FAILED:
            return None
        tail = "\n".join(self.logs(tail=15))
        return (f"the local process (pid {self.process.pid}) exited with code "
                f"{self.process.returncode}. Last log lines:\n{tail}")

    def mark_stopped(self) -> None:
        """Report ``stopped`` at once while the process stops in the background: a replaced
        deployment must not look alive during the grace period."""
        self._stopped = True
        self._leave_standin(unregister=False)

    def stop(self, unregister: bool = True) -> None:
        was_stopped = self._stopped
        self.mark_stopped()
        self._leave_standin(unregister=unregister and not was_stopped)
        listed, self.listed_in = self.listed_in, None
        if listed is not None and unregister and not was_stopped:
            try:
                listed.unregister(self.name)
            except DeployError:
                pass  # the stand-in is gone already
        self.process.stop()


class LocalBackend(TrackedBackend):
    """Runs functions as local subprocesses; keeps one warm standby process ready."""

    name: ClassVar[str] = "local"

    def __init__(self, *, start_timeout: float | None = None, log_lines: int | None = None,
                 standby: bool = True) -> None:
        self.start_timeout = float(config.get("start_timeout", start_timeout))
        self.log_lines = int(config.get("log_lines", log_lines))
        self.keep_standby = standby
        self._standby: RuntimeProcess | None = None
        self._processes: "weakref.WeakSet[RuntimeProcess]" = weakref.WeakSet()
        super().__init__()
        self._closed = False

    # -- processes ---------------------------------------------------------------------------

    def _take_process(self) -> RuntimeProcess:
        with self._lock:
            process, self._standby = self._standby, None
        if process is None or process.exited.is_set():
            process = RuntimeProcess(log_lines=self.log_lines)
            self._processes.add(process)
        return process

    def prewarm(self) -> None:
        """Start the standby process now, so that the next deploy skips the cold start."""
        self._refill_standby()

    def _refill_standby(self) -> None:
        with self._lock:
            if self._closed or not self.keep_standby or self._standby is not None:
                return
            self._standby = RuntimeProcess(log_lines=self.log_lines)
            self._processes.add(self._standby)

    # -- the contract ------------------------------------------------------------------------

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> LocalDeployment:
        spec = package.spec
        name = spec.name
        existing = self._deployments.get(name)
        if (isinstance(existing, LocalDeployment) and existing.status == RUNNING
                and existing.key == deployment_key(package, env)
                and local_port in (None, existing.port)):
            return existing

        standin = listed = None
        if spec.needs_dapr:
            with recorder.phase("dapr", detail="local Dapr stand-in"):
                standin = get_standin()
                self._list_running(standin)
        else:
            listed = current_standin()
        for attempt in (1, 2):
            process, port = self._start(package, env, local_port, standin or listed, recorder)
            with recorder.phase("ready", detail=f"127.0.0.1:{port}"):
                try:
                    if spec.runtime == "async":
                        _wait_listening(process, port, self.start_timeout)
                    else:
                        _wait_healthy(process, port, self.start_timeout)
                except DeployError as exc:
                    process.stop()
                    if attempt == 1 and local_port is None and _lost_its_port(process):
                        continue  # another process took the free port first: take a new one
                    tail = "\n".join(list(process.logs)[-15:]) or "(no output)"
                    why = "" if str(exc) == "not ready" else f"{exc}. "
                    raise DeployError(
                        f"Function {name!r} did not become ready on the local target "
                        f"(exit code {process.returncode}). {why}Last log lines:\n{tail}",
                        function_name=name, last_logs=list(process.logs)[-15:]) from None
                if standin is not None:
                    self._register(standin, name, port, process, spec, recorder)
                break

        deployment = LocalDeployment(name, package, process, port, env, standin)
        if listed is not None:
            self._list(deployment, listed)
        previous = self._track(deployment)
        if isinstance(previous, LocalDeployment):
            # The new process already answers; stopping the old one need not hold the cell.
            # It stays registered under the same app id, now pointing at the new port.
            previous.mark_stopped()
            threading.Thread(target=previous.stop, kwargs={"unregister": False},
                             name=f"ofnotebook-stop-{name}", daemon=True).start()
        return deployment

    def _register(self, standin: StandIn, name: str, port: int, process: RuntimeProcess,
                  spec: FunctionSpec, recorder: PhaseRecorder) -> None:
        """Register a ready function with the stand-in, which starts its components; one that
        cannot start fails the deploy naming it (and stops the process: nothing is left). Its
        warnings (metadata daprd would ignore, and so on) are deploy warnings, and logged."""
        try:
            answer = standin.register(name, port, spec, self.start_timeout)
        except DeployError as exc:
            crashed = process.exited.is_set()
            process.stop()
            tail = ""
            if crashed:
                tail = "\nLast log lines:\n" + "\n".join(list(process.logs)[-15:])
            raise DeployError(f"Function {name!r} was not deployed to the local target: {exc}"
                              f"{tail}", function_name=name,
                              last_logs=list(process.logs)[-15:]) from None
        for warning in standin_warnings.emit(recorder, spec, answer):
            process.log_buffer.append(f"ofnotebook: warning: {warning}")

    def _list(self, deployment: LocalDeployment, standin: StandIn) -> None:
        """Make a function without Dapr components reachable by its app id (service
        invocation): a registration without components, cheap, never fatal."""
        try:
            standin.register(deployment.name, deployment.port, deployment.package.spec,
                             self.start_timeout)
            deployment.listed_in = standin
        except DeployError as exc:
            deployment.log_buffer.append(f"ofnotebook: not reachable by service invocation: "
                                         f"{exc}")

    def _list_running(self, standin: StandIn) -> None:
        """The stand-in just started (or is in use): list the running functions without
        Dapr components that it does not know yet."""
        with self._lock:
            running = [d for d in self._deployments.values() if isinstance(d, LocalDeployment)]
        for deployment in running:
            if deployment.status == RUNNING and deployment.standin is None \
                    and deployment.listed_in is not standin:
                self._list(deployment, standin)

    def _start(self, package: Package, env: Mapping[str, str], local_port: int | None,
               standin: StandIn | None, recorder: PhaseRecorder) -> tuple[RuntimeProcess, int]:
        """Hand ``package`` to the warm standby process (and start the next standby)."""
        with recorder.phase("start", detail="local process"):
            process = self._take_process()
            try:
                port = process.wait_standby(self.start_timeout)
                if local_port is not None:
                    port = local_port
                order_env = dict(env)
                if standin is not None:
                    order_env.update(standin.env(package.spec.name))
                order_env.update(context_env(package.spec, port=port))
                process.send({"package": str(package.path), "env": order_env,
                              "port": local_port})
            except (OSError, DeployError):
                process.stop()
                raise
        threading.Thread(target=self._refill_standby, daemon=True).start()
        return process, port

    def close(self) -> None:
        with self._lock:
            self._closed = True
            deployments = list(self._deployments.values())
            self._deployments.clear()
            standby, self._standby = self._standby, None
        for deployment in deployments:
            deployment.stop()
        if standby is not None:
            standby.stop()
        for process in list(self._processes):  # replaced ones still stopping in the background
            process.stop()


def stop_all_processes() -> None:
    """Stop every runtime process this kernel started (registered with ``atexit``)."""
    for process in list(_LIVE_PROCESSES):
        process.stop()


atexit.register(stop_all_processes)
