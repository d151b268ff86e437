"""The stand-in's two faces over :class:`~.core.DaprCore`: the Dapr gRPC API and an HTTP server.

gRPC (``dapr.proto.runtime.v1.Dapr``): ``InvokeBinding``, ``PublishEvent``, ``GetState``,
``SaveState``, ``DeleteState``, ``GetBulkState`` and ``GetMetadata``; everything else answers
UNIMPLEMENTED as the generated servicer does. HTTP: the health probe the SDK polls
(``/v1.0/healthz/outbound``, 204 like daprd), the HTTP equivalents of those calls, and the
control API the kernel uses (``protocol.py``: register apps, test events, the event log).
``DAPR_API_TOKEN``, when set, is required on every call except the health probe.

Both faces only translate: each handler decodes its request, calls one ``DaprCore`` method and
encodes the answer; errors map through ``core.ERROR_STATUS`` in one place per face.
"""

from __future__ import annotations

import functools
import json
import re
from concurrent import futures
from typing import Any, Callable, TypeVar

import grpc
from dapr.proto.runtime.v1 import binding_pb2, dapr_pb2_grpc, metadata_pb2, state_pb2
from flask import Flask, Response, request
from google.protobuf import empty_pb2

from .core import ERROR_STATUS, DaprCore, error_status
from .eventlog import payload_view
from .protocol import (APPS_PATH, EVENTS_PATH, INPUTS_PATH, STATES_PATH, STATS_PATH,
                       TOKEN_HEADER)

F = TypeVar("F", bound=Callable[..., Any])
STANDIN_ID = "ofnotebook-standin"


def _grpc_errors(method: F) -> F:
    """Abort the call with the status ``ERROR_STATUS`` gives a core error."""

    @functools.wraps(method)
    def wrapper(self: DaprApi, req: Any, context: Any) -> Any:
        try:
            return method(self, req, context)
        except Exception as exc:
            status = error_status(exc)
            if status is None:
                raise
            context.abort(getattr(grpc.StatusCode, status[0]), str(exc))
    return wrapper  # type: ignore[return-value]


def _etag(message: Any) -> str | None:
    return message.etag.value if message.HasField("etag") else None


class DaprApi(dapr_pb2_grpc.DaprServicer):
    """The Dapr gRPC API: a translation of each call to one ``DaprCore`` verb."""

    def __init__(self, core: DaprCore) -> None:
        self.core = core

    @_grpc_errors
    def InvokeBinding(self, req: Any, context: Any) -> Any:
        data, metadata = self.core.invoke_binding(req.name, req.operation, req.data,
                                                  dict(req.metadata))
        return binding_pb2.InvokeBindingResponse(data=data, metadata=metadata)

    @_grpc_errors
    def PublishEvent(self, req: Any, context: Any) -> Any:
        self.core.publish_event(req.pubsub_name, req.topic, req.data, req.data_content_type,
                                dict(req.metadata))
        return empty_pb2.Empty()

    @_grpc_errors
    def GetState(self, req: Any, context: Any) -> Any:
        data, etag = self.core.get_state(req.store_name, req.key)
        return state_pb2.GetStateResponse(data=data or b"", etag=etag)

    @_grpc_errors
    def GetBulkState(self, req: Any, context: Any) -> Any:
        items = [state_pb2.BulkStateItem(key=key, data=data or b"", etag=etag)
                 for key, data, etag in self.core.get_bulk_state(req.store_name, req.keys)]
        return state_pb2.GetBulkStateResponse(items=items)

    @_grpc_errors
    def SaveState(self, req: Any, context: Any) -> Any:
        self.core.save_state(req.store_name,
                             [(item.key, item.value, _etag(item)) for item in req.states])
        return empty_pb2.Empty()

    @_grpc_errors
    def DeleteState(self, req: Any, context: Any) -> Any:
        self.core.delete_state(req.store_name, req.key, _etag(req))
        return empty_pb2.Empty()

    def GetMetadata(self, req: Any, context: Any) -> Any:
        components = [metadata_pb2.RegisteredComponents(name=c.name, type=c.type,
                                                        version=c.version)
                      for c in self.core.components()]
        return metadata_pb2.GetMetadataResponse(id=STANDIN_ID, registered_components=components)


class _TokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

        def deny(request: Any, context: Any) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong dapr-api-token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        if (TOKEN_HEADER, self.token) in tuple(details.invocation_metadata or ()):
            return continuation(details)
        return self._deny


def make_grpc_server(core: DaprCore, token: str | None) -> tuple[grpc.Server, int]:
    interceptors = [_TokenInterceptor(token)] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), interceptors=interceptors)
    dapr_pb2_grpc.add_DaprServicer_to_server(DaprApi(core), server)
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port


def _rule(path: str) -> str:
    """A ``protocol`` path template as a Flask rule: ``{app_id}`` -> ``<app_id>``."""
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


def _as_bytes(value: Any) -> bytes:
    """A JSON body's ``data``/``value``: a string as its UTF-8, anything else as its JSON."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def create_http_app(core: DaprCore, token: str | None) -> Flask:
    """The HTTP face: health probe, the Dapr HTTP API subset, and the kernel's control API."""
    app = Flask("ofnotebook-standin")

    @app.before_request
    def _auth() -> Any:
        if token and not request.path.startswith("/v1.0/healthz") and (
                request.headers.get(TOKEN_HEADER) != token):
            return Response("missing or wrong dapr-api-token", status=401)
        return None

    def _mapped(exc: Exception) -> Any:
        status = error_status(exc)
        assert status is not None
        return {"error": str(exc)}, status[1]

    for cls, _code, _status in ERROR_STATUS:
        app.register_error_handler(cls, _mapped)

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
                           {k[len("metadata."):]: v for k, v in request.args.items()
                            if k.startswith("metadata.")})
        return Response(status=204)

    @app.get("/v1.0/state/<store>/<key>")
    def _get_state(store: str, key: str) -> Any:
        data, etag = core.get_state(store, key)
        if data is None:
            return Response(status=204)
        return Response(data, headers={"ETag": etag})

    @app.post("/v1.0/state/<store>/bulk")
    def _get_bulk_state(store: str) -> Any:
        keys = (request.get_json(force=True) or {}).get("keys") or []
        return [{"key": key, "data": payload_view(data or b"")["data"], "etag": etag}
                for key, data, etag in core.get_bulk_state(store, keys)]

    @app.post("/v1.0/state/<store>")
    def _save_state(store: str) -> Any:
        core.save_state(store, [(item["key"], _as_bytes(item.get("value")), item.get("etag"))
                                for item in request.get_json(force=True) or []])
        return Response(status=204)

    @app.delete("/v1.0/state/<store>/<key>")
    def _delete_state(store: str, key: str) -> Any:
        core.delete_state(store, key, request.headers.get("If-Match"))
        return Response(status=204)

    @app.get("/v1.0/metadata")
    def _metadata() -> Any:
        return {"id": STANDIN_ID, "components": [
            {"name": c.name, "type": c.type, "version": c.version} for c in core.components()]}

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

    @app.get(_rule(STATES_PATH))
    def _read_state(app_id: str, name: str, key: str) -> Any:
        return core.read_state(app_id, name, key)

    @app.get(_rule(EVENTS_PATH))
    def _events() -> Any:
        return core.events(int(request.args.get("after", "0")),
                           float(request.args.get("wait", "0")), request.args.get("app"))

    @app.get(_rule(STATS_PATH))
    def _stats() -> Any:
        return core.stats()

    return app
