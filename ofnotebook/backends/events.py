"""What a deployed function did, as the stand-in reports it: events in, outputs, retries,
dead letters, and events lost when the stand-in died. A tracker per app id (kept by the
kernel's stand-in client, so a cell re-run keeps it) holds bounded lists the handle and views
read.

Lost events: the in-memory bus lives inside the stand-in process, so when that process dies
the events it held (in, neither delivered nor dead-lettered) are gone; a broker that keeps
messages redelivers them instead. :meth:`EventTracker.mark_lost` counts them, per input, at
the time of death; :attr:`EventTracker.lost` is their total.

Missed records: the stand-in's event log is bounded (about a second of a busy async chain), so
a kernel that falls further behind (a cell holding the GIL, a slow view) misses records. The
stand-in then answers with the exact counts as of a point (``protocol.EVENTS_PATH``) and
:meth:`EventTracker.resync` takes them: counts, ``total_outputs`` and the per-input counts of
the lost count are exact again, only the rows of the records missed (outputs, dead letters)
are gone, and listeners get one ``RESYNC`` record saying how many were missed."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

MAX_OUTPUTS = 1000
#: The component types whose events live only inside the stand-in process.
IN_MEMORY_TYPES = ("pubsub.in-memory", "bindings.in-memory")
#: The record a tracker gets when its stand-in was restarted (``lost``: events lost then).
STANDIN_RESTART = "standin-restart"
#: The record listeners get when the tracker skipped records it never saw (``missed``: how many).
RESYNC = "resync"


@dataclass(frozen=True)
class OutputEvent:
    """One event the function sent to an output (binding or pub/sub)."""

    time: float
    name: str
    data: Any
    encoding: str
    component: str = ""
    type: str = ""
    topic: str = ""
    operation: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, event: dict[str, Any]) -> "OutputEvent":
        """From an ``out`` record of the stand-in's event log."""
        return cls(time=event["time"], name=event.get("name", ""), data=event.get("data"),
                   encoding=event.get("encoding", ""), component=event.get("component", ""),
                   type=event.get("type", ""), topic=event.get("topic", ""),
                   operation=event.get("operation", ""), metadata=event.get("metadata") or {})

    def __repr__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        return f"<OutputEvent {stamp} {self.name} {self.data!r}>"


SETTLE_WAIT = 0.5  # s: how long wait_for_outputs lets the events in flight finish


class EventTracker:
    """Collects one app's events from the stand-in; ``wait_for_outputs`` blocks on them."""

    def __init__(self, maxlen: int = MAX_OUTPUTS) -> None:
        self.outputs: collections.deque[OutputEvent] = collections.deque(maxlen=maxlen)
        self.dead_letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self.counts: collections.Counter[str] = collections.Counter()
        self.total_outputs = 0
        #: Events of in-memory inputs lost when the stand-in died (see the module docstring).
        self.lost = 0
        #: How often the stand-in was restarted while this app was registered.
        self.standin_restarts = 0
        self._inputs: collections.Counter[tuple[str, str]] = collections.Counter()
        self._in_memory: set[str] = set()  # the names of the inputs on the in-memory bus
        # What the current stand-in process reported (its counts start at 0 after a restart):
        # a resync compares the process's own counts with these, not with the totals.
        self._process: collections.Counter[str] = collections.Counter()
        self._process_inputs: collections.Counter[tuple[str, str]] = collections.Counter()
        self._cond = threading.Condition()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind", "")
        with self._cond:
            self.counts[kind] += 1
            self._process[kind] += 1
            if kind in ("in", "delivered", "dead-letter"):
                self._inputs[(event.get("name", ""), kind)] += 1
                self._process_inputs[(event.get("name", ""), kind)] += 1
                if kind == "in" and event.get("type") in IN_MEMORY_TYPES:
                    self._in_memory.add(event.get("name", ""))
            elif kind == STANDIN_RESTART:
                self.standin_restarts += 1
                self.lost += int(event.get("lost", 0))
            if kind == "out":
                self.outputs.append(OutputEvent.from_record(event))
                self.total_outputs += 1
            elif kind == "dead-letter":
                self.dead_letters.append(event)
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def mark_lost(self) -> int:
        """The stand-in died: count the events of in-memory inputs that were in and neither
        delivered nor dead-lettered as lost (and no longer in flight); returns how many.
        Listeners get a ``STANDIN_RESTART`` record with that count."""
        with self._cond:
            lost = 0
            for name in self._in_memory:
                settled = sum(self._inputs[(name, kind)]
                              for kind in ("delivered", "dead-letter", "lost"))
                pending = self._inputs[(name, "in")] - settled
                if pending > 0:
                    self._inputs[(name, "lost")] += pending
                    lost += pending
            self._process.clear()  # the next process counts from 0
            self._process_inputs.clear()
        self({"kind": STANDIN_RESTART, "time": time.time(), "lost": lost})
        return lost

    def resync(self, counts: dict[str, int], inputs: dict[str, dict[str, int]] | None = None,
               types: dict[str, str] | None = None) -> int:
        """Take the stand-in's exact cumulative counts of this app (per kind; per input name
        and kind; each input's component type) after records fell off its log unseen; returns
        how many records were missed. No count goes down (a count the tracker already has is
        kept); the records after the resync point are then counted as usual. Listeners get a
        ``RESYNC`` record with ``missed`` when any was."""
        with self._cond:
            missed = 0
            for kind, n in counts.items():
                gap = int(n) - self._process[kind]
                if gap > 0:
                    missed += gap
                    self._process[kind] += gap
                    self.counts[kind] += gap
                    if kind == "out":
                        self.total_outputs += gap
            for name, kinds in (inputs or {}).items():
                for kind, n in kinds.items():
                    gap = int(n) - self._process_inputs[(name, kind)]
                    if gap > 0:
                        self._process_inputs[(name, kind)] += gap
                        self._inputs[(name, kind)] += gap
            self._in_memory.update(name for name, type_ in (types or {}).items()
                                   if type_ in IN_MEMORY_TYPES)
            self._cond.notify_all()
            listeners = list(self._listeners) if missed else []
        record = {"kind": RESYNC, "time": time.time(), "missed": missed}
        for listener in listeners:
            listener(record)
        return missed

    def listen(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        with self._cond:
            self._listeners.append(callback)

        def remove() -> None:
            with self._cond:
                if callback in self._listeners:
                    self._listeners.remove(callback)
        return remove

    def wait_for_outputs(self, n: int, timeout: float) -> list[OutputEvent]:
        """Block until at least ``n`` outputs were recorded; return them (oldest first).

        An output is recorded while its event is still being handled (the function sends,
        then returns, then the stand-in records the delivery), so the wait also lets the
        events that came in settle (delivered or dead-lettered), for at most
        ``SETTLE_WAIT`` seconds more: ``stats`` read right after then agree with the outputs."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.total_outputs < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.total_outputs} of {n} outputs within {timeout:g} s")
                self._cond.wait(remaining)
            settle = min(deadline, time.monotonic() + SETTLE_WAIT)
            while (self.counts["delivered"] + self.counts["dead-letter"] + self.lost
                   < self.counts["in"]
                   and time.monotonic() < settle):
                self._cond.wait(settle - time.monotonic())
            return list(self.outputs)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"events_in": self.counts["in"], "delivered": self.counts["delivered"],
                    "events_out": self.counts["out"], "retries": self.counts["retry"],
                    "dead_letters": self.counts["dead-letter"], "errors": self.counts["error"]}
