"""``FunctionView``: the live ipywidgets view of a function, in its cell.

Phase events update the model at once (they are few and come from the deploying thread).
Logs, outputs and status come from background threads in floods, so they only mark the
:class:`~ofnotebook.view.ViewState` changed; one flusher thread redraws the changed parts of
every open view at most ``FLUSH_INTERVAL`` times a second by setting widget traits. Nothing
here uses ``with output:`` from a thread (ipykernel 7 no longer routes thread output:
ipywidgets#4020).

Controls are honest: a button is enabled only when it can act on the function's state now,
and a deploy that failed shows its error and Redeploy only. Warnings ofnotebook raises while
deploying become one amber line in the view (:meth:`FunctionView.deploy`), not a
``UserWarning`` with a library path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator

import ipywidgets as w

from .backends.base import PhaseEvent
from .backends.events import EventTracker, OutputEvent
from .errors import OfnotebookError, RemoteFunctionError, UnsupportedError
from .view import ViewState
from .viewparts import route_warnings
from .viewlist import FunctionTable, message
from .viewmetrics import metrics_html

if TYPE_CHECKING:
    from .handle import FunctionHandle

FLUSH_INTERVAL = 0.1  # s: at most 10 redraws a second, however fast lines arrive
DEAD_LETTER_ROWS = 10
HELP = ("<b>%%function [NAME] [options]</b>: run <code>%%function?</code> in a cell for every "
        "option (--runtime, --target, --input/--output, --port, --requirements ...); README "
        "section <i>%%function [NAME] [options]</i>.")

#: The view of each handle: the one the magic drew, or the one made on first display. The
#: map is the widget's, not the handle's: a handle knows nothing of its views.
_views: "weakref.WeakKeyDictionary[FunctionHandle, FunctionView]" = weakref.WeakKeyDictionary()


def view_for(handle: FunctionHandle) -> FunctionView:
    """The live view of ``handle``: made and attached on first use, then the same one."""
    view = _views.get(handle)
    if view is None:
        view = FunctionView(handle.name, handle.runtime, handle.target)
        view.attach(handle)
    return view


def function_table(handles: list[FunctionHandle]) -> FunctionTable:
    """``%function list`` as a live table (status, URL, rates, last error, Stop and Logs per
    row), redrawn by the flusher like the views."""
    table = FunctionTable(handles, view_for)
    _flusher.add(table)
    return table


def _tracker(handle: FunctionHandle) -> EventTracker | None:
    """The handle's event tracker, or ``None`` where its target reports no events."""
    try:
        return handle.deployment.events
    except UnsupportedError:
        return None


class _Flusher:
    """One daemon thread that redraws every open view's changed parts."""

    def __init__(self) -> None:
        self.views: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, view: Any) -> None:
        with self._lock:
            self.views.add(view)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ofnotebook-view",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            with self._lock:
                views = list(self.views)
            for view in views:
                try:
                    view.flush(tick=True)
                except Exception:  # a closed comm or a broken handle must not stop the others
                    pass


_flusher = _Flusher()


