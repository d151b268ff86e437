"""Apps, their components, at-least-once delivery to AppCallback, and the event log.

Delivery follows daprd: a binding event goes to ``OnBindingEvent``, a topic event to
``OnTopicEvent`` with the CloudEvent envelope daprd builds. SUCCESS acknowledges; RETRY or a
gRPC error is retried with exponential backoff (the app may be restarting: each attempt uses
the app's current port); DROP, UNIMPLEMENTED or the last failed attempt record a dead letter
and acknowledge. No event is dropped without a record in the log.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import empty_pb2

from . import cloudevents
from .drivers import ComponentConfig, ComponentError, Driver, create_driver
from .drivers.base import InboundEvent

DEFAULT_ATTEMPTS = 8
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
# Events in flight per input (as pubsub.redis's default `concurrency`); measured: 4, 10 and 16 give
# the same rate within noise on 2 cores, more threads only contend for the GIL.
DELIVERY_CONCURRENCY = 10


def payload_view(data: bytes, content_type: str = "") -> dict[str, Any]:
    """A JSON-friendly view of a payload for the notebook: parsed JSON, text, or base64."""
    if not data:
        return {"data": None, "encoding": "empty"}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode(), "encoding": "base64"}
    if "json" in content_type or not content_type:
        try:
            return {"data": json.loads(text), "encoding": "json"}
        except ValueError:
            pass
    return {"data": text, "encoding": "text"}


class EventLog:
    """A bounded, numbered log of everything that happened; readers long-poll by sequence.

    Sequence numbers are consecutive, so a reader's position maps straight to an index: a long
    poll costs what it returns, not the size of the log.
    """

    def __init__(self, maxlen: int = 10000) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._seq = 0
        self._cond = threading.Condition()
        self.counters: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(self, app: str, kind: str, **fields: Any) -> dict[str, Any]:
        with self._cond:
            self._seq += 1
            event = {"seq": self._seq, "time": time.time(), "app": app, "kind": kind, **fields}
            self._events.append(event)
            self.counters[(app, kind)] += 1
            self._cond.notify_all()
        return event

    def since(self, after: int, wait: float, app: str | None = None,
              limit: int = 5000) -> list[dict[str, Any]]:
        """Up to ``limit`` records after sequence ``after`` (of one app if given); waits up to
        ``wait`` seconds for the first one."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                found = self._after(after, app, limit) if self._seq > after else []
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                if app is not None:
                    after = self._seq  # nothing of this app so far: skip what was scanned
                self._cond.wait(remaining)

    def _after(self, after: int, app: str | None, limit: int) -> list[dict[str, Any]]:
        first = self._events[0]["seq"] if self._events else self._seq + 1
        tail = itertools.islice(self._events, max(0, after + 1 - first), None)
        if app is not None:
            tail = (e for e in tail if e["app"] == app)
        return list(itertools.islice(tail, limit))

    @property
    def last_seq(self) -> int:
        return self._seq


@dataclass
class Endpoint:
    """One component of one app: its role, the name the code uses and the driver behind it."""

    role: str  # input | output | state
    name: str
    component: ComponentConfig
    topic: str = ""
    driver: Driver | None = None

    @property
    def kind(self) -> str:
        return self.component.type.split(".", 1)[0]


