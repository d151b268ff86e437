"""``FunctionView``: the live ipywidgets view of a function, in its cell.

Phase events update the model at once (they are few and come from the deploying thread).
Logs, outputs and status come from background threads in floods, so they only mark the
:class:`~ofnotebook.view.ViewState` changed; one flusher thread redraws the changed parts of
every open view at most ``FLUSH_INTERVAL`` times a second by setting widget traits. Nothing
here uses ``with output:`` from a thread (ipykernel 7 no longer routes thread output:
ipywidgets#4020).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as w

from .backends.base import PhaseEvent
from .backends.events import EventTracker, OutputEvent
from .errors import OfnotebookError, RemoteFunctionError, UnsupportedError
from .view import ViewState

if TYPE_CHECKING:
    from .handle import FunctionHandle

FLUSH_INTERVAL = 0.1  # s: at most 10 redraws a second, however fast lines arrive

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


def _tracker(handle: FunctionHandle) -> EventTracker | None:
    """The handle's event tracker, or ``None`` where its target reports no events."""
    try:
        return handle.deployment.events
    except UnsupportedError:
        return None


class _Flusher:
    """One daemon thread that redraws every open view's changed parts."""

    def __init__(self) -> None:
        self.views: weakref.WeakSet[FunctionView] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, view: FunctionView) -> None:
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
                    view.flush()
                except Exception:  # a closed comm or a broken handle must not stop the others
                    pass


_flusher = _Flusher()


class FunctionView(w.VBox):
    """Name, runtime, target and status; phases as they happen; the URL; an invoke form (or
    a test-event form per input); live logs and outputs; stop and redeploy; errors."""

    def __init__(self, name: str, runtime: str, target: str) -> None:
        self.state = ViewState(name, runtime, target)
        self.handle: FunctionHandle | None = None
        self._tracker: EventTracker | None = None
        self._seen: dict[str, int] = {}
        self._detach: list[Callable[[], None]] = []
        self._flush_lock = threading.RLock()

        self.header = w.HTML(self.state.header_html())
        self.phases = w.HTML(self.state.phases_html())
        self.error = w.HTML("")
        self.logs = w.HTML(self.state.logs_html())
        self.follow = w.Checkbox(value=True, description="follow", indent=False)
        self.outputs = w.HTML(self.state.outputs_html())
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

        self.invoke_form = w.VBox([w.HBox([self.method, self.path, self.send]), self.body,
                                   self.response])
        self.event_form = w.VBox([w.HBox([self.input_name, self.send_event]), self.event_body,
                                  self.event_result])
        self.tabs = w.Tab(children=[self.invoke_form, w.VBox([self.follow, self.logs]),
                                    self.outputs])
        for index, title in enumerate(("Invoke", "Logs", "Outputs")):
            self.tabs.set_title(index, title)
        super().__init__([w.HBox([self.header, self.stop_button, self.redeploy_button]),
                          self.phases, self.error, self.tabs])
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

    def attach(self, handle: FunctionHandle) -> None:
        """Follow ``handle``: its logs, outputs, invocations and status, from now on."""
        for undo in self._detach:
            undo()
        self._detach = []
        self.handle = handle
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
        self.flush()

    def fail(self, error: BaseException) -> None:
        """Show why the deploy failed (the short message; the cell prints it too)."""
        self.state.set_status("failed")
        self.state.set_error(str(error))
        self.flush()

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "out":
            self.state.on_output(OutputEvent.from_record(event))

    def _set_forms(self) -> None:
        is_async = self.state.runtime == "async"
        self.tabs.children = [self.event_form if is_async else self.invoke_form,
                              *self.tabs.children[1:]]
        self.tabs.set_title(0, "Send event" if is_async else "Invoke")
        self.input_name.options = self.state.inputs
        if self.state.inputs and self.input_name.value not in self.state.inputs:
            self.input_name.value = self.state.inputs[0]
        self.send.disabled = self.send_event.disabled = self.handle is None
        self.redeploy_button.disabled = self.handle is None

    # -- drawing (deploying thread or the flusher) --------------------------------------------

    def flush(self) -> None:
        """Redraw the parts that changed; set traits only when their value differs."""
        with self._flush_lock:
            if self.handle is not None:
                self.state.set_status(self.handle.status, self.handle.url)
                if self._tracker is not None:
                    self.state.set_stats(self._tracker.stats())
            changed = self.state.changed_since(self._seen)
            if "header" in changed:
                self.header.value = self.state.header_html()
                running = self.state.status == "running"
                self.stop_button.disabled = not running
            if "phases" in changed:
                self.phases.value = self.state.phases_html()
            if "error" in changed:
                self.error.value = self.state.error_html()
            if "logs" in changed and self.follow.value:
                self.logs.value = self.state.logs_html()
            if "outputs" in changed:
                self.outputs.value = self.state.outputs_html()
            if "invocation" in changed:
                self.response.value = self.state.invocation_html()

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
            self.response.value = _message(f"The body is not JSON ({exc}); fix it or clear it.")
            return
        before = self.handle.last_invocation
        try:
            self.handle.invoke(self.path.value or "/", method=self.method.value,
                               json=payload)
        except (RemoteFunctionError, OfnotebookError) as exc:
            if self.handle.last_invocation is before:  # refused before any call (yaml target)
                self.response.value = _message(str(exc))
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
            self.event_result.value = _message(f"sent to {self.input_name.value}", ok=True)
        except OfnotebookError as exc:
            self.event_result.value = _message(str(exc))

    def _stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()
            self.flush()

    def _redeploy(self) -> None:
        if self.handle is None:
            return
        self.state.set_status("deploying")
        self.state.clear_error()
        self.flush()
        handle = self.handle
        try:
            handle.redeploy(on_event=self.on_phase)
        except OfnotebookError as exc:
            self.fail(exc)
            return
        self.attach(handle)


def _message(text: str, ok: bool = False) -> str:
    import html

    colour = "#1a7f37" if ok else "#cf222e"
    return f'<div style="color:{colour}">{html.escape(text)}</div>'
