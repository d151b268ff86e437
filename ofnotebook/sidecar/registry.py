"""All apps known to the stand-in: their drivers (started and closed here) and dispatchers.

Registering an app follows daprd's start-up: each component's metadata is read as daprd reads
it (``metadata.py``: warnings, not refusals), its driver starts (a failure names the component,
its type and the driver's reason, and nothing of the app stays registered), then the app is
asked what it handles (``ListInputBindings``, ``ListTopicSubscriptions``) when it serves
AppCallback. A subscription the app declares itself, on any pub/sub component the stand-in
knows, gets a consumer of its own (consumer ID: the app id, as daprd's; MQTT client IDs and
JetStream durables get the topic too, since each subscription has its own connection), so an
app written with ``dapr.ext.grpc``'s ``@app.subscribe`` receives its topics; the dead-letter
topic and routes of every subscription come from the same answer.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import replace
from typing import Any

import grpc
from google.protobuf import empty_pb2

from .apps import App, Endpoint
from .bulk import BulkSettings
from .delivery import DEFAULT_ATTEMPTS, Dispatcher, rule_error
from .drivers import ComponentConfig, ComponentError, Driver, create_driver
from .eventlog import EventLog
from .metadata import DEAD_LETTER_KEY, read_metadata
from .protocol import (APP_GRPC, APP_NONE, APP_PROTOCOLS, EVENT_REGISTERED, EVENT_UNREGISTERED,
                       ROLE_INPUT)

#: How a start failure names each role to the user.
_ROLE_NAMES = {"input": "input", "output": "output", "state": "state store",
               "component": "component"}
#: Metadata that names one connection (MQTT's client ID) or one consumer (JetStream's durable):
#: a subscription the app declares itself gets its own, suffixed with its topic.
_PER_SUBSCRIPTION = (("pubsub.mqtt", "consumerID"), ("pubsub.jetstream", "durableName"))
#: A driver's message often starts by naming its component; the registry names it already.
_LEADING_NAME = re.compile(r"^component '[^']*'(?: \([^)]*\))?:?\s*")


class ComponentStartError(ComponentError):
    """Raised when a component of an app cannot start: names it, its type and the reason."""


class Registry:
    """All apps and their components; creates and closes drivers."""

    def __init__(self, log: EventLog, attempts: int = DEFAULT_ATTEMPTS) -> None:
        self.log = log
        self.attempts = attempts
        self.apps: dict[str, App] = {}
        self._dispatchers: dict[str, list[Dispatcher]] = {}
        self._warnings: dict[str, list[str]] = {}
        self._lock = threading.RLock()

    def find(self, component_name: str) -> tuple[App, Endpoint]:
        with self._lock:
            for app in self.apps.values():
                for ep in app.endpoints:
                    if ep.component.name == component_name and not ep.discovered:
                        return app, ep
        raise KeyError(component_name)

    def components(self) -> list[ComponentConfig]:
        """Every registered component, once each, for ``GetMetadata``."""
        with self._lock:
            found: dict[str, ComponentConfig] = {}
            for app in self.apps.values():
                for ep in app.endpoints:
                    if not ep.discovered:
                        found.setdefault(ep.component.name, ep.component)
            return list(found.values())

    def dispatcher(self, app_id: str, endpoint: Endpoint) -> Dispatcher | None:
        """The dispatcher delivering ``endpoint``'s events to ``app_id``, if it is an input."""
        with self._lock:
            return next((d for d in self._dispatchers.get(app_id, [])
                         if d.endpoint is endpoint), None)

    def register_payload(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT protocol.APPS_PATH``: ``{"port", "timeout", "appProtocol", "components"}``
        from the kernel. The same components again (the function restarted) only move the
        port. Without ``appProtocol`` (an older kernel) an app with inputs serves AppCallback
        and any other app nothing."""
        components = body.get("components") or []
        protocol = body.get("appProtocol")
        if protocol is None:
            protocol = APP_GRPC if any(c.get("role") == ROLE_INPUT for c in components) \
                else APP_NONE
        if protocol not in APP_PROTOCOLS:
            raise ComponentError(f"appProtocol {protocol!r} is not one of "
                                 f"{', '.join(repr(p) for p in APP_PROTOCOLS)}")
        signature = json.dumps([protocol, components], sort_keys=True)
        return self.register(app_id, int(body["port"]),
                             [Endpoint.from_payload(c) for c in components], signature,
                             float(body.get("timeout", 20)), protocol)

    def register(self, app_id: str, port: int, endpoints: list[Endpoint], signature: str,
                 connect_timeout: float, protocol: str = APP_GRPC) -> dict[str, Any]:
        """Add or update an app; start its drivers and consumers. Raises ComponentError."""
        with self._lock:
            current = self.apps.get(app_id)
            if current is not None and current.signature == signature:
                current.set_port(port)
                return self._answer(current, self._discover(current, connect_timeout))
            # A changed app replaces the registered one only once it is up: if its components
            # cannot start, the one registered (a function still running) keeps working.
            app = App(app_id=app_id, port=port, endpoints=endpoints, signature=signature,
                      protocol=protocol)
            warnings: list[str] = []
            started: list[Driver] = []
            try:
                for ep in endpoints:
                    try:
                        ep.component, found = read_metadata(ep.component, repr(ep.name))
                    except ComponentError as exc:
                        raise self._start_error(ep, exc) from None
                    warnings += found
                    if ep.role == ROLE_INPUT and ep.kind == "pubsub":
                        ep.dead_letter_topic = ep.component.get(DEAD_LETTER_KEY)
                for ep in endpoints:
                    started.append(self._start_driver(ep))
                discovered = self._discover(app, connect_timeout)
                warnings += self._follow_subscriptions(app, discovered["subscriptions"],
                                                       started)
                dispatchers = []
                for ep in app.inputs():
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
            if current is not None:
                self.unregister(app_id)
            self.apps[app_id] = app
            self._dispatchers[app_id] = dispatchers
            self._warnings[app_id] = warnings
            for warning in warnings:
                print(f"ofnotebook stand-in: warning: app {app_id!r}: {warning}", flush=True)
            self.log.record(app_id, EVENT_REGISTERED, port=port,
                            components=[ep.component.name for ep in endpoints])
            return self._answer(app, discovered)

    def _answer(self, app: App, discovered: dict[str, Any]) -> dict[str, Any]:
        return {"bindings": discovered["bindings"],
                "subscriptions": [[s.pubsub_name, s.topic] for s in discovered["subscriptions"]],
                "warnings": list(self._warnings.get(app.app_id, []))}

    def _start_error(self, ep: Endpoint, exc: ComponentError) -> ComponentStartError:
        what = _ROLE_NAMES.get(ep.role, ep.role)
        if ep.discovered:
            what = "subscription"
        reason = _LEADING_NAME.sub("", str(exc), count=1)
        return ComponentStartError(f"{what} {ep.name!r} ({ep.component.type}, Dapr component "
                                   f"{ep.component.name!r}) failed to start: {reason}")

    def _start_driver(self, ep: Endpoint) -> Driver:
        try:
            driver = create_driver(ep.component)
            driver.start()
        except ComponentError as exc:
            raise self._start_error(ep, exc) from None
        ep.driver = driver
        return driver

    def _discover(self, app: App, timeout: float) -> dict[str, Any]:
        """Ask the app what it handles (as daprd does), retrying until it answers. Only an app
        serving AppCallback is asked; a sync function serves HTTP."""
        if app.protocol != APP_GRPC:
            return {"bindings": [], "subscriptions": []}
        deadline = time.monotonic() + timeout
        while True:
            try:
                stub = app.stub()
                bindings = stub.ListInputBindings(empty_pb2.Empty(), timeout=2).bindings
                subs = stub.ListTopicSubscriptions(empty_pb2.Empty(), timeout=2).subscriptions
                return {"bindings": list(bindings), "subscriptions": list(subs)}
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise ComponentError(
                        f"the function {app.app_id!r} did not answer on its AppCallback port "
                        f"{app.port} within {timeout:.0f} s ({exc.code().name})") from exc
                time.sleep(0.02)

    def _known_component(self, name: str, app: App) -> ComponentConfig | None:
        """The pub/sub component ``name`` of ``app``, else of any registered app."""
        for candidate in [app, *self.apps.values()]:
            for ep in candidate.endpoints:
                if ep.component.name == name and not ep.discovered:
                    return ep.component
        return None

    def _follow_subscriptions(self, app: App, subscriptions: list[Any],
                              started: list[Driver]) -> list[str]:
        """Take each subscription the app declared: its dead-letter topic and routes for a
        declared input, else a consumer of its own. Returns warnings."""
        warnings: list[str] = []
        for sub in subscriptions:
            rules = tuple((rule.match, rule.path) for rule in sub.routes.rules)
            warnings += [f"topic {sub.topic!r} of {sub.pubsub_name!r}: {error}"
                         for error in (rule_error(match) for match, _ in rules if match) if error]
            declared = next((ep for ep in app.inputs() if ep.kind == "pubsub"
                             and ep.component.name == sub.pubsub_name and ep.topic == sub.topic),
                            None)
            if declared is not None:
                declared.dead_letter_topic = sub.dead_letter_topic or declared.dead_letter_topic
                declared.default_path, declared.rules = sub.routes.default, rules
                declared.bulk = BulkSettings.from_subscription(sub)
                continue
            config = self._known_component(sub.pubsub_name, app)
            if config is None or not config.type.startswith("pubsub."):
                known = "not a pub/sub component" if config else (
                    "not registered with the local stand-in")
                warnings.append(f"the app subscribes to topic {sub.topic!r} of "
                                f"{sub.pubsub_name!r}, which is {known}; declare the pub/sub "
                                "component (--component NAME=URI) to receive its events")
                continue
            metadata = {**config.metadata, **dict(sub.metadata)}
            metadata["consumerID"] = config.metadata.get("consumerID") or app.app_id
            # Each subscription has a driver (a connection) of its own: where the broker
            # knows a connection or consumer by that name, it must be the subscription's.
            for kind, key in _PER_SUBSCRIPTION:
                if config.type.startswith(kind):
                    base = config.metadata.get(key) or app.app_id
                    metadata[key] = re.sub(r"[^A-Za-z0-9_-]", "-", f"{base}-{sub.topic}")
            ep = Endpoint(role=ROLE_INPUT, name=f"{sub.pubsub_name}/{sub.topic}",
                          component=replace(config, metadata=metadata), topic=sub.topic,
                          dead_letter_topic=sub.dead_letter_topic
                          or config.metadata.get(DEAD_LETTER_KEY, ""),
                          default_path=sub.routes.default, rules=rules, discovered=True,
                          bulk=BulkSettings.from_subscription(sub))
            started.append(self._start_driver(ep))
            app.endpoints.append(ep)
        return warnings

    def unregister(self, app_id: str) -> bool:
        with self._lock:
            app = self.apps.pop(app_id, None)
            dispatchers = self._dispatchers.pop(app_id, [])
            self._warnings.pop(app_id, None)
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
