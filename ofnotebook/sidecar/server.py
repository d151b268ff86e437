"""The stand-in's gRPC face over :class:`~.core.DaprCore`: the ``dapr.proto.runtime.v1.Dapr``
service the SDK's ``DaprClient`` calls. The HTTP face is ``httpapi.py``.

Served: ``InvokeBinding``, ``PublishEvent``, ``BulkPublishEvent`` (and its ``Alpha1``),
``GetState``, ``GetBulkState``, ``SaveState``, ``DeleteState``, ``DeleteBulkState``,
``ExecuteStateTransaction``, ``InvokeService``, ``GetSecret``, ``GetBulkSecret`` and
``GetMetadata`` (which answers the calling function's own app id). Every other method of the
generated servicer answers UNIMPLEMENTED with a message naming the call and what to use instead
(``unimplemented.py``), not the generated "Method not implemented!".

``DAPR_API_TOKEN`` (the kernel always has one: a random one per kernel unless the user set it)
is required on every call; a function's own token (``protocol.app_token``) is accepted too, and
tells the stand-in who calls. Anything else is UNAUTHENTICATED.

Each handler decodes its request, calls one ``DaprCore`` method and encodes the answer; errors
map through ``errors.error_status`` in one place (:func:`_grpc_errors`).
"""

from __future__ import annotations

import functools
from concurrent import futures
from typing import Any, Callable, TypeVar

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import (binding_pb2, dapr_pb2_grpc, metadata_pb2, pubsub_pb2,
                                   secret_pb2, state_pb2)
from google.protobuf import any_pb2, empty_pb2

from . import unimplemented
from .core import CALLER, DaprCore
from .errors import error_status
from .invoke import VERBS
from .protocol import TOKEN_HEADER, authorized

F = TypeVar("F", bound=Callable[..., Any])


def _grpc_errors(method: F) -> F:
    """Abort the call with the status ``error_status`` gives a core error; the core knows the
    caller (``core.CALLER``) meanwhile."""

    @functools.wraps(method)
    def wrapper(self: DaprApi, req: Any, context: Any) -> Any:
        caller = CALLER.set(self._caller(context))
        try:
            return method(self, req, context)
        except Exception as exc:
            status = error_status(exc)
            if status is None:
                raise
            context.abort(getattr(grpc.StatusCode, status[0]), str(exc))
        finally:
            CALLER.reset(caller)
    return wrapper  # type: ignore[return-value]


def _etag(message: Any) -> str | None:
    return message.etag.value if message.HasField("etag") else None


def _token(context: Any) -> str | None:
    return next((value for key, value in context.invocation_metadata() or ()
                 if key == TOKEN_HEADER), None)


