"""The stand-in's two listeners: the Dapr gRPC API and an HTTP server.

gRPC (``dapr.proto.runtime.v1.Dapr``): ``InvokeBinding``, ``PublishEvent``, ``GetState``,
``SaveState``, ``DeleteState``, ``GetBulkState`` and ``GetMetadata``; everything else answers
UNIMPLEMENTED as the generated servicer does. HTTP: the health probe the SDK polls
(``/v1.0/healthz/outbound``, 204 like daprd), the HTTP equivalents of those calls, and the
``/ofnotebook/*`` control API the kernel uses (register apps, test events, the event log).
``DAPR_API_TOKEN``, when set, is required on every call except the health probe.
"""

from __future__ import annotations

import json
import os
from concurrent import futures
from typing import Any, Callable

import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from dapr.proto.runtime.v1 import binding_pb2, metadata_pb2, state_pb2
from flask import Flask, Response, request
from google.protobuf import empty_pb2

from .delivery import EventLog, Registry, payload_view
from .drivers import ComponentError
from .publisher import Publisher

TOKEN_HEADER = "dapr-api-token"


def _state_key(app_id: str, key: str) -> str:
    # Dapr's default keyPrefix is the app id: "<app-id>||<key>".
    return f"{app_id}||{key}"


class DaprApi(dapr_pb2_grpc.DaprServicer):  # type: ignore[misc]
    """The Dapr gRPC API over the registry's drivers."""

    def __init__(self, registry: Registry, publisher: Publisher) -> None:
        self.registry = registry
        self.publisher = publisher

    def _component(self, name: str, context: Any) -> Any:
        try:
            return self.registry.find(name)
        except KeyError:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"component {name!r} is not registered with the local stand-in")

    def InvokeBinding(self, req: Any, context: Any) -> Any:
        app, ep = self._component(req.name, context)
        try:
            data, metadata = self.publisher.invoke(app, ep, req.operation, req.data,
                                                   dict(req.metadata))
        except ComponentError as exc:
            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return binding_pb2.InvokeBindingResponse(data=data, metadata=metadata)

    def PublishEvent(self, req: Any, context: Any) -> Any:
        app, ep = self._component(req.pubsub_name, context)
        try:
            self.publisher.publish(app, ep, req.topic, req.data, req.data_content_type,
                                   dict(req.metadata))
        except ComponentError as exc:
            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return empty_pb2.Empty()

    def GetState(self, req: Any, context: Any) -> Any:
        app, ep = self._component(req.store_name, context)
        try:
            data, etag = ep.driver.get_state(_state_key(app.app_id, req.key))
        except ComponentError as exc:
            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return state_pb2.GetStateResponse(data=data or b"", etag=etag)

    def GetBulkState(self, req: Any, context: Any) -> Any:
        app, ep = self._component(req.store_name, context)
        items = []
        for key in req.keys:
            data, etag = ep.driver.get_state(_state_key(app.app_id, key))
            items.append(state_pb2.BulkStateItem(key=key, data=data or b"", etag=etag))
        return state_pb2.GetBulkStateResponse(items=items)

    def SaveState(self, req: Any, context: Any) -> Any:
        app, ep = self._component(req.store_name, context)
        try:
            for item in req.states:
                etag = item.etag.value if item.HasField("etag") else None
                ep.driver.save_state(_state_key(app.app_id, item.key), item.value, etag)
                self.registry.log.record(app.app_id, "state", name=ep.name, key=item.key,
                                         **payload_view(item.value))
        except ComponentError as exc:
            context.abort(grpc.StatusCode.ABORTED if "etag" in str(exc)
                          else grpc.StatusCode.INTERNAL, str(exc))
        return empty_pb2.Empty()

    def DeleteState(self, req: Any, context: Any) -> Any:
        app, ep = self._component(req.store_name, context)
        etag = req.etag.value if req.HasField("etag") else None
        try:
            ep.driver.delete_state(_state_key(app.app_id, req.key), etag)
        except ComponentError as exc:
            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return empty_pb2.Empty()

    def GetMetadata(self, req: Any, context: Any) -> Any:
        components = [metadata_pb2.RegisteredComponents(name=ep.component.name,
                                                        type=ep.component.type,
                                                        version=ep.component.version)
                      for app in list(self.registry.apps.values()) for ep in app.endpoints]
        return metadata_pb2.GetMetadataResponse(id="ofnotebook-standin",
                                                registered_components=components)


class _TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self.token = token

        def deny(request: Any, context: Any) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong dapr-api-token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        if (TOKEN_HEADER, self.token) in tuple(details.invocation_metadata or ()):
            return continuation(details)
        return self._deny


def make_grpc_server(registry: Registry, publisher: Publisher, token: str | None
                     ) -> tuple[grpc.Server, int]:
    interceptors = [_TokenInterceptor(token)] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), interceptors=interceptors)
    dapr_pb2_grpc.add_DaprServicer_to_server(DaprApi(registry, publisher), server)
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port


