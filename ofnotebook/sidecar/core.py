"""The Dapr API of the stand-in, one method per verb, under both of its faces.

``server.py`` and ``httpapi.py`` expose :class:`DaprCore` twice, over gRPC (the ``Dapr``
servicer the SDK calls) and over HTTP (the Dapr HTTP API plus the kernel's control API), as thin
adapters: they decode the request, call one method here and encode the answer. So both faces
record the same events and raise the same errors; ``errors.ERROR_STATUS`` is the one table that
maps an error to its gRPC code and HTTP status.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any, Iterable, Mapping, Sequence

from . import cloudevents
from .apps import App, Endpoint
from .drivers import ComponentConfig, ComponentError
from .drivers.base import STATE_OPERATIONS, Driver, StateOperation
from .errors import (ERROR_STATUS, DaprError, NotRegisteredError, component_not_found,
                     error_status)
from .eventlog import EventLog, payload_view
from .inject import Injector
from .invoke import InvokeResult, Invoker
from .protocol import (ENCODING_MISSING, EVENT_ERROR, EVENT_OUT, EVENT_STATE, ROLE_INPUT,
                       ROLE_COMPONENT, ROLE_OUTPUT, ROLE_STATE, token_app)
from .registry import Registry

__all__ = ["DaprCore", "ERROR_STATUS", "NotRegisteredError", "error_status", "state_key"]

#: ``GetMetadata``'s app id for a caller that is no function (the notebook, a script).
STANDIN_ID = "ofnotebook-standin"
#: The app the call being served comes from, by its token (both faces set it per call).
CALLER: ContextVar[str | None] = ContextVar("caller", default=None)


def state_key(app_id: str, key: str, store: ComponentConfig | None = None) -> str:
    """The key daprd stores ``key`` under, by the store's ``keyPrefix`` strategy: ``appid``
    (the default) ``<app-id>||<key>``; ``name`` ``<store>||<key>`` (apps using one store share
    its keys: a named component's use); ``namespace`` ``<NAMESPACE>.<app-id>||<key>``, the app
    id alone without one; ``none`` the key itself; any other value is the prefix."""
    strategy = (store.get("keyPrefix") if store is not None else "") or "appid"
    prefix = {"appid": app_id, "name": store.name if store is not None else app_id,
              "namespace": ".".join(filter(None, (os.environ.get("NAMESPACE"), app_id))),
              "none": ""}.get(strategy.lower(), strategy)
    return f"{prefix}||{key}" if prefix else key


class DaprCore:
    """Every Dapr verb the stand-in serves, and the kernel's control verbs, over a registry."""

    def __init__(self, registry: Registry, key: str = "") -> None:
        self.registry = registry
        self.log: EventLog = registry.log
        self.key = key  # protocol.STANDIN_KEY_ENV: the key of the per-app tokens
        self.invoker = Invoker(registry)
        self.injector = Injector(
            registry,
            lambda app, ep, topic, data, ct: self._publish(app, ep, topic, data, ct, {},
                                                           source="ofnotebook"),
            lambda app, ep, items: self._publish_many(
                app, ep, ep.topic, [(data, ct, {}) for data, ct in items], source="ofnotebook"))

    # -- lookups ------------------------------------------------------------------------------
    def caller(self, token: str | None) -> str | None:
        """The app a call comes from, by its per-app ``dapr-api-token`` (None: not an app)."""
        return token_app(self.key, token) if token else None

    def find(self, component_name: str, kind: str = "") -> tuple[App, Endpoint]:
        """The app and endpoint a call of ``component_name`` goes to. A named component
        (``--component``) is registered under that one name by every app using it: the
        caller's own registration comes first (:data:`CALLER`: its events, its state keys),
        then an output or state use before an input use (the call goes out). An unknown name
        fails as daprd fails for its ``kind`` (``errors.NOT_FOUND``), listing what the caller
        could call instead."""
        caller = CALLER.get()
        found = [(app, ep) for app in list(self.registry.apps.values())
                 for ep in list(app.endpoints)
                 if ep.component.name == component_name and not ep.discovered]
        if not found:
            known = self._stores(caller) if kind == "state" else self._known(caller)
            raise component_not_found(kind, component_name, known)
        return min(found, key=lambda item: (item[0].app_id != caller,
                                            item[1].role == ROLE_INPUT))

    def _known(self, caller: str | None) -> str:
        """What a caller may call, for an unknown-component error: its own components and
        the kernel's named ones (``--component``), each with its type."""
        apps = list(self.registry.apps.values())
        # a caller that is no function (the notebook, a script) may call any of them
        own = {ep.component.name: ep.component.type for app in apps
               if app.app_id == caller or caller is None
               for ep in list(app.endpoints) if not ep.discovered}
        named = {ep.component.name: ep.component.type for app in apps
                 for ep in list(app.endpoints) if ep.role == ROLE_COMPONENT}

        def listed(items: dict[str, str]) -> str:
            return ", ".join(f"{n!r} ({t})" for n, t in sorted(items.items())) or "none"

        whose = f"{caller!r}'s" if caller else "registered"
        return f"{whose} components: {listed(own)}; the kernel's named components: " \
               f"{listed(named)}"

    def _stores(self, caller: str | None) -> str:
        """The state stores a caller declared, for an unknown-store error: each by the
        component name the call takes, with the ``--state`` name and type it came from (a
        caller that is no function: every registered store), or "none declared"."""
        stores = sorted({(ep.component.name, ep.name, ep.component.type)
                         for app in list(self.registry.apps.values())
                         if app.app_id == caller or caller is None
                         for ep in list(app.endpoints)
                         if ep.kind == "state" and not ep.discovered})
        whose = f"the state stores {caller!r} declared" if caller else \
            "the state stores registered with the local stand-in"
        listed = ", ".join(f"{c!r} (--state {n}, {t})" if n != c else f"{c!r} ({t})"
                           for c, n, t in stores)
        return f"{whose}: {listed or 'none declared'}"

    def app(self, app_id: str) -> App:
        app = self.registry.apps.get(app_id)
        if app is None:
            raise NotRegisteredError(f"app {app_id!r} is not registered with the local stand-in")
        return app

    # -- Dapr verbs ---------------------------------------------------------------------------
    def invoke_binding(self, name: str, operation: str, data: bytes,
                       metadata: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        app, ep = self.find(name, "bindings")
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
        app, ep = self.find(pubsub, "pubsub")
        self._publish(app, ep, topic, data, content_type, metadata)

    def _publish(self, app: App, ep: Endpoint, topic: str, data: bytes, content_type: str,
                 metadata: Mapping[str, str], source: str | None = None) -> None:
        driver = self._pubsub_driver(ep)
        topic = topic or ep.topic
        try:
            driver.publish(topic, self._event_body(app, ep, topic, data, content_type,
                                                   metadata, source), metadata)
        except (ComponentError, ValueError) as exc:
            self.log.record(app.app_id, EVENT_ERROR, name=ep.name, error=str(exc))
            if isinstance(exc, ComponentError):
                raise
            raise ComponentError(f"publishing to {ep.component.name!r}: {exc}") from exc
        if ep.role in (ROLE_OUTPUT, ROLE_COMPONENT):  # a publish the function's code made
            self._record_out(app, ep, topic, [(data, content_type)])

    def _publish_many(self, app: App, ep: Endpoint, topic: str,
                      entries: Sequence[tuple[bytes, str, Mapping[str, str]]],
                      source: str | None = None) -> list[tuple[int, str]]:
        """``(data, content_type, metadata)`` entries published as ``_publish`` would, each
        its own CloudEvent, in one ``Driver.publish_many`` (one broker round trip where the
        driver batches); returns the failed ``(index, error)``, each also an ``error`` record
        as a failed ``_publish`` is. A driver that fails as a whole (closed, wrong kind)
        fails every entry."""
        driver = self._pubsub_driver(ep)
        topic = topic or ep.topic
        failed: dict[int, str] = {}
        bodies: list[tuple[bytes, Mapping[str, str]]] = []
        sent: list[int] = []  # the entry index of each body
        for index, (data, content_type, metadata) in enumerate(entries):
            try:
                bodies.append((self._event_body(app, ep, topic, data, content_type, metadata,
                                                source), metadata))
                sent.append(index)
            except ValueError as exc:
                failed[index] = f"publishing to {ep.component.name!r}: {exc}"
        if bodies:
            try:
                for position, refused in driver.publish_many(topic, bodies):
                    failed[sent[position]] = str(refused)
            except ComponentError as exc:
                failed.update((index, str(exc)) for index in sent)
        for index in sorted(failed):
            self.log.record(app.app_id, EVENT_ERROR, name=ep.name, error=failed[index])
        if ep.role in (ROLE_OUTPUT, ROLE_COMPONENT):  # publishes the function's code made
            self._record_out(app, ep, topic, [(entries[i][0], entries[i][1]) for i in sent
                                              if i not in failed])
        return sorted(failed.items())

    @staticmethod
    def _pubsub_driver(ep: Endpoint) -> Driver:
        if ep.kind != "pubsub" or ep.driver is None:
            raise ComponentError(f"{ep.component.name!r} is a {ep.component.type} component, "
                                 f"not a pub/sub component")
        return ep.driver

    @staticmethod
    def _event_body(app: App, ep: Endpoint, topic: str, data: bytes, content_type: str,
                    metadata: Mapping[str, str], source: str | None) -> bytes:
        """What goes into the broker for one publish: the CloudEvent daprd would build, or
        ``data`` itself under ``rawPayload``; ``ValueError`` for metadata daprd refuses."""
        if cloudevents.is_raw_payload(metadata):
            return data
        return cloudevents.to_bytes(cloudevents.new_cloud_event(
            app_id=source or app.app_id, pubsub_name=ep.component.name, topic=topic,
            data=data, data_content_type=content_type or None, metadata=metadata))

    def _record_out(self, app: App, ep: Endpoint, topic: str,
                    sent: Sequence[tuple[bytes, str]]) -> None:
        """One ``out`` record per published event: the kernel counts and shows each. The
        fields every record of the batch shares are made once."""
        shared = {"name": ep.name, "component": ep.component.name, "type": ep.component.type,
                  "topic": topic}
        for data, content_type in sent:
            self.log.record(app.app_id, EVENT_OUT, **shared, content_type=content_type,
                            **payload_view(data, content_type))

    def get_state(self, store: str, key: str) -> tuple[bytes | None, str]:
        """The value (None when missing) and its etag."""
        app, ep = self.find(store, "state")
        assert ep.driver is not None
        return ep.driver.get_state(state_key(app.app_id, key, ep.component))

    def get_bulk_state(self, store: str, keys: Iterable[str]
                       ) -> list[tuple[str, bytes | None, str]]:
        return [(key, *self.get_state(store, key)) for key in keys]

    def save_state(self, store: str, items: Iterable[tuple[str, bytes, str | None]]) -> None:
        """Write ``(key, value, etag)`` items in order; each write is recorded."""
        app, ep = self.find(store, "state")
        assert ep.driver is not None
        for key, value, etag in items:
            ep.driver.save_state(state_key(app.app_id, key, ep.component), value, etag or None)
            self.log.record(app.app_id, EVENT_STATE, name=ep.name, key=key,
                            **payload_view(value))

    def delete_state(self, store: str, key: str, etag: str | None) -> None:
        app, ep = self.find(store, "state")
        assert ep.driver is not None
        ep.driver.delete_state(state_key(app.app_id, key, ep.component), etag or None)

    def delete_bulk_state(self, store: str, items: Iterable[tuple[str, str | None]]) -> None:
        """``DeleteBulkState``: ``(key, etag)`` items, one after the other, as daprd's."""
        for key, etag in items:
            self.delete_state(store, key, etag)

    def transact(self, store: str, operations: Sequence[tuple[str, str, bytes, str | None]]
                 ) -> None:
        """``ExecuteStateTransaction``: ``(operation, key, value, etag)`` items, all or none,
        in the store's own transaction. A failure, a stale etag too, is daprd's
        ``ERR_STATE_TRANSACTION`` (INTERNAL / 500: daprd maps ETagMismatch to ABORTED only
        for SaveState and DeleteState)."""
        app, ep = self.find(store, "state")
        assert ep.driver is not None
        for kind, _key, _value, _etag in operations:
            if kind not in STATE_OPERATIONS:
                raise DaprError(f"operation type {kind} not supported", code="UNIMPLEMENTED",
                                status=400, error_code="ERR_NOT_SUPPORTED_STATE_OPERATION")
        ops = [StateOperation(kind, state_key(app.app_id, key, ep.component), value, etag or None)
               for kind, key, value, etag in operations]
        try:
            ep.driver.transact(ops)
        except ComponentError as exc:
            if "does not support" in str(exc):
                raise
            raise DaprError(f"error while executing state transaction: {exc}", code="INTERNAL",
                            status=500, error_code="ERR_STATE_TRANSACTION") from exc
        for kind, key, value, _etag in operations:
            if kind == "upsert":
                self.log.record(app.app_id, EVENT_STATE, name=ep.name, key=key,
                                **payload_view(value))

    # -- bulk publish -------------------------------------------------------------------------
    def bulk_publish(self, pubsub: str, topic: str,
                     entries: Sequence[tuple[str, bytes, str, Mapping[str, str]]],
                     metadata: Mapping[str, str]) -> list[tuple[str, str]]:
        """``BulkPublishEvent``: ``(entry_id, event, content_type, metadata)`` entries, each
        published as ``PublishEvent`` would (entry metadata over the request's), in one
        ``Driver.publish_many`` (one broker round trip where the driver batches; daprd's
        default bulk publisher publishes one by one). Returns the failed ``(entry_id,
        error)``; raises when an entry id is missing or repeated."""
        app, ep = self.find(pubsub, "pubsub")
        seen: set[str] = set()
        for entry_id, _event, _ct, _md in entries:
            if not entry_id or entry_id in seen:
                raise DaprError(f"error marshaling events to bytes for topic {topic} pubsub "
                                f"{pubsub}: entryId is duplicated or not present for entry",
                                code="INVALID_ARGUMENT", status=400,
                                error_code="ERR_PUBSUB_EVENTS_SER")
            seen.add(entry_id)
        failed = self._publish_many(app, ep, topic, [
            (event, content_type, {**metadata, **entry_metadata})
            for _entry_id, event, content_type, entry_metadata in entries])
        return [(entries[index][0], error) for index, error in failed]

    # -- secrets ------------------------------------------------------------------------------
    def _secret_store(self, store: str) -> Endpoint:
        stores = [c for c in self.registry.components() if c.type.startswith("secretstores.")]
        if not stores:
            raise DaprError("secret store is not configured: declare a secretstores.local.env "
                            "or secretstores.local.file component", code="FAILED_PRECONDITION",
                            status=500, error_code="ERR_SECRET_STORES_NOT_CONFIGURED")
        try:
            _app, ep = self.registry.find(store)
        except KeyError:
            ep = None
        if ep is None or ep.kind != "secretstores" or ep.driver is None:
            names = ", ".join(sorted(c.name for c in stores))
            raise DaprError(f"failed finding secret store with key {store} (the secret stores "
                            f"registered with the local stand-in: {names})",
                            code="INVALID_ARGUMENT", status=401,
                            error_code="ERR_SECRET_STORE_NOT_FOUND")
        return ep

    def get_secret(self, store: str, key: str) -> dict[str, str]:
        """``GetSecret``: the secret's key/value pairs."""
        driver = self._secret_store(store).driver
        assert driver is not None
        try:
            return driver.get_secret(key)
        except ComponentError as exc:
            raise DaprError(f"failed getting secret with key {key} from secret store {store}: "
                            f"{exc}", code="INTERNAL", status=500,
                            error_code="ERR_SECRET_GET") from exc

    def bulk_secret(self, store: str) -> dict[str, dict[str, str]]:
        """``GetBulkSecret``: every secret of the store."""
        driver = self._secret_store(store).driver
        assert driver is not None
        try:
            return driver.bulk_secret()
        except ComponentError as exc:
            raise DaprError(f"failed getting secrets from secret store {store}: {exc}",
                            code="INTERNAL", status=500, error_code="ERR_SECRET_GET") from exc

    # -- service invocation and metadata ------------------------------------------------------
    def invoke(self, app_id: str, method: str, *, verb: str, query: str, data: bytes,
               content_type: str, headers: Mapping[str, str], caller: str | None,
               type_url: str = "") -> InvokeResult:
        """``InvokeService`` and ``/v1.0/invoke``: see ``invoke.py``."""
        return self.invoker.invoke(app_id, method, verb=verb, query=query, data=data,
                                   content_type=content_type, headers=headers, caller=caller,
                                   type_url=type_url)

    def components(self) -> list[ComponentConfig]:
        """``GetMetadata``: every registered component."""
        return self.registry.components()

    def metadata(self, caller: str | None) -> dict[str, Any]:
        """``GetMetadata`` for ``caller``: its own app id (the stand-in's for a caller that is
        no function), every component, and the caller's subscriptions and app channel."""
        app = self.registry.apps.get(caller or "")
        body: dict[str, Any] = {
            "id": app.app_id if app else STANDIN_ID, "runtimeVersion": "ofnotebook-standin",
            "components": [{"name": c.name, "type": c.type, "version": c.version}
                           for c in self.components()],
            "subscriptions": app.subscriptions() if app else []}
        if app is not None:
            body["appConnectionProperties"] = {"port": app.port, "protocol": app.protocol,
                                               "channelAddress": "127.0.0.1"}
        elif caller:
            body["id"] = caller  # its process runs, but it is not registered (yet)
        return body

    # -- the kernel's control verbs (protocol.py) --------------------------------------------
    def register(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.registry.register_payload(app_id, body)

    def unregister(self, app_id: str) -> bool:
        return self.registry.unregister(app_id)

    def inject(self, app_id: str, input_name: str, data: bytes, content_type: str) -> None:
        self.injector.inject(self.app(app_id), input_name, data, content_type)

    def inject_many(self, app_id: str, input_name: str, items: Sequence[tuple[bytes, str]]
                    ) -> list[tuple[int, str]]:
        """``handle.publish_many``: many test events into one input; the failed ``(index,
        error)`` (``protocol.INPUTS_MANY_PATH``)."""
        return self.injector.inject_many(self.app(app_id), input_name, items)

    def read_state(self, app_id: str, name: str, key: str) -> dict[str, Any]:
        """A state value of one app's store, as the notebook shows it."""
        app = self.app(app_id)
        ep = app.endpoint(ROLE_STATE, name)
        if ep is None or ep.driver is None:
            declared = ", ".join(sorted(repr(e.name) for e in list(app.endpoints)
                                        if e.role == ROLE_STATE)) or "none declared"
            raise NotRegisteredError(
                f"state store {name!r} is not declared by {app_id!r} (its state stores: "
                f"{declared}); declare it with --state {name}=URI and re-run the cell, or "
                f"name one of its stores: handle.get_state(key, store=NAME)")
        data, etag = ep.driver.get_state(state_key(app_id, key, ep.component))
        if data is None:
            return {"key": key, "etag": "", "data": None, "encoding": ENCODING_MISSING}
        return {"key": key, "etag": etag, **payload_view(data)}

    def events(self, after: int, wait: float, app_id: str | None) -> dict[str, Any]:
        """The long poll's answer (``protocol.EVENTS_PATH``), with ``resync`` when the poller
        fell behind by more than the log keeps."""
        events, last, resync = self.log.poll(after, min(wait, 30.0), app_id)
        body: dict[str, Any] = {"events": events, "last": last}
        if resync is not None:
            body["resync"] = resync
        return body

    def stats(self) -> dict[str, Any]:
        return {"apps": sorted(self.registry.apps), "counts": self.log.counts(),
                "pid": os.getpid()}

    def close(self) -> None:
        self.injector.close()
        self.invoker.close()
        self.registry.close()
