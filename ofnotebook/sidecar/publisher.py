"""Outgoing events: what functions send (recorded for the notebook) and test events injected
from the notebook into an input, through the real broker where there is one."""

from __future__ import annotations

import threading
from typing import Mapping

from . import cloudevents
from .delivery import App, Endpoint, EventLog, Registry, payload_view
from .drivers import ComponentConfig, ComponentError, Driver, create_driver
from .drivers.base import InboundEvent


class Publisher:
    """Runs output calls through the drivers and records each one in the event log."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.log: EventLog = registry.log
        self._injectors: dict[str, Driver] = {}
        self._lock = threading.Lock()

    def invoke(self, app: App, ep: Endpoint, operation: str, data: bytes,
               metadata: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        if ep.kind != "bindings" or ep.driver is None:
            raise ComponentError(f"{ep.component.name!r} is a {ep.component.type} component, "
                                 f"not an output binding")
        try:
            result = ep.driver.invoke(operation or "create", data, metadata)
        except ComponentError as exc:
            self.log.record(app.app_id, "error", name=ep.name, error=str(exc))
            raise
        self.log.record(app.app_id, "out", name=ep.name, component=ep.component.name,
                        type=ep.component.type, operation=operation or "create",
                        metadata=dict(metadata), **payload_view(data))
        return result

    def publish(self, app: App, ep: Endpoint, topic: str, data: bytes, content_type: str,
                metadata: Mapping[str, str], source: str | None = None) -> None:
        if ep.kind != "pubsub" or ep.driver is None:
            raise ComponentError(f"{ep.component.name!r} is a {ep.component.type} component, "
                                 f"not a pub/sub component")
        topic = topic or ep.topic
        if metadata.get("rawPayload") == "true":
            body = data
        else:
            ce = cloudevents.new_cloud_event(app_id=source or app.app_id,
                                             pubsub_name=ep.component.name, topic=topic,
                                             data=data, data_content_type=content_type or None,
                                             metadata=metadata)
            body = cloudevents.to_bytes(ce)
        try:
            ep.driver.publish(topic, body, metadata)
        except ComponentError as exc:
            self.log.record(app.app_id, "error", name=ep.name, error=str(exc))
            raise
        if ep.role == "output":
            self.log.record(app.app_id, "out", name=ep.name, component=ep.component.name,
                            type=ep.component.type, topic=topic, content_type=content_type,
                            **payload_view(data, content_type))

    def inject(self, app: App, input_name: str, data: bytes, content_type: str) -> None:
        """A test event into ``input_name``: through the broker, as a producer would send it."""
        ep = next((e for e in app.endpoints if e.role == "input" and e.name == input_name), None)
        if ep is None or ep.driver is None:
            declared = ", ".join(e.name for e in app.endpoints if e.role == "input") or "none"
            raise ComponentError(f"{app.app_id!r} has no input {input_name!r} "
                                 f"(inputs: {declared})")
        if ep.kind == "pubsub":
            self.publish(app, ep, ep.topic, data, content_type, {}, source="ofnotebook")
            return
        producer = self._producer(ep)
        if producer is not None:
            producer.invoke("create", data, {})
            return
        # No broker to go through (cron): hand the event straight to the delivery path.
        for dispatcher in self.registry._dispatchers.get(app.app_id, []):
            if dispatcher.endpoint is ep:
                dispatcher(InboundEvent(data=data, metadata={"source": "ofnotebook"}))
                return

    def _producer(self, ep: Endpoint) -> Driver | None:
        kind = ep.component.type
        if kind.startswith("bindings.kafka"):
            with self._lock:
                driver = self._injectors.get(ep.component.name)
                if driver is None:
                    md = dict(ep.component.metadata)
                    md["publishTopic"] = md.get("topics", "").split(",")[0].strip()
                    driver = create_driver(ComponentConfig(name=ep.component.name + "-inject",
                                                           type=kind, metadata=md))
                    driver.start()
                    self._injectors[ep.component.name] = driver
            return driver
        if kind.split(".", 1)[1] in ("in-memory", "mqtt3", "mqtt", "rabbitmq"):
            return ep.driver  # these bindings write where they read
        return None

    def close(self) -> None:
        with self._lock:
            for driver in self._injectors.values():
                driver.close()
            self._injectors.clear()
