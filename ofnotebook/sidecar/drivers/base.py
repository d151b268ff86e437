"""The driver contract: how the local Dapr stand-in talks to one real broker or store.

One :class:`Driver` instance serves one Dapr component (a ``Component`` spec: name, type,
metadata). The stand-in calls:

* ``start()`` once; it connects and raises :class:`ComponentError` with a clear message when the
  broker is unreachable or the metadata is wrong (missing required key, bad value);
* ``invoke(operation, data, metadata)`` for output bindings (``InvokeBinding``);
* ``publish(topic, data, metadata)`` for pub/sub (``PublishEvent``): ``data`` is the complete
  CloudEvent JSON (bytes) the stand-in built, stored in the broker as-is, as daprd does;
  ``publish_many(topic, entries)`` for many at once (``BulkPublishEvent``, test events of
  ``handle.publish_many``): one broker round trip where the broker allows it (the default
  publishes one by one), and the failures entry by entry;
* ``subscribe(topic, deliver)`` for pub/sub inputs and ``read(deliver)`` for input bindings:
  start a consumer (a daemon thread, or the client's own loop) that calls ``deliver(event)``
  for every message. ``deliver`` is non-blocking: it queues the event and returns; it may block
  briefly for back-pressure. When delivery ends (the app acknowledged it, or it was recorded as
  a dead letter after the last retry) the stand-in calls ``event.ack()`` from another thread;
  the driver then acknowledges the message to the broker (XACK, basic_ack, commit...). A driver
  that must acknowledge in order sets ``ordered = True`` and the stand-in delivers its events
  one at a time;
* ``get_state/save_state/delete_state`` for state stores, and ``transact(operations)`` for
  ``ExecuteStateTransaction``: all of the :class:`StateOperation` s or none, in the store's own
  transaction. A stale etag raises :class:`EtagMismatch`, a malformed one :class:`EtagInvalid`
  (daprd's ``ETagMismatch`` / ``ETagInvalid``), so the API maps them without reading messages;
* ``get_secret(key)`` and ``bulk_secret()`` for secret stores;
* ``close()`` once: stop consumers and disconnect. It must not raise.

Every method not supported by a component type raises ``ComponentError``: :class:`Driver`
routes each verb by the component's kind (``VERB_KINDS``), so a subclass writes only the verbs
it serves (``_invoke``, ``_publish``...), and guards the started state and the close budget.
Events reach ``deliver`` through ``Driver._hand_off`` (a :class:`DeliveryPump` per driver),
never on a client's network thread or a publisher's call. A missing client library is an
``ImportError`` at import, which the registry (``drivers/__init__.py``) turns into the
install hint.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, ClassVar, Mapping, Sequence, TypeVar


class ComponentError(Exception):
    """Raised when a component cannot be created, reached or used; the message says the fix."""


class EtagMismatch(ComponentError):
    """Raised when a state write's etag is not the stored one (daprd: ETagMismatch)."""


class EtagInvalid(ComponentError):
    """Raised when an etag cannot be one of this store's (daprd: ETagInvalid)."""


@dataclass(frozen=True)
class StateOperation:
    """One operation of a state transaction: ``upsert`` (``value``) or ``delete`` of ``key``,
    conditional on ``etag`` when it is given."""

    kind: str  # STATE_OPERATIONS
    key: str
    value: bytes = b""
    etag: str | None = None


#: The operation types of ``ExecuteStateTransaction`` (Dapr's ``state.OperationType``).
STATE_OPERATIONS = ("upsert", "delete")


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


#: Guards every InboundEvent's acked flag (a moment each): one lock for all, not an Event
#: per message (creating a threading.Event cost 6 of an event's 8 us at 10,000 events/s).
_ACK_LOCK = threading.Lock()