class FunctionView(w.VBox):
    """Name, runtime, target and status; phases as they happen; the URL; an invoke form (or
    a test-event form per input); live logs, outputs and metrics; stop and redeploy; errors."""

    def __init__(self, name: str, runtime: str, target: str) -> None:
        self.state = ViewState(name, runtime, target)
        self.handle: FunctionHandle | None = None
        self._plan: Any = None  # a failed first deploy: what Redeploy runs again
        self._tracker: EventTracker | None = None
        self._seen: dict[str, int] = {}
        self._detach: list[Callable[[], None]] = []
        self._flush_lock = threading.RLock()
        self._busy = False  # a Redeploy or Stop in flight
        self._jumps = 0  # times follow was turned back on: each redraws the pane at its end

        self.header = w.HTML(self.state.header_html())
        self.help = w.ToggleButton(description="?", tooltip="the %%function options",
                                   layout=w.Layout(width="2.5em"))
        self.help_text = w.HTML(HELP, layout=w.Layout(display="none"))
        self.collapse = w.ToggleButton(icon="minus", tooltip="fold the view to one line",
                                       layout=w.Layout(width="2.5em"))
        self.warnings = w.HTML("")
        self.phases = w.HTML(self.state.phases_html())
        self.error = w.HTML("")
        self.logs = w.HTML(self.state.logs_html())
        self.follow = w.Checkbox(value=True, description="follow", indent=False,
                                 layout=w.Layout(width="7em"))
        self.follow.add_class("ofn-follow")
        self.outputs = w.HTML(self.state.outputs_html())
        self.metrics = w.HTML("")
        self.dead_letters = w.VBox([])
        # invoke form (sync)
        self.method = w.Dropdown(options=["GET", "POST", "PUT", "PATCH", "DELETE"],
                                 value="GET", layout=w.Layout(width="7em"))
        self.path = w.Text(value="/", placeholder="/path?query", layout=w.Layout(width="20em"))
        self.body = w.Textarea(placeholder='JSON body, e.g. {"name": "ada"}',
                               layout=w.Layout(width="100%", height="4em"))
        self.send = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.response = w.HTML("")
        # test event form (async)
        self.input_name = w.Dropdown(options=[], layout=w.Layout(width="12em"))
        self.event_body = w.Textarea(placeholder='event data as JSON, e.g. {"message": "..."}',
                                     layout=w.Layout(width="100%", height="4em"))
        self.send_event = w.Button(description="Send test event", icon="paper-plane")
        self.event_result = w.HTML("")
        # actions
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.redeploy_button = w.Button(description="Redeploy", icon="refresh")

        self.send.on_click(lambda _: self._in_background(self._invoke))
        self.send_event.on_click(lambda _: self._in_background(self._publish))
        self.stop_button.on_click(lambda _: self._in_background(self._stop))
        self.redeploy_button.on_click(lambda _: self._in_background(self._redeploy))
        self.follow.observe(self._on_follow, "value")
        self.collapse.observe(self._on_collapse, "value")
        self.help.observe(lambda change: setattr(self.help_text.layout, "display",
                                                 None if change["new"] else "none"), "value")

        self.invoke_form = w.VBox([w.HBox([self.method, self.path, self.send]), self.body,
                                   self.response])
        self.event_form = w.VBox([w.HBox([self.input_name, self.send_event]), self.event_body,
                                  self.event_result])
        self.tabs = w.Tab(children=[self.invoke_form,
                                    w.VBox([self.follow, self.logs]),
                                    self.outputs, w.VBox([self.metrics, self.dead_letters])])
        for index, title in enumerate(("Invoke", "Logs", "Outputs", "Metrics")):
            self.tabs.set_title(index, title)
        self.body_box = w.VBox([self.help_text, self.phases, self.error, self.tabs])
        super().__init__([w.HBox([self.header, self.help, self.collapse, self.stop_button,
                                  self.redeploy_button]), self.warnings, self.body_box])
        self.add_class("ofnotebook-view")
        self._set_forms()
        _flusher.add(self)

    # -- the text/plain twin -----------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:
            bundle["text/plain"] = repr(self.handle) if self.handle else self.state.render_text()
        return bundle

    # -- feeding the state -------------------------------------------------------------------

    def on_phase(self, event: PhaseEvent) -> None:
        """A phase event: drawn at once, so progress shows while the deploy runs."""
        self.state.on_phase(event)
        self.flush()

    def deploy(self, planned: Any) -> FunctionHandle:
        """Run ``planned.deploy`` (an :class:`ofnotebook.api.Plan`) drawing into this view,
        ofnotebook's warnings as amber lines; on failure show it (Redeploy tries the same plan
        again) and raise it, so scripts and nbval still fail."""
        self._plan = planned
        try:
            with self.warnings_to_view():
                handle: FunctionHandle = planned.deploy(on_event=self.on_phase)
        except Exception as exc:
            self.fail(exc)
            raise
        self.attach(handle)
        return handle

    @contextlib.contextmanager
    def warnings_to_view(self) -> Iterator[None]:
        """Warnings raised from ofnotebook's own code go to the view as one amber line each
        (the user's fix is in the text, not in a library path); others are shown as usual."""
        try:
            with route_warnings(self.state.on_warning):
                yield
        finally:
            self.flush()

    def attach(self, handle: FunctionHandle) -> None:
        """Follow ``handle``: its logs, outputs, invocations and status, from now on."""
        for undo in self._detach:
            undo()
        self._detach = []
        self.handle, self._plan = handle, None
        _views[handle] = self
        self.state.attach(handle)
        for line in handle.deployment.logs(tail=self.state.logs.maxlen):
            self.state.on_log(line)
        self._detach.append(handle.deployment.subscribe_logs(self.state.on_log))
        self._detach.append(handle.subscribe_invocations(self.state.on_invocation))
        tracker = self._tracker = _tracker(handle)
        if tracker is not None:
            for output in tracker.outputs:
                self.state.on_output(output)
            self._detach.append(tracker.listen(self._on_event))
        self._set_forms()
        self._draw_dead_letters()
        self.flush()

    def fail(self, error: BaseException) -> None:
        """Show why the deploy failed: one summary line, the rest folded. The error is marked
        ``shown_in_view``, so the cell's own report of it can stay one line."""
        self.state.set_failure(error)
        try:
            setattr(error, "shown_in_view", True)
        except AttributeError:  # an exception type with __slots__
            pass
        self._set_forms()
        self.flush()

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "out":
            self.state.on_output(OutputEvent.from_record(event))
        elif event.get("kind") == "dead-letter":
            self.state._touch("dead_letters")

    def _on_follow(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._jumps += 1
            self.state._touch("logs")
            self.flush()

    def _on_collapse(self, change: dict[str, Any]) -> None:
        self.body_box.layout.display = "none" if change["new"] else None
        self.collapse.icon = "plus" if change["new"] else "minus"

    def _set_forms(self) -> None:
        """Which controls exist and which can act now."""
        state = self.state
        is_async = state.runtime == "async"
        self.tabs.children = [self.event_form if is_async else self.invoke_form,
                              *self.tabs.children[1:]]
        self.tabs.set_title(0, "Send event" if is_async else "Invoke")
        self.input_name.options = state.inputs
        if state.inputs and self.input_name.value not in state.inputs:
            self.input_name.value = state.inputs[0]
        running = self.handle is not None and state.status == "running" and not self._busy
        self.send.disabled = self.send_event.disabled = not running
        self.stop_button.disabled = (self.handle is None or self._busy
                                     or state.status not in ("running", "restarting"))
        never_ran = self.handle is None and state.status == "failed"
        self.stop_button.layout.display = "none" if never_ran else None
        self.tabs.layout.display = "none" if never_ran else None
        self.redeploy_button.disabled = (self._busy or state.status == "deploying"
                                         or (self.handle is None and self._plan is None))

    # -- drawing (deploying thread or the flusher) --------------------------------------------

    def flush(self, tick: bool = False) -> None:
        """Redraw the parts that changed; set traits only when their value differs."""
        with self._flush_lock:
            if self.handle is not None and not self._busy:
                self.state.set_status(self.handle.status, self.handle.url)
                if self._tracker is not None:
                    self.state.set_stats(self._tracker.stats())
            if tick:
                self.state.tick()
            changed = self.state.changed_since(self._seen)
            if "header" in changed:
                self.header.value = self.state.header_html()
            if "forms" in changed or "header" in changed:
                self._set_forms()
            if "warnings" in changed:
                self.warnings.value = self.state.warnings_html()
            if "phases" in changed:
                self.phases.value = self.state.phases_html()
            if "error" in changed:
                self.error.value = self.state.error_html()
            if "logs" in changed and self.follow.value:
                self.logs.value = self.state.logs_html(self._jumps)
            if "outputs" in changed:
                self.outputs.value = self.state.outputs_html()
            if "invocation" in changed:
                self.response.value = self.state.invocation_html()
            if {"metrics", "outputs"} & changed or not self.metrics.value:
                self.metrics.value = metrics_html(self.state.metrics, self.state.has_events,
                                                  self.state.stats
                                                  if self.state.has_events else {})
            if "dead_letters" in changed:
                self._draw_dead_letters()

    def _draw_dead_letters(self) -> None:
        tracker = self._tracker
        letters = list(tracker.dead_letters)[::-1][:DEAD_LETTER_ROWS] if tracker else []
        if not letters:
            self.dead_letters.children = []
            return
        rows: list[w.Widget] = [w.HTML("<b>Dead letters</b> (newest first)")]
        for record in letters:
            replay = w.Button(description="Replay", icon="repeat",
                              tooltip="publish the same event into its input again",
                              disabled=self.handle is None)
            replay.add_class("ofn-replay")
            replay.on_click(lambda _, r=record: self._in_background(lambda: self._replay(r)))
            rows.append(w.HBox([w.HTML(_dead_letter_html(record)), replay]))
        self.dead_letters.children = rows

    # -- buttons (each in a thread, so the kernel stays responsive) ---------------------------

    @staticmethod
    def _in_background(action: Callable[[], None]) -> None:
        threading.Thread(target=action, name="ofnotebook-view-action", daemon=True).start()

    def _invoke(self) -> None:
        if self.handle is None:
            return
        text = self.body.value.strip()
        try:
            payload = json.loads(text) if text else None
        except ValueError as exc:
            self.response.value = message(f"The body is not JSON ({exc}); fix it or clear it.")
            return
        before = self.handle.last_invocation
        try:
            self.handle.invoke(self.path.value or "/", method=self.method.value,
                               json=payload)
        except (RemoteFunctionError, OfnotebookError) as exc:
            if self.handle.last_invocation is before:  # refused before any call (yaml target)
                self.response.value = message(str(exc))
                return
            # otherwise recorded as the last invocation, drawn by the flusher
        self.flush()

    def _publish(self) -> None:
        if self.handle is None or not self.input_name.value:
            return
        text = self.event_body.value.strip()
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = text  # plain text is a valid event too
        try:
            self.handle.publish(self.input_name.value, data)
            # "handed to the input", not "handled": the Outputs and Metrics tabs say the rest
            self.event_result.value = message(f"published to {self.input_name.value}; see "
                                              f"Outputs and Metrics for what it did", ok=None)
        except OfnotebookError as exc:
            self.event_result.value = message(str(exc))

    def _replay(self, record: dict[str, Any]) -> None:
        """Publish a dead letter's event into its input again."""
        if self.handle is None:
            return
        data = record.get("data")
        if record.get("encoding") == "base64":
            import base64

            data = base64.b64decode(data or "")
        elif record.get("encoding") == "empty":
            data = b""
        try:
            self.handle.publish(record.get("name", ""), data)
            self.event_result.value = message(f"replayed into {record.get('name')}; see "
                                              f"Outputs and Metrics", ok=None)
        except OfnotebookError as exc:
            self.event_result.value = message(str(exc))

    def _stop(self) -> None:
        if self.handle is not None:
            self._busy = True
            self._set_forms()
            try:
                self.handle.stop()
            finally:
                self._busy = False
                self.flush()
                self._set_forms()

    def _redeploy(self) -> None:
        """Deploy again on the same local port (a copied URL keeps working), old errors and
        warnings cleared; after a failed first deploy, the same plan again."""
        handle = self.handle
        if handle is None and self._plan is None:
            return
        self._busy = True
        self.state.set_status("deploying")
        self.state.clear_error()
        self._set_forms()
        self.flush()
        try:
            with self.warnings_to_view():
                if handle is None:
                    handle = self._plan.deploy(on_event=self.on_phase)
                else:
                    _keep_port(handle)
                    handle.redeploy(on_event=self.on_phase)
        except OfnotebookError as exc:
            self._busy = False
            self.fail(exc)
            return
        finally:
            self._busy = False
        assert handle is not None
        self.attach(handle)


def _keep_port(handle: FunctionHandle) -> None:
    """Pin the handle's request to the port it runs on now, where the target chose it."""
    request = handle.request
    if request is None or request.port is not None or handle.target not in ("local",
                                                                            "container"):
        return
    port = urllib.parse.urlsplit(handle.url).port if handle.url.startswith("http") else None
    if port:
        handle.request = dataclasses.replace(request, port=port)


def _dead_letter_html(record: dict[str, Any]) -> str:
    import html

    from .handle import preview
    from .viewmetrics import BAD, MUTED

    stamp = time.strftime("%H:%M:%S", time.localtime(record.get("time", time.time())))
    data = json.dumps(record.get("data"), ensure_ascii=False, default=repr)
    return (f'<div class="ofn-dead-letter"><span style="color:{MUTED}">{stamp} '
            f'{html.escape(str(record.get("name", "")))} · {record.get("attempts", "?")} '
            f'attempts</span> <span style="color:{BAD}">{html.escape(str(record.get("error")))}'
            f'</span> <code>{html.escape(preview(data))}</code></div>')
