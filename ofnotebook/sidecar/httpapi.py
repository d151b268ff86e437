"""The stand-in's HTTP face over :class:`~.core.DaprCore`: the health probe the SDK polls
(``/v1.0/healthz/outbound``, 204 like daprd), the Dapr HTTP API (``/v1.0/...``, with daprd's
paths, bodies and statuses), and the control API the kernel uses (``protocol.py``: register
apps, test events, the event log).

A Dapr HTTP path the stand-in does not serve answers 501 with a message naming the call and
what to use instead (``unimplemented.py``). Errors are daprd's body, ``{"errorCode",
"message"}`` (plus ``error`` for the kernel), with the status ``errors.error_status`` gives.
``DAPR_API_TOKEN`` (always set by the kernel) is required on every call except the health probes
(daprd leaves them open too), the control API included; a function's
own token (``protocol.app_token``) is accepted too.
"""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from typing import Any

from flask import Flask, Response, request

from . import unimplemented
from .core import CALLER, DaprCore
from .errors import ERROR_STATUS, DaprError, error_body, error_status
from .eventlog import payload_view
from .protocol import (APPS_PATH, EVENTS_PATH, FRAMES_CONTENT_TYPE, INPUTS_MANY_PATH,
                       INPUTS_PATH, STATES_PATH, STATS_PATH, TOKEN_HEADER, authorized,
                       unpack_frames)

_ALL_VERBS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]
#: Response headers of an invoked app that are the hop's own.
_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                  "server", "date"})


def _rule(path: str) -> str:
    """A ``protocol`` path template as a Flask rule: ``{app_id}`` -> ``<app_id>``."""
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


def _as_bytes(value: Any) -> bytes:
    """An output binding's ``data``: a string as its UTF-8, anything else as its JSON."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def _go_float(number: float) -> str:
    """A number as Go's ``encoding/json`` writes a float64: positional from 1e-6 to 1e21
    (``1`` for 1.0), else exponent form without a leading zero (``1e-07`` -> ``1e-7``)."""
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"unsupported value: {number}")
    if number == 0 or 1e-6 <= abs(number) < 1e21:
        text = format(Decimal(repr(number)), "f")
        return text[:-2] if text.endswith(".0") else text
    return re.sub(r"e-0(\d)$", r"e-\1", repr(number))


def _go_json(value: Any) -> str:
    """``value`` (decoded from a request body) as daprd stores it: Go's ``json.Marshal`` of
    the ``any`` it decoded, so numbers are float64, map keys sorted, no spaces, and ``<``,
    ``>``, ``&`` escaped as Go escapes them for HTML."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_json(str(k))}:{_go_json(v)}"
                              for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return _go_float(float(value))
    text = json.dumps(str(value), ensure_ascii=False)
    return text.translate(_GO_ESCAPES)


_GO_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
               0x2028: "\\u2028", 0x2029: "\\u2029"}


def _state_value(value: Any) -> bytes:
    """A ``value`` of the HTTP state API (save, transaction upsert) as daprd stores it: the
    JSON of whatever the body held, a string included (``"Bruce Wayne"`` is stored with its
    quotes, so GET answers it as JSON and gRPC ``GetState`` gives ``b'"Bruce Wayne"'``), as
    components-contrib's stores marshal a non-bytes value."""
    return _go_json(value).encode()


def _bulk_item(key: str, data: bytes | None, etag: str) -> str:
    """One entry of daprd's bulk-get answer: ``data`` is the stored bytes as raw JSON
    (``json.RawMessage``; omitted when the key is missing), ``etag`` omitted without one. A
    value that is no JSON (raw bytes saved over gRPC) comes as a JSON string of its text, or
    of its base64 when it is no UTF-8 either (daprd would fail to encode the whole answer)."""
    parts = [f'"key":{_go_json(key)}']
    if data:
        try:
            parts.append(f'"data":{_go_json(json.loads(data))}')
        except ValueError:
            parts.append(f'"data":{_go_json(payload_view(data, "text/plain")["data"])}')
    if etag:
        parts.append(f'"etag":{_go_json(etag)}')
    return "{" + ",".join(parts) + "}"


def _event_bytes(event: Any, content_type: str) -> bytes:
    """A bulk entry's ``event`` as daprd's ``ConvertEventToBytes``: JSON content types take
    the JSON value, text a string, anything else base64 of the bytes."""
    if "json" in content_type or not content_type:
        return json.dumps(event, separators=(",", ":")).encode() \
            if not isinstance(event, str) or "json" in content_type else event.encode()
    if isinstance(event, str):
        if content_type.startswith("text/"):
            return event.encode()
        try:
            return base64.b64decode(event, validate=True)
        except ValueError:
            return event.encode()
    return json.dumps(event).encode()