@dataclass(slots=True)
class InboundEvent:
    """One message read from a broker, on its way to the app."""

    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    _ack: Callable[[], None] | None = field(default=None, repr=False)
    _acked: bool = field(default=False, repr=False)

    @property
    def acked(self) -> bool:
        """Whether :meth:`ack` was called (delivered, or dead-lettered)."""
        return self._acked

    def ack(self) -> None:
        """Acknowledge to the broker exactly once (delivered, or dead-lettered)."""
        with _ACK_LOCK:
            if self._acked:
                return
            self._acked = True
        if self._ack is not None:
            self._ack()


Deliver = Callable[[InboundEvent], None]
_ClientT = TypeVar("_ClientT")
_log = logging.getLogger(__name__)

#: The component kind (the type before its dot) each verb belongs to, as Dapr's API splits it.
VERB_KINDS: Mapping[str, str] = MappingProxyType({
    "invoke": "bindings", "read": "bindings", "publish": "pubsub", "subscribe": "pubsub",
    "get_state": "state", "save_state": "state", "delete_state": "state", "transact": "state",
    "get_secret": "secretstores", "bulk_secret": "secretstores"})
_VERB_NAMES = {"invoke": "output binding calls", "read": "input binding events",
               "publish": "publishing", "subscribe": "subscriptions", "get_state": "reading state",
               "save_state": "saving state", "delete_state": "deleting state",
               "transact": "state transactions", "get_secret": "reading secrets",
               "bulk_secret": "reading all secrets"}
#: Seconds ``close()`` may take in all: the stand-in closes every driver of an app in turn.
CLOSE_BUDGET = 4.5


class DeliveryPump:
    """Calls ``deliver`` on its own thread, so a slow app never stalls a client's network
    thread (keepalives, heartbeats, acks) or a publisher's call. Events still queued at
    ``close`` stay unacknowledged, so the broker redelivers them. With ``maxsize``, ``put``
    blocks while that many events wait: back-pressure for a consumer loop that may block."""

    def __init__(self, name: str, maxsize: int = 0) -> None:
        # Each item is a batch (one event, or the events of one bulk publish: one wake-up).
        self._queue: queue.Queue[tuple[Deliver, Sequence[InboundEvent]]] = queue.Queue(maxsize)
        self._stopped = threading.Event()
        self._pending = 0  # events put and not yet handed to ``deliver`` (nor dropped)
        self._drained = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, deliver: Deliver, event: InboundEvent) -> None:
        self.put_many(deliver, (event,))

    def put_many(self, deliver: Deliver, events: Sequence[InboundEvent]) -> None:
        """Queue ``events`` for ``deliver``, in order, as one item: one queue operation and
        one wake-up of the pump's thread for a whole batch (``maxsize`` counts batches)."""
        with self._drained:
            self._pending += len(events)
        while not self._stopped.is_set():
            try:
                self._queue.put((deliver, events), timeout=0.2)
                return
            except queue.Full:
                continue

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        """Block while more than ``limit`` events wait in this pump, at most ``timeout``
        seconds; whether there is room. A producer that can outrun delivery (the notebook's
        ``publish_many`` into the in-memory bus, which has no broker to hold a backlog) is
        held back by it, so the stand-in holds a bounded backlog, not the producer's all."""
        with self._drained:
            return self._drained.wait_for(
                lambda: self._pending <= limit or self._stopped.is_set(), timeout)

    def _delivered(self, count: int = 1) -> None:
        with self._drained:
            self._pending -= count
            self._drained.notify_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                deliver, events = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            for index, event in enumerate(events):
                if self._stopped.is_set():
                    self._delivered(len(events) - index)
                    return
                try:
                    deliver(event)
                except Exception:  # one bad event must not stop the consumer
                    _log.exception("delivering a message failed")
                finally:
                    self._delivered()

    def close(self, timeout: float = 1.0) -> None:
        self._stopped.set()
        with self._drained:
            self._drained.notify_all()
        self._thread.join(timeout)


