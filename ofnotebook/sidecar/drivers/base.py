"""The driver contract: how the local Dapr stand-in talks to one real broker or store.

One :class:`Driver` instance serves one Dapr component (a ``Component`` spec: name, type,
metadata). The stand-in calls:

* ``start()`` once; it connects and raises :class:`ComponentError` with a clear message when the
  broker is unreachable or the metadata is wrong (missing required key, bad value);
* ``invoke(operation, data, metadata)`` for output bindings (``InvokeBinding``);
* ``publish(topic, data, metadata)`` for pub/sub (``PublishEvent``): ``data`` is the complete
  CloudEvent JSON (bytes) the stand-in built, stored in the broker as-is, as daprd does;
* ``subscribe(topic, deliver)`` for pub/sub inputs and ``read(deliver)`` for input bindings:
  start a consumer (a daemon thread, or the client's own loop) that calls ``deliver(event)``
  for every message. ``deliver`` is non-blocking: it queues the event and returns; it may block
  briefly for back-pressure. When delivery ends (the app acknowledged it, or it was recorded as
  a dead letter after the last retry) the stand-in calls ``event.ack()`` from another thread;
  the driver then acknowledges the message to the broker (XACK, basic_ack, commit...). A driver
  that must acknowledge in order sets ``ordered = True`` and the stand-in delivers its events
  one at a time;
* ``get_state/save_state/delete_state`` for state stores;
* ``close()`` once: stop consumers and disconnect. It must not raise.

Every method not supported by a component type raises ``ComponentError``.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping


class ComponentError(Exception):
    """Raised when a component cannot be created, reached or used; the message says the fix."""


@dataclass
class ComponentConfig:
    """A Dapr component as the stand-in receives it: the generated name, type and metadata."""

    name: str
    type: str
    metadata: dict[str, str] = field(default_factory=dict)
    version: str = "v1"

    def require(self, key: str) -> str:
        value = self.metadata.get(key)
        if value in (None, ""):
            raise ComponentError(
                f"component {self.name!r} ({self.type}) needs metadata {key!r}; "
                f"add it to the component spec (for example {key}=...)")
        return str(value)

    def get(self, key: str, default: str = "") -> str:
        value = self.metadata.get(key)
        return default if value in (None, "") else str(value)


@dataclass
class InboundEvent:
    """One message read from a broker, on its way to the app."""

    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    _ack: Callable[[], None] | None = field(default=None, repr=False)
    _acked: threading.Event = field(default_factory=threading.Event, repr=False)

    def ack(self) -> None:
        """Acknowledge to the broker exactly once (delivered, or dead-lettered)."""
        if self._acked.is_set():
            return
        self._acked.set()
        if self._ack is not None:
            self._ack()


Deliver = Callable[[InboundEvent], None]
_log = logging.getLogger(__name__)


class DeliveryPump:
    """Calls ``deliver`` on its own thread, so a slow app never stalls a client's network
    thread (keepalives, heartbeats, acks). Events still queued at ``close`` stay
    unacknowledged, so the broker redelivers them."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Deliver, InboundEvent] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, deliver: Deliver, event: InboundEvent) -> None:
        self._queue.put((deliver, event))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None and not self._stopped.is_set():
            try:
                item[0](item[1])
            except Exception:  # one bad event must not stop the consumer
                _log.exception("delivering a message failed")

    def close(self) -> None:
        self._stopped.set()
        self._queue.put(None)
        self._thread.join(1.0)


class Driver:
    """Base class: a driver for the component types in ``types``."""

    types: ClassVar[tuple[str, ...]] = ()
    #: True when the broker needs acknowledgements in order (one event in flight at a time).
    ordered: ClassVar[bool] = False

    def __init__(self, component: ComponentConfig) -> None:
        self.component = component

    @property
    def name(self) -> str:
        return self.component.name

    def start(self) -> None:
        """Connect; raise ``ComponentError`` if the broker cannot be reached."""

    def close(self) -> None:
        """Stop consumers and disconnect. Never raises."""

    def _unsupported(self, what: str) -> ComponentError:
        return ComponentError(f"component {self.name!r} of type {self.component.type} does not "
                              f"support {what}")

    def invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
               ) -> tuple[bytes, dict[str, str]]:
        raise self._unsupported("output binding calls")

    def publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        raise self._unsupported("publishing")

    def subscribe(self, topic: str, deliver: Deliver) -> None:
        raise self._unsupported("subscriptions")

    def read(self, deliver: Deliver) -> None:
        raise self._unsupported("input binding events")

    def get_state(self, key: str) -> tuple[bytes | None, str]:
        raise self._unsupported("reading state")

    def save_state(self, key: str, value: bytes, etag: str | None = None) -> None:
        raise self._unsupported("saving state")

    def delete_state(self, key: str, etag: str | None = None) -> None:
        raise self._unsupported("deleting state")
