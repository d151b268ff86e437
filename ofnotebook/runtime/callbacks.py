"""Serve an async function: the Dapr AppCallback gRPC API on the context port.

Each input of the context becomes a binding handler (``bindings.*``) or a topic subscription
(``pubsub.*``) of the SDK's ``dapr.ext.grpc.App``, registered under the generated component name
daprd (or the local stand-in) calls it with. Reply statuses follow daprd's meaning: a handled
event acknowledges; an exception in the function asks for redelivery (RETRY for topics, a gRPC
error for bindings). An exception that no retry can cure (a ``SendError`` whose ``retryable``
is False: a send to an output the function did not declare) aborts the event's RPC with
FAILED_PRECONDITION and the reason as details, for topics and bindings alike: the stand-in
dead-letters it at once with that reason (``sidecar/delivery.py``), instead of retrying it into
"the function raised; see its logs".

Every topic subscription is declared ``bulkSubscribe`` and served in bulk too
(``runtime/bulk.py``): many events a call, each entry through the same topic handler, the
entries' pub/sub sends in one bulk publish per output before the answer; a refused entry is
DROP with its reason.

Every shape is served: ``f(ctx, data)`` and ``f(context)`` get an :class:`EventContext`;
``f(cloud_event)`` the delivered event as a ``cloudevents.http.CloudEvent`` (pub/sub arrives as
a CloudEvent, a binding event is wrapped into one: runtime/events.py); ``f(event, context)``
the data and a functions-framework-like ``Context`` whose ``resource`` is the topic or the
binding; ``f(data)`` the decoded data; ``f()`` nothing.
"""

from __future__ import annotations

import hmac
import inspect
import json
import os
import sys
import traceback
from typing import Any, Callable, Mapping

from .bulk import BufferingBridge, batch_settings, bulk_wanted
from .bulk import declare as declare_bulk
from .bulk import install as install_bulk
from .context import Component, FunctionContext
from .files import missing_file_hint
from .loader import LoadedFunction
from .outputs import DaprBridge, DaprContext, SendError, map_dapr_host
from .shapes import EVENT_SHAPES


def decode_binding_data(raw: bytes) -> Any:
    """Binding payloads carry no content type: JSON when it parses, else text, else bytes."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    try:
        return json.loads(text)
    except ValueError:
        return text


class EventContext(DaprContext):
    """What ``f(ctx, data)`` and OpenFunction-style ``f(context)`` receive for an event.

    ``send`` sends to an output; ``get_binding_request()`` / ``get_topic_event()`` give the raw
    event as OpenFunction's Python framework does.
    """

    def __init__(self, fctx: FunctionContext, bridge: DaprBridge, input_name: str,
                 binding_request: Any = None, topic_event: Any = None) -> None:
        self.name = fctx.name
        self.version = fctx.version
        self.runtime = fctx.runtime
        self.input_name = input_name
        self.outputs = fctx.outputs
        self._bridge = bridge
        self._binding_request = binding_request
        self._topic_event = topic_event

    def get_binding_request(self) -> Any:
        return self._binding_request

    def get_topic_event(self) -> Any:
        return self._topic_event


def _legacy_event(message: Any) -> Any:
    """A ``cloudevents.sdk.event.v1.Event`` (what OpenFunction's framework hands out)."""
    from cloudevents.sdk.event import v1

    event = v1.Event()
    event.SetEventID(message.id())
    event.SetSource(message.source())
    event.SetEventType(message.type())
    event.SetContentType(message.data_content_type())
    event.SetSubject(message.topic())
    event.SetData(message.raw_data())
    event.SetExtensions(dict(message.extensions() or {}))
    return event


def _invoke(loaded: LoadedFunction, ctx: EventContext, data: Any,
            cloud_event: Callable[[], Any], resource: str) -> None:
    """Call the function in its shape; ``cloud_event`` builds the delivered event as a
    ``cloudevents.http.CloudEvent`` (only the event shapes pay for it); ``resource`` is what a
    background function's ``context.resource`` names (the topic, or the binding)."""
    fn = loaded.function
    kind = loaded.signature
    if kind == "ctx_data":
        result = fn(ctx, data)
    elif kind == "context":
        result = fn(ctx)
    elif kind == "cloudevent":
        result = fn(cloud_event())
    elif kind == "background":
        from .events import background_from_cloud_event

        result = fn(*background_from_cloud_event(cloud_event(), ctx._bridge, resource=resource))
    elif kind == "request":
        result = fn(data)  # f(data): there is no HTTP request on async, the data stands for it
    else:
        result = fn()
    if inspect.iscoroutine(result):
        import asyncio

        asyncio.run(result)


class Refused(Exception):
    """An event the function cannot handle on any retry; :class:`RefuseInterceptor` aborts its
    RPC with FAILED_PRECONDITION and ``reason`` as details."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _deterministic(exc: BaseException) -> SendError | None:
    """The non-retryable :class:`SendError` behind ``exc``: itself, or a cause the function
    chained (``raise ... from err``); None for an error a retry may cure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SendError) and not seen.retryable:
            return seen
        seen = seen.__cause__
    return None


