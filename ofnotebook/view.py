"""What the live view shows, independent of how it is drawn.

:class:`ViewState` collects a deployment's phases, status, logs, outputs, invocations and the
last error from any thread, bounded, behind one lock. The ipywidgets view
(:mod:`ofnotebook.widget`) and the text fallback (:class:`TextProgress`) both draw from it, so
the two never disagree and the model can be tested without a browser.
"""

from __future__ import annotations

import collections
import html
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Callable

from . import config
from .backends.base import PHASES, PhaseEvent
from .handle import Invocation, preview

if TYPE_CHECKING:
    from .backends.events import OutputEvent
    from .handle import FunctionHandle

LOG_LINES = 500
OUTPUT_ROWS = 50
STATUS_COLOURS = {"running": "#1a7f37", "failed": "#cf222e", "stopped": "#6e7781",
                  "deploying": "#9a6700", "starting": "#9a6700", "restarting": "#bc4c00"}


class ViewState:
    """Everything the view shows about one function; safe to update from any thread.

    ``version`` increases on every change, so a drawer redraws only what changed since it
    last looked (see ``changed_since``).
    """

    def __init__(self, name: str, runtime: str, target: str) -> None:
        self.name, self.runtime, self.target = name, runtime, target
        self.status = "deploying"
        self.url = ""
        #: Restarts of the function's process (shown as "running (restarts 2)"), read from
        #: the handle at each status update once attached.
        self.restarts = 0
        self._restarts_of: Callable[[], int] | None = None
        self.phases: dict[str, PhaseEvent] = {}
        self.logs: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.outputs: collections.deque[OutputEvent] = collections.deque(maxlen=OUTPUT_ROWS)
        self.stats: dict[str, int] = {}
        self.inputs: list[str] = []
        self.invocation: Invocation | None = None
        self.error: tuple[str, str] | None = None  # (short message, traceback)
        self.lines_seen = 0
        self._lock = threading.Lock()
        self._versions: collections.Counter[str] = collections.Counter()

    # -- updates (any thread) ----------------------------------------------------------------

    def _touch(self, part: str) -> None:
        self._versions[part] += 1

    def on_phase(self, event: PhaseEvent) -> None:
        if event.state == "progress":  # a build or push log line: into the log pane
            self.on_log(f"[{event.phase}] {event.detail}")
            return
        with self._lock:
            self.phases[event.phase] = event
            if event.state == "failed":
                self.status = "failed"
                self.error = (f"{event.phase} failed: {event.detail}", "")
                self._touch("error")
                self._touch("header")
            self._touch("phases")

    def on_log(self, line: str) -> None:
        with self._lock:
            self.logs.append(line)
            self.lines_seen += 1
            self._touch("logs")

    def on_output(self, event: OutputEvent) -> None:
        with self._lock:
            self.outputs.append(event)
            self._touch("outputs")

    def on_invocation(self, invocation: Invocation) -> None:
        with self._lock:
            self.invocation = invocation
            self._touch("invocation")

    def set_status(self, status: str, url: str = "") -> None:
        restarts = self._restarts_of() if self._restarts_of is not None else self.restarts
        with self._lock:
            if status != self.status or (url and url != self.url) or restarts != self.restarts:
                self.status = status
                self.url = url or self.url
                self.restarts = restarts
                self._touch("header")

    @property
    def status_text(self) -> str:
        """The status with the restarts: a function that keeps crashing shows it."""
        return f"{self.status} (restarts {self.restarts})" if self.restarts else self.status

    def set_stats(self, stats: dict[str, int]) -> None:
        with self._lock:
            if stats != self.stats:
                self.stats = dict(stats)
                self._touch("outputs")

    def set_error(self, message: str, traceback: str = "") -> None:
        with self._lock:
            self.error = (message, traceback)
            self._touch("error")

    def clear_error(self) -> None:
        with self._lock:
            self.error = None
            self._touch("error")

    def attach(self, handle: FunctionHandle) -> None:
        """Fill in what is known once the deploy returned."""
        with self._lock:
            self.name, self.runtime, self.target = handle.name, handle.runtime, handle.target
            self.inputs = [c.name for c in handle.package.spec.inputs]
            for event in handle.events:
                self.phases[event.phase] = event
            self.error = None
            self._restarts_of = lambda: handle.restarts
            for part in ("phases", "error", "header", "forms"):
                self._touch(part)
        self.set_status(handle.status, handle.url)

    def changed_since(self, seen: dict[str, int]) -> set[str]:
        """The parts changed since ``seen`` (updated in place to now)."""
        with self._lock:
            changed = {part for part, v in self._versions.items() if seen.get(part) != v}
            seen.update(self._versions)
        return changed

    # -- rendering (pure) --------------------------------------------------------------------

    def phase_rows(self) -> list[tuple[str, str, str]]:
        """(phase, state, duration text) in the order phases happen."""
        with self._lock:
            phases = dict(self.phases)
        order = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
        rows = []
        for name in order:
            event = phases[name]
            took = f"{event.duration * 1000:.0f} ms" if event.duration is not None else "…"
            rows.append((name, event.state, took))
        return rows

    def phase_text(self) -> str:
        marks = {"finished": "✓", "failed": "✗", "started": "…"}
        return " · ".join(f"{marks.get(state, '')}{name} {took}".strip()
                          if state != "started" else f"{name} …"
                          for name, state, took in self.phase_rows())

    def header_html(self) -> str:
        esc = html.escape
        colour = STATUS_COLOURS.get(self.status, "#9a6700")
        link = (f' <a class="ofn-url" href="{esc(self.url)}" target="_blank">{esc(self.url)}</a>'
                if self.url.startswith("http") else
                (f' <code class="ofn-url">{esc(self.url)}</code>' if self.url else ""))
        return (f'<div class="ofn-header"><b class="ofn-name">{esc(self.name)}</b> '
                f'<span style="color:#57606a">{esc(self.runtime)} · {esc(self.target)}</span> '
                f'<span class="ofn-status ofn-status-{esc(self.status)}" style="background:'
                f'{colour};color:white;border-radius:8px;padding:0 8px">{esc(self.status_text)}'
                f'</span>{link}</div>')

    def phases_html(self) -> str:
        cells = []
        for name, state, took in self.phase_rows():
            colour = {"finished": "#1a7f37", "failed": "#cf222e"}.get(state, "#9a6700")
            cells.append(f'<span class="ofn-phase ofn-phase-{state}" style="margin-right:1em">'
                         f'<span style="color:{colour}">●</span> {html.escape(name)} '
                         f'<span style="color:#57606a">{took}</span></span>')
        return f'<div class="ofn-phases">{"".join(cells)}</div>'

    def logs_html(self) -> str:
        with self._lock:
            lines = list(self.logs)
            seen = self.lines_seen
        if not lines:
            return '<pre class="ofn-logs" style="color:#57606a">(no output yet)</pre>'
        more = (f'<div style="color:#57606a">… {seen - len(lines)} earlier lines '
                f'(all in handle.logs())</div>' if seen > len(lines) else "")
        body = html.escape("\n".join(lines))
        return (f'{more}<pre class="ofn-logs" style="max-height:16em;overflow:auto;'
                f'margin:0">{body}</pre>')

    def outputs_html(self) -> str:
        with self._lock:
            rows = list(self.outputs)[::-1]
            stats = dict(self.stats)
        counts = (" · ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats.items())
                  if stats else "")
        if not rows:
            table = '<div style="color:#57606a">(no outputs yet)</div>'
        else:
            body = "".join(
                f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(o.time))}</td>"
                f"<td>{html.escape(o.name)}</td>"
                f"<td><code>{html.escape(preview(o.data))}</code></td></tr>" for o in rows)
            table = (f'<table class="ofn-outputs"><tr><th>time</th><th>output</th>'
                     f'<th>payload</th></tr>{body}</table>')
        return f'<div class="ofn-stats" style="color:#57606a">{counts}</div>{table}'

    def invocation_html(self) -> str:
        call = self.invocation
        if call is None:
            return ""
        esc = html.escape
        status = f"{call.status}" if call.status is not None else "no answer"
        colour = "#1a7f37" if call.status is not None and call.status < 400 else "#cf222e"
        head = (f'<div class="ofn-invocation"><b>{esc(call.method)} {esc(call.path)}</b> → '
                f'<span style="color:{colour}">{esc(status)}</span> in '
                f'{call.latency_ms:.1f} ms</div>')
        if call.error:
            return head + _error_html(call.error, call.traceback)
        return head + f'<pre class="ofn-response" style="margin:0">{esc(call.body)}</pre>'

    def error_html(self) -> str:
        if self.error is None:
            return ""
        return _error_html(*self.error)

    def render_text(self) -> str:
        """The view as plain text, for front ends without widgets."""
        lines = [f"{self.name} [{self.runtime} · {self.target}] {self.status_text}"]
        if self.url:
            lines.append(f"  url      {self.url}")
        if self.phases:
            lines.append(f"  phases   {self.phase_text()}")
        if self.error:
            lines.append(f"  error    {self.error[0]}")
        return "\n".join(lines)


