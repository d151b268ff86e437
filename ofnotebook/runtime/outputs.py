"""``ctx.send(output, data)``: Dapr output bindings and pub/sub through the Dapr Python SDK.

The component name always comes from the function context, because the controller generates
it (``<serving>-bindings-<name>-<rand>``). A failed send raises :class:`SendError`: unlike
OpenFunction's Python framework, which returns the error as a string, a failure is never silent.
A send that cannot succeed however often the event is retried (an output or a store the
function did not declare, an output of a type that is no binding nor pub/sub) raises a
:class:`SendError` with ``retryable=False`` before any network call, so the AppCallback can
refuse the event at once (FAILED_PRECONDITION: ``callbacks.py``) instead of having it retried
into a dead letter.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from .context import Component, FunctionContext


class SendError(RuntimeError):
    """Raised when an output cannot be sent; the message names the output and the cause.

    ``retryable`` is False for a call that cannot succeed on any retry: the output or store
    is not declared, or its type supports no send; the message then names what is declared
    and the fix (``--output NAME=URI``, ``--state NAME=URI``)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def _declared(names: Any) -> str:
    return ", ".join(repr(n) for n in sorted(names)) or "none"


def map_dapr_host() -> None:
    """Standalone (proxy) mode gives ``DAPR_HOST``; the Python SDK reads ``DAPR_RUNTIME_HOST``."""
    if os.environ.get("DAPR_HOST") and not os.environ.get("DAPR_RUNTIME_HOST"):
        os.environ["DAPR_RUNTIME_HOST"] = os.environ["DAPR_HOST"]


def encode(data: Any) -> tuple[bytes, str]:
    """Bytes and content type for an output: JSON for objects, text for str, raw bytes."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), "application/octet-stream"
    if isinstance(data, str):
        return data.encode("utf-8"), "text/plain"
    if hasattr(data, "tolist"):
        data = data.tolist()
    return json.dumps(data, default=str).encode("utf-8"), "application/json"


class DaprBridge:
    """The function's outputs and state stores over one shared, lazily created ``DaprClient``."""

    def __init__(self, fctx: FunctionContext) -> None:
        self.outputs = fctx.outputs
        self.states = fctx.states
        self._client: Any = None
        self._lock = threading.Lock()

    def _dapr(self) -> Any:
        with self._lock:
            if self._client is None:
                map_dapr_host()
                from dapr.clients import DaprClient

                self._client = DaprClient()
            return self._client

    def component(self, name: str) -> Component:
        try:
            return self.outputs[name]
        except KeyError:
            raise SendError(f"output {name!r} is not declared for this function (declared "
                            f"outputs: {_declared(self.outputs)}); declare it with --output "
                            f"{name}=URI, or send to a declared output",
                            retryable=False) from None

    def send(self, name: str, data: Any) -> Any:
        comp = self.component(name)
        if comp.kind not in ("bindings", "pubsub"):
            raise SendError(f"output {name!r} has type {comp.component_type!r}, which is "
                            f"neither a binding nor a pub/sub component: declare it with "
                            f"--output {name}=URI of an output binding or a pub/sub topic",
                            retryable=False)
        payload, content_type = encode(data)
        try:
            client = self._dapr()
            if comp.kind == "bindings":
                response = client.invoke_binding(comp.component_name, comp.operation or "create",
                                                 payload, dict(comp.metadata))
                return response.data
            client.publish_event(comp.component_name, comp.topic, payload,
                                 data_content_type=content_type,
                                 publish_metadata=dict(comp.metadata))
            return None
        except Exception as exc:  # grpc.RpcError, DaprGrpcError, TimeoutError from the probe
            details = exc.details() if hasattr(exc, "details") and callable(exc.details) else exc
            raise SendError(f"sending to output {name!r} ({comp.component_type} "
                            f"{comp.component_name!r}) failed: {details}") from exc

    @property
    def client(self) -> Any:
        """The ``DaprClient`` (OpenFunction's ``context.dapr_client``), for any other Dapr API."""
        return self._dapr()

    def _store(self, name: str) -> Component:
        try:
            return self.states[name]
        except KeyError:
            raise SendError(f"state store {name!r} is not declared for this function "
                            f"(declared state stores: {_declared(self.states)}); declare it "
                            f"with --state {name}=URI, or use a declared store",
                            retryable=False) from None

    def get_state(self, store: str, key: str) -> Any:
        """The value under ``key`` (JSON-decoded when it parses), or None."""
        comp = self._store(store)
        data = self._dapr().get_state(comp.component_name, key).data
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace")

    def save_state(self, store: str, key: str, value: Any) -> None:
        """Save ``value`` (JSON for objects, text for str) under ``key``."""
        payload, _ = encode(value)
        self._dapr().save_state(self._store(store).component_name, key, payload)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class DaprContext:
    """What every function context offers: outputs, state stores, the Dapr client."""

    _bridge: DaprBridge

    def send(self, output_name: str, data: Any) -> Any:
        """Send ``data`` to a declared output (binding or pub/sub); raises SendError."""
        return self._bridge.send(output_name, data)

    def get_state(self, store: str, key: str) -> Any:
        """Read ``key`` from a declared state store."""
        return self._bridge.get_state(store, key)

    def save_state(self, store: str, key: str, value: Any) -> None:
        """Write ``key`` to a declared state store."""
        self._bridge.save_state(store, key, value)

    @property
    def dapr_client(self) -> Any:
        """The shared ``DaprClient``, as OpenFunction's ``context.dapr_client``."""
        return self._bridge.client
