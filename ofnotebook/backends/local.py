"""The embedded ``local`` target: each function runs the runtime in a subprocess of this Python.

Speed comes from a *standby* process: a runtime that has already imported Flask and cloudpickle
and bound a free 127.0.0.1 port, waiting on stdin for a package. A deploy hands it the package
(a few milliseconds) and starts the next standby in the background. A re-run with the same
package digest and environment reuses the running process; a changed one replaces it once the
new process answers its health probe, which must answer with this deployment's nonce (a port
held by another function or program never passes for it).

A process that exits without being asked to is restarted, as the kubelet restarts a container:
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
import time
import weakref
from typing import Any, Callable, ClassVar, Mapping

from .. import config
from ..context import context_env
from ..errors import ConfigError, DeployError
from ..package import Package
from ..spec import FunctionSpec
from .base import (FAILED, RESTARTING, RUNNING, STOPPED, BufferedDeployment, LogBuffer,
                   PhaseRecorder, TrackedBackend)
from . import standin_warnings
from .processes import (Backoff, RuntimeProcess, kernel_exiting, lost_its_port, port_holder,
                        wait_healthy, wait_listening)
from .standin import StandIn, StandInUser, current_standin, get_standin


def deployment_key(package: Package, env: Mapping[str, str]) -> tuple[object, ...]:
    """What decides whether a running deployment can be reused as it is."""
    spec = package.spec
    return (package.digest, tuple(sorted(env.items())),
            repr((spec.inputs, spec.outputs, spec.states, spec.components)))


class LocalDeployment(StandInUser, BufferedDeployment):
    """A function served by a local runtime process (and the stand-in, for Dapr functions),
    restarted with backoff when its process dies (see the module docstring)."""

    def __init__(self, name: str, package: Package, process: RuntimeProcess, port: int,
                 env: Mapping[str, str], standin: StandIn | None = None, *,
                 backend: "LocalBackend | None" = None, fixed_port: bool = False,
                 nonce: str = "") -> None:
        self.name = name
        self.package = package
        self.process = process
        self.log_buffer = process.log_buffer
        self.port = port
        self.env = dict(env)
        self.url = self._url()
        self.nonce = nonce
        #: The user chose the port (--port): a restart waits for it rather than moving.
        self.fixed_port = fixed_port
        self.restarts = 0
        self._stopped = False
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._backoff = Backoff()
        self._next_restart = ""  # "restart #k in X s", then "restart #k starting"
        self._exit_seen = ""  # "(pid P) exited with code C": the process that died, kept
        self._restarting = False  # from an exit until the new process answers
        self.port_taken = False  # the port went to another process: restart on a free one
        self._backend = weakref.ref(backend) if backend is not None else None
        self._attach_standin(standin)
        #: The stand-in a function without Dapr components is listed with, for invocation.
        self.listed_in: StandIn | None = None
        if backend is not None:
            threading.Thread(target=self._supervise, name=f"ofnotebook-supervise-{name}",
                             daemon=True).start()

    def _url(self) -> str:
        if self.package.spec.runtime == "async":
            return f"grpc://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}/"

    @property
    def key(self) -> tuple[object, ...]:
        """Package digest and environment: equal keys mean an unchanged redeploy, which
        reuses this process."""
        return deployment_key(self.package, self.env)

    @property
    def status(self) -> str:
        if self._stopped:
            return STOPPED
        if self.process.exited.is_set() or self._restarting:
            return FAILED if self._backend is None or self._halt.is_set() else RESTARTING
        return RUNNING

    @property
    def failure(self) -> str | None:
        status = self.status
        if status not in (FAILED, RESTARTING):
            return None
        tail = "\n".join(self.logs(tail=15))
        due = f"; {self._next_restart}" if status == RESTARTING and self._next_restart else ""
        # The exit as seen: during a restart self.process is the new, live process.
        exited = self._exit_seen or (f"(pid {self.process.pid}) exited with code "
                                     f"{self.process.returncode}")
        return f"the local process {exited}{due}. Last log lines:\n{tail}"

    def _supervise(self) -> None:
        """Restart the process each time it exits unasked, after the backoff delay. Nothing
        a restart raises ends this loop (a dead supervisor would leave the status stuck at
        'restarting'): it is one line in the log, and the next restart follows the backoff."""
        while True:
            process = self.process
            process.exited.wait()
            if self._halt.is_set() or (process.stopping and not self._restarting):
                return  # stopped on purpose (the deployment, the backend, the kernel's exit)
            self._restarting = True
            self._exit_seen = f"(pid {process.pid}) exited with code {process.returncode}"
            delay = self._backoff.next_delay(time.monotonic() - process.started_at)
            self._next_restart = f"restart #{self.restarts + 1} in {delay:g} s"
            self.log_buffer.append(f"ofnotebook: process exited with code "
                                   f"{process.returncode}; {self._next_restart}")
            if self._halt.wait(delay):
                return
            backend = self._backend() if self._backend is not None else None
            if backend is None or kernel_exiting():
                return  # no process starts once the kernel exits
            self._next_restart = f"restart #{self.restarts + 1} starting"
            try:
                backend.restart(self)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                if kernel_exiting():
                    return
                reason = exc if isinstance(exc, (OSError, DeployError)) else repr(exc)
                self.log_buffer.append(f"ofnotebook: restart #{self.restarts} failed: {reason}")

    def ready_again(self) -> None:
        """The restarted process serves: 'running' from now on, whatever registering it
        again with the stand-in gives."""
        self._next_restart, self._exit_seen, self._restarting = "", "", False

    def adopt(self, process: RuntimeProcess, order: dict[str, object]) -> bool:
        """Make ``process`` this deployment's (a restart), sharing the log, and hand it
        ``order``; False (and the process stopped) when the deployment was stopped meanwhile.
        Under the lock, so a concurrent ``stop`` either comes first or stops this process."""
        with self._lock:
            if self._stopped:
                process.stop()
                return False
            for line in process.log_buffer.tail():
                self.log_buffer.append(line)
            process.log_buffer = self.log_buffer
            self.process = process
            self.restarts += 1
            process.send(order)
        return True

    def moved_to(self, port: int, start_timeout: float) -> None:
        """The restarted process listens on ``port``: the URL follows, and the stand-ins
        learn it, unless the deployment was stopped or replaced meanwhile (a re-run cell's
        new deployment, same app id, keeps its own port there: see :meth:`superseded`)."""
        with self._lock:
            if self._stopped:
                return
            self.port = port
            self.url = self._url()
            for known in {s for s in (self.standin, self.listed_in) if s is not None}:
                try:
                    known.register(self.name, port, self.package.spec, start_timeout)
                except DeployError as exc:  # the stand-in is gone: the process still serves
                    self.log_buffer.append(f"ofnotebook: restarted on port {port}, not "
                                           f"registered again with the stand-in: {exc}")

    def superseded(self, register: Callable[[], None]) -> None:
        """Run ``register`` (a new deployment of this app id taking its place with the
        stand-in) and count this one stopped from then on, under the lock a restart that
        moved ports registers under: the old port never overwrites the new one."""
        with self._lock:
            register()
            self._stopped = True

    def mark_stopped(self) -> None:
        """Report ``stopped`` at once while the process stops in the background: a replaced
        deployment must not look alive during the grace period, nor be restarted."""
        with self._lock:
            self._stopped = True
        self._halt.set()
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
        with self._lock:
            process = self.process
        process.stop()


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

