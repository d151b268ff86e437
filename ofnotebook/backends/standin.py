"""The kernel's side of the local Dapr-API stand-in: start it, register apps, follow events.

One stand-in process per kernel (``python -m ofnotebook.sidecar``, the server), started on the
first deployment that needs Dapr. A background thread long-polls its event log and hands each
event to the deployments that subscribed for their app, so outputs show up in the notebook
within milliseconds. :class:`StandIn` is the client of that process; :class:`StandInUser` is
what a deployment on the local or container target mixes in to use it (its events, test
events, state reads, and leaving the stand-in when stopped). The server is ``sidecar/``; this
module is the only kernel-side code that talks to it.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import weakref
from typing import Any, Callable

from ..context import component_name
from ..errors import DeployError, InvocationError, OfnotebookError
from ..sidecar.protocol import (API_TOKEN_ENV, APP_GRPC, APP_HTTP, APP_NONE, APP_TOKEN_ENV,
                                ROLE_COMPONENT, ROLE_INPUT, ROLE_OUTPUT, ROLE_STATE,
                                STANDIN_KEY_ENV, TOKEN_HEADER, app_token, callback_token)
from ..spec import FunctionSpec
from .events import EventTracker
from .processes import child_env, terminate

_START_TIMEOUT = 30.0
FOLLOW_LINGER = 0.01  # s; an isolated event is still seen at once


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
    """A running stand-in process: its ports, its control API and its event stream."""

    def __init__(self) -> None:
        import secrets

        self._app_key = secrets.token_hex(16)  # signs each function's own DAPR_API_TOKEN
        # Always a token: 127.0.0.1 is shared by every user of the machine (JupyterHub's local
        # spawners, shared servers), and the stand-in holds every payload. The user's own
        # DAPR_API_TOKEN wins; both reach the process in its environment, never on its
        # command line (which every user can read in ps).
        self.token: str = os.environ.get(API_TOKEN_ENV) or secrets.token_urlsafe(32)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "ofnotebook.sidecar", "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**child_env(), API_TOKEN_ENV: self.token, STANDIN_KEY_ENV: self._app_key},
            start_new_session=True, text=True, bufsize=1)
        self._finalizer = weakref.finalize(self, terminate, self.proc)
        self.logs: list[str] = []
        ports = self._read_ports()
        self.http_port: int = ports["http"]
        self.grpc_port: int = ports["grpc"]
        self.base = f"http://127.0.0.1:{self.http_port}"
        import requests

        self._session = requests.Session()
        self._session.trust_env = False
        self._session.headers[TOKEN_HEADER] = self.token
        self._subscribers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.last_seq = 0
        threading.Thread(target=self._drain, name="standin-output", daemon=True).start()
        threading.Thread(target=self._follow, name="standin-events", daemon=True).start()

    def _read_ports(self) -> dict[str, int]:
        assert self.proc.stdout is not None
        result: dict[str, int] = {}
        done = threading.Event()

        def read_first() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith('{"http"'):
                    result.update(json.loads(line))
                    break
                self.logs.append(line.rstrip())
            done.set()

        threading.Thread(target=read_first, daemon=True).start()
        if not done.wait(_START_TIMEOUT) or not result:
            self.close()
            raise DeployError("The local Dapr stand-in did not start. Its output:\n"
                              + "\n".join(self.logs[-20:]))
        return result

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.logs.append(line.rstrip())
            del self.logs[:-500]
        self.proc.stdout.close()

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

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        try:
            response = self._session.request(method, self.base + path, timeout=kwargs.pop(
                "timeout", 60), **kwargs)
        except requests.RequestException as exc:
            raise DeployError(f"The local Dapr stand-in is not reachable ({exc}); "
                              f"its last output:\n" + "\n".join(self.logs[-10:])) from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise DeployError(message)
        return response

    def register(self, app_id: str, port: int, spec: FunctionSpec, timeout: float) -> Any:
        """Register an app; its answer has the app's subscriptions and ``warnings`` about
        its components' metadata. An async function is called over AppCallback, a sync one
        over HTTP (service invocation), an app without a port not at all."""
        protocol = APP_NONE if not port else APP_GRPC if spec.runtime == "async" else APP_HTTP
        body = {"port": port, "timeout": timeout, "appProtocol": protocol,
                "components": components_payload(spec)}
        return self._call("PUT", f"/ofnotebook/apps/{app_id}", json=body,
                          timeout=timeout + 30).json()

    def unregister(self, app_id: str) -> None:
        if not self._closed.is_set() and self.proc.poll() is None:
            self._call("DELETE", f"/ofnotebook/apps/{app_id}")

    def inject(self, app_id: str, input_name: str, data: bytes, content_type: str) -> None:
        self._call("POST", f"/ofnotebook/apps/{app_id}/inputs/{input_name}", data=data,
                   headers={"Content-Type": content_type})

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

    def _follow(self) -> None:
        import requests

        while not self._closed.is_set() and self.proc.poll() is None:
            try:
                response = self._session.get(
                    f"{self.base}/ofnotebook/events",
                    params={"after": self.last_seq, "wait": 5}, timeout=15)
                body = response.json()
            except (requests.RequestException, ValueError):
                self._closed.wait(0.2)
                continue
            events = body.get("events", [])
            for event in events:
                self.last_seq = max(self.last_seq, int(event["seq"]))
                with self._lock:
                    callbacks = list(self._subscribers.get(event["app"], ()))
                for callback in callbacks:
                    try:
                        callback(event)
                    except Exception:  # a broken view must not stop the stream
                        pass
            if events:  # under load, gather a batch per poll rather than one poll per event
                self._closed.wait(FOLLOW_LINGER)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._closed.set()
        self._finalizer()
        try:
            self._session.close()
        except AttributeError:  # closed before the session existed
            pass


_instance: StandIn | None = None
_instance_lock = threading.Lock()


def get_standin() -> StandIn:
    """The kernel's stand-in, started on first use (and again if it died)."""
    global _instance
    with _instance_lock:
        if _instance is None or not _instance.alive:
            _instance = StandIn()
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


