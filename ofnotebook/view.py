"""What the live view shows, independent of how it is drawn.

:class:`ViewState` collects a deployment's phases, status, logs, outputs, invocations, warnings
and the last error from any thread, bounded, behind one lock. The ipywidgets view
(:mod:`ofnotebook.widget`) and the text fallback (:class:`TextProgress`) both draw from it, so
the two never disagree and the model can be tested without a browser.

Colours are JupyterLab's theme variables with fallbacks, so the view reads in light and dark
themes alike; errors are one summary line with the rest folded (:func:`summarize`).
"""

from __future__ import annotations

import collections
import html
import json
import re
import shlex
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable

from . import config
from .backends.base import PHASES, PhaseEvent
from .handle import Invocation, preview
from .viewmetrics import BAD, MUTED, OK, WARN, MetricsHistory
from .viewparts import (FOLLOW_JS, JUMP_JS, RESTORE_JS, PRE, copy_button, curl_for,
                        folded, pretty, proxied_url, summarize)

if TYPE_CHECKING:
    from .backends.events import OutputEvent
    from .handle import FunctionHandle

LOG_LINES = 500
OUTPUT_ROWS = 50
WARNINGS = 20
STATUS_COLOURS = {"running": "#1a7f37", "failed": "#cf222e", "stopped": "#6e7781",
                  "deploying": "#9a6700", "starting": "#9a6700", "restarting": "#bc4c00"}
