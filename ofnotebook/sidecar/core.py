"""The Dapr API of the stand-in, one method per verb, under both of its faces.

``server.py`` exposes :class:`DaprCore` twice, over gRPC (the ``Dapr`` servicer the SDK calls)
and over HTTP (the Dapr HTTP API plus the kernel's control API), as thin adapters: they decode
the request, call one method here and encode the answer. So both faces record the same events
and raise the same errors; :data:`ERROR_STATUS` is the one table that maps an error to its gRPC
code and HTTP status.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from . import cloudevents
from .apps import App, Endpoint
from .drivers import ComponentConfig, ComponentError
from .eventlog import EventLog, payload_view
from .inject import Injector
from .protocol import ENCODING_MISSING, EVENT_ERROR, EVENT_OUT, EVENT_STATE, ROLE_OUTPUT, \
    ROLE_STATE
from .registry import Registry


class NotRegisteredError(LookupError):
    """Raised when a call names a component or an app the stand-in does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not registered"


class EtagError(ComponentError):
    """Raised when a state write's etag is stale or malformed (Dapr: ABORTED / 409)."""


#: (error class, gRPC status code name, HTTP status), most specific first.
ERROR_STATUS: tuple[tuple[type[Exception], str, int], ...] = (
    (NotRegisteredError, "NOT_FOUND", 404),
    (EtagError, "ABORTED", 409),
    (ComponentError, "INTERNAL", 400),
)


def error_status(exc: BaseException) -> tuple[str, int] | None:
    """The gRPC code name and HTTP status of ``exc``, or None for an unexpected error."""
    for cls, code, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return code, status
    return None


def state_key(app_id: str, key: str) -> str:
    """Dapr's default keyPrefix is the app id: ``<app-id>||<key>``."""
    return f"{app_id}||{key}"