class DaprApi(dapr_pb2_grpc.DaprServicer):
    """The Dapr gRPC API: a translation of each call to one ``DaprCore`` verb."""

    def __init__(self, core: DaprCore) -> None:
        self.core = core

    def _caller(self, context: Any) -> str | None:
        return self.core.caller(_token(context))

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
    def BulkPublishEvent(self, req: Any, context: Any) -> Any:
        """daprd answers a bulk publish with any failed entry as an error, INTERNAL "error
        when publish to topic ..." (the failed entries travel only in the HTTP answer)."""
        failed = self.core.bulk_publish(
            req.pubsub_name, req.topic,
            [(e.entry_id, e.event, e.content_type, dict(e.metadata)) for e in req.entries],
            dict(req.metadata))
        if failed:
            ids = ", ".join(entry_id for entry_id, _ in failed)
            context.abort(grpc.StatusCode.INTERNAL,
                          f"error when publish to topic {req.topic} in pubsub "
                          f"{req.pubsub_name}: {failed[0][1]} (failed entries: {ids})")
        return pubsub_pb2.BulkPublishResponse()

    BulkPublishEventAlpha1 = BulkPublishEvent

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

    @_grpc_errors
    def DeleteBulkState(self, req: Any, context: Any) -> Any:
        self.core.delete_bulk_state(req.store_name,
                                    [(item.key, _etag(item)) for item in req.states])
        return empty_pb2.Empty()

    @_grpc_errors
    def ExecuteStateTransaction(self, req: Any, context: Any) -> Any:
        self.core.transact(req.storeName, [
            (op.operationType, op.request.key, op.request.value, _etag(op.request))
            for op in req.operations])
        return empty_pb2.Empty()

    @_grpc_errors
    def InvokeService(self, req: Any, context: Any) -> Any:
        """An HTTP app's status other than 2xx is the call's error, as in daprd; its status
        travels in the ``dapr-http-status`` header."""
        message = req.message
        extension = message.http_extension if message.HasField("http_extension") else None
        result = self.core.invoke(
            req.id, message.method, verb=VERBS[extension.verb] if extension else "NONE",
            query=extension.querystring if extension else "", data=message.data.value,
            content_type=message.content_type,
            headers={k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)},
            caller=self._caller(context), type_url=message.data.type_url)
        headers = [(k.lower(), v) for k, v in result.headers if k.isascii()]
        headers.append(("dapr-http-status", str(result.status)))
        context.send_initial_metadata(tuple(headers))
        if result.code != "OK":
            context.abort(getattr(grpc.StatusCode, result.code), result.message)
        return common_pb2.InvokeResponse(
            data=any_pb2.Any(type_url=result.type_url, value=result.data),
            content_type=result.content_type)

    @_grpc_errors
    def GetSecret(self, req: Any, context: Any) -> Any:
        return secret_pb2.GetSecretResponse(data=self.core.get_secret(req.store_name, req.key))

    @_grpc_errors
    def GetBulkSecret(self, req: Any, context: Any) -> Any:
        data = {key: secret_pb2.SecretResponse(secrets=pairs)
                for key, pairs in self.core.bulk_secret(req.store_name).items()}
        return secret_pb2.GetBulkSecretResponse(data=data)

    def GetMetadata(self, req: Any, context: Any) -> Any:
        body = self.core.metadata(self._caller(context))
        components = [metadata_pb2.RegisteredComponents(**c) for c in body["components"]]
        subscriptions = [metadata_pb2.PubsubSubscription(
            pubsub_name=s["pubsubname"], topic=s["topic"], dead_letter_topic=s["deadLetterTopic"],
            rules=metadata_pb2.PubsubSubscriptionRules(rules=[
                metadata_pb2.PubsubSubscriptionRule(**rule) for rule in s["rules"]]))
            for s in body["subscriptions"]]
        connection = body.get("appConnectionProperties")
        return metadata_pb2.GetMetadataResponse(
            id=body["id"], runtime_version=body["runtimeVersion"],
            registered_components=components, subscriptions=subscriptions,
            app_connection_properties=metadata_pb2.AppConnectionProperties(
                port=connection["port"], protocol=connection["protocol"],
                channel_address=connection["channelAddress"]) if connection else None)


def _unimplemented(name: str) -> Callable[..., Any]:
    def answer(self: DaprApi, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented.grpc_message(name))
    answer.__name__ = answer.__qualname__ = name
    answer.__doc__ = f"UNIMPLEMENTED: {unimplemented.grpc_message(name)}"
    return answer


for _name in dir(dapr_pb2_grpc.DaprServicer):
    if not _name.startswith("_") and _name not in DaprApi.__dict__:
        setattr(DaprApi, _name, _unimplemented(_name))


class _TokenInterceptor(grpc.ServerInterceptor):
    """Requires the kernel's token, or a function's own (``protocol.app_token``)."""

    def __init__(self, token: str, key: str) -> None:
        self.token, self.key = token, key

        def deny(request: Any, context: Any) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong dapr-api-token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        given = dict(details.invocation_metadata or ()).get(TOKEN_HEADER, "")
        if authorized(self.token, self.key, given):
            return continuation(details)
        return self._deny


def make_grpc_server(core: DaprCore, token: str | None, port: int = 0
                     ) -> tuple[grpc.Server, int]:
    """The gRPC server on 127.0.0.1:``port`` (0: a free one); RuntimeError when the port
    cannot be bound (gRPC answers 0 for it in some versions, raises in others)."""
    interceptors = [_TokenInterceptor(token, core.key)] if token else []
    # No SO_REUSEPORT: a port another process listens on must fail here, not be shared.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), interceptors=interceptors,
                         options=[("grpc.so_reuseport", 0)])
    dapr_pb2_grpc.add_DaprServicer_to_server(DaprApi(core), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if not bound:
        raise RuntimeError(f"127.0.0.1:{port} is in use")
    return server, bound
