"""What the stand-in knows of each function: how to call it (its port and protocol) and its
components."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2_grpc

from .bulk import BulkSettings
from .drivers import ComponentConfig, Driver
from .protocol import APP_GRPC, ROLE_INPUT, TOKEN_HEADER, callback_token

#: gRPC's reconnect backoff grows to 120 s by default: a channel to an app that was down would
#: then keep failing long after the app restarted on the same port. Capped to a second here.
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000))

_callback_key = ""  # protocol.STANDIN_KEY_ENV of this process: signs each app's APP_API_TOKEN


def set_callback_key(key: str) -> None:
    """Set once at start (``__main__``), so every AppCallback call carries the app's
    ``APP_API_TOKEN`` (``protocol.callback_token``), which its runtime requires."""
    global _callback_key
    _callback_key = key


class _AppToken(grpc.UnaryUnaryClientInterceptor):
    """Adds ``dapr-api-token: APP_API_TOKEN`` to each call, as daprd does for its app."""

    def __init__(self, token: str) -> None:
        self.metadata = ((TOKEN_HEADER, token),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = tuple(details.metadata or ()) + self.metadata
        return continuation(details._replace(metadata=metadata), request)


@dataclass
class Endpoint:
    """One component of one app: its role, the name the code uses and the driver behind it.

    A pub/sub input also carries its subscription as daprd keeps it: the dead-letter topic
    failed events go to, and the routes (``default_path``, ``rules`` of ``(match, path)``)
    that pick the ``path`` of each ``OnTopicEvent``. ``discovered`` marks a subscription the
    app declared itself (``ListTopicSubscriptions``), with a driver of its own; ``bulk`` its
    ``bulkSubscribe`` settings (``sidecar/bulk.py``)."""

    role: str  # protocol.ROLES
    name: str
    component: ComponentConfig
    topic: str = ""
    driver: Driver | None = None
    dead_letter_topic: str = ""
    default_path: str = ""
    rules: tuple[tuple[str, str], ...] = ()
    discovered: bool = False
    #: ``bulkSubscribe`` of the subscription (None: unary only), as daprd reads it.
    bulk: BulkSettings | None = None

    @property
    def kind(self) -> str:
        return self.component.type.split(".", 1)[0]

    @classmethod
    def from_payload(cls, item: dict[str, Any]) -> Endpoint:
        """One entry of a registration's ``components`` (``protocol.COMPONENT_KEYS``)."""
        metadata = {k: str(v) for k, v in (item.get("metadata") or {}).items()}
        return cls(role=item["role"], name=item["name"], topic=item.get("topic") or "",
                   component=ComponentConfig(name=item["componentName"], type=item["type"],
                                             version=item.get("version") or "v1",
                                             metadata=metadata))


@dataclass
class App:
    """A function known to the stand-in: where its AppCallback listens and its components."""

    app_id: str
    port: int
    endpoints: list[Endpoint] = field(default_factory=list)
    signature: str = ""
    #: How the stand-in calls the app: ``protocol.APP_PROTOCOLS``.
    protocol: str = APP_GRPC
    _channels: dict[int, grpc.Channel] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inputs(self) -> list[Endpoint]:
        return [ep for ep in self.endpoints if ep.role == ROLE_INPUT]

    def subscriptions(self) -> list[dict[str, Any]]:
        """The app's topic subscriptions as daprd's metadata API lists them."""
        return [{"pubsubname": ep.component.name, "topic": ep.topic,
                 "deadLetterTopic": ep.dead_letter_topic,
                 "rules": [{"match": match, "path": path} for match, path in ep.rules]
                 + [{"match": "", "path": ep.default_path}]}
                for ep in self.inputs() if ep.kind == "pubsub"]

    def endpoint(self, role: str, name: str) -> Endpoint | None:
        """The endpoint the function's code calls ``name`` in ``role``, if it has one."""
        return next((e for e in self.endpoints if e.role == role and e.name == name), None)

    def set_port(self, port: int) -> None:
        """The function restarted on another port; deliveries from now on go there."""
        with self._lock:
            self.port = port

    def stub(self) -> appcallback_pb2_grpc.AppCallbackStub:
        return appcallback_pb2_grpc.AppCallbackStub(self._channel())

    def alpha_stub(self) -> appcallback_pb2_grpc.AppCallbackAlphaStub:
        """``AppCallbackAlpha`` (``OnBulkTopicEventAlpha1``: apps built for daprd < 1.17)."""
        return appcallback_pb2_grpc.AppCallbackAlphaStub(self._channel())

    def _channel(self) -> grpc.Channel:
        with self._lock:
            port = self.port
            channel = self._channels.get(port)
            if channel is None:
                channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
                if _callback_key:
                    channel = grpc.intercept_channel(
                        channel, _AppToken(callback_token(_callback_key, self.app_id)))
                self._channels[port] = channel
        return channel

    def reachable(self) -> bool:
        """Whether something accepts connections on the app's current port (a restarted
        process, before the next try of an event held for it)."""
        with self._lock:
            port = self.port
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def close_channels(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
