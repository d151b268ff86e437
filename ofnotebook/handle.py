"""``FunctionHandle``: what the notebook holds after a deploy, the floor of the notebook side.

Calling the handle runs the plain Python function in the kernel, as before the deploy;
``invoke`` calls the deployed one over HTTP. The handle keeps the phase events of its deploy,
records every call (:class:`Invocation`) and lets views subscribe to the calls.

It imports nothing above it (not :mod:`ofnotebook.api`, the view or the widget): ``api``
hands it the :class:`~ofnotebook.request.DeployRequest` it was made from and the callable
that redeploys it, and the view layer registers how ``handle.view`` is made
(:func:`set_view_provider`) when the notebook extension loads. It uses only the verbs the
:class:`~ofnotebook.backends.base.Deployment` contract declares.
"""

from __future__ import annotations

import html
import operator
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import config
from .backends.base import (FAILED, PHASES, RESTARTING, STOPPED, STOPPING, Deployment,
                            EventSink, PhaseEvent)
from .errors import InvocationError, OfnotebookError, RemoteFunctionError
from .request import DeployRequest
from .runtime import ERROR_HEADER
from .sidecar.protocol import no_input_message

if TYPE_CHECKING:
    import requests

    from .backends.base import Backend
    from .backends.events import EventTracker, OutputEvent
    from .capture import Capture
    from .package import Package

#: How long a preview of a payload may be in a table cell.
PREVIEW_CHARS = 120
#: How much of a response body an :class:`Invocation` keeps.
BODY_CHARS = 2000
#: ``publish_many`` sends its items in chunks of this many (or of PUBLISH_CHUNK_BYTES of
#: payloads, whichever comes first), one request each: the kernel holds one chunk at a time,
#: whatever the iterable's length. Measured (benchmarks/bench_publish.py, results/publish.json:
#: in memory, a function consuming): 1,000 sends 6,972 events/s (``publish``: 292; chunks of
#: 100: 4,174); 5,000 sends faster (11,845) but delivery stays ~5,300/s either way, so a bigger
#: chunk only piles events up in the broker, for 5x the kernel's memory.
PUBLISH_CHUNK = 1000
PUBLISH_CHUNK_BYTES = 4 << 20
_session_local = threading.local()

#: ``redeploy(handle, on_event)``: given to the handle by ``api``; deploys the handle's
#: request again and makes the handle follow the new deployment (:meth:`FunctionHandle.adopt`).
Redeployer = Callable[["FunctionHandle", "EventSink | None"], None]

_view_provider: Callable[["FunctionHandle"], Any] | None = None


def set_view_provider(provider: Callable[["FunctionHandle"], Any] | None) -> None:
    """Install how ``handle.view`` makes the live view (``None`` removes it). The view layer
    does this when the notebook extension loads, so the handle never imports the view."""
    global _view_provider
    _view_provider = provider


