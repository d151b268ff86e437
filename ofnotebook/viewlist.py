"""``%function list`` as a live table: one row a deployment, redrawn by the view's flusher.

Each row shows the name, a status pill, the URL (or an async function's inputs), requests/s
or events/s from the function's view, the last error, and Stop and Logs buttons: with five
functions deployed, one glance tells which one is failing, and the logs are one click away.
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as w

from .viewmetrics import BAD, MUTED, OK

if TYPE_CHECKING:
    from .handle import FunctionHandle

PILL = {"running": "#1a7f37", "failed": "#cf222e", "stopped": "#6e7781"}


def message(text: str, ok: bool | None = False) -> str:
    """One line of feedback under a form: green when it worked, red when it did not, grey
    (``ok=None``) when the outcome is not known yet (an event handed to its input)."""
    colour = MUTED if ok is None else OK if ok else BAD
    return f'<div class="ofn-feedback" style="color:{colour}">{html.escape(text)}</div>'


class FunctionTable(w.VBox):
    """The kernel's deployments, live."""

    def __init__(self, handles: list["FunctionHandle"], view_for: Callable[[Any], Any]) -> None:
        self.handles = list(handles)
        self._view_for = view_for
        self.rows: list[w.HTML] = []
        self.log_box = w.HTML("")
        lines: list[w.Widget] = []
        for handle in self.handles:
            row = w.HTML(self.row_html(handle), layout=w.Layout(width="44em"))
            stop = w.Button(description="Stop", icon="stop", button_style="danger",
                            layout=w.Layout(width="6em"))
            logs = w.Button(description="Logs", icon="list", layout=w.Layout(width="6em"))
            stop.on_click(lambda _, h=handle: threading.Thread(target=h.stop, daemon=True
                                                               ).start())
            logs.on_click(lambda _, h=handle: self._show_logs(h))
            self.rows.append(row)
            lines.append(w.HBox([row, stop, logs]))
        if not self.handles:
            lines.append(w.HTML(f'<span style="color:{MUTED}">(no deployments)</span>'))
        super().__init__([*lines, self.log_box])
        self.add_class("ofnotebook-list")

    def row_html(self, handle: "FunctionHandle") -> str:
        esc = html.escape
        status = handle.status
        state = self._view_for(handle).state
        samples = list(state.metrics.samples)[-5:]
        if handle.runtime == "async":
            rate = f"{sum(s.events for s in samples) / max(len(samples), 1):.1f} events/s"
            where = state.wiring
        else:
            rate = f"{sum(s.requests for s in samples) / max(len(samples), 1):.1f} req/s"
            where = handle.url
        error = state.error[0] if state.error else ""
        return (f'<span class="ofn-row ofn-row-{esc(status)}"><b>{esc(handle.name)}</b> '
                f'<span style="background:{PILL.get(status, "#9a6700")};color:white;'
                f'border-radius:8px;padding:0 6px">{esc(status)}</span> '
                f'<code>{esc(where)}</code> <span style="color:{MUTED}">{rate}</span> '
                f'<span style="color:{BAD}">{esc(error)}</span></span>')

    def _show_logs(self, handle: "FunctionHandle") -> None:
        text = handle.logs(tail=20) or "(no output yet)"
        self.log_box.value = (f'<b>{html.escape(handle.name)}</b><pre style="white-space:pre;'
                              f'line-height:normal;max-height:16em;overflow:auto">'
                              f'{html.escape(text)}</pre>')

    def flush(self, tick: bool = False) -> None:
        for handle, row in zip(self.handles, self.rows):
            value = self.row_html(handle)
            if row.value != value:
                row.value = value
