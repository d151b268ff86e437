"""``bindings.cron``: fire the input binding on a schedule, as Dapr's cron binding does.

Schedules follow robfig/cron with optional seconds: ``@every 10s`` (Go durations such as
``1m30s`` or ``500ms``), the descriptors ``@yearly ... @hourly``, and 5- or 6-field expressions
(the 6-field form has seconds first). Each event has empty data and the metadata
``{"timeZone": "UTC", "readTimeUTC": <Go time.String()>}`` daprd sends.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from ..golang import parse_duration
from .base import ComponentConfig, ComponentError, Deliver, Driver, InboundEvent

_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@hourly": "0 * * * *"}


class CronDriver(Driver):
    """Input binding firing on ``schedule``."""

    def __init__(self, component: ComponentConfig) -> None:
        super().__init__(component)
        self.schedule = component.require("schedule").strip()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._every: float | None = None
        self._expr: str | None = None
        try:
            if self.schedule.startswith("@every "):
                self._every = parse_duration(self.schedule[len("@every "):].strip())
                if self._every <= 0:
                    raise ValueError("the interval must be positive")
            else:
                self._expr = _DESCRIPTORS.get(self.schedule, self.schedule)
                self._croniter(datetime.now(timezone.utc))
        except (ValueError, KeyError) as exc:
            raise ComponentError(
                f"cron component {self.name!r}: schedule {self.schedule!r} is not valid ({exc}); "
                f"use '@every 10s', '@hourly' or a cron expression such as '*/5 * * * *'") from exc

    def _croniter(self, start: datetime) -> Any:
        # croniter ships no type information (and types-croniter is not in the dev extra).
        from croniter import croniter  # type: ignore[import-untyped]

        assert self._expr is not None
        fields = self._expr.split()
        if len(fields) == 6:  # robfig/cron: seconds come first
            return croniter(self._expr, start, second_at_beginning=True)
        return croniter(self._expr, start)

    def _next(self, now: datetime) -> datetime:
        if self._every is not None:
            return now + timedelta(seconds=self._every)
        due: datetime = self._croniter(now).get_next(datetime)
        return due

    def _read(self, deliver: Deliver) -> None:
        def loop() -> None:
            due = self._next(datetime.now(timezone.utc))
            while not self._stop.wait(max(0.0, (due - datetime.now(timezone.utc)).total_seconds())):
                fired = datetime.now(timezone.utc)
                self._hand_off(deliver, InboundEvent(data=b"", metadata={
                    "timeZone": "UTC",
                    "readTimeUTC": fired.strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC")}))
                due = self._next(due if self._every is not None else fired)
                if due < fired:  # we fell behind; do not fire a burst
                    due = self._next(fired)

        self._thread = threading.Thread(target=loop, name=f"cron-{self.name}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._time_left())
