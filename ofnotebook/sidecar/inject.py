"""Test events from the notebook into a function's input, through the real broker where there
is one, as a producer would send them: one (``inject``) or many in one call (``inject_many``,
``handle.publish_many``), which a pub/sub input publishes in bulk (one broker round trip)."""

from __future__ import annotations

import threading
from typing import Callable, Sequence

from .apps import App, Endpoint
from .drivers import ComponentConfig, ComponentError, Driver, create_driver
from .drivers.base import InboundEvent
from .registry import Registry
from .protocol import ROLE_INPUT, no_input_message

#: Events of one in-memory input that may wait in the stand-in when a notebook's producer
#: is answered (two ``publish_many`` chunks: delivery never runs dry in between).
BACKLOG = 2000
BACKLOG_WAIT = 10.0  # s: a stuck function slows the producer down, never hangs it
#: The component types whose events wait in the stand-in, not in a broker.
IN_MEMORY_TYPES = ("pubsub.in-memory", "bindings.in-memory")

# Bindings that write where they read: the input's own driver produces the test event.
_SELF_PRODUCING = ("in-memory", "mqtt3", "mqtt", "rabbitmq")

#: ``publish_many(app, endpoint, [(data, content_type), ...])`` -> the failed ``(index,
#: error)``: the core's bulk publish path.
PublishMany = Callable[[App, Endpoint, Sequence[tuple[bytes, str]]], list[tuple[int, str]]]


class Injector:
    """Feeds ``POST protocol.INPUTS_PATH``; keeps one producer per Kafka input binding."""

    def __init__(self, registry: Registry,
                 publish: Callable[[App, Endpoint, str, bytes, str], None],
                 publish_many: PublishMany) -> None:
        self.registry = registry
        self._publish = publish  # the core's publish path: a pub/sub test event is a CloudEvent
        self._publish_many = publish_many
        self._producers: dict[str, Driver] = {}
        self._lock = threading.Lock()

    def _input(self, app: App, input_name: str) -> Endpoint:
        ep = app.endpoint(ROLE_INPUT, input_name)
        if ep is None or ep.driver is None:
            raise ComponentError(no_input_message(app.app_id, input_name,
                                                  (e.name for e in app.inputs())))
        return ep

    def inject(self, app: App, input_name: str, data: bytes, content_type: str) -> None:
        ep = self._input(app, input_name)
        if ep.kind == "pubsub":
            self._publish(app, ep, ep.topic, data, content_type)
        else:
            self._produce(app, ep, data)
        self._hold_back(ep)

    def inject_many(self, app: App, input_name: str, items: Sequence[tuple[bytes, str]]
                    ) -> list[tuple[int, str]]:
        """Every ``(data, content_type)`` item into the input, in order; returns the failed
        ``(index, error)``. The input is checked before any item goes. A pub/sub input gets
        them in one bulk publish (one broker round trip where the driver batches); a binding
        has no bulk write in Dapr, so its producer is called item by item."""
        ep = self._input(app, input_name)
        if ep.kind == "pubsub":
            failed = self._publish_many(app, ep, items)
        else:
            failed = []
            for index, (data, _content_type) in enumerate(items):
                try:
                    self._produce(app, ep, data)
                except ComponentError as exc:
                    failed.append((index, str(exc)))
        self._hold_back(ep)
        return failed

    @staticmethod
    def _hold_back(ep: Endpoint) -> None:
        """The in-memory bus has no broker to keep a backlog: its events wait in the
        stand-in. Answer the notebook's producer only once at most :data:`BACKLOG` of this
        input's events wait (at most :data:`BACKLOG_WAIT` s), so ``publish_many`` of a million
        events runs at delivery speed in bounded memory. Functions' own sends never wait
        here (a function publishing to its own input must not block on itself)."""
        if ep.component.type in IN_MEMORY_TYPES and ep.driver is not None:
            ep.driver.wait_for_room(BACKLOG, BACKLOG_WAIT)

    def _produce(self, app: App, ep: Endpoint, data: bytes) -> None:
        """A binding input's test event: through its broker, or straight to delivery."""
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
