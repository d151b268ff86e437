"""Test events from the notebook into a function's input, through the real broker where there
is one, as a producer would send them."""

from __future__ import annotations

import threading
from typing import Callable

from .apps import App, Endpoint
from .drivers import ComponentConfig, ComponentError, Driver, create_driver
from .drivers.base import InboundEvent
from .registry import Registry
from .protocol import ROLE_INPUT

# Bindings that write where they read: the input's own driver produces the test event.
_SELF_PRODUCING = ("in-memory", "mqtt3", "mqtt", "rabbitmq")


class Injector:
    """Feeds ``POST protocol.INPUTS_PATH``; keeps one producer per Kafka input binding."""

    def __init__(self, registry: Registry,
                 publish: Callable[[App, Endpoint, str, bytes, str], None]) -> None:
        self.registry = registry
        self._publish = publish  # the core's publish path: a pub/sub test event is a CloudEvent
        self._producers: dict[str, Driver] = {}
        self._lock = threading.Lock()

    def inject(self, app: App, input_name: str, data: bytes, content_type: str) -> None:
        ep = app.endpoint(ROLE_INPUT, input_name)
        if ep is None or ep.driver is None:
            declared = ", ".join(e.name for e in app.inputs()) or "none"
            raise ComponentError(f"{app.app_id!r} has no input {input_name!r} "
                                 f"(inputs: {declared})")
        if ep.kind == "pubsub":
            self._publish(app, ep, ep.topic, data, content_type)
            return
        producer = self._producer(ep)
        if producer is not None:
            producer.invoke("create", data, {})
            return
        # No broker to go through (cron): hand the event straight to the delivery path.
        dispatcher = self.registry.dispatcher(app.app_id, ep)
        if dispatcher is not None:
            dispatcher(InboundEvent(data=data, metadata={"source": "ofnotebook"}))

    def _producer(self, ep: Endpoint) -> Driver | None:
        kind = ep.component.type
        if kind.startswith("bindings.kafka"):
            with self._lock:
                driver = self._producers.get(ep.component.name)
                if driver is None:
                    md = dict(ep.component.metadata)
                    md["publishTopic"] = md.get("topics", "").split(",")[0].strip()
                    driver = create_driver(ComponentConfig(name=ep.component.name + "-inject",
                                                           type=kind, metadata=md))
                    driver.start()
                    self._producers[ep.component.name] = driver
            return driver
        if kind.split(".", 1)[1] in _SELF_PRODUCING:
            return ep.driver
        return None

    def close(self) -> None:
        with self._lock:
            for driver in self._producers.values():
                driver.close()
            self._producers.clear()