class DaprCore:
    """Every Dapr verb the stand-in serves, and the kernel's control verbs, over a registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.log: EventLog = registry.log
        self.injector = Injector(registry, lambda app, ep, topic, data, ct: self._publish(
            app, ep, topic, data, ct, {}, source="ofnotebook"))

    # -- lookups ------------------------------------------------------------------------------
    def find(self, component_name: str) -> tuple[App, Endpoint]:
        try:
            return self.registry.find(component_name)
        except KeyError:
            raise NotRegisteredError(f"component {component_name!r} is not registered with the "
                                     "local stand-in") from None

    def app(self, app_id: str) -> App:
        app = self.registry.apps.get(app_id)
        if app is None:
            raise NotRegisteredError(f"app {app_id!r} is not registered with the local stand-in")
        return app

    # -- Dapr verbs ---------------------------------------------------------------------------
    def invoke_binding(self, name: str, operation: str, data: bytes,
                       metadata: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        app, ep = self.find(name)
        if ep.kind != "bindings" or ep.driver is None:
            raise ComponentError(f"{ep.component.name!r} is a {ep.component.type} component, "
                                 f"not an output binding")
        operation = operation or "create"
        try:
            result = ep.driver.invoke(operation, data, metadata)
        except ComponentError as exc:
            self.log.record(app.app_id, EVENT_ERROR, name=ep.name, error=str(exc))
            raise
        self.log.record(app.app_id, EVENT_OUT, name=ep.name, component=ep.component.name,
                        type=ep.component.type, operation=operation, metadata=dict(metadata),
                        **payload_view(data))
        return result

    def publish_event(self, pubsub: str, topic: str, data: bytes, content_type: str,
                      metadata: Mapping[str, str]) -> None:
        app, ep = self.find(pubsub)
        self._publish(app, ep, topic, data, content_type, metadata)

    def _publish(self, app: App, ep: Endpoint, topic: str, data: bytes, content_type: str,
                 metadata: Mapping[str, str], source: str | None = None) -> None:
        if ep.kind != "pubsub" or ep.driver is None:
            raise ComponentError(f"{ep.component.name!r} is a {ep.component.type} component, "
                                 f"not a pub/sub component")
        topic = topic or ep.topic
        try:
            if cloudevents.is_raw_payload(metadata):
                body = data
            else:
                ce = cloudevents.new_cloud_event(app_id=source or app.app_id,
                                                 pubsub_name=ep.component.name, topic=topic,
                                                 data=data,
                                                 data_content_type=content_type or None,
                                                 metadata=metadata)
                body = cloudevents.to_bytes(ce)
            ep.driver.publish(topic, body, metadata)
        except (ComponentError, ValueError) as exc:
            self.log.record(app.app_id, EVENT_ERROR, name=ep.name, error=str(exc))
            if isinstance(exc, ComponentError):
                raise
            raise ComponentError(f"publishing to {ep.component.name!r}: {exc}") from exc
        if ep.role == ROLE_OUTPUT:
            self.log.record(app.app_id, EVENT_OUT, name=ep.name, component=ep.component.name,
                            type=ep.component.type, topic=topic, content_type=content_type,
                            **payload_view(data, content_type))

    def get_state(self, store: str, key: str) -> tuple[bytes | None, str]:
        """The value (None when missing) and its etag."""
        app, ep = self.find(store)
        assert ep.driver is not None
        return ep.driver.get_state(state_key(app.app_id, key))

    def get_bulk_state(self, store: str, keys: Iterable[str]
                       ) -> list[tuple[str, bytes | None, str]]:
        return [(key, *self.get_state(store, key)) for key in keys]

    def save_state(self, store: str, items: Iterable[tuple[str, bytes, str | None]]) -> None:
        """Write ``(key, value, etag)`` items in order; each write is recorded."""
        app, ep = self.find(store)
        assert ep.driver is not None
        for key, value, etag in items:
            with _etag_errors():
                ep.driver.save_state(state_key(app.app_id, key), value, etag or None)
            self.log.record(app.app_id, EVENT_STATE, name=ep.name, key=key,
                            **payload_view(value))

    def delete_state(self, store: str, key: str, etag: str | None) -> None:
        app, ep = self.find(store)
        assert ep.driver is not None
        with _etag_errors():
            ep.driver.delete_state(state_key(app.app_id, key), etag or None)

    def components(self) -> list[ComponentConfig]:
        """``GetMetadata``: every registered component."""
        return self.registry.components()

    # -- the kernel's control verbs (protocol.py) --------------------------------------------
    def register(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.registry.register_payload(app_id, body)

    def unregister(self, app_id: str) -> bool:
        return self.registry.unregister(app_id)

    def inject(self, app_id: str, input_name: str, data: bytes, content_type: str) -> None:
        self.injector.inject(self.app(app_id), input_name, data, content_type)

    def read_state(self, app_id: str, name: str, key: str) -> dict[str, Any]:
        """A state value of one app's store, as the notebook shows it."""
        ep = self.app(app_id).endpoint(ROLE_STATE, name)
        if ep is None or ep.driver is None:
            raise NotRegisteredError(f"state store {name!r} of {app_id!r} is not registered "
                                     "with the local stand-in")
        data, etag = ep.driver.get_state(state_key(app_id, key))
        if data is None:
            return {"key": key, "etag": "", "data": None, "encoding": ENCODING_MISSING}
        return {"key": key, "etag": etag, **payload_view(data)}

    def events(self, after: int, wait: float, app_id: str | None) -> dict[str, Any]:
        return {"events": self.log.since(after, min(wait, 30.0), app_id),
                "last": self.log.last_seq}

    def stats(self) -> dict[str, Any]:
        return {"apps": sorted(self.registry.apps), "counts": self.log.counts(),
                "pid": os.getpid()}

    def close(self) -> None:
        self.injector.close()
        self.registry.close()


class _etag_errors:  # noqa: N801 - used as a context manager
    """A driver's etag failure becomes :class:`EtagError` (ABORTED / 409, as daprd)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, ComponentError) and not isinstance(exc, EtagError) \
                and "etag" in str(exc):
            raise EtagError(str(exc)) from exc