_STEP = re.compile(r"^(?:STEP|Step) (\d+)/(\d+) ?:")
_SOURCE = re.compile(r"^\[([\w.-]+)\] ")


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
        self.step: tuple[str, int, int, str] | None = None  # phase, n, of, the step line
        self.reused = ""  # "unchanged: reusing ..." when a re-run deployed nothing
        self.logs: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.outputs: collections.deque[OutputEvent] = collections.deque(maxlen=OUTPUT_ROWS)
        self.warnings: list[str] = []
        self.stats: dict[str, int] = {}
        self.inputs: list[str] = []
        self.wiring = ""  # an async function's inputs and outputs, instead of a grpc:// URL
        self.has_events = runtime == "async"  # event counters only where events exist
        self.invocation: Invocation | None = None
        self.error: tuple[str, str] | None = None  # (summary line, folded details)
        self.metrics = MetricsHistory()
        self.lines_seen = 0
        self._lock = threading.Lock()
        self._versions: collections.Counter[str] = collections.Counter()

    # -- updates (any thread) ----------------------------------------------------------------

    def _touch(self, part: str) -> None:
        self._versions[part] += 1

    def on_phase(self, event: PhaseEvent) -> None:
        if event.state == "progress":
            if event.detail.startswith("warning: "):  # ofnotebook's: one amber line
                self.on_warning(event.detail[len("warning: "):])
                return
            step = _STEP.match(event.detail)
            if step or event.phase in ("push", "deploy"):  # a push's bytes, a rollout's pods
                with self._lock:
                    self.step = (event.phase, int(step[1]) if step else 0,
                                 int(step[2]) if step else 0, event.detail)
                    self._touch("phases")
            self.on_log(f"[{event.phase}] {event.detail}")  # a build or push line
            return
        with self._lock:
            self.phases[event.phase] = event
            if event.state == "started":
                self.reused = ""
            if event.state == "failed":
                self.status = "failed"
                self.error = (f"{event.phase} failed: {event.detail}", "")
                self._touch("error")
                self._touch("header")
            self._touch("phases")

    def on_warning(self, text: str) -> None:
        with self._lock:
            if text not in self.warnings:
                self.warnings = [*self.warnings, text][-WARNINGS:]
                self._touch("warnings")

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
        self.metrics.on_invocation(invocation.latency_ms,
                                   invocation.status is None or invocation.status >= 500)
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
                self._touch("forms")

    @property
    def status_text(self) -> str:
        """The status with the restarts: a function that keeps crashing shows it."""
        return f"{self.status} (restarts {self.restarts})" if self.restarts else self.status

    def set_stats(self, stats: dict[str, int]) -> None:
        self.metrics.on_counts(stats)
        with self._lock:
            if stats != self.stats:
                self.stats = dict(stats)
                self._touch("outputs")

    def set_error(self, message: str, traceback: str = "") -> None:
        with self._lock:
            self.error = (message, traceback)
            self._touch("error")

    def set_failure(self, error: BaseException) -> None:
        """A deploy that raised: failed, with its summary line and the rest folded."""
        self.set_status("failed")
        self.set_error(*summarize(error))

    def clear_error(self) -> None:
        """Before a redeploy: the old error, warnings and step no longer describe anything."""
        with self._lock:
            self.error, self.warnings, self.step = None, [], None
            self.phases = {}
            for part in ("error", "warnings", "phases"):
                self._touch(part)

    def attach(self, handle: FunctionHandle) -> None:
        """Fill in what is known once the deploy returned."""
        spec = handle.package.spec
        with self._lock:
            self.name, self.runtime, self.target = handle.name, handle.runtime, handle.target
            self.inputs = [c.name for c in spec.inputs]
            self.has_events = bool(spec.inputs or spec.outputs)
            self.wiring = _wiring(spec) if handle.runtime == "async" else ""
            for event in handle.events:
                if event.state != "progress":
                    self.phases[event.phase] = event
            self.reused = (f"unchanged: reusing {handle.name} (digest {handle.digest[:12]})"
                           if handle.reused else "")
            self.error = None
            self._restarts_of = lambda: handle.restarts
            for part in ("phases", "error", "header", "forms"):
                self._touch(part)
        self.set_status(handle.status, handle.url)

    def tick(self) -> None:
        """Once a flush: a running phase's elapsed time moves, and metrics sample each second."""
        with self._lock:
            if any(e.state == "started" for e in self.phases.values()):
                self._touch("phases")
        if self.metrics.tick():
            with self._lock:
                self._touch("metrics")

    def changed_since(self, seen: dict[str, int]) -> set[str]:
        """The parts changed since ``seen`` (updated in place to now)."""
        with self._lock:
            changed = {part for part, v in self._versions.items() if seen.get(part) != v}
            seen.update(self._versions)
        return changed

    # -- rendering (pure) --------------------------------------------------------------------

    def phase_rows(self, now: float | None = None) -> list[tuple[str, str, str]]:
        """(phase, state, duration text) in the order phases happen; a running phase's
        elapsed time so far."""
        with self._lock:
            phases = dict(self.phases)
        now = time.time() if now is None else now
        order = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
        rows = []
        for name in order:
            event = phases[name]
            if event.duration is not None:
                took = f"{event.duration * 1000:.0f} ms"
            elif event.state == "started" and now - event.at >= 1:
                took = f"{now - event.at:.0f} s"
            else:
                took = "…"
            rows.append((name, event.state, took))
        return rows

    def phase_text(self) -> str:
        marks = {"finished": "✓", "failed": "✗", "started": "…"}
        return " · ".join(f"{marks.get(state, '')}{name} {took}".strip()
                          if state != "started" else f"{name} …"
                          for name, state, took in self.phase_rows())

    def current_step(self) -> tuple[str, int, int, str] | None:
        """The build step being run (phase, n, of, line) while its phase is running."""
        with self._lock:
            step, phases = self.step, dict(self.phases)
        if step is None or phases.get(step[0]) is None or phases[step[0]].state != "started":
            return None
        return step

    def header_html(self) -> str:
        esc = html.escape
        colour = STATUS_COLOURS.get(self.status, "#9a6700")
        if self.wiring:
            where = f' <span class="ofn-wiring" style="color:{MUTED}">{esc(self.wiring)}</span>'
        elif self.url.startswith("http"):
            where = (f' <a class="ofn-url" href="{esc(self.url)}" target="_blank">'
                     f'{esc(self.url)}</a>{copy_button("curl " + shlex.quote(self.url))}')
            proxied = proxied_url(self.url)
            if proxied:  # the way in from a browser on another machine
                where += (f' <a class="ofn-proxied" href="{esc(proxied)}" target="_blank" '
                          f'style="color:{MUTED}">via Jupyter: {esc(proxied)}</a>')
        else:
            where = f' <code class="ofn-url">{esc(self.url)}</code>' if self.url else ""
        return (f'<div class="ofn-header"><b class="ofn-name">{esc(self.name)}</b> '
                f'<span style="color:{MUTED}">{esc(self.runtime)} · {esc(self.target)}</span> '
                f'<span class="ofn-status ofn-status-{esc(self.status)}" style="background:'
                f'{colour};color:white;border-radius:8px;padding:0 8px">{esc(self.status_text)}'
                f'</span>{where}</div>')

    def phases_html(self) -> str:
        cells = []
        for name, state, took in self.phase_rows():
            colour = {"finished": OK, "failed": BAD}.get(state, WARN)
            cells.append(f'<span class="ofn-phase ofn-phase-{state}" style="margin-right:1em">'
                         f'<span style="color:{colour}">●</span> {html.escape(name)} '
                         f'<span class="ofn-took" style="color:{MUTED}">{took}</span></span>')
        step = self.current_step()
        if step is not None:
            phase, n, of, line = step
            cells.append(f'<div class="ofn-step" style="color:{MUTED};{PRE}">'
                         f'{html.escape(line)}</div>')
            if of:  # a thin bar where the number of steps is known
                cells.append(f'<div class="ofn-bar" style="height:3px;background:'
                             f'var(--jp-layout-color3, #d0d7de)"><div style="height:3px;'
                             f'width:{100 * (n - 1) / of:.0f}%;background:{WARN}"></div></div>')
        if self.reused:
            cells.append(f'<span class="ofn-reused" style="color:{MUTED}">'
                         f'{html.escape(self.reused)}</span>')
        return f'<div class="ofn-phases">{"".join(cells)}</div>'

    def warnings_html(self) -> str:
        with self._lock:
            texts = list(self.warnings)
        return "".join(f'<div class="ofn-warning" style="color:{WARN};white-space:pre-wrap">'
                       f'⚠ {html.escape(text)}</div>' for text in texts)

    def logs_html(self, jumps: int = 0) -> str:
        """The last lines, in a pane that opens scrolled to its end (``column-reverse``): a
        redraw replaces the pane, and a new pane shows the newest line. All of following is
        done in the page, so it works while a cell keeps the kernel busy (the kernel reads
        widget events only between cells): scrolling up unticks *follow* and remembers the
        place, which each redraw restores; "jump to end" (or scrolling back down) resumes.
        ``jumps`` counts follow turned back on: a new count redraws even with no new line."""
        with self._lock:
            lines = list(self.logs)
            seen = self.lines_seen
        if not lines:
            return f'<pre class="ofn-logs" style="color:{MUTED}">(no output yet)</pre>'
        more = (f'<span style="color:{MUTED}">… {seen - len(lines)} earlier lines '
                f'(all in handle.logs())</span> ' if seen > len(lines) else "")
        body = "\n".join(_log_line(line) for line in lines[:-1])
        last = f'<span class="ofn-last">{_log_line(lines[-1])}</span>'
        return (f'<div style="color:{MUTED}">{more}<a class="ofn-jump" href="#" '
                f'onclick="{JUMP_JS}">jump to end ↓</a></div>'
                f'<div class="ofn-logs-pane" data-jumps="{jumps}" style="max-height:16em;'
                f'overflow:auto;display:flex;flex-direction:column-reverse" '
                f'onscroll="{FOLLOW_JS}"><pre class="ofn-logs" style="{PRE};overflow:visible">'
                f'{body}{chr(10) if body else ""}{last}</pre></div>'
                f'<img alt="" src="data:," style="display:none" onerror="{RESTORE_JS}">')

    def outputs_html(self) -> str:
        with self._lock:
            rows = list(self.outputs)[::-1]
            stats = dict(self.stats)
        counts = (" · ".join(f'<span style="color:'
                             f'{BAD if v and k in ("dead_letters", "errors") else MUTED}">'
                             f'{k.replace("_", " ")} {v}</span>' for k, v in stats.items())
                  if stats and self.has_events else "")
        if not rows:
            table = f'<div style="color:{MUTED}">(no outputs yet)</div>'
        else:
            body = "".join(
                f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(o.time))}</td>"
                f"<td>{html.escape(o.name)}</td>"
                f"<td><code>{html.escape(preview(_json(o.data)))}</code></td></tr>" for o in rows)
            table = (f'<div style="max-height:16em;overflow:auto"><table class="ofn-outputs">'
                     f'<tr><th>time</th><th>output</th><th>payload</th></tr>{body}</table></div>')
        return f'<div class="ofn-stats">{counts}</div>{table}'

    def invocation_html(self) -> str:
        call = self.invocation
        if call is None:
            return ""
        esc = html.escape
        status = f"{call.status}" if call.status is not None else "no answer"
        colour = OK if call.status is not None and call.status < 400 else BAD
        curl = copy_button(curl_for(call)) if call.url else ""
        head = (f'<div class="ofn-invocation"><b>{esc(call.method)} {esc(call.path)}</b> → '
                f'<span style="color:{colour}">{esc(status)}</span> in '
                f'{call.latency_ms:.1f} ms {curl}</div>')
        headers = "\n".join([*(f"> {k}: {v}" for k, v in call.request_headers.items()),
                             *(f"< {k}: {v}" for k, v in call.response_headers.items())])
        fold = (f'<details class="ofn-headers"><summary style="color:{MUTED}">headers'
                f'</summary><pre style="{PRE}">{esc(headers)}</pre></details>' if headers else "")
        if call.error:
            return head + folded(call.error, call.traceback, "remote traceback") + fold
        return (head + f'<pre class="ofn-response" style="{PRE};max-height:20em">'
                       f'{esc(pretty(call.body))}</pre>' + fold)

    def error_html(self) -> str:
        if self.error is None:
            return ""
        return folded(*self.error)

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


def _log_line(line: str) -> str:
    """A log line, its source (``[build]``, ``[push]``, ``[stand-in]``) set apart."""
    source = _SOURCE.match(line)
    if not source:
        return html.escape(line)
    return (f'<span class="ofn-src" style="color:{MUTED}">{html.escape(source[0])}</span>'
            f'{html.escape(line[source.end():])}')


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _wiring(spec: Any) -> str:
    def side(items: Any) -> str:
        return ", ".join(f"{c.name} ({c.type}{'/' + c.topic if c.topic else ''})"
                         for c in items)
    ins, outs = side(spec.inputs), side(spec.outputs)
    batch = getattr(spec, "batch", None)
    return " → ".join(part for part in (f"in: {ins}" if ins else "",
                                        f"out: {outs}" if outs else "") if part) + (
        f" · {batch}" if batch else "")


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
