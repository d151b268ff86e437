"""In-memory pub/sub, bindings and state inside the stand-in: no broker needed.

A publish hands the event to each subscriber's ``DeliveryPump`` and returns: one app's slow
handler never blocks another app's ``PublishEvent`` (the pump holds what a broker would). A
bulk publish (``publish_many``) takes the bus lock once and hands each subscriber the whole
batch as one item of its pump (one wake-up).

Components with the same ``bus`` metadata (``memory://BUS/topic``; default ``default``) share
topics and state, so one function's in-memory output reaches another function's in-memory
input, as two functions sharing a broker would. ``bindings.in-memory`` exists only locally.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

from .base import (ComponentConfig, ComponentError, Deliver, Driver, EtagMismatch, InboundEvent,
                   StateOperation)


@dataclass(eq=False)  # removed by identity at close
class _Subscriber:
    """A consumer of a topic: its events go through its own driver's pump."""

    driver: Driver
    deliver: Deliver


class _Bus:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscribers: dict[str, list[_Subscriber]] = defaultdict(list)
        self.state: dict[str, tuple[bytes, int]] = {}


_BUSES: dict[str, _Bus] = defaultdict(_Bus)


class MemoryDriver(Driver):
    """``pubsub.in-memory``, ``bindings.in-memory`` (a topic on the bus), ``state.in-memory``."""

    def __init__(self, component: ComponentConfig) -> None:
        super().__init__(component)
        self.bus = _BUSES[component.get("bus", "default")]
        self._mine: list[tuple[str, _Subscriber]] = []

    def _emit(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        with self.bus.lock:
            targets = list(self.bus.subscribers.get(topic, ()))
        for sub in targets:
            sub.driver._hand_off(sub.deliver, InboundEvent(data=data, metadata=dict(metadata),
                                                           topic=topic))

    def _join(self, topic: str, deliver: Deliver) -> None:
        sub = _Subscriber(self, deliver)
        with self.bus.lock:
            self.bus.subscribers[topic].append(sub)
        self._mine.append((topic, sub))

    # bindings: the topic is the binding's ``topic`` metadata, else its name
    def _binding_topic(self) -> str:
        return self.component.get("topic", self.component.name)

    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        self._emit(self._binding_topic(), data, metadata)
        return b"", {}

    def _read(self, deliver: Deliver) -> None:
        self._join(self._binding_topic(), deliver)

    def _publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        self._emit(topic, data, metadata)

    def _publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                      ) -> list[tuple[int, ComponentError]]:
        """The bus lock once, one pump item per subscriber; an in-memory publish never fails
        an entry. Each subscriber gets its own events (each is acknowledged on its own)."""
        with self.bus.lock:
            targets = list(self.bus.subscribers.get(topic, ()))
        for sub in targets:
            sub.driver._hand_off_many(sub.deliver, [
                InboundEvent(data=data, metadata=dict(metadata), topic=topic)
                for data, metadata in entries])
        return []

    def _subscribe(self, topic: str, deliver: Deliver) -> None:
        self._join(topic, deliver)

    def _get_state(self, key: str) -> tuple[bytes | None, str]:
        with self.bus.lock:
            item = self.bus.state.get(key)
        return (item[0], str(item[1])) if item else (None, "")

    def _save_state(self, key: str, value: bytes, etag: str | None) -> None:
        self._transact([StateOperation("upsert", key, value, etag)])

    def _delete_state(self, key: str, etag: str | None) -> None:
        self._transact([StateOperation("delete", key, etag=etag)])

    def _transact(self, operations: Sequence[StateOperation]) -> None:
        """Check every etag against the state as the operations before it leave it, then
        apply them all, under the bus lock: all or nothing, as daprd's in-memory store."""
        with self.bus.lock:
            after: dict[str, tuple[bytes, int] | None] = {}
            for op in operations:
                current = after[op.key] if op.key in after else self.bus.state.get(op.key)
                if op.etag and (current is None or str(current[1]) != op.etag):
                    raise EtagMismatch(f"etag mismatch for key {op.key!r} in {self.name!r}: "
                                       f"the stored version is not {op.etag!r}")
                after[op.key] = ((op.value, current[1] + 1 if current else 1)
                                 if op.kind == "upsert" else None)
            for key, item in after.items():
                if item is None:
                    self.bus.state.pop(key, None)
                else:
                    self.bus.state[key] = item

    def _close(self) -> None:
        with self.bus.lock:
            for topic, sub in self._mine:
                if sub in self.bus.subscribers.get(topic, []):
                    self.bus.subscribers[topic].remove(sub)
        self._mine.clear()
