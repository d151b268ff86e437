"""The live view's Metrics tab: rates and latencies over the last minutes, bounded.

:class:`MetricsHistory` turns what the view already sees (every invocation, and the event
tracker's running counts) into one sample a second: requests/s, events/s, p50/p95 latency,
errors and dead letters. It keeps at most ``WINDOW`` samples and at most ``LATENCIES_PER_SECOND``
latencies for the second being filled, so a function that runs for days (or a 10,000 events/s
flood) costs the kernel the same few kilobytes. :func:`sparkline` draws a series as inline SVG:
a chart needs no plotting library in the kernel nor any front-end extension.
"""

from __future__ import annotations

import collections
import html
import threading
import time
from dataclasses import dataclass

WINDOW = 300  # samples (seconds): the last five minutes
LATENCIES_PER_SECOND = 1000
#: CSS colours: JupyterLab's theme variables, with fallbacks for other front ends.
MUTED = "var(--jp-ui-font-color2, #57606a)"
OK = "var(--jp-success-color1, #1a7f37)"
BAD = "var(--jp-error-color1, #cf222e)"
WARN = "var(--jp-warn-color1, #9a6700)"
ACCENT = "var(--jp-brand-color1, #0969da)"


@dataclass(frozen=True)
class Sample:
    """One second of a function's life."""

    at: float
    requests: int
    events: int
    errors: int
    dead_letters: int
    p50: float | None  # ms, None when no request finished in that second
    p95: float | None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class MetricsHistory:
    """Per-second samples over the last ``WINDOW`` seconds; safe to feed from any thread."""

    def __init__(self, window: int = WINDOW) -> None:
        self.samples: collections.deque[Sample] = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self._second: int | None = None
        self._requests = self._request_errors = 0
        self._latencies: list[float] = []
        self._counts: dict[str, int] = {}
        self._base: dict[str, int] | None = None

    def on_invocation(self, latency_ms: float, failed: bool) -> None:
        with self._lock:
            self._requests += 1
            self._request_errors += failed
            if len(self._latencies) < LATENCIES_PER_SECOND:
                self._latencies.append(latency_ms)

    def on_counts(self, counts: dict[str, int]) -> None:
        """The tracker's running totals (events_in, errors, dead_letters, ...)."""
        with self._lock:
            self._counts = dict(counts)
            if self._base is None:
                self._base = dict(counts)

    def tick(self, now: float | None = None) -> bool:
        """Close the seconds that ended since the last tick; True when a sample was added."""
        second = int(time.time() if now is None else now)
        with self._lock:
            if self._second is None:
                self._second = second
                return False
            if second <= self._second:
                return False
            counts, base = self._counts, self._base or self._counts
            lat = self._latencies
            self.samples.append(Sample(
                float(self._second), self._requests,
                counts.get("events_in", 0) - base.get("events_in", 0),
                self._request_errors + counts.get("errors", 0) - base.get("errors", 0),
                counts.get("dead_letters", 0) - base.get("dead_letters", 0),
                percentile(lat, 50) if lat else None, percentile(lat, 95) if lat else None))
            for gap in range(self._second + 1, min(second, self._second + 1 + WINDOW)):
                self.samples.append(Sample(float(gap), 0, 0, 0, 0, None, None))
            self._second = second
            self._requests = self._request_errors = 0
            self._latencies = []
            self._base = dict(counts)
            return True

    def series(self, name: str) -> list[float]:
        with self._lock:
            samples = list(self.samples)
        return [float(getattr(s, name) or 0) for s in samples]


def sparkline(values: list[float], colour: str = ACCENT, width: int = 160,
              height: int = 24) -> str:
    """``values`` as an inline SVG line (latest at the right), scaled to its own maximum."""
    if not values:
        return (f'<svg class="ofn-spark" width="{width}" height="{height}"></svg>')
    top = max(values) or 1.0
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - v / top * (height - 3):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg class="ofn-spark" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><polyline fill="none" stroke="{colour}" '
            f'stroke-width="1.5" points="{points}"/></svg>')


def metrics_html(history: MetricsHistory, events: bool, totals: dict[str, int]) -> str:
    """The Metrics tab: one row a metric (name, last value, sparkline of the last minutes);
    errors and dead letters red once above zero. ``events``: the function has inputs."""
    rows = [("requests/s", "requests", ACCENT, False)]
    if events:
        rows.append(("events/s", "events", ACCENT, False))
    rows += [("p50 ms", "p50", ACCENT, False), ("p95 ms", "p95", ACCENT, False),
             ("errors/s", "errors", BAD, True)]
    if events:
        rows.append(("dead letters/s", "dead_letters", BAD, True))
    cells = []
    for label, name, colour, alarm in rows:
        values = history.series(name)[-120:]
        last = values[-1] if values else 0.0
        shown = f"{last:.1f}" if name in ("p50", "p95") else f"{last:g}"
        tone = BAD if alarm and any(values) else MUTED
        cells.append(f'<tr class="ofn-metric ofn-metric-{name}"><td style="color:{MUTED};'
                     f'padding-right:1em">{label}</td><td style="color:{tone};text-align:right;'
                     f'padding-right:1em;min-width:4em">{shown}</td><td>'
                     f'{sparkline(values, colour)}</td></tr>')
    counters = " · ".join(
        f'<span class="ofn-count ofn-count-{k}" style="color:'
        f'{BAD if v and k in ("errors", "dead_letters", "retries") else MUTED}">'
        f'{html.escape(k.replace("_", " "))} {v}</span>' for k, v in totals.items())
    return (f'<div class="ofn-metrics"><div style="color:{MUTED}">last '
            f'{len(history.samples)} s, one point a second</div><table>{"".join(cells)}</table>'
            f'<div class="ofn-counters">{counters}</div></div>')