class StandInUser:
    """For deployments whose function talks Dapr through the kernel's local stand-in: its
    events tracker, test events, state reads, and leaving the stand-in when stopped. Mixed in
    before :class:`~.base.Deployment`, it implements the contract's ``publish``,
    ``read_state`` and ``events``."""

    name: str
    standin: StandIn | None = None

    def _attach_standin(self, standin: StandIn | None) -> None:
        self.standin = standin
        self._tracker = EventTracker()
        self._unsubscribe_events = (standin.subscribe(self.name, self._tracker)
                                    if standin else None)

    @property
    def events(self) -> EventTracker:
        """What the stand-in reported for this app (empty for a function without Dapr)."""
        return self._tracker

    def _need_standin(self) -> StandIn:
        if self.standin is None:
            raise OfnotebookError(f"Function {self.name!r} has no inputs, outputs or state "
                                  f"stores; declare them with --input/--output/--state.")
        return self.standin

    def publish(self, input_name: str, data: bytes, content_type: str) -> None:
        try:
            self._need_standin().inject(self.name, input_name, data, content_type)
        except DeployError as exc:
            raise InvocationError(str(exc), function_name=self.name) from None

    def read_state(self, store: str, key: str) -> dict[str, Any]:
        try:
            return self._need_standin().read_state(self.name, store, key)
        except DeployError as exc:
            raise InvocationError(str(exc), function_name=self.name) from None

    def _leave_standin(self, unregister: bool = True) -> None:
        """Stop following events; ``unregister`` also removes the app from the stand-in."""
        if self._unsubscribe_events is not None:
            self._unsubscribe_events()
            self._unsubscribe_events = None
        if unregister and self.standin is not None:
            try:
                self.standin.unregister(self.name)
            except DeployError:
                pass  # the stand-in is gone already: nothing left to release there