class Driver:
    """Base class: one component; routes each verb by the component's kind, guards its state.

    Subclasses implement ``_start`` and ``_close`` and the ``_verb`` methods of the kinds they
    serve (``_invoke``/``_read`` for bindings, ``_publish``/``_subscribe`` for pub/sub,
    ``_get_state``/``_save_state``/``_delete_state`` for state). The public verbs raise
    ``ComponentError`` for a verb of another kind, one the driver does not implement, or a
    driver that is not started (or already closed), before the subclass is reached.
    """

    #: True when the broker needs acknowledgements in order (one event in flight at a time).
    ordered: ClassVar[bool] = False
    #: Which component kind serves each verb; a driver for a non-Dapr split may override it.
    kinds: ClassVar[Mapping[str, str]] = VERB_KINDS

    def __init__(self, component: ComponentConfig) -> None:
        self.component = component
        #: The component kind (``bindings``, ``pubsub``, ``state``): which verbs it serves.
        self.component_kind = component.type.split(".", 1)[0].lower()
        self._lifecycle = "new"  # -> started -> closed
        self._closed_reason = ""
        self._close_by = 0.0
        self._pump: DeliveryPump | None = None
        self._pump_lock = threading.Lock()
        #: ``put`` of the pump blocks past this many waiting events (0: never).
        self._pump_size = 0

    @property
    def name(self) -> str:
        return self.component.name

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect; raise ``ComponentError`` if the broker cannot be reached or the metadata is
        wrong. A driver that fails to start is closed again (the stand-in closes only drivers
        that started)."""
        self._lifecycle = "started"
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop consumers and disconnect, within ``CLOSE_BUDGET`` seconds. Never raises; a
        second call does nothing."""
        if self._lifecycle == "closed":
            return
        self._lifecycle = "closed"
        self._close_by = time.monotonic() + CLOSE_BUDGET
        try:
            with self._pump_lock:
                pump, self._pump = self._pump, None
            if pump is not None:
                pump.close(min(1.0, self._time_left()))
            self._close()
        except Exception:  # close() must never raise
            _log.exception("closing component %r (%s) failed", self.name, self.component.type)

    def _start(self) -> None:
        """Connect (subclasses)."""

    def _close(self) -> None:
        """Disconnect (subclasses); may take what ``_time_left()`` says."""

    def _time_left(self, floor: float = 0.05) -> float:
        """Seconds of the close budget still left (at least ``floor``), for joins and waits."""
        return max(floor, self._close_by - time.monotonic())

    def _require_started(self, *clients: object) -> None:
        """Raise unless started and not closed (and every client given exists)."""
        if self._lifecycle != "started" or any(c is None for c in clients):
            raise self._not_started()

    def _started(self, client: _ClientT | None) -> _ClientT:
        """``client`` itself, once started and not closed; raise as ``_require_started`` if not
        (a client set in ``_start`` and cleared in ``_close``, as the type checker sees it)."""
        if self._lifecycle != "started" or client is None:
            raise self._not_started()
        return client

    def _not_started(self) -> ComponentError:
        state = f"is closed ({self._closed_reason})" if self._closed_reason else (
            "is not started (or already closed)")
        return ComponentError(f"component {self.name!r} {state}")

    def _hand_off(self, deliver: Deliver, event: InboundEvent) -> None:
        """Give ``event`` to ``deliver`` on this driver's ``DeliveryPump``, never on the caller's
        thread. After close the event is dropped unacknowledged (the broker keeps it)."""
        self._hand_off_many(deliver, (event,))

    def _hand_off_many(self, deliver: Deliver, events: Sequence[InboundEvent]) -> None:
        """``_hand_off`` for many events at once, in order, with one wake-up of the pump."""
        with self._pump_lock:
            if self._lifecycle == "closed":
                return
            pump = self._pump
            if pump is None:
                pump = self._pump = DeliveryPump(f"deliver-{self.name}", self._pump_size)
        pump.put_many(deliver, events)

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        """:meth:`DeliveryPump.wait_for_room` of this driver's pump (True when it has none)."""
        pump = self._pump
        return True if pump is None else pump.wait_for_room(limit, timeout)

    # -- routing ------------------------------------------------------------------------------
    def _unsupported(self, what: str) -> ComponentError:
        return ComponentError(f"component {self.name!r} of type {self.component.type} does not "
                              f"support {what}")

    def _route(self, verb: str) -> None:
        implemented = getattr(type(self), f"_{verb}") is not getattr(Driver, f"_{verb}")
        if self.kinds.get(verb) != self.component_kind or not implemented:
            raise self._unsupported(_VERB_NAMES[verb])
        self._require_started()

    def invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
               ) -> tuple[bytes, dict[str, str]]:
        self._route("invoke")
        return self._invoke(operation, data, metadata)

    def publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        self._route("publish")
        self._publish(topic, data, metadata)

    def publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                     ) -> list[tuple[int, ComponentError]]:
        """Publish ``(data, metadata)`` entries to ``topic``, in order; returns the failed
        ``(index, error)`` (an entry the broker refused fails alone, the others stay sent).
        A driver that cannot publish at all (wrong kind, not started) raises instead."""
        self._route("publish")
        return self._publish_many(topic, entries) if entries else []

    def subscribe(self, topic: str, deliver: Deliver) -> None:
        self._route("subscribe")
        self._subscribe(topic, deliver)

    def read(self, deliver: Deliver) -> None:
        self._route("read")
        self._read(deliver)

    def get_state(self, key: str) -> tuple[bytes | None, str]:
        self._route("get_state")
        return self._get_state(key)

    def save_state(self, key: str, value: bytes, etag: str | None = None) -> None:
        self._route("save_state")
        self._save_state(key, value, etag)

    def delete_state(self, key: str, etag: str | None = None) -> None:
        self._route("delete_state")
        self._delete_state(key, etag)

    def transact(self, operations: Sequence[StateOperation]) -> None:
        """Apply every operation or none (``ExecuteStateTransaction``)."""
        self._route("transact")
        for op in operations:
            if op.kind not in STATE_OPERATIONS:
                raise ComponentError(f"operation type {op.kind} not supported")
        if operations:
            self._transact(operations)

    def get_secret(self, key: str) -> dict[str, str]:
        """The secret ``key`` as its key/value pairs (``GetSecret``)."""
        self._route("get_secret")
        return self._get_secret(key)

    def bulk_secret(self) -> dict[str, dict[str, str]]:
        """Every secret of the store (``GetBulkSecret``)."""
        self._route("bulk_secret")
        return self._bulk_secret()

    # The subclass side; the base versions mark a verb as not implemented.
    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError

    def _publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        raise NotImplementedError

    def _publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                      ) -> list[tuple[int, ComponentError]]:
        """One ``_publish`` per entry (a broker without a batch API); a driver whose broker
        takes a batch in one round trip overrides it."""
        failed = []
        for index, (data, metadata) in enumerate(entries):
            try:
                self._publish(topic, data, metadata)
            except ComponentError as exc:
                failed.append((index, exc))
        return failed

    def _subscribe(self, topic: str, deliver: Deliver) -> None:
        raise NotImplementedError

    def _read(self, deliver: Deliver) -> None:
        raise NotImplementedError

    def _get_state(self, key: str) -> tuple[bytes | None, str]:
        raise NotImplementedError

    def _save_state(self, key: str, value: bytes, etag: str | None) -> None:
        raise NotImplementedError

    def _delete_state(self, key: str, etag: str | None) -> None:
        raise NotImplementedError

    def _transact(self, operations: Sequence[StateOperation]) -> None:
        raise NotImplementedError

    def _get_secret(self, key: str) -> dict[str, str]:
        raise NotImplementedError

    def _bulk_secret(self) -> dict[str, dict[str, str]]:
        raise NotImplementedError