@dataclass(frozen=True)
class Invocation:
    """One call of the deployed function (from code or from the view's form)."""

    method: str
    path: str
    status: int | None  # None: no HTTP answer (unreachable, timeout)
    latency_ms: float
    body: str  # a preview of the response body, or the error's short message
    error: str = ""
    traceback: str = ""
    #: The request as sent (full URL with its query string, headers, body preview) and the
    #: response's headers: what the view shows and turns into ``curl`` for each call.
    url: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """One line, at most ``limit`` characters: enough to recognise a payload in a table."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _session() -> "requests.Session":
    import requests

    session = getattr(_session_local, "session", None)
    if session is None:
        session = _session_local.session = requests.Session()
        session.trust_env = False  # loopback traffic must never go through a proxy
    return session


class FunctionHandle:
    """A deployed function that is still the plain function: ``%%function`` binds the cell's
    name to it, so code calling the function keeps working, while ``invoke``, ``logs``,
    ``publish`` and ``stop`` reach the deployed one on whatever target it runs."""

    def __init__(self, function: Callable[..., Any], *, deployment: Deployment,
                 backend: "Backend", target: str, events: list[PhaseEvent],
                 timings: dict[str, float], reused: bool = False,
                 request: DeployRequest | None = None, redeploy: Redeployer | None = None
                 ) -> None:
        self.function = function
        self.deployment = deployment
        self.backend = backend
        self.target = target
        self.events = events
        self.timings = timings
        self.reused = reused
        self.__doc__ = getattr(function, "__doc__", None)
        self.__wrapped__ = function
        self._invocation_listeners: list[Callable[["Invocation"], None]] = []
        self.last_invocation: Invocation | None = None
        #: What this handle was deployed with (``None``: made by hand, not by ``deploy``).
        self.request = request
        self._redeployer = redeploy

    # -- plain Python ------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the plain function in the kernel: the cell's name keeps working as before the
        deploy, so the rest of the notebook need not change."""
        return self.function(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # Another deployed function that uses this one captures the plain function.
        return operator.getitem, ((self.function,), 0)

    # -- facts -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The deployment's name (``%function stop NAME``), which may differ from the
        Python name: it is what the target knows the function by."""
        return self.deployment.name

    @property
    def package(self) -> "Package":
        """What was deployed, on disk: to look at the build context a target received."""
        return self.deployment.package

    @property
    def capture(self) -> "Capture":
        """What was pickled with the function (``.report()``): to see why a payload is big or
        which global was caught."""
        return self.deployment.package.capture

    @property
    def runtime(self) -> str:
        """``sync`` or ``async``: which verbs apply (``invoke`` against ``publish`` and the
        outputs)."""
        return self.package.spec.runtime

    @property
    def url(self) -> str:
        """Where the target says the function is, for a ``curl`` outside the notebook."""
        return self.deployment.url

    @property
    def status(self) -> str:
        """The target's state now, asked fresh on each read (a process may exit at any
        time): ``running``; ``restarting`` while a process that died unasked waits for its
        restart (backoff, as a pod in CrashLoopBackOff) or starts again, when nothing
        answers on the URL yet; ``failed`` when it is given up; ``stopping``/``stopped``."""
        return self.deployment.status

    @property
    def restarts(self) -> int:
        """How many times the target restarted the function after its process died: a
        count that grows tells a function that keeps crashing from a healthy one."""
        return self.deployment.restarts

    @property
    def status_text(self) -> str:
        """The status with the restarts, as the repr and the view show it: "running
        (restarts 2)"."""
        restarts = self.restarts
        return f"{self.status} (restarts {restarts})" if restarts else self.status

    @property
    def digest(self) -> str:
        """The package's content digest: equal digests mean an unchanged cell, which is why a
        redeploy could reuse the running function."""
        return self.package.digest

    # -- events ------------------------------------------------------------------------------

    def subscribe_invocations(self, callback: Callable[["Invocation"], None]
                              ) -> Callable[[], None]:
        """Call ``callback(invocation)`` after every ``invoke``; returns an unsubscribe. The
        view's call table follows calls made from code too, not only from its own form."""
        self._invocation_listeners.append(callback)

        def remove() -> None:
            if callback in self._invocation_listeners:
                self._invocation_listeners.remove(callback)
        return remove

    def _record(self, verb: str, path: str, started: float, status: int | None,
                body: str = "", error: str = "", traceback: str = "",
                sent: "requests.PreparedRequest | None" = None,
                response: "requests.Response | None" = None) -> None:
        facts: dict[str, Any] = {}
        if sent is not None:  # the path with its query string, as it went on the wire
            raw = sent.body or b""
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            path = sent.path_url
            facts = {"url": sent.url or "", "request_headers": dict(sent.headers),
                     "request_body": text[:BODY_CHARS]}
        if response is not None:
            facts["response_headers"] = dict(response.headers)
        call = Invocation(verb, path, status, (time.perf_counter() - started) * 1000,
                          preview(body, BODY_CHARS), error, traceback, **facts)
        self.last_invocation = call
        for callback in list(self._invocation_listeners):
            callback(call)

    # -- verbs -------------------------------------------------------------------------------

    def invoke(self, path: str = "/", *, method: str | None = None, params: Any = None,
               json: Any = None, data: Any = None, headers: dict[str, str] | None = None,
               timeout: float | None = None) -> "requests.Response":
        """Send one HTTP request to the deployed function and return the response.

        Raises :class:`RemoteFunctionError` (with the remote traceback) when the function
        raised, and :class:`InvocationError` when it could not be reached.
        """
        import requests

        if self.runtime == "async":
            raise InvocationError(
                f"Function {self.name!r} is asynchronous: it is triggered by its inputs, not "
                f"over HTTP. Send it a test event with .publish(input_name, data).",
                function_name=self.name)
        status = self.status
        if status == FAILED:
            why = (self.deployment.failure or "it failed").rstrip(".")
            raise InvocationError(f"Function {self.name!r} is not running: {why}. Redeploy "
                                  f"or run the cell again.", function_name=self.name)
        if status == RESTARTING:
            why = (self.deployment.failure or "its process exited").rstrip(".")
            raise InvocationError(f"Function {self.name!r} is restarting: {why}. It answers "
                                  f"again on {self.url} once restarted; try again in a "
                                  f"moment.", function_name=self.name)
        if status in (STOPPING, STOPPED):  # nothing listens: say so, not urllib3's retries
            raise InvocationError(f"Function {self.name!r} is {status}: Redeploy or run the "
                                  f"cell again.", function_name=self.name)
        url = self.deployment.invoke_url().rstrip("/") + "/" + path.lstrip("/")
        verb = method or ("POST" if json is not None or data is not None else "GET")
        seconds = float(config.get("invoke_timeout", timeout))
        started = time.perf_counter()
        sent = _session().prepare_request(requests.Request(verb, url, params=params, json=json,
                                                           data=data, headers=headers))
        try:
            response = _session().request(verb, url, params=params, json=json, data=data,
                                          headers=headers, timeout=seconds)
        except requests.Timeout as exc:
            failure = InvocationError(
                f"Function {self.name!r} did not answer {verb} {path} within {seconds:g} s; "
                f"pass timeout= or set OFNOTEBOOK_INVOKE_TIMEOUT.", function_name=self.name)
            self._record(verb, path, started, None, error=str(failure), sent=sent)
            raise failure from exc
        except requests.RequestException as exc:
            why = self.deployment.failure or str(exc)
            failure = InvocationError(f"Could not reach function {self.name!r} at {url}: {why}",
                                      function_name=self.name)
            self._record(verb, path, started, None, error=str(failure), sent=sent)
            raise failure from exc
        if response.status_code == 500 and response.headers.get(ERROR_HEADER):
            error = response.json().get("error", {})
            remote = RemoteFunctionError(error.get("type", "Exception"),
                                         error.get("message", ""), error.get("traceback", ""),
                                         function_name=self.name)
            self._record(verb, path, started, 500, error=f"{remote.ename}: {remote.evalue}",
                         traceback=remote.traceback, sent=response.request, response=response)
            raise remote
        self._record(verb, path, started, response.status_code, body=response.text,
                     sent=response.request, response=response)
        return response

    # -- events (functions with Dapr inputs, outputs or state) ------------------------------

    def publish(self, input_name: str, data: Any) -> None:
        """Send a test event into input ``input_name``, through its broker where it has one.

        ``data`` is sent as JSON (dict, list, numbers), text (str) or raw bytes.
        """
        from .runtime.outputs import encode

        payload, content_type = encode(data)
        self.deployment.publish(input_name, payload, content_type)

    def publish_many(self, input_name: str, items: Iterable[Any]) -> int:
        """Send every item of ``items`` (what :meth:`publish` takes, from a list or a
        generator) into input ``input_name``, in order, in chunks of :data:`PUBLISH_CHUNK`
        (one request each, a bulk publish into the input's broker); returns how many were
        sent. Thousands of events a second, where ``publish`` makes one request per event.

        The input name is checked before anything is sent. An item that cannot be encoded
        raises :class:`InvocationError` naming its index; nothing of its chunk is sent (the
        chunks before it were), so the error says exactly which items went. Events the broker
        refuses raise naming their indexes, after the rest of their chunk was sent; no later
        chunk is sent.
        """
        from .runtime.outputs import encode

        declared = [c.name for c in self.package.spec.inputs]
        if input_name not in declared:
            raise InvocationError(no_input_message(self.name, input_name, declared),
                                  function_name=self.name)
        sent = size = 0
        chunk: list[tuple[bytes, str]] = []
        for index, item in enumerate(items):
            try:
                payload, content_type = encode(item)
            except Exception as exc:  # whatever a value's tolist() or str() raises
                went = f"Items 0-{sent - 1} were sent, none from {sent} on" if sent else \
                    "Nothing was sent"
                raise InvocationError(
                    f"publish_many: item {index} cannot be encoded ({type(exc).__name__}: "
                    f"{exc}); send JSON values, str or bytes. {went}.",
                    function_name=self.name) from exc
            chunk.append((payload, content_type))
            size += len(payload)
            if len(chunk) >= PUBLISH_CHUNK or size >= PUBLISH_CHUNK_BYTES:
                sent += self._publish_chunk(input_name, chunk, sent)
                chunk, size = [], 0
        if chunk:
            sent += self._publish_chunk(input_name, chunk, sent)
        return sent

    def _publish_chunk(self, input_name: str, chunk: list[tuple[bytes, str]], first: int
                       ) -> int:
        """One request of ``publish_many``; raises naming the items the broker refused."""
        failed = self.deployment.publish_many(input_name, chunk)
        if not failed:
            return len(chunk)
        last = first + len(chunk) - 1
        shown = "; ".join(f"item {first + index}: {error}" for index, error in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise InvocationError(
            f"{len(failed)} of items {first}-{last} were not published into {input_name!r} "
            f"({shown}{more}). The other {first + len(chunk) - len(failed)} items up to item "
            f"{last} were sent; nothing after it.", function_name=self.name)

    @property
    def outputs(self) -> list["OutputEvent"]:
        """What the function sent to its outputs, oldest first (live, bounded): an async
        function answers nobody, so this is how the notebook sees what it did."""
        return list(self._events().outputs)

    def wait_for_outputs(self, n: int = 1, timeout: float = 10.0) -> list["OutputEvent"]:
        """Block until the function has sent at least ``n`` outputs; return the outputs. Events
        are handled in another process, so a cell that publishes waits for the effect instead
        of sleeping a guessed time."""
        try:
            return self._events().wait_for_outputs(n, timeout)
        except TimeoutError as exc:
            stats = self.stats
            raise InvocationError(
                f"Function {self.name!r} sent {exc}; events in {stats['events_in']}, retries "
                f"{stats['retries']}, dead letters {stats['dead_letters']}. Last log lines:\n"
                + self.logs(tail=10), function_name=self.name) from None

    @property
    def stats(self) -> dict[str, int]:
        """Counts of events in, delivered, out, retries, dead letters and errors: one look
        tells a function that drops nothing from one that retries or fails quietly."""
        return self._events().stats()

    @property
    def dead_letters(self) -> list[dict[str, Any]]:
        """Events that could not be delivered after every retry: an event is never dropped
        silently, and this is where to look for it."""
        return list(self._events().dead_letters)

    def get_state(self, key: str, store: str | None = None) -> Any:
        """Read ``key`` from a state store of the function (the only one if ``store`` is None)."""
        stores = [c.name for c in self.package.spec.states]
        if store is None:
            if not stores:
                raise InvocationError(
                    f"Function {self.name!r} declares no state store: add --state NAME=URI "
                    f"(states={{'NAME': URI}} in deploy()) and re-run the cell.",
                    function_name=self.name)
            if len(stores) > 1:
                raise InvocationError(
                    f"Function {self.name!r} has state stores {', '.join(map(repr, stores))}: "
                    f"name one, handle.get_state(key, store={stores[0]!r}).",
                    function_name=self.name)
            store = stores[0]
        return self.deployment.read_state(store, key).get("data")

    def _events(self) -> "EventTracker":
        return self.deployment.events  # UnsupportedError where the target reports none

    def logs(self, tail: int | None = None) -> str:
        """The function's recent output (stdout and stderr), as one string: ``print`` in a
        deployed function lands here, since it runs in another process."""
        return "\n".join(self.deployment.logs(tail=tail))

    def stop(self) -> None:
        """Stop the deployed function and free what it holds (process, container, ports). The
        handle stays callable as a plain function, so the notebook keeps working."""
        if self.deployment in self.backend.deployments():
            self.backend.stop(self.name)
        self.deployment.stop()

    def redeploy(self, on_event: EventSink | None = None) -> None:
        """Stop and deploy the same function again, in place: this handle follows the new
        deployment (what the view's Redeploy button does, e.g. after a crash)."""
        if self._redeployer is None:
            raise InvocationError(f"Function {self.name!r} was not made by ofnotebook.deploy, "
                                  f"so it cannot redeploy itself; deploy it again.",
                                  function_name=self.name)
        self._redeployer(self, on_event)

    def adopt(self, other: "FunctionHandle") -> None:
        """Follow ``other``'s deployment from now on (what a redeploy does with the handle it
        made): its deployment, backend, phase events and timings. The function, the request,
        the view and the invocation listeners stay this handle's."""
        self.deployment, self.backend = other.deployment, other.backend
        self.events, self.timings, self.reused = other.events, other.timings, other.reused

    # -- the live view -----------------------------------------------------------------------

    @property
    def view(self) -> Any:
        """The live ipywidgets view of this function (made on first use, then the same one).
        The view layer provides it once ``%load_ext ofnotebook`` ran; elsewhere use
        ``ofnotebook.view_for(handle)``."""
        if _view_provider is None:
            raise OfnotebookError(f"No live view for {self.name!r} here: run "
                                  f"%load_ext ofnotebook, or call ofnotebook.view_for(handle).")
        return _view_provider(self)

    # -- display -----------------------------------------------------------------------------

    def _timing_text(self) -> str:
        parts = [f"{phase} {self.timings[phase] * 1000:.0f} ms" for phase in PHASES
                 if phase in self.timings]
        return " · ".join(parts) + (" (unchanged, reused)" if self.reused else "")

    def __repr__(self) -> str:
        lines = [f"<FunctionHandle {self.name!r} [{self.runtime} · {self.target}] "
                 f"{self.status_text}",
                 f"  url      {self.url}",
                 f"  package  {self.package.short_digest}  lock: "
                 f"{', '.join(self.capture.requirements)}",
                 f"  timings  {self._timing_text()}>"]
        if self.status in (FAILED, RESTARTING):
            lines.insert(1, f"  failure  {self.deployment.failure}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"running": "#1a7f37", "failed": "#cf222e", "stopped": "#6e7781"}.get(
            self.status, "#9a6700")
        esc = html.escape
        rows = [
            ("url", f'<a href="{esc(self.url)}" target="_blank">{esc(self.url)}</a>'),
            ("package", f"<code>{esc(self.package.short_digest)}</code>"),
            ("lock", esc(", ".join(self.capture.requirements))),
            ("timings", esc(self._timing_text())),
        ]
        if self.status in (FAILED, RESTARTING):
            rows.insert(0, ("failure", f"<pre>{esc(self.deployment.failure or '')}</pre>"))
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th>"
                       f"<td style='text-align:left'>{v}</td></tr>" for k, v in rows)
        return (f"<div class='ofnotebook-handle'><b>{esc(self.name)}</b> "
                f"<span style='color:#57606a'>{esc(self.runtime)} · {esc(self.target)}</span> "
                f"<span style='background:{colour};color:white;border-radius:8px;"
                f"padding:0 6px'>{esc(self.status_text)}</span><table>{body}</table></div>")
