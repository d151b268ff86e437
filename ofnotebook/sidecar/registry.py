"""All apps known to the stand-in: their drivers (started and closed here) and dispatchers."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
from google.protobuf import empty_pb2

from .apps import App, Endpoint
from .delivery import DEFAULT_ATTEMPTS, Dispatcher
from .drivers import ComponentConfig, ComponentError, Driver, create_driver
from .eventlog import EventLog
from .protocol import EVENT_REGISTERED, EVENT_UNREGISTERED, ROLE_INPUT


class Registry:
    """All apps and their components; creates and closes drivers."""

    def __init__(self, log: EventLog, attempts: int = DEFAULT_ATTEMPTS) -> None:
        self.log = log
        self.attempts = attempts
        self.apps: dict[str, App] = {}
        self._dispatchers: dict[str, list[Dispatcher]] = {}
        self._lock = threading.RLock()

    def find(self, component_name: str) -> tuple[App, Endpoint]:
        with self._lock:
            for app in self.apps.values():
                for ep in app.endpoints:
                    if ep.component.name == component_name:
                        return app, ep
        raise KeyError(component_name)

    def components(self) -> list[ComponentConfig]:
        """Every registered component, for ``GetMetadata``."""
        with self._lock:
            return [ep.component for app in self.apps.values() for ep in app.endpoints]

    def dispatcher(self, app_id: str, endpoint: Endpoint) -> Dispatcher | None:
        """The dispatcher delivering ``endpoint``'s events to ``app_id``, if it is an input."""
        with self._lock:
            return next((d for d in self._dispatchers.get(app_id, [])
                         if d.endpoint is endpoint), None)

    def register_payload(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT protocol.APPS_PATH``: ``{"port", "timeout", "components"}`` from the kernel.
        The same components again (the function restarted) only move the port."""
        components = body.get("components") or []
        signature = json.dumps(components, sort_keys=True)
        return self.register(app_id, int(body["port"]),
                             [Endpoint.from_payload(c) for c in components], signature,
                             float(body.get("timeout", 20)))

    def register(self, app_id: str, port: int, endpoints: list[Endpoint], signature: str,
                 connect_timeout: float) -> dict[str, Any]:
        """Add or update an app; start its drivers and consumers. Raises ComponentError."""
        with self._lock:
            current = self.apps.get(app_id)
            if current is not None and current.signature == signature:
                current.set_port(port)
                return self._discover(current, connect_timeout)
            if current is not None:
                self.unregister(app_id)
            app = App(app_id=app_id, port=port, endpoints=endpoints, signature=signature)
            started: list[Driver] = []
            try:
                for ep in endpoints:
                    ep.driver = create_driver(ep.component)
                    ep.driver.start()
                    started.append(ep.driver)
                found = self._discover(app, connect_timeout)
                dispatchers = []
                for ep in endpoints:
                    if ep.role != ROLE_INPUT:
                        continue
                    dispatcher = Dispatcher(app, ep, self.log, self.attempts)
                    dispatchers.append(dispatcher)
                    assert ep.driver is not None
                    if ep.kind == "bindings":
                        ep.driver.read(dispatcher)
                    else:
                        ep.driver.subscribe(ep.topic, dispatcher)
            except Exception:
                for driver in started:
                    driver.close()
                app.close_channels()
                raise
            self.apps[app_id] = app
            self._dispatchers[app_id] = dispatchers
            self.log.record(app_id, EVENT_REGISTERED, port=port,
                            components=[ep.component.name for ep in endpoints])
            return found

    def _discover(self, app: App, timeout: float) -> dict[str, Any]:
        """Ask the app what it handles (as daprd does), retrying until it answers.

        Only apps with inputs serve AppCallback; a sync function with outputs serves HTTP.
        """
        if not app.inputs():
            return {"bindings": [], "subscriptions": []}
        deadline = time.monotonic() + timeout
        while True:
            try:
                stub = app.stub()
                bindings = stub.ListInputBindings(empty_pb2.Empty(), timeout=2).bindings
                subs = stub.ListTopicSubscriptions(empty_pb2.Empty(), timeout=2).subscriptions
                return {"bindings": list(bindings),
                        "subscriptions": [[s.pubsub_name, s.topic] for s in subs]}
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise ComponentError(
                        f"the function {app.app_id!r} did not answer on its AppCallback port "
                        f"{app.port} within {timeout:.0f} s ({exc.code().name})") from exc
                time.sleep(0.02)

    def unregister(self, app_id: str) -> bool:
        with self._lock:
            app = self.apps.pop(app_id, None)
            dispatchers = self._dispatchers.pop(app_id, [])
        if app is None:
            return False
        for dispatcher in dispatchers:
            dispatcher.close()
        for ep in app.endpoints:
            if ep.driver is not None:
                ep.driver.close()
        app.close_channels()
        self.log.record(app_id, EVENT_UNREGISTERED)
        return True

    def close(self) -> None:
        for app_id in list(self.apps):
            self.unregister(app_id)
