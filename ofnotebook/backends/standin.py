"""The kernel's side of the local Dapr-API stand-in: start it, register apps, follow events.

One stand-in process per kernel (``python -m ofnotebook.sidecar``, the server), started on the
first deployment that needs Dapr. A background thread long-polls its event log and hands each
event to the deployments that subscribed for their app, so outputs show up in the notebook
within milliseconds. :class:`StandIn` is the client of that process; :class:`~.standin_user.StandInUser` is
what a deployment on the local or container target mixes in to use it (its events, test
events, state reads, and leaving the stand-in when stopped). The server is ``sidecar/``; this
module is the only kernel-side code that talks to it (its process: :mod:`.standin_process`).

A stand-in process that dies is noticed (a watcher thread waits on it) and started again on the
same ports with the same secrets, as daprd restarts beside its app: the function processes keep
their ``DAPR_GRPC_PORT`` and reconnect on their own, each app is registered again, and a broker
that keeps messages redelivers what was not acknowledged. The events tracker of each app id is
kept here, not by a deployment: it is what a re-run of the cell shows (dead letters, counts, and
the in-memory events a death lost), until the function is stopped for good.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import threading
import time
import weakref
from typing import Any, Callable, Sequence

from .. import config
from ..context import component_name
from ..errors import DeployError
from ..sidecar.protocol import (API_TOKEN_ENV, APP_GRPC, APP_HTTP, APP_NONE, APP_TOKEN_ENV,
                                FRAMES_CONTENT_TYPE, INPUTS_MANY_PATH, ROLE_COMPONENT,
                                ROLE_INPUT, ROLE_OUTPUT, ROLE_STATE, STANDIN_KEY_ENV,
                                TOKEN_HEADER, app_token, callback_token, pack_frames)
from ..spec import FunctionSpec
from . import standin_process
from .processes import Backoff
from .events import RESYNC, EventTracker

_log = logging.getLogger("ofnotebook.standin")
#: After a poll that brought at least FOLLOW_BUSY records (load), wait FOLLOW_LINGER before
#: the next, so each poll gathers a batch; after a smaller one poll again at once, so an
#: isolated event's output (which follows its ``in`` record by a few ms) is seen at once.
FOLLOW_LINGER = 0.01  # s
FOLLOW_BUSY = 50
#: A stand-in that died is started again up to RESTART_ATTEMPTS times, RESTART_PAUSE s apart
#: (then more); a call made meanwhile waits for it, and for the apps' registrations, at most
#: the start timeout per attempt plus RESTART_REGISTER_WAIT s.
RESTART_ATTEMPTS, RESTART_PAUSE, RESTART_REGISTER_WAIT = 3, 0.5, 60.0


def components_payload(spec: FunctionSpec) -> list[dict[str, Any]]:
    """What the stand-in needs to know about each component of ``spec``."""
    payload = []
    for role, items in ((ROLE_INPUT, spec.inputs), (ROLE_OUTPUT, spec.outputs),
                        (ROLE_STATE, spec.states), (ROLE_COMPONENT, spec.components)):
        for c in items:
            payload.append({"role": role, "name": c.name, "componentName": component_name(spec, c),
                            "type": c.type, "version": c.version, "metadata": dict(c.metadata),
                            "topic": c.topic or ""})
    return payload


class StandIn:
    """A running stand-in process: its ports, its control API and its event stream.

    The process is watched: when it dies unasked, it is started again on the same HTTP and
    gRPC ports with the same token and app key (every function process was started with them
    and reconnects there on its own), every app is registered again with its last
    registration (so its components and input drivers start again), and the event stream is
    followed anew. A broker that keeps messages redelivers what was not acknowledged; what the
    in-memory bus held is counted as lost on each app's tracker. Calls made meanwhile wait for
    the restart (bounded); a stand-in that cannot come back makes them raise one
    ``DeployError`` naming the cause and the fix (:attr:`failure`)."""

    def __init__(self) -> None:
        import secrets

        import requests

        self._app_key = secrets.token_hex(16)  # signs each function's own DAPR_API_TOKEN
        # Always a token: 127.0.0.1 is shared by every user of the machine (JupyterHub's local
        # spawners, shared servers), and the stand-in holds every payload. The user's own
        # DAPR_API_TOKEN wins; both reach the process in its environment, never on its
        # command line (which every user can read in ps).
        self.token: str = os.environ.get(API_TOKEN_ENV) or secrets.token_urlsafe(32)
        self.logs: list[str] = []
        #: How often the process died and was started again.
        self.restarts = 0
        #: Why the stand-in could not be started again after it died (None while it serves).
        self.failure: str | None = None
        self._procs: list[subprocess.Popen[str]] = []  # each started, for the finalizer
        self._closed = threading.Event()
        # Also at the interpreter's exit, before stop_standin maybe: closed first, so the
        # watcher does not take the stop for a death and start it again.
        self._finalizer = weakref.finalize(self, _terminate_all, self._procs, self._closed)
        self._lock = threading.Lock()
        self._dispatching = threading.Lock()  # held while a batch of events is handed out
        self._up = threading.Event()  # set while a process serves (or it is given up)
        self._epoch = 0  # one per process: a poll answered across a restart is dropped
        self.last_seq = 0
        self._subscribers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._trackers: dict[str, EventTracker] = {}
        self._registrations: dict[str, dict[str, Any]] = {}
        self.http_port = self.grpc_port = 0
        # A stand-in that keeps dying right after its start is started again less and less
        # often (0.2 s doubling to 10 s), as a crash loop is; one up a minute starts over.
        self._backoff = Backoff(first=0.2, cap=10.0, reset=60.0)
        self._started_at = time.monotonic()
        self.proc = self._spawn()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.headers[TOKEN_HEADER] = self.token
        self._up.set()
        threading.Thread(target=self._follow, name="standin-events", daemon=True).start()
        threading.Thread(target=self._watch, name="standin-watch", daemon=True).start()

    def _spawn(self) -> subprocess.Popen[str]:
        """Start the process (on :attr:`http_port` and :attr:`grpc_port` once known) and
        take the ports it announces; DeployError (the process stopped) when it does not."""
        proc, ports = standin_process.start(self.http_port, self.grpc_port, {
            API_TOKEN_ENV: self.token, STANDIN_KEY_ENV: self._app_key}, self.logs, self._procs)
        self.http_port, self.grpc_port = ports["http"], ports["grpc"]
        self._started_at = time.monotonic()
        return proc

    # -- the watcher: a process that died is started again -----------------------------------

    def _watch(self) -> None:
        while True:
            proc = self.proc
            proc.wait()
            if self._closed.is_set():
                return
            self._up.clear()
            with self._lock:
                self._epoch += 1  # what the old process answered no longer counts
                self.last_seq = 0
                trackers = dict(self._trackers)
            with self._dispatching:  # the last batch of the old process is handed out
                lost = {app: tracker.mark_lost() for app, tracker in trackers.items()}
            self._note(f"the local Dapr stand-in (pid {proc.pid}) exited with code "
                       f"{proc.returncode}; starting it again on HTTP port {self.http_port}, "
                       f"gRPC port {self.grpc_port}"
                       + "".join(f"; {n} in-memory event(s) of {app!r} lost"
                                 for app, n in lost.items() if n))
            if self._closed.wait(self._backoff.next_delay(time.monotonic() - self._started_at)):
                return
            if not self._restart(proc):
                return

    def _restart(self, dead: subprocess.Popen[str]) -> bool:
        """Start the process again and register every app again; False when given up."""
        error: Exception | None = None
        for attempt in range(RESTART_ATTEMPTS):
            if self._closed.wait(RESTART_PAUSE * attempt):
                return False
            try:
                proc = self._spawn()
            except (DeployError, OSError) as exc:
                error = exc
                continue
            if self._closed.is_set():
                standin_process.terminate(proc)
                return False
            self.proc = proc
            self.restarts += 1
            self._register_again()
            self._note(f"the local Dapr stand-in runs again (pid {proc.pid}, restart "
                       f"#{self.restarts}); its apps are registered again")
            self._up.set()
            return True
        self.failure = (f"The local Dapr stand-in died (pid {dead.pid}, exit code "
                        f"{dead.returncode}) and could not be started again on its ports "
                        f"(HTTP {self.http_port}, gRPC {self.grpc_port}): {error}\nFix: stop "
                        f"every function (%function stop --all) and deploy again: a new "
                        f"stand-in starts.")
        self._note(self.failure)
        self._up.set()  # release the callers waiting: they raise with the failure
        return False

    def _register_again(self) -> None:
        """Register each app again with its last registration, all at once (an async app is
        asked what it handles, which waits for it)."""
        with self._lock:
            registrations = dict(self._registrations)

        def again(app_id: str, body: dict[str, Any]) -> None:
            try:
                self._request("PUT", f"/ofnotebook/apps/{app_id}", json=body,
                              timeout=float(body["timeout"]) + 30)
            except DeployError as exc:
                self._note(f"app {app_id!r} was not registered again: {exc}")

        threads = [threading.Thread(target=again, args=item, daemon=True)
                   for item in registrations.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _note(self, message: str) -> None:
        self.logs.append(f"ofnotebook: {message}")
        _log.warning("%s", message)

    def _wait_up(self) -> None:
        """Return once a process serves; raise the failure of one that cannot come back."""
        wait = float(config.get("start_timeout")) * RESTART_ATTEMPTS + RESTART_REGISTER_WAIT
        if not self._up.wait(wait):
            raise DeployError(f"The local Dapr stand-in is still restarting after {wait:g} s; "
                              f"its last output:\n" + "\n".join(self.logs[-10:]) +
                              "\nFix: wait and try again, or stop every function "
                              "(%function stop --all) and deploy again.")
        if self.failure:
            raise DeployError(self.failure)

    def _went_down(self, epoch: int) -> bool:
        """After a failed call: did the process die (then the call waits for its restart)?"""
        deadline = time.monotonic() + 2.0
        while self._epoch == epoch and time.monotonic() < deadline:
            if self.proc.poll() is None and self._up.is_set():
                return False  # it runs: the call failed for another reason
            time.sleep(0.01)
        return self._epoch != epoch

    # -- env for functions -------------------------------------------------------------------

    def env(self, app_id: str | None = None) -> dict[str, str]:
        """What a function process needs to reach this stand-in with the unmodified SDK.
        With ``app_id``, its ``DAPR_API_TOKEN`` is that app's own: the stand-in knows the
        caller by it (``get_metadata().application_id``) and accepts it as the kernel's; and
        its ``APP_API_TOKEN`` is what the stand-in sends to its AppCallback, which refuses
        calls without it. Without, the kernel's token."""
        env = {"DAPR_RUNTIME_HOST": "127.0.0.1", "DAPR_HTTP_PORT": str(self.http_port),
               "DAPR_GRPC_PORT": str(self.grpc_port),
               "DAPR_API_METHOD_INVOCATION_PROTOCOL": "grpc", "DAPR_HEALTH_TIMEOUT": "10",
               API_TOKEN_ENV: self.token}
        if app_id:
            env[API_TOKEN_ENV] = app_token(self._app_key, app_id)
            env[APP_TOKEN_ENV] = callback_token(self._app_key, app_id)
        return env

    def client_env(self, app_id: str) -> dict[str, str]:
        """What Dapr SDK code that is no function needs (the notebook, a script beside it),
        calling as the component-only app ``app_id``: the functions' variables with that app's
        token, and both endpoints, which the SDK prefers to host and port, so a
        ``DAPR_GRPC_ENDPOINT`` left from another Dapr does not win over the ports. Not the
        app's ``APP_API_TOKEN``: the SDK's ``App`` never reads it, and exported into the
        kernel it would only be one more secret on show."""
        env = {**self.env(app_id), "DAPR_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
               "DAPR_HTTP_ENDPOINT": f"http://127.0.0.1:{self.http_port}"}
        del env[APP_TOKEN_ENV]
        return env

    # -- control API -------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call to the control API (no waiting for a restart); DeployError on failure."""
        import requests

        try:
            response = self._session.request(method, self.base + path, timeout=kwargs.pop(
                "timeout", 60), **kwargs)
        except requests.RequestException as exc:
            raise _Unreachable(f"The local Dapr stand-in is not reachable ({exc}); "
                               f"its last output:\n" + "\n".join(self.logs[-10:])) from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise DeployError(message)
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A control API call that waits for a restart in progress, and is made once more
        when the process died under it (at least once: a publish may then arrive twice)."""
        self._wait_up()
        epoch = self._epoch
        try:
            return self._request(method, path, **dict(kwargs))
        except _Unreachable:
            if self._closed.is_set() or not self._went_down(epoch):
                raise
        self._wait_up()
        return self._request(method, path, **kwargs)

    def register(self, app_id: str, port: int, spec: FunctionSpec, timeout: float) -> Any:
        """Register an app; its answer has the app's subscriptions and ``warnings`` about
        its components' metadata. An async function is called over AppCallback, a sync one
        over HTTP (service invocation), an app without a port not at all."""
        protocol = APP_NONE if not port else APP_GRPC if spec.runtime == "async" else APP_HTTP
        body = {"port": port, "timeout": timeout, "appProtocol": protocol,
                "components": components_payload(spec)}
        answer = self._call("PUT", f"/ofnotebook/apps/{app_id}", json=body,
                            timeout=timeout + 30).json()
        with self._lock:  # what a restarted stand-in is told again
            self._registrations[app_id] = body
        return answer

    def unregister(self, app_id: str) -> None:
        """The app is stopped for good (not replaced by a re-run, which registers anew
        without this): its registration and its tracker's history end here."""
        with self._lock:
            self._registrations.pop(app_id, None)
            self._trackers.pop(app_id, None)
        if not self._closed.is_set() and self.failure is None:
            self._call("DELETE", f"/ofnotebook/apps/{app_id}")

    def inject(self, app_id: str, input_name: str, data: bytes, content_type: str) -> None:
        self._call("POST", f"/ofnotebook/apps/{app_id}/inputs/{input_name}", data=data,
                   headers={"Content-Type": content_type})

    def inject_many(self, app_id: str, input_name: str, items: Sequence[tuple[bytes, str]]
                    ) -> list[tuple[int, str]]:
        """Many test events in one request (framed, not JSON); the failed ``(index, error)``."""
        answer = self._call("POST", INPUTS_MANY_PATH.format(app_id=app_id, name=input_name),
                            data=pack_frames(items),
                            headers={"Content-Type": FRAMES_CONTENT_TYPE}).json()
        return [(int(index), str(error)) for index, error in answer["failed"]]

    def read_state(self, app_id: str, store: str, key: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/ofnotebook/apps/{app_id}/states/{store}/{key}").json())

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/ofnotebook/stats").json())

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, app_id: str, callback: Callable[[dict[str, Any]], None]
                  ) -> Callable[[], None]:
        with self._lock:
            self._subscribers.setdefault(app_id, []).append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers.get(app_id, []):
                    self._subscribers[app_id].remove(callback)
        return unsubscribe

    def tracker(self, app_id: str) -> EventTracker:
        """The events tracker of app ``app_id``, one per app id for the stand-in's life: a
        cell re-run (a new deployment of the same name) shows the counts and dead letters of
        the runs before."""
        with self._lock:
            return self._trackers.setdefault(app_id, EventTracker())

    def _follow(self) -> None:
        import requests

        while not self._closed.is_set():
            if not self._up.wait(1.0):
                continue
            if self.failure:
                return
            with self._lock:
                epoch, after = self._epoch, self.last_seq
            try:
                response = self._session.get(
                    f"{self.base}/ofnotebook/events",
                    params={"after": after, "wait": 5}, timeout=15)
                body = response.json()
            except (requests.RequestException, ValueError):
                self._closed.wait(0.2)
                continue
            events = body.get("events", [])
            resync = body.get("resync")
            with self._dispatching:
                with self._lock:
                    if epoch != self._epoch:
                        continue  # answered by a process that died since: its seqs are void
                    if resync:
                        self.last_seq = max(self.last_seq, int(resync["seq"]))
                    for event in events:
                        self.last_seq = max(self.last_seq, int(event["seq"]))
                if resync:  # fell behind the log: exact counts first, then the newest records
                    self._resync(resync)
                for event in events:
                    with self._lock:
                        tracker = self._trackers.get(event["app"])
                        callbacks = list(self._subscribers.get(event["app"], ()))
                    for callback in ([tracker] if tracker else []) + callbacks:
                        try:
                            callback(event)
                        except Exception:  # a broken view must not stop the stream
                            pass
            if len(events) >= FOLLOW_BUSY:  # under load: a batch per poll, not an event
                self._closed.wait(FOLLOW_LINGER)

    def _resync(self, resync: dict[str, Any]) -> None:
        """Hand each app's exact counts (``protocol.EVENTS_PATH``) to its tracker, and a
        ``RESYNC`` record of how many of its records were missed to its subscribers."""
        for app_id, entry in resync.get("apps", {}).items():
            with self._lock:
                tracker = self._trackers.get(app_id)
                callbacks = list(self._subscribers.get(app_id, ()))
            missed = tracker.resync(entry.get("counts", {}), entry.get("inputs"),
                                    entry.get("types")) if tracker else 0
            if not missed:
                continue
            record = {"kind": RESYNC, "app": app_id, "time": time.time(), "missed": missed}
            for callback in callbacks:
                try:
                    callback(record)
                except Exception:  # a broken view must not stop the stream
                    pass

    @property
    def restarting(self) -> bool:
        """The process died and is being started again (calls wait meanwhile)."""
        return not self._up.is_set() and not self._closed.is_set()

    @property
    def alive(self) -> bool:
        """Serving, or being started again after it died (calls wait for that)."""
        return not self._closed.is_set() and self.failure is None

    def close(self) -> None:
        self._closed.set()
        self._up.set()
        self._finalizer()
        try:
            self._session.close()
        except AttributeError:  # closed before the session existed
            pass


class _Unreachable(DeployError):
    """The control API did not answer (connection refused or reset, timeout)."""


def _terminate_all(procs: list[subprocess.Popen[str]], closed: threading.Event) -> None:
    closed.set()
    for proc in procs:
        standin_process.terminate(proc)


_instance: StandIn | None = None
_instance_lock = threading.Lock()


def get_standin() -> StandIn:
    """The kernel's stand-in, started on first use, and anew if the last one could not be
    restarted (its apps' trackers carry over: their counts belong to the names)."""
    global _instance
    with _instance_lock:
        if _instance is None or not _instance.alive:
            previous, _instance = _instance, StandIn()
            if previous is not None and not previous._closed.is_set():
                _instance._trackers.update(previous._trackers)
        return _instance


def current_standin() -> StandIn | None:
    """The kernel's stand-in if it runs; never starts one (a function without Dapr components
    registers with a running stand-in only, to be reachable by service invocation)."""
    with _instance_lock:
        return _instance if _instance is not None and _instance.alive else None


def stop_standin() -> None:
    global _instance
    with _instance_lock:
        if _instance is not None:
            _instance.close()
            _instance = None


atexit.register(stop_standin)