def create_http_app(registry: Registry, publisher: Publisher, token: str | None,
                    register: Callable[[str, dict[str, Any]], dict[str, Any]]) -> Flask:
    """The HTTP side: health probe, Dapr HTTP API subset, and the kernel's control API."""
    app = Flask("ofnotebook-standin")
    log: EventLog = registry.log

    @app.before_request
    def _auth() -> Any:
        if token and not request.path.startswith("/v1.0/healthz") and (
                request.headers.get(TOKEN_HEADER) != token):
            return Response("missing or wrong dapr-api-token", status=401)
        return None

    @app.errorhandler(ComponentError)
    def _component_error(exc: ComponentError) -> Any:
        return {"error": str(exc)}, 400

    @app.errorhandler(KeyError)
    def _unknown(exc: KeyError) -> Any:
        return {"error": f"{exc.args[0]!r} is not registered with the local stand-in"}, 404

    @app.get("/v1.0/healthz")
    @app.get("/v1.0/healthz/outbound")
    def _health() -> Any:
        return Response(status=204)

    @app.route("/v1.0/bindings/<name>", methods=["POST", "PUT"])
    def _binding(name: str) -> Any:
        body = request.get_json(force=True) or {}
        owner, ep = registry.find(name)
        raw = body.get("data")
        data = raw.encode() if isinstance(raw, str) else json.dumps(raw).encode()
        out, _ = publisher.invoke(owner, ep, body.get("operation", "create"), data,
                                  {k: str(v) for k, v in (body.get("metadata") or {}).items()})
        return Response(out, status=200 if out else 204)

    @app.post("/v1.0/publish/<pubsub>/<path:topic>")
    def _publish(pubsub: str, topic: str) -> Any:
        owner, ep = registry.find(pubsub)
        publisher.publish(owner, ep, topic, request.get_data(), request.content_type or "",
                          {k[len("metadata."):]: v for k, v in request.args.items()
                           if k.startswith("metadata.")})
        return Response(status=204)

    @app.get("/v1.0/state/<store>/<key>")
    def _get_state(store: str, key: str) -> Any:
        owner, ep = registry.find(store)
        data, etag = ep.driver.get_state(_state_key(owner.app_id, key))
        if data is None:
            return Response(status=204)
        return Response(data, headers={"ETag": etag})

    @app.post("/v1.0/state/<store>")
    def _save_state(store: str) -> Any:
        owner, ep = registry.find(store)
        for item in request.get_json(force=True) or []:
            value = item.get("value")
            raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
            ep.driver.save_state(_state_key(owner.app_id, item["key"]), raw, item.get("etag"))
        return Response(status=204)

    @app.delete("/v1.0/state/<store>/<key>")
    def _delete_state(store: str, key: str) -> Any:
        owner, ep = registry.find(store)
        ep.driver.delete_state(_state_key(owner.app_id, key), request.headers.get("If-Match"))
        return Response(status=204)

    @app.get("/v1.0/metadata")
    def _metadata() -> Any:
        return {"id": "ofnotebook-standin", "components": [
            {"name": ep.component.name, "type": ep.component.type, "version": ep.component.version}
            for a in list(registry.apps.values()) for ep in a.endpoints]}

    # -- control API for the kernel -------------------------------------------------------

    @app.put("/ofnotebook/apps/<app_id>")
    def _register(app_id: str) -> Any:
        return register(app_id, request.get_json(force=True))

    @app.delete("/ofnotebook/apps/<app_id>")
    def _unregister(app_id: str) -> Any:
        return {"removed": registry.unregister(app_id)}

    @app.post("/ofnotebook/apps/<app_id>/inputs/<name>")
    def _inject(app_id: str, name: str) -> Any:
        owner = registry.apps[app_id]
        publisher.inject(owner, name, request.get_data(), request.content_type or "")
        return Response(status=202)

    @app.get("/ofnotebook/apps/<app_id>/states/<name>/<key>")
    def _read_state(app_id: str, name: str, key: str) -> Any:
        owner = registry.apps[app_id]
        ep = next((e for e in owner.endpoints if e.role == "state" and e.name == name), None)
        if ep is None or ep.driver is None:
            raise KeyError(f"state store {name} of {app_id}")
        data, etag = ep.driver.get_state(_state_key(app_id, key))
        return {"key": key, "etag": etag, **payload_view(data or b"")} if data is not None else (
            {"key": key, "etag": "", "data": None, "encoding": "missing"})

    @app.get("/ofnotebook/events")
    def _events() -> Any:
        after = int(request.args.get("after", "0"))
        wait = min(float(request.args.get("wait", "0")), 30.0)
        return {"events": log.since(after, wait, request.args.get("app")), "last": log.last_seq}

    @app.get("/ofnotebook/stats")
    def _stats() -> Any:
        counts: dict[str, dict[str, int]] = {}
        for (app_id, kind), n in log.counters.items():
            counts.setdefault(app_id, {})[kind] = n
        return {"apps": sorted(registry.apps), "counts": counts, "pid": os.getpid()}

    return app

