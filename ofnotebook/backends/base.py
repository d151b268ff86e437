"""The backend contract: what every target (local, container, kubernetes, yaml) implements.

A :class:`Backend` turns a :class:`~ofnotebook.package.Package` into a running
:class:`Deployment`. The docstrings here are the specification; the conformance tests in
``tests/backends`` hold each backend to it.
"""

from __future__ import annotations

import codecs
import collections
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

from ..package import Package
from .events import EventTracker

#: Deployment states, in the order they normally happen (``stopping``: being removed, as a
#: Kubernetes object with a deletionTimestamp is until its finalizers are done).
STARTING, RUNNING, FAILED, STOPPING, STOPPED = "starting", "running", "failed", "stopping", \
    "stopped"
#: The process exited unasked and a restart is due or starting (a pod in CrashLoopBackOff):
#: not running, not given up either.
RESTARTING = "restarting"

#: Phases in the order they happen on any target (a deploy emits some of them); the handle's
#: timings and the view's phase row both follow it, unknown phases go last as they come.
PHASES = ("capture", "lock", "package", "build", "push", "write", "apply", "dapr", "start",
          "deploy", "ready")


@dataclass(frozen=True)
class PhaseEvent:
    """One step of a deployment: ``state`` is ``started``, ``finished`` or ``failed``, or
    ``progress`` for a log line of a running step (a build line, in ``detail``).

    ``at`` is a ``time.time()`` stamp; ``duration`` (seconds) is set on ``finished`` and
    ``failed``. Widgets and text views subscribe to these to show progress as it happens.
    """

    phase: str
    state: str
    at: float
    duration: float | None = None
    detail: str = ""


EventSink = Callable[[PhaseEvent], None]


@dataclass
class PhaseRecorder:
    """Times phases and forwards every event to a sink (the handle)."""

    sink: EventSink | None = None
    events: list[PhaseEvent] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def emit(self, event: PhaseEvent) -> None:
        """Keep ``event`` (the handle's ``events`` and ``timings`` are read from here after
        the deploy) and pass it on at once, so a view shows the phase while it runs. Backends
        emit from build and log threads, hence the lock."""
        with self._lock:
            self.events.append(event)
            if event.duration is not None and event.state == "finished":
                self.timings[event.phase] = event.duration
        if self.sink is not None:
            self.sink(event)

    def phase(self, name: str, detail: str = "") -> "_Phase":
        """``with recorder.phase("package"):`` emits started, then finished or failed."""
        return _Phase(self, name, detail)


class _Phase:
    def __init__(self, recorder: PhaseRecorder, name: str, detail: str) -> None:
        self.recorder, self.name, self.detail = recorder, name, detail
        self.start = 0.0

    def __enter__(self) -> "_Phase":
        self.start = time.perf_counter()
        self.recorder.emit(PhaseEvent(self.name, "started", time.time(), detail=self.detail))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        duration = time.perf_counter() - self.start
        state = "finished" if exc is None else "failed"
        self.recorder.emit(PhaseEvent(self.name, state, time.time(), duration,
                                      detail=self.detail if exc is None else str(exc)))


def stream_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a followed log, whatever its chunks are.

    Log chunks are not lines: Docker splits a line longer than 16 kB, Podman a line written
    in pieces (``print(a, b)`` under ``PYTHONUNBUFFERED``), an API server's pod log a chunk
    wherever the network cut it, and a chunk may end inside a UTF-8 character. So a line is
    yielded once its newline arrives, and what is left when the stream ends (a last line with
    no newline) is yielded then. A stream that breaks (the container or pod went, the
    connection was closed to stop following) ends like one that finished."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    source = iter(chunks)
    while True:
        try:
            chunk = next(source)
        except StopIteration:
            break
        except Exception:
            break
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line.rstrip("\r")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.rstrip("\r")


