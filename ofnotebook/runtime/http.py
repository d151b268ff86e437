"""Serve a sync function over HTTP with Flask, the way Google's and OpenFunction's Python
frameworks do: every path and method reaches the function; its return value becomes the
response; an exception becomes a 500 that carries the remote traceback for ``invoke``.

A Werkzeug ``HTTPException`` the function raises (``flask.abort(404)``,
``abort(Response(...))``, ``NotFound("x")``) is an answer, not a failure: it keeps its status,
body and headers, as under Flask and functions-framework, and carries no ``ERROR_HEADER`` (so
``invoke`` returns it instead of raising). CloudEvent and background functions get the request
as an event (runtime/events.py); a request that is not one gets a 400 saying what it lacks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import os
import socket
import sys
import traceback
from typing import Any, Callable

from flask import Flask, Response, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from . import ERROR_HEADER, HEALTH_PATH
from .context import FunctionContext
from .files import missing_file_hint
from .loader import LoadedFunction
from .outputs import DaprBridge, DaprContext
from .shapes import EVENT_SHAPES

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, plus the array and scalar types data scientists return (``tolist``)."""

    @staticmethod
    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        if hasattr(o, "item") and callable(o.item):
            return o.item()
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=repr)
        return DefaultJSONProvider.default(o)


class HttpContext(DaprContext):
    """What ``f(context)`` and ``f(ctx, data)`` receive for an HTTP call.

    Compatible with OpenFunction's Python ``UserContext`` where it matters:
    ``get_http_request()`` returns the Flask request.
    """

    def __init__(self, fctx: FunctionContext, req: Any, bridge: DaprBridge) -> None:
        self.name = fctx.name
        self.version = fctx.version
        self.runtime = fctx.runtime
        self.outputs = fctx.outputs
        self.request = req
        self._bridge = bridge

    def get_http_request(self) -> Any:
        return self.request


def decode_body(req: Any) -> Any:
    """The request body for ``f(ctx, data)``: JSON when declared, text when UTF-8, else bytes."""
    raw = req.get_data(cache=True)
    if not raw:
        return None
    if req.is_json:
        return json.loads(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _call(loaded: LoadedFunction, fctx: FunctionContext, bridge: DaprBridge,
          events: Any = None) -> Any:
    """Call the function in its shape; ``events`` is runtime/events.py, imported for the
    shapes that take an event (raises its ``NotAnEvent`` for a request that is none)."""
    fn = loaded.function
    kind = loaded.signature
    if kind == "request":
        result = fn(request)
    elif kind == "cloudevent":
        result = fn(events.cloud_event_from_http(request.headers, request.get_data()))
    elif kind == "background":
        result = fn(*events.background_from_http(request.headers, request.get_data(), bridge))
    elif kind == "context":
        result = fn(HttpContext(fctx, request, bridge))
    elif kind == "ctx_data":
        result = fn(HttpContext(fctx, request, bridge), decode_body(request))
    else:
        result = fn()
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return result


def _to_response(app: Flask, result: Any) -> Any:
    if result is None:
        return Response(status=204)
    if isinstance(result, tuple):
        body, *rest = result
        return (_to_response(app, body), *rest)
    if isinstance(result, (str, bytes, Response)):
        return result
    if isinstance(result, (dict, list)) or dataclasses.is_dataclass(result) or hasattr(
            result, "tolist"):
        return app.json.response(result)
    try:
        return app.json.response(result)
    except TypeError as exc:
        raise TypeError(f"the function returned a {type(result).__name__}, which cannot be "
                        f"sent as a response; return str, bytes, dict, list or a Response") from exc


def format_remote_traceback(exc: BaseException, sources: dict[str, list[str]]) -> str:
    """The traceback from the user's code on, with the notebook's lines filled in."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = []
    for frame in tb.stack:
        if frame.filename.startswith(_RUNTIME_DIR):
            continue
        lines = sources.get(frame.name) if frame.filename == "<dynamic-code>" else None
        if lines is not None and frame.lineno and 0 < frame.lineno <= len(lines):
            frame = traceback.FrameSummary("<notebook cell>", frame.lineno, frame.name,
                                           line=lines[frame.lineno - 1])
        frames.append(frame)
    tb.stack = traceback.StackSummary.from_list(frames)
    return "".join(tb.format())


def create_app(loaded: LoadedFunction, fctx: FunctionContext, digest: str = "",
               nonce: str = "") -> Flask:
    """The Flask app serving ``loaded`` on every path, plus the health probe, which answers
    with the deployment's ``nonce`` (the local target's proof it reached this process)."""
    app = Flask(f"ofnotebook.{fctx.name}")
    app.json = _JSONProvider(app)
    bridge = DaprBridge(fctx)
    # cloudevents is imported only for the shapes that need it (never in a standby process).
    events = (importlib.import_module(f"{__package__}.events")
              if loaded.signature in EVENT_SHAPES else None)

    @app.route(HEALTH_PATH, methods=["GET"])
    def _health() -> Any:
        return {"status": "ok", "name": fctx.name, "entry": loaded.entry, "digest": digest,
                "pid": os.getpid(), "nonce": nonce}

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def _invoke(path: str) -> Any:
        try:
            return _to_response(app, _call(loaded, fctx, bridge, events))
        except HTTPException as exc:
            if exc.code is None and exc.response is None:
                return _error_response(exc, loaded)  # a bare HTTPException() has no status
            return exc.get_response()  # the function's own answer: status, body, headers
        except Exception as exc:
            if events is not None and isinstance(exc, events.NotAnEvent):
                return Response(f"{exc}\n", status=400, mimetype="text/plain")
            return _error_response(exc, loaded)

    return app


def _error_response(exc: BaseException, loaded: LoadedFunction) -> Response:
    """The function's own failure, reported on stderr and as a 500 that carries ERROR_HEADER
    and the remote traceback; the process keeps serving."""
    text = format_remote_traceback(exc, loaded.sources)
    print(text, file=sys.stderr, end="", flush=True)
    hint = missing_file_hint(exc)
    message = f"{exc}. {hint}" if hint else str(exc)
    body = {"error": {"type": type(exc).__qualname__, "message": message, "traceback": text}}
    return Response(json.dumps(body), status=500, mimetype="application/json",
                    headers={ERROR_HEADER: "1"})


def make_http_server(app: Callable[..., Any], sock: socket.socket) -> Any:
    """A waitress server on an already bound and listening socket (the port is known early).

    waitress was measured against werkzeug's threaded server and Google's functions-framework
    (gunicorn): it had the lowest latency and the highest throughput of the three here
    (docs/benchmarks.md), starts in milliseconds and is made for production.
    """
    import waitress

    threads = int(os.environ.get("OFNOTEBOOK_THREADS", "8"))
    return waitress.create_server(app, sockets=[sock], threads=threads, ident="ofnotebook",
                                  clear_untrusted_proxy_headers=True)