@dataclass
class App:
    """A function known to the stand-in: where its AppCallback listens and its components."""

    app_id: str
    port: int
    endpoints: list[Endpoint] = field(default_factory=list)
    signature: str = ""
    _channels: dict[int, grpc.Channel] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stub(self) -> appcallback_pb2_grpc.AppCallbackStub:
        with self._lock:
            port = self.port
            channel = self._channels.get(port)
            if channel is None:
                channel = self._channels[port] = grpc.insecure_channel(f"127.0.0.1:{port}")
        return appcallback_pb2_grpc.AppCallbackStub(channel)

    def close_channels(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


class Dispatcher:
    """Delivers one input's events to its app with bounded concurrency and retries."""

    def __init__(self, app: App, endpoint: Endpoint, log: EventLog, attempts: int) -> None:
        self.app, self.endpoint, self.log, self.attempts = app, endpoint, log, attempts
        ordered = bool(endpoint.driver and endpoint.driver.ordered)
        width = 1 if ordered else DELIVERY_CONCURRENCY
        self._slots = threading.BoundedSemaphore(width)
        self._pool = ThreadPoolExecutor(max_workers=width,
                                        thread_name_prefix=f"deliver-{endpoint.name}")
        self._closed = threading.Event()

    def __call__(self, event: InboundEvent) -> None:
        self._slots.acquire()  # back-pressure on the driver's consumer
        if self._closed.is_set():
            self._slots.release()
            return  # not acknowledged: the broker keeps it for the next consumer
        self._pool.submit(self._deliver, event)

    def _deliver(self, event: InboundEvent) -> None:
        try:
            self._deliver_with_retries(event)
        finally:
            self._slots.release()

    def _deliver_with_retries(self, event: InboundEvent) -> None:
        ep = self.endpoint
        request, content_type, data = self._request(event)
        self.log.record(self.app.app_id, "in", name=ep.name, component=ep.component.name,
                        type=ep.component.type, metadata=dict(event.metadata),
                        **payload_view(data, content_type))
        delay = BACKOFF_START
        error = ""
        for attempt in range(1, self.attempts + 1):
            if self._closed.is_set():
                return  # unacknowledged: redelivered by the broker to the next consumer
            outcome, error = self._attempt(request)
            if outcome == "success":
                self.log.record(self.app.app_id, "delivered", name=ep.name, attempt=attempt)
                event.ack()
                return
            if outcome == "drop":
                break
            self.log.record(self.app.app_id, "retry", name=ep.name, attempt=attempt, error=error)
            if attempt < self.attempts:
                self._closed.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        self.log.record(self.app.app_id, "dead-letter", name=ep.name, component=ep.component.name,
                        error=error, attempts=attempt, **payload_view(data, content_type))
        event.ack()

    def _request(self, event: InboundEvent) -> tuple[Any, str, bytes]:
        ep = self.endpoint
        if ep.kind == "bindings":
            return (appcallback_pb2.BindingEventRequest(name=ep.component.name, data=event.data,
                                                        metadata=event.metadata), "", event.data)
        try:
            ce = json.loads(event.data)
            if not isinstance(ce, dict) or "specversion" not in ce:
                raise ValueError("not a CloudEvent")
        except ValueError:
            ce = cloudevents.from_raw_payload(data=event.data, topic=ep.topic,
                                              pubsub_name=ep.component.name)
        request = cloudevents.topic_event_request(ce, topic=ep.topic,
                                                  pubsub_name=ep.component.name)
        return request, request.data_content_type, request.data

    def _attempt(self, request: Any) -> tuple[str, str]:
        ep = self.endpoint
        try:
            stub = self.app.stub()
            if ep.kind == "bindings":
                stub.OnBindingEvent(request, timeout=60)
                return "success", ""
            reply = stub.OnTopicEvent(request, timeout=60,
                                      metadata=cloudevents.grpc_metadata(ep.component.name))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return "drop", f"the app does not handle {ep.name!r} (UNIMPLEMENTED)"
            return "retry", f"{exc.code().name}: {exc.details()}"
        if reply.status == appcallback_pb2.TopicEventResponse.RETRY:
            return "retry", "the function raised; see its logs"
        if reply.status == appcallback_pb2.TopicEventResponse.DROP:
            return "drop", "the app answered DROP"
        return "success", ""

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


class Registry:
    """All apps and their components; creates and closes drivers."""

    def __init__(self, log: EventLog, attempts: int = DEFAULT_ATTEMPTS) -> None:
        self.log = log
        self.attempts = attempts
        self.apps: dict[str, App] = {}
        self._dispatchers: dict[str, list[Dispatcher]] = {}
        self._lock = threading.RLock()

    def find(self, component_name: str) -> tuple[App, Endpoint]:
        with self._lock:
            for app in self.apps.values():
                for ep in app.endpoints:
                    if ep.component.name == component_name:
                        return app, ep
        raise KeyError(component_name)

    def register(self, app_id: str, port: int, endpoints: list[Endpoint], signature: str,
                 connect_timeout: float) -> dict[str, Any]:
        """Add or update an app; start its drivers and consumers. Raises ComponentError."""
        with self._lock:
            current = self.apps.get(app_id)
            if current is not None and current.signature == signature:
                with current._lock:
                    current.port = port
                return self._discover(current, connect_timeout)
            if current is not None:
                self.unregister(app_id)
            app = App(app_id=app_id, port=port, endpoints=endpoints, signature=signature)
            started: list[Driver] = []
            try:
                for ep in endpoints:
                    ep.driver = create_driver(ep.component)
                    ep.driver.start()
                    started.append(ep.driver)
                found = self._discover(app, connect_timeout)
                dispatchers = []
                for ep in endpoints:
                    if ep.role != "input":
                        continue
                    dispatcher = Dispatcher(app, ep, self.log, self.attempts)
                    dispatchers.append(dispatcher)
                    assert ep.driver is not None
                    if ep.kind == "bindings":
                        ep.driver.read(dispatcher)
                    else:
                        ep.driver.subscribe(ep.topic, dispatcher)
            except Exception:
                for driver in started:
                    driver.close()
                app.close_channels()
                raise
            self.apps[app_id] = app
            self._dispatchers[app_id] = dispatchers
            self.log.record(app_id, "registered", port=port,
                            components=[ep.component.name for ep in endpoints])
            return found

    def _discover(self, app: App, timeout: float) -> dict[str, Any]:
        """Ask the app what it handles (as daprd does), retrying until it answers.

        Only apps with inputs serve AppCallback; a sync function with outputs serves HTTP.
        """
        if not any(ep.role == "input" for ep in app.endpoints):
            return {"bindings": [], "subscriptions": []}
        deadline = time.monotonic() + timeout
        while True:
            try:
                stub = app.stub()
                bindings = stub.ListInputBindings(empty_pb2.Empty(), timeout=2).bindings
                subs = stub.ListTopicSubscriptions(empty_pb2.Empty(), timeout=2).subscriptions
                return {"bindings": list(bindings),
                        "subscriptions": [[s.pubsub_name, s.topic] for s in subs]}
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise ComponentError(
                        f"the function {app.app_id!r} did not answer on its AppCallback port "
                        f"{app.port} within {timeout:.0f} s ({exc.code().name})") from exc
                time.sleep(0.02)

    def unregister(self, app_id: str) -> bool:
        with self._lock:
            app = self.apps.pop(app_id, None)
            dispatchers = self._dispatchers.pop(app_id, [])
        if app is None:
            return False
        for dispatcher in dispatchers:
            dispatcher.close()
        for ep in app.endpoints:
            if ep.driver is not None:
                ep.driver.close()
        app.close_channels()
        self.log.record(app_id, "unregistered")
        return True

    def close(self) -> None:
        for app_id in list(self.apps):
            self.unregister(app_id)
