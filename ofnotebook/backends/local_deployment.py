"""One function on the local target: its runtime process, restarted when it dies.

:class:`LocalDeployment` is what :class:`~.local.LocalBackend` returns: the process and its
log, the status (``restarting`` while a new process comes up, ``failed`` when it cannot, or
when the function's stand-in died for good), and the supervisor thread that restarts the
process with backoff. Starting processes is the backend's part (its ``restart``), so this
module knows the backend only as something with that method.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Callable, Mapping, Protocol

from ..errors import DeployError
from ..package import Package
from .base import FAILED, RESTARTING, RUNNING, STOPPED, BufferedDeployment
from .processes import Backoff, RuntimeProcess, kernel_exiting
from .standin import StandIn
from .standin_user import StandInUser


class Restarter(Protocol):
    """What a deployment needs of its backend: to start a new process for it."""

    def restart(self, deployment: "LocalDeployment") -> None: ...


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
                 backend: Restarter | None = None, fixed_port: bool = False,
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
        if self.standin is not None:  # deaf while its stand-in is away
            if self.standin_failure is not None:
                return FAILED
            if self.standin.restarting:
                return RESTARTING
        return RUNNING

    @property
    def failure(self) -> str | None:
        status = self.status
        if status not in (FAILED, RESTARTING):
            return None
        if not (self.process.exited.is_set() or self._restarting):  # its stand-in is away
            return (f"its local Dapr stand-in died: {self.standin_failure}"
                    if self.standin_failure else "its local Dapr stand-in is restarting")
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