def _failed(name: str, exc: Exception) -> None:
    """Report the function's failure; raise :class:`Refused` when no retry can cure it."""
    _report(name, exc)
    cause = _deterministic(exc)
    if cause is not None:
        raise Refused(f"event from input {name!r} refused, not retried: {cause}") from exc


def _report(name: str, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    hint = missing_file_hint(exc)
    print(f"error handling an event from input {name!r}:\n{text}" + (f"{hint}\n" if hint else ""),
          file=sys.stderr, end="", flush=True)


def _binding_handler(loaded: LoadedFunction, fctx: FunctionContext, bridge: DaprBridge,
                     name: str, comp: Component) -> Callable[[Any], None]:
    def handle(request: Any) -> None:
        ctx = EventContext(fctx, bridge, name, binding_request=request)
        try:
            data = decode_binding_data(request.data)

            def cloud_event() -> Any:
                from .events import cloud_event_from_binding

                return cloud_event_from_binding(request, comp, data)

            _invoke(loaded, ctx, data, cloud_event, comp.component_name)
        except Exception as exc:
            _failed(name, exc)
            raise  # a gRPC error: the stand-in (or daprd) retries
    return handle


def _topic_handler(loaded: LoadedFunction, fctx: FunctionContext, bridge: DaprBridge,
                   name: str) -> Callable[[Any], Any]:
    from dapr.ext.grpc import SubscriptionMessage, TopicEventResponse

    batch = loaded.signature == "ctx_data" and batch_settings(loaded.manifest) is not None

    def handle(message: Any) -> Any:
        ctx = EventContext(fctx, bridge, name, topic_event=_legacy_event(message))
        try:
            data = message.data() if message.data() is not None else message.raw_data()

            def cloud_event() -> Any:
                from .events import cloud_event_from_topic

                return cloud_event_from_topic(message, data)

            _invoke(loaded, ctx, [data] if batch else data, cloud_event, message.topic())
        except Exception as exc:
            _failed(name, exc)
            return TopicEventResponse("retry")
        return TopicEventResponse("success")

    # The SDK picks the modern SubscriptionMessage API from the annotation.
    handle.__annotations__ = {"message": SubscriptionMessage}
    return handle


def _batch_runner(loaded: LoadedFunction, fctx: FunctionContext, bridge: DaprBridge
                  ) -> Callable[[Any, list[Any]], None]:
    """A batch function (``--batch N``) called once with the data of a bulk call's entries."""
    def run(request: Any, messages: list[Any]) -> None:
        name = next((n for n, c in fctx.inputs.items() if c.component_name ==
                     request.pubsub_name and c.topic == request.topic), request.topic)
        data = [m.data() if m.data() is not None else m.raw_data() for m in messages]
        try:
            _invoke(loaded, EventContext(fctx, bridge, name), data, lambda: None, request.topic)
        except Exception as exc:
            _failed(name, exc)
            raise
    return run


def _refuse_interceptor() -> Any:
    """A server interceptor that turns :class:`Refused` from a handler into the RPC's
    FAILED_PRECONDITION status (the SDK's servicer gives handlers no gRPC context to abort)."""
    import grpc

    class RefuseInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
            handler = continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            inner = handler.unary_unary

            def call(request: Any, context: Any) -> Any:
                try:
                    return inner(request, context)
                except Refused as exc:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, exc.reason)

            return grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

    return RefuseInterceptor()


