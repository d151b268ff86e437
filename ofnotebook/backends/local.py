"""The embedded ``local`` target: each function runs the runtime in a subprocess of this Python.

Speed comes from a *standby* process: a runtime that has already imported Flask and cloudpickle
and bound a free 127.0.0.1 port, waiting on stdin for a package. A deploy hands it the package
(a few milliseconds) and starts the next standby in the background. A re-run with the same
package digest and environment reuses the running process; a changed one replaces it once the
new process answers its health probe, which must answer with this deployment's nonce (a port
held by another function or program never passes for it).

A process that exits without being asked to is restarted (:mod:`.local_deployment`), as the kubelet restarts a container:
after a backoff (:class:`~.processes.Backoff`: 0.5 s doubling to 30 s, reset after a minute
up), with the same package and environment, on the same port, so the URL stays valid (a port
taken meanwhile is given up for a free one, registered again with the stand-in). The log keeps
one line per exit; ``restarts`` counts them; the status says ``restarting`` meanwhile. A stopped
or replaced deployment is never restarted: the new process gets its order, and a moved port is
registered, under the deployment's lock with a stopped check, and a re-run registers while
superseding the old deployment, so a restart never overwrites the re-run's port.

No process outlives the kernel: each is stopped at exit (atexit, SIGTERM then SIGKILL), and each
watches its parent PID and exits on its own if the kernel is killed (:mod:`.processes`).

Functions that talk Dapr are registered with the kernel's stand-in once they answer; one whose
component cannot start is not deployed, and the error names the component. A sync function
without components is registered too when the stand-in already runs (a few milliseconds, no
drivers), so other functions reach it by app id with service invocation; the stand-in is never
started for that alone, but starting it for a later function registers the ones running.
"""

from __future__ import annotations

import secrets
import threading
import weakref
from typing import ClassVar, Mapping

from .. import config
from ..context import context_env
from ..errors import ConfigError, DeployError
from ..package import Package
from ..spec import FunctionSpec
from .base import RUNNING, STOPPED, LogBuffer, PhaseRecorder, TrackedBackend
from . import standin_warnings
from .local_deployment import LocalDeployment, deployment_key
from .processes import (RuntimeProcess, lost_its_port, port_holder, wait_healthy,
                        wait_listening)
from .standin import StandIn, current_standin, get_standin


