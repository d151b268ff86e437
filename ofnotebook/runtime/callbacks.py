"""Serve an async function: the Dapr AppCallback gRPC API on the context port.

Each input of the context becomes a binding handler (``bindings.*``) or a topic subscription
(``pubsub.*``) of the SDK's ``dapr.ext.grpc.App``, registered under the generated component name
daprd (or the local stand-in) calls it with. Reply statuses follow daprd's meaning: a handled
event acknowledges; an exception in the function asks for redelivery (RETRY for topics, a gRPC
error for bindings).
"""

from __future__ import annotations

import inspect
import json
import sys
import traceback
from typing import Any, Callable

from .context import Component, FunctionContext
from .files import missing_file_hint
from .loader import LoadedFunction
from .outputs import DaprBridge, DaprContext, map_dapr_host


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


def _invoke(loaded: LoadedFunction, ctx: EventContext, data: Any) -> None:
    fn = loaded.function
    if loaded.signature == "ctx_data":
        result = fn(ctx, data)
    elif loaded.signature == "context":
        result = fn(ctx)
    elif loaded.signature == "request":
        result = fn(data)
    else:
        result = fn()
    if inspect.iscoroutine(result):
        import asyncio

        asyncio.run(result)


def _report(name: str, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    hint = missing_file_hint(exc)
    print(f"error handling an event from input {name!r}:\n{text}" + (f"{hint}\n" if hint else ""),
          file=sys.stderr, end="", flush=True)


def _binding_handler(loaded: LoadedFunction, fctx: FunctionContext, bridge: DaprBridge,
                     name: str) -> Callable[[Any], None]:
    def handle(request: Any) -> None:
        ctx = EventContext(fctx, bridge, name, binding_request=request)
        try:
            _invoke(loaded, ctx, decode_binding_data(request.data))
        except Exception as exc:
            _report(name, exc)
            raise  # a gRPC error: the stand-in (or daprd) retries
    return handle


def _topic_handler(loaded: LoadedFunction, fctx: FunctionContext, bridge: DaprBridge,
                   name: str) -> Callable[[Any], Any]:
    from dapr.ext.grpc import SubscriptionMessage, TopicEventResponse

    def handle(message: Any) -> Any:
        ctx = EventContext(fctx, bridge, name, topic_event=_legacy_event(message))
        try:
            _invoke(loaded, ctx, message.data() if message.data() is not None
                    else message.raw_data())
        except Exception as exc:
            _report(name, exc)
            return TopicEventResponse("retry")
        return TopicEventResponse("success")

    # The SDK picks the modern SubscriptionMessage API from the annotation.
    handle.__annotations__ = {"message": SubscriptionMessage}
    return handle


def serve_async(loaded: LoadedFunction, fctx: FunctionContext, host: str,
                release: Callable[[], None] | None = None) -> None:
    """Register every input and serve AppCallback on ``fctx.port`` until stopped;
    ``release`` frees the port the standby process held, just before gRPC binds it."""
    map_dapr_host()
    from dapr.ext.grpc import App

    bridge = DaprBridge(fctx)
    app = App()
    for name, comp in fctx.inputs.items():
        _register(app, loaded, fctx, bridge, name, comp)
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
        app.binding(comp.component_name)(_binding_handler(loaded, fctx, bridge, name))
    elif comp.kind == "pubsub":
        app.subscribe(pubsub_name=comp.component_name, topic=comp.topic)(
            _topic_handler(loaded, fctx, bridge, name))
    else:
        raise ValueError(f"input {name!r} has type {comp.component_type!r}; inputs must be "
                         f"bindings.* or pubsub.* components")
