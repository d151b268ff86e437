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

from .protocol import ENCODING_BASE64, ENCODING_EMPTY, ENCODING_JSON, ENCODING_TEXT


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


class EventLog:
    """A bounded, numbered log of everything that happened; readers long-poll by sequence.

    Sequence numbers are consecutive, so a reader's position maps straight to an index: a long
    poll costs what it returns, not the size of the log.
    """

    def __init__(self, maxlen: int = 10000) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._seq = 0
        self._cond = threading.Condition()
        self.counters: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(self, app: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one record (``kind`` is one of ``protocol.EVENT_KINDS``) and wake readers."""
        with self._cond:
            self._seq += 1
            event = {"seq": self._seq, "time": time.time(), "app": app, "kind": kind, **fields}
            self._events.append(event)
            self.counters[(app, kind)] += 1
            self._cond.notify_all()
        return event

    def since(self, after: int, wait: float, app: str | None = None,
              limit: int = 5000) -> list[dict[str, Any]]:
        """Up to ``limit`` records after sequence ``after`` (of one app if given); waits up to
        ``wait`` seconds for the first one."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                found = self._after(after, app, limit) if self._seq > after else []
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
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

    @property
    def last_seq(self) -> int:
        return self._seq

    def counts(self) -> dict[str, dict[str, int]]:
        """Records per app and kind, as ``protocol.STATS_PATH`` reports them."""
        counts: dict[str, dict[str, int]] = {}
        for (app_id, kind), n in list(self.counters.items()):
            counts.setdefault(app_id, {})[kind] = n
        return counts
