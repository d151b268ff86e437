"""The stand-in's event log: a bounded, numbered record of everything that happened to each
app, which the kernel long-polls (``protocol.EVENTS_PATH``)."""

from __future__ import annotations

import base64
import collections
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from .protocol import (ENCODING_BASE64, ENCODING_EMPTY, ENCODING_JSON, ENCODING_TEXT,
                       EVENT_DEAD_LETTER, EVENT_DELIVERED, EVENT_IN)


def payload_view(data: bytes, content_type: str = "") -> dict[str, Any]:
    """A JSON-friendly view of a payload for the notebook: parsed JSON, text, or base64."""
    if not data:
        return {"data": None, "encoding": ENCODING_EMPTY}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode(), "encoding": ENCODING_BASE64}
    if "json" in content_type or not content_type:
        try:
            return {"data": json.loads(text), "encoding": ENCODING_JSON}
        except ValueError:
            pass
    return {"data": text, "encoding": ENCODING_TEXT}


#: The records kept by default: under bulk delivery (~3 records an event, thousands of events
#: a second) about a second; a reader that falls further behind is resynchronised (below).
DEFAULT_SIZE = 10000
#: The kinds counted per input too: what the kernel's lost count compares (in - settled).
INPUT_KINDS = (EVENT_IN, EVENT_DELIVERED, EVENT_DEAD_LETTER)


class EventLog:
    """A bounded, numbered log of everything that happened; readers long-poll by sequence.

    Sequence numbers are consecutive, so a reader's position maps straight to an index: a long
    poll costs what it returns, not the size of the log.

    A reader that fell behind by more than the log keeps (records dropped before it saw them)
    is not left with counts that stay low for ever: :meth:`poll` answers it the newest records
    plus a ``resync``, the exact cumulative counts per app and kind, and per app, input and
    kind, as of the record just before the first one returned, read under the same lock as
    the records (nothing recorded in between can be counted twice or not at all).
    """

    def __init__(self, maxlen: int = DEFAULT_SIZE) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._seq = 0
        self._cond = threading.Condition()
        self.counters: collections.Counter[tuple[str, str]] = collections.Counter()
        #: (app, input name, kind) for the kinds of INPUT_KINDS: one more dict update a record.
        self.input_counters: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.input_types: dict[tuple[str, str], str] = {}  # (app, input name): component type

    def record(self, app: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one record (``kind`` is one of ``protocol.EVENT_KINDS``) and wake readers."""
        with self._cond:
            self._seq += 1
            event = {"seq": self._seq, "time": time.time(), "app": app, "kind": kind, **fields}
            self._events.append(event)
            self.counters[(app, kind)] += 1
            if kind in INPUT_KINDS:
                self.input_counters[(app, fields.get("name", ""), kind)] += 1
                if kind == EVENT_IN:
                    self.input_types[(app, fields.get("name", ""))] = fields.get("type", "")
            self._cond.notify_all()
        return event

    def since(self, after: int, wait: float, app: str | None = None,
              limit: int = 5000) -> list[dict[str, Any]]:
        """Up to ``limit`` records after sequence ``after`` (of one app if given); waits up to
        ``wait`` seconds for the first one. Records dropped unseen are skipped silently: a
        reader that keeps counts uses :meth:`poll`."""
        return self.poll(after, wait, app, limit)[0]

    def poll(self, after: int, wait: float, app: str | None = None, limit: int = 5000
             ) -> tuple[list[dict[str, Any]], int, dict[str, Any] | None]:
        """``(records, last seq, resync)``: as :meth:`since`, but when records after ``after``
        were dropped before this reader saw them, the newest ``limit`` records (of ``app`` if
        given) and a resync, ``{"seq": S, "missed": N, "apps": {app: {"counts": {kind: n},
        "inputs": {name: {kind: n}}, "types": {name: type}}}}``: the cumulative counts as of seq ``S``, the record
        before the first one returned; ``N`` records (of every app) were skipped. Otherwise
        ``resync`` is None."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                first = self._events[0]["seq"] if self._events else self._seq + 1
                if after + 1 < first:
                    return self._resync(after, app, limit)
                found = self._after(after, app, limit) if self._seq > after else []
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found, self._seq, None
                if app is not None:
                    after = self._seq  # nothing of this app so far: skip what was scanned
                self._cond.wait(remaining)

    def _after(self, after: int, app: str | None, limit: int) -> list[dict[str, Any]]:
        first = self._events[0]["seq"] if self._events else self._seq + 1
        tail: Iterator[dict[str, Any]] = itertools.islice(self._events,
                                                          max(0, after + 1 - first), None)
        if app is not None:
            tail = (e for e in tail if e["app"] == app)
        return list(itertools.islice(tail, limit))

    def _resync(self, after: int, app: str | None, limit: int
                ) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        """Under the lock: the newest records and the counts just before them (the counters
        less what those records added, so the reader counts each record exactly once)."""
        newest: list[dict[str, Any]] = []
        for event in reversed(self._events):  # newest first: a skip costs what it returns
            if len(newest) >= limit:
                break
            if app is None or event["app"] == app:
                newest.append(event)
        newest.reverse()
        at = newest[0]["seq"] - 1 if newest else self._seq
        counters = collections.Counter(self.counters)
        inputs = collections.Counter(self.input_counters)
        for event in newest:
            counters[(event["app"], event["kind"])] -= 1
            if event["kind"] in INPUT_KINDS:
                inputs[(event["app"], event.get("name", ""), event["kind"])] -= 1
        apps: dict[str, dict[str, Any]] = {}
        for (app_id, kind), n in counters.items():
            if n and (app is None or app_id == app):
                apps.setdefault(app_id, {"counts": {}, "inputs": {}})["counts"][kind] = n
        for (app_id, name, kind), n in inputs.items():
            if n and (app is None or app_id == app):
                entry = apps.setdefault(app_id, {"counts": {}, "inputs": {}})
                entry["inputs"].setdefault(name, {})[kind] = n
        for (app_id, name), type_ in self.input_types.items():
            if app_id in apps:
                apps[app_id].setdefault("types", {})[name] = type_
        return newest, self._seq, {"seq": at, "missed": max(0, at - after), "apps": apps}

    @property
    def last_seq(self) -> int:
        return self._seq

    def counts(self) -> dict[str, dict[str, int]]:
        """Records per app and kind, as ``protocol.STATS_PATH`` reports them."""
        with self._cond:
            items = list(self.counters.items())
        counts: dict[str, dict[str, int]] = {}
        for (app_id, kind), n in items:
            counts.setdefault(app_id, {})[kind] = n
        return counts