def _token_interceptor(token: str) -> Any:
    """A server interceptor refusing calls without ``dapr-api-token: <token>``."""
    import grpc

    expected = token.encode()

    class RequireToken(grpc.ServerInterceptor):
        def __init__(self) -> None:
            def deny(request: Any, context: Any) -> Any:
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "missing or wrong dapr-api-token (the function's APP_API_TOKEN)")
            self.deny = grpc.unary_unary_rpc_method_handler(deny)

        def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
            given = dict(details.invocation_metadata or ()).get("dapr-api-token", "")
            if hmac.compare_digest(str(given).encode(), expected):
                return continuation(details)
            return self.deny

    return RequireToken()


def _app(app_class: Any, token: str) -> Any:
    """The SDK's ``App`` with :func:`_refuse_interceptor`, and refusing calls without
    ``dapr-api-token: APP_API_TOKEN`` when the function has one, as daprd's apps are meant to
    (dapr.ext.grpc's ``App`` checks nothing itself): on a shared machine any user can reach the
    callback port on 127.0.0.1, and would otherwise feed the function events. The stand-in and
    daprd send the token on every call."""
    from concurrent import futures

    from dapr.conf import settings

    interceptors = [_token_interceptor(token)] if token else []
    limit = settings.DAPR_GRPC_MAX_INBOUND_MESSAGE_SIZE_BYTES
    options = [("grpc.max_receive_message_length", limit)] if limit else []
    return app_class(thread_pool=futures.ThreadPoolExecutor(max_workers=10),
                     interceptors=[*interceptors, _refuse_interceptor()], options=options)


def declare_subscriptions(app: Any, loaded: LoadedFunction, environ: Mapping[str, str]
                          ) -> None:
    """runtime/bulk.py: every topic subscription bulk (many events a call, their sends in
    bulk), a batch function's with its size and wait; none with ``OFNOTEBOOK_BULK=off`` in
    the function's environment (``--env OFNOTEBOOK_BULK=off``: one event a call, daprd never
    waits for a batch to fill), except a batch function's, which needs its lists."""
    batch = batch_settings(loaded.manifest) if loaded.signature == "ctx_data" else None
    if batch:
        declare_bulk(app, max_messages=batch[0], max_await_ms=batch[1], batch=True)
    elif bulk_wanted(environ):
        declare_bulk(app)


def serve_async(loaded: LoadedFunction, fctx: FunctionContext, host: str,
                release: Callable[[], None] | None = None) -> None:
    """Register every input and serve AppCallback on ``fctx.port`` until stopped;
    ``release`` frees the port the standby process held, just before gRPC binds it."""
    map_dapr_host()
    from dapr.ext.grpc import App

    if loaded.signature in EVENT_SHAPES:
        from . import events  # noqa: F401  (cloudevents, imported before the first event)
    bridge = BufferingBridge(fctx)
    app = _app(App, os.environ.get("APP_API_TOKEN", ""))
    for name, comp in fctx.inputs.items():
        _register(app, loaded, fctx, bridge, name, comp)
    declare_subscriptions(app, loaded, os.environ)
    batch = batch_settings(loaded.manifest) if loaded.signature == "ctx_data" else None
    install_bulk(app, bridge, Refused, _batch_runner(loaded, fctx, bridge) if batch else None)
    app.register_health_check(lambda: None)
    print(f"ofnotebook runtime: serving {fctx.name} ({loaded.entry}, {loaded.signature}) "
          f"async on {host}:{fctx.port}, inputs: {', '.join(fctx.inputs) or 'none'}", flush=True)
    if release is not None:
        release()
    try:
        app.run(app_port=fctx.port, listen_address=host)
    finally:
        bridge.close()


def _register(app: Any, loaded: LoadedFunction, fctx: FunctionContext, bridge: DaprBridge,
              name: str, comp: Component) -> None:
    if comp.kind == "bindings":
        app.binding(comp.component_name)(_binding_handler(loaded, fctx, bridge, name, comp))
    elif comp.kind == "pubsub":
        app.subscribe(pubsub_name=comp.component_name, topic=comp.topic)(
            _topic_handler(loaded, fctx, bridge, name))
    else:
        raise ValueError(f"input {name!r} has type {comp.component_type!r}; inputs must be "
                         f"bindings.* or pubsub.* components")