def _query_metadata() -> dict[str, str]:
    return {k[len("metadata."):]: v for k, v in request.args.items() if k.startswith("metadata.")}


def create_http_app(core: DaprCore, token: str | None) -> Flask:
    """The HTTP face: health probe, the Dapr HTTP API, and the kernel's control API."""
    app = Flask("ofnotebook-standin")

    @app.before_request
    def _auth() -> Any:
        given = request.headers.get(TOKEN_HEADER, "")
        if not request.path.startswith("/v1.0/healthz") and not authorized(token, core.key,
                                                                              given):
            return Response("missing or wrong dapr-api-token", status=401)
        CALLER.set(core.caller(given or None))  # for the core, this request's caller
        return None

    def _mapped(exc: Exception) -> Any:
        status = error_status(exc)
        assert status is not None
        return error_body(exc), status[1]

    for cls, _code, _status in ERROR_STATUS:
        app.register_error_handler(cls, _mapped)
    app.register_error_handler(DaprError, _mapped)

    def _caller() -> str | None:
        return core.caller(request.headers.get(TOKEN_HEADER))

    @app.get("/v1.0/healthz")
    @app.get("/v1.0/healthz/outbound")
    def _health() -> Any:
        return Response(status=204)

    @app.route("/v1.0/bindings/<name>", methods=["POST", "PUT"])
    def _binding(name: str) -> Any:
        body = request.get_json(force=True) or {}
        out, _ = core.invoke_binding(name, body.get("operation", "create"),
                                     _as_bytes(body.get("data")),
                                     {k: str(v) for k, v in (body.get("metadata") or {}).items()})
        return Response(out, status=200 if out else 204)

    @app.post("/v1.0/publish/<pubsub>/<path:topic>")
    def _publish(pubsub: str, topic: str) -> Any:
        core.publish_event(pubsub, topic, request.get_data(), request.content_type or "",
                           _query_metadata())
        return Response(status=204)

    @app.post("/v1.0-alpha1/publish/bulk/<pubsub>/<path:topic>")
    @app.post("/v1.0/publish/bulk/<pubsub>/<path:topic>")
    def _bulk_publish(pubsub: str, topic: str) -> Any:
        """daprd: 204 when every entry went out; else 500 with the failed entries."""
        entries = request.get_json(force=True)
        if not isinstance(entries, list):
            raise DaprError("error when unmarshaling the request for topic "
                            f"{topic} pubsub {pubsub}: the body must be a JSON array of "
                            "{entryId, event, contentType, metadata}", code="INVALID_ARGUMENT",
                            status=400, error_code="ERR_PUBSUB_EVENTS_SER")
        failed = core.bulk_publish(pubsub, topic, [
            (str(e.get("entryId") or ""),
             _event_bytes(e.get("event"), str(e.get("contentType") or "")),
             str(e.get("contentType") or ""),
             {k: str(v) for k, v in (e.get("metadata") or {}).items()}) for e in entries],
            _query_metadata())
        if not failed:
            return Response(status=204)
        return {"failedEntries": [{"entryId": entry_id, "error": error}
                                  for entry_id, error in failed],
                "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"}, 500

    @app.get("/v1.0/state/<store>/<key>")
    def _get_state(store: str, key: str) -> Any:
        """daprd: the stored bytes as they are, as ``application/json`` (``withJSON``)."""
        data, etag = core.get_state(store, key)
        if data is None:
            return Response(status=204)
        return Response(data, headers={"ETag": etag}, content_type="application/json")

    @app.post("/v1.0/state/<store>/bulk")
    def _get_bulk_state(store: str) -> Any:
        keys = (request.get_json(force=True) or {}).get("keys") or []
        items = [_bulk_item(key, data, etag)
                 for key, data, etag in core.get_bulk_state(store, keys)]
        return Response("[" + ",".join(items) + "]", content_type="application/json")

    @app.post("/v1.0/state/<store>/transaction")
    def _transaction(store: str) -> Any:
        body = request.get_json(force=True) or {}
        operations = []
        for op in body.get("operations") or []:
            item = op.get("request") or {}
            value = item.get("value")
            operations.append((str(op.get("operation") or ""), str(item.get("key") or ""),
                               b"" if value is None else _state_value(value), item.get("etag")))
        core.transact(store, operations)
        return Response(status=204)

    @app.post("/v1.0/state/<store>")
    def _save_state(store: str) -> Any:
        core.save_state(store, [(item["key"], _state_value(item.get("value")), item.get("etag"))
                                for item in request.get_json(force=True) or []])
        return Response(status=204)

    @app.delete("/v1.0/state/<store>/<key>")
    def _delete_state(store: str, key: str) -> Any:
        core.delete_state(store, key, request.headers.get("If-Match"))
        return Response(status=204)

    @app.get("/v1.0/secrets/<store>/bulk")
    def _bulk_secret(store: str) -> Any:
        return core.bulk_secret(store)

    @app.get("/v1.0/secrets/<store>/<path:key>")
    def _get_secret(store: str, key: str) -> Any:
        return core.get_secret(store, key)

    @app.get("/v1.0/metadata")
    def _metadata() -> Any:
        return core.metadata(_caller())

    @app.route("/v1.0/invoke/<app_id>/method/<path:method>", methods=_ALL_VERBS)
    def _invoke(app_id: str, method: str) -> Any:
        result = core.invoke(app_id, method, verb=request.method,
                             query=request.query_string.decode(), data=request.get_data(),
                             content_type=request.headers.get("Content-Type", ""),
                             headers=dict(request.headers), caller=_caller())
        headers = [(k, v) for k, v in result.headers if k.lower() not in _HOP]
        response = Response(result.data, status=result.status, headers=headers)
        if result.content_type:
            response.headers["Content-Type"] = result.content_type
        return response

    @app.route("/v1.0/<path:rest>", methods=_ALL_VERBS)
    @app.route("/v1.0-alpha1/<path:rest>", methods=_ALL_VERBS)
    @app.route("/v1.0-alpha2/<path:rest>", methods=_ALL_VERBS)
    @app.route("/v1.0-beta1/<path:rest>", methods=_ALL_VERBS)
    def _not_served(rest: str) -> Any:
        message = unimplemented.http_message(request.method, request.path)
        return {"errorCode": "ERR_NOT_IMPLEMENTED", "message": message, "error": message}, 501

    # -- control API for the kernel (protocol.py) ------------------------------------------

    @app.put(_rule(APPS_PATH))
    def _register(app_id: str) -> Any:
        return core.register(app_id, request.get_json(force=True))

    @app.delete(_rule(APPS_PATH))
    def _unregister(app_id: str) -> Any:
        return {"removed": core.unregister(app_id)}

    @app.post(_rule(INPUTS_PATH))
    def _inject(app_id: str, name: str) -> Any:
        core.inject(app_id, name, request.get_data(), request.content_type or "")
        return Response(status=202)

    @app.post(_rule(INPUTS_MANY_PATH))
    def _inject_many(app_id: str, name: str) -> Any:
        """``handle.publish_many``'s chunk: framed events (``protocol.pack_frames``), all
        read before any is sent; 200 with the failed ``[index, error]`` pairs."""
        if (request.content_type or "").split(";")[0] != FRAMES_CONTENT_TYPE:
            raise DaprError(f"the body must be {FRAMES_CONTENT_TYPE} (protocol.pack_frames), "
                            f"not {request.content_type or 'untyped'}", code="INVALID_ARGUMENT",
                            status=415, error_code="ERR_MALFORMED_REQUEST")
        try:
            items = unpack_frames(request.get_data())
        except ValueError as exc:
            raise DaprError(f"the framed body is malformed: {exc}; nothing was sent",
                            code="INVALID_ARGUMENT", status=400,
                            error_code="ERR_MALFORMED_REQUEST") from None
        failed = core.inject_many(app_id, name, items)
        return {"sent": len(items) - len(failed), "failed": failed}

    @app.get(_rule(STATES_PATH))
    def _read_state(app_id: str, name: str, key: str) -> Any:
        return core.read_state(app_id, name, key)

    @app.get(_rule(EVENTS_PATH))
    def _events() -> Any:
        # The one answer sent at the event rate (a few hundred records a poll under load):
        # compact, unsorted json.dumps, not Flask's sorted, pretty-capable provider.
        body = core.events(int(request.args.get("after", "0")),
                           float(request.args.get("wait", "0")), request.args.get("app"))
        return Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")

    @app.get(_rule(STATS_PATH))
    def _stats() -> Any:
        return core.stats()

    return app