class LocalBackend(TrackedBackend):
    """Runs functions as local subprocesses; keeps one warm standby process ready.

    ``start_timeout`` and ``log_lines`` given here win; otherwise they are read again
    (``config.get``) at each deploy, so a changed ``OFNOTEBOOK_*`` value counts at once."""

    name: ClassVar[str] = "local"

    def __init__(self, *, start_timeout: float | None = None, log_lines: int | None = None,
                 standby: bool = True) -> None:
        self._start_timeout_arg, self._log_lines_arg = start_timeout, log_lines
        self._read_settings()
        self.keep_standby = standby
        self._standby: RuntimeProcess | None = None
        self._processes: "weakref.WeakSet[RuntimeProcess]" = weakref.WeakSet()
        super().__init__()
        self._closed = False

    def _read_settings(self) -> None:
        self.start_timeout = float(config.get("start_timeout", self._start_timeout_arg))
        self.log_lines = int(config.get("log_lines", self._log_lines_arg))

    # -- processes ---------------------------------------------------------------------------

    def _take_process(self) -> RuntimeProcess:
        with self._lock:
            process, self._standby = self._standby, None
        if process is None or process.exited.is_set():
            process = RuntimeProcess(log_lines=self.log_lines)
            self._processes.add(process)
        elif process.log_buffer.lines.maxlen != self.log_lines:  # OFNOTEBOOK_LOG_LINES changed
            buffer = LogBuffer(self.log_lines)
            for line in process.log_buffer.tail():
                buffer.append(line)
            process.log_buffer = buffer
        return process

    def prewarm(self) -> None:
        """Start the standby process now, so that the next deploy skips the cold start."""
        self._refill_standby()

    def _refill_standby(self) -> None:
        with self._lock:
            if self._closed or not self.keep_standby or self._standby is not None:
                return
            try:
                self._standby = RuntimeProcess(log_lines=self.log_lines)
            except DeployError:
                return  # the kernel is exiting
            self._processes.add(self._standby)

    # -- the contract ------------------------------------------------------------------------

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> LocalDeployment:
        self._read_settings()
        spec = package.spec
        name = spec.name
        existing = self._deployments.get(name)
        if (isinstance(existing, LocalDeployment) and existing.status == RUNNING
                and existing.standin_failure is None  # never reuse a deaf deployment
                and existing.key == deployment_key(package, env)
                and local_port in (None, existing.port)):
            return existing
        if local_port is not None:
            self._free_port_for(name, local_port)

        standin = listed = None
        if spec.needs_dapr:
            with recorder.phase("dapr", detail="local Dapr stand-in"):
                standin = get_standin()
                self._list_running(standin)
        else:
            listed = current_standin()
        nonce = secrets.token_hex(8)
        for attempt in (1, 2):
            process, port = self._start(package, env, local_port, standin or listed, recorder,
                                        nonce)
            with recorder.phase("ready", detail=f"127.0.0.1:{port}"):
                try:
                    self._wait_ready(process, port, spec, nonce)
                except DeployError as exc:
                    process.stop()
                    if attempt == 1 and local_port is None and lost_its_port(process):
                        continue  # another process took the free port first: take a new one
                    raise self._not_ready(name, process, port, exc) from None
                if standin is not None:
                    self._register_replacing(existing, standin, name, port, process, spec,
                                             recorder)
                break

        deployment = LocalDeployment(name, package, process, port, env, standin, backend=self,
                                     fixed_port=local_port is not None, nonce=nonce)
        if listed is not None:
            if isinstance(existing, LocalDeployment):
                existing.superseded(lambda: self._list(deployment, listed))
            else:
                self._list(deployment, listed)
        previous = self._track(deployment)
        if isinstance(previous, LocalDeployment):
            # The new process already answers; stopping the old one need not hold the cell.
            # It stays registered under the same app id, now pointing at the new port.
            previous.mark_stopped()
            threading.Thread(target=previous.stop, kwargs={"unregister": False},
                             name=f"ofnotebook-stop-{name}", daemon=True).start()
        return deployment

    def _free_port_for(self, name: str, port: int) -> None:
        """``--port`` of a function of this kernel: another one's is refused naming it; this
        function's own running one is stopped first (both cannot listen on it)."""
        with self._lock:
            holders = [d for d in self._deployments.values()
                       if isinstance(d, LocalDeployment) and d.port == port
                       and d.status != STOPPED]
        for holder in holders:
            if holder.name != name:
                raise DeployError(
                    f"Port {port} is used by the function {holder.name!r} of this notebook "
                    f"({holder.url}): pick another --port, or stop {holder.name!r} first "
                    f"(%function stop {holder.name}).", function_name=name)
            self.stop(name)

    def _wait_ready(self, process: RuntimeProcess, port: int, spec: FunctionSpec,
                    nonce: str) -> None:
        if spec.runtime == "async":
            wait_listening(process, port, self.start_timeout)
        else:
            wait_healthy(process, port, self.start_timeout, nonce)

    @staticmethod
    def _not_ready(name: str, process: RuntimeProcess, port: int, exc: DeployError
                   ) -> DeployError:
        """The one message of a process that did not become ready: who holds its port when
        that was the cause, and its last log lines."""
        logs = list(process.logs)[-15:]
        tail = "\n".join(logs) or "(no output)"
        why = "" if str(exc) == "not ready" else f"{exc}. "
        if not why and lost_its_port(process):
            why = f"{port_holder(port)}. "
        return DeployError(f"Function {name!r} did not become ready on the local target "
                           f"(exit code {process.returncode}). {why}Last log lines:\n{tail}",
                           function_name=name, last_logs=logs)

    def restart(self, deployment: LocalDeployment) -> None:
        """Start ``deployment`` again in a new process (it died unasked): the same package
        and environment on the same port, a free one if that was taken (then registered
        again with the stand-in). Raises ``DeployError`` when the new one is not ready."""
        try:
            self._read_settings()
        except ConfigError as exc:  # the last good settings stay: the function comes back
            deployment.log_buffer.append(f"ofnotebook: restart #{deployment.restarts + 1} keeps "
                                         f"the settings it had: {exc}")
        spec = deployment.package.spec
        process = self._take_process()
        try:
            standby_port = process.wait_standby(self.start_timeout)
        except DeployError:
            process.stop()
            raise
        port = standby_port if deployment.port_taken and not deployment.fixed_port \
            else deployment.port
        standin = deployment.standin or deployment.listed_in
        order = self._order(deployment.package, deployment.env, standin, port,
                            None if port == standby_port else port, deployment.nonce)
        try:
            if not deployment.adopt(process, order):
                return  # stopped while the restart was due
        except (OSError, ValueError):  # the process died before its order (a closed pipe)
            process.stop()
            raise
        threading.Thread(target=self._refill_standby, daemon=True).start()
        try:
            self._wait_ready(process, port, spec, deployment.nonce)
        except DeployError as exc:
            process.stop()
            deployment.port_taken = lost_its_port(process)
            raise self._not_ready(deployment.name, process, port, exc) from None
        deployment.port_taken = False
        deployment.ready_again()
        if port != deployment.port:
            deployment.moved_to(port, self.start_timeout)

    def _register_replacing(self, existing: object, standin: StandIn, name: str, port: int,
                            process: RuntimeProcess, spec: FunctionSpec,
                            recorder: PhaseRecorder) -> None:
        """:meth:`_register`; a deployment of the same name it replaces is stopped as the new
        one registers (a restart of the old one must not register its port after)."""
        def register() -> None:
            self._register(standin, name, port, process, spec, recorder)
        if isinstance(existing, LocalDeployment):
            existing.superseded(register)
        else:
            register()

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

    @staticmethod
    def _order(package: Package, env: Mapping[str, str], standin: StandIn | None, port: int,
               local_port: int | None, nonce: str) -> dict[str, object]:
        """The JSON line a standby process gets: the package, its environment (the stand-in's
        and the function context's too), the fixed port if any and the deployment's nonce,
        which its health probe answers with."""
        order_env = dict(env)
        if standin is not None:
            order_env.update(standin.env(package.spec.name))
        order_env.update(context_env(package.spec, port=port))
        return {"package": str(package.path), "env": order_env, "port": local_port,
                "nonce": nonce}

    def _start(self, package: Package, env: Mapping[str, str], local_port: int | None,
               standin: StandIn | None, recorder: PhaseRecorder, nonce: str
               ) -> tuple[RuntimeProcess, int]:
        """Hand ``package`` to the warm standby process (and start the next standby)."""
        with recorder.phase("start", detail="local process"):
            process = self._take_process()
            try:
                port = process.wait_standby(self.start_timeout)
                if local_port is not None:
                    port = local_port
                process.send(self._order(package, env, standin, port, local_port, nonce))
            except (OSError, DeployError):
                process.stop()
                raise
        threading.Thread(target=self._refill_standby, daemon=True).start()
        return process, port

    def release_idle(self) -> None:
        """Stop the warm standby process (``%function stop --all``); the next deploy starts
        one again (that deploy pays the cold start, ~0.2 s)."""
        with self._lock:
            standby, self._standby = self._standby, None
        if standby is not None:
            standby.stop()

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