class LogBuffer:
    """A function's recent log lines (bounded) and the callbacks following them live."""

    def __init__(self, maxlen: int) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._subscribers: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        """Keep ``line`` and hand it to the followers on the reader's thread; a follower that
        raises is dropped silently, since a broken view must not stop the log collection."""
        with self._lock:
            self.lines.append(line)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(line)
            except Exception:  # a broken view must not stop log collection
                pass

    def tail(self, n: int | None = None) -> list[str]:
        """The last ``n`` lines (all kept lines when ``n`` is falsy), copied under the lock
        so a reader thread appending meanwhile cannot break the caller's iteration."""
        with self._lock:
            lines = list(self.lines)
        return lines[-n:] if n else lines

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Follow the logs live (the widget's log pane, ``subscribe_logs``); the returned
        function stops following, so a closed view holds no reference to the buffer."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe


class Deployment:
    """A function running (or having run) on a target: every verb the handle uses.

    ``url`` is the deployment's address as the user sees it (``http://...`` for a sync
    function, ``grpc://...`` for a local async one, a folder's ``file://`` URI for the yaml
    target); ``status`` one of ``starting``, ``running``, ``restarting``, ``failed``,
    ``stopping`` or ``stopped`` (or a target's own word, such as ``written``); ``failure``
    explains a ``failed`` or ``restarting`` status with the last log lines; ``restarts``
    counts the times the target restarted the function's process after it died.

    A target that cannot do a verb from the notebook (send a test event into a cluster, read
    a state store it does not host) raises :class:`~ofnotebook.errors.UnsupportedError` naming
    the target and what to use instead; it never leaves the method out, so the handle needs no
    ``getattr`` and the user never sees an ``AttributeError``.
    """

    name: str
    url: str
    package: Package
    #: Restarts after the process died unasked (0 where the target does not restart).
    restarts: int = 0

    def invoke_url(self) -> str:
        """The base URL the handle sends HTTP invocations to: ``url`` by default. A target
        that runs nothing the kernel can call raises ``UnsupportedError``."""
        return self.url

    def publish(self, input_name: str, data: bytes, content_type: str) -> None:
        """Deliver ``data`` (already encoded, with its ``content_type``) into input
        ``input_name`` as a test event, through its broker where it has one."""
        raise NotImplementedError("The 'publish' method must be implemented (raise "
                                  "UnsupportedError when the target cannot).")

    def publish_many(self, input_name: str, items: Sequence[tuple[bytes, str]]
                     ) -> list[tuple[int, str]]:
        """Deliver many ``(data, content_type)`` test events into ``input_name``, in order,
        and return the ``(index, error)`` of those that failed (the others were sent). A
        target with a bulk path (the local stand-in: one request, one broker round trip)
        overrides it; this one publishes one by one, so it reaches (or refuses) exactly
        what ``publish`` does, and raises at the first failure."""
        for data, content_type in items:
            self.publish(input_name, data, content_type)
        return []

    def read_state(self, store: str, key: str) -> dict[str, Any]:
        """Read ``key`` from state store ``store``: ``{"data": value, ...}``."""
        raise NotImplementedError("The 'read_state' method must be implemented (raise "
                                  "UnsupportedError when the target cannot).")

    @property
    def events(self) -> EventTracker:
        """The function's events as the notebook sees them: events in, outputs, retries, dead
        letters (the handle's ``outputs``, ``stats`` and ``dead_letters``)."""
        raise NotImplementedError("The 'events' property must be implemented (raise "
                                  "UnsupportedError when the target cannot).")

    @property
    def status(self) -> str:
        """Asked fresh each time (a process can exit, a pod can crash between two reads), so
        the handle and the view never show a state the target has left."""
        raise NotImplementedError("The 'status' property must be implemented.")

    @property
    def failure(self) -> str | None:
        """Why the deployment failed (with its last log lines), or ``None``."""
        raise NotImplementedError("The 'failure' property must be implemented.")

    def logs(self, tail: int | None = None) -> list[str]:
        """The function's recent stdout/stderr lines, oldest first (bounded)."""
        raise NotImplementedError("The 'logs' method must be implemented.")

    def subscribe_logs(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(line)`` for every new log line; returns an unsubscribe function."""
        raise NotImplementedError("The 'subscribe_logs' method must be implemented.")

    def stop(self) -> None:
        """Stop the function and release everything it holds. Idempotent."""
        raise NotImplementedError("The 'stop' method must be implemented.")


class BufferedDeployment(Deployment):
    """A deployment whose log lines collect in ``self.log_buffer`` (set by the subclass)."""

    log_buffer: LogBuffer

    def logs(self, tail: int | None = None) -> list[str]:
        """From the buffer the target's reader threads fill: reading logs costs no call to
        the engine or the process."""
        return self.log_buffer.tail(tail)

    def subscribe_logs(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Follow the buffer: every target that collects lines follows them the same way."""
        return self.log_buffer.subscribe(callback)


class Backend:
    """A target. ``deploy`` is the only required verb; ``close`` stops everything it started."""

    name: ClassVar[str] = ""

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> Deployment:
        """Run ``package`` and return once it is ready, or raise ``DeployError``.

        Deploying a package with the same name and the same digest and environment as a
        running deployment returns that deployment unchanged; a different digest replaces it
        (the new one is ready before the old one stops). Nothing is left running on failure.
        """
        raise NotImplementedError("The 'deploy' method must be implemented.")

    def deployments(self) -> list[Deployment]:
        """The deployments this backend currently manages."""
        raise NotImplementedError("The 'deployments' method must be implemented.")

    def stop(self, name: str) -> bool:
        """Stop deployment ``name``; return whether there was one."""
        raise NotImplementedError("The 'stop' method must be implemented.")

    def close(self) -> None:
        """Stop every deployment and helper process of this backend."""
        raise NotImplementedError("The 'close' method must be implemented.")

    def release_idle(self) -> None:
        """Stop the helper processes kept warm for the next deploy (``%function stop --all``
        leaves a clean slate; the next deploy starts them again). Most targets keep none."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrackedBackend(Backend):
    """A backend keeping its deployments by name: ``deployments``, ``stop`` and ``close``
    done once for the targets that need nothing more."""

    def __init__(self) -> None:
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.RLock()

    def _track(self, deployment: Deployment) -> Deployment | None:
        """Record ``deployment`` under its name; return the one it replaces, if any."""
        with self._lock:
            previous = self._deployments.get(deployment.name)
            self._deployments[deployment.name] = deployment
        return previous

    def deployments(self) -> list[Deployment]:
        """A copy, so ``%function list`` can iterate while another cell deploys."""
        with self._lock:
            return list(self._deployments.values())

    def stop(self, name: str) -> bool:
        """Forget ``name`` under the lock, stop it outside it: a slow stop (a container, a
        pod's finalizer) must not block a deploy of another function."""
        with self._lock:
            deployment = self._deployments.pop(name, None)
        if deployment is None:
            return False
        deployment.stop()
        return True

    def close(self) -> None:
        """Stop all, as ``stop`` does one by one: the kernel's exit and ``%function stop
        --all`` must leave nothing running."""
        with self._lock:
            deployments = list(self._deployments.values())
            self._deployments.clear()
        for deployment in deployments:
            deployment.stop()