def _error_html(message: str, traceback: str) -> str:
    esc = html.escape
    details = (f'<details><summary>remote traceback</summary><pre>{esc(traceback)}</pre>'
               f'</details>' if traceback else "")
    return f'<div class="ofn-error" style="color:#cf222e">{esc(message)}</div>{details}'


class TextProgress:
    """The text fallback while deploying: the long phases (image build, push, rollout) print
    when they start and end, so a slow deploy never looks frozen. Local phases take
    milliseconds and print nothing: the handle's repr lists every timing once deployed."""

    LONG_PHASES = ("build", "push", "deploy")  # image builds and cluster rollouts

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def on_phase(self, event: PhaseEvent) -> None:
        if event.state == "progress" and event.detail.startswith("warning: "):
            print(event.detail, file=self.stream, flush=True)  # a deploy warning: always shown
            return
        if event.phase not in self.LONG_PHASES or event.state == "progress":
            return
        if event.state == "started":
            detail = f" ({event.detail})" if event.detail else ""
            print(f"{event.phase}{detail} …", file=self.stream, flush=True)
            return
        took = f" in {event.duration:.1f} s" if event.duration is not None else ""
        word = "done" if event.state == "finished" else f"failed: {event.detail}"
        print(f"{event.phase} {word}{took}", file=self.stream, flush=True)


def widgets_enabled() -> bool:
    """Draw with ipywidgets? ``OFNOTEBOOK_WIDGETS``: ``auto`` (in a Jupyter kernel with
    ipywidgets installed), ``on`` or ``off``."""
    mode = config.get("widgets")
    if mode == "off":
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    if mode == "on":
        return True
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
