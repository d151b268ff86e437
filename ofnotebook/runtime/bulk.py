"""Bulk subscribe on the function's side: ``OnBulkTopicEvent`` with ``ctx.send`` in bulk.

Why: a unary gRPC call per event costs two Python call-sides on each hop, which caps the local
chain near 2,000 events/s (docs/bulk.md). daprd (>= 1.10 as ``Alpha1``, stable from 1.17) and
the local stand-in deliver many events in one ``OnBulkTopicEvent`` when the subscription says
``bulkSubscribe.enabled``; :func:`declare` says so in ``ListTopicSubscriptions``, the way Dapr
takes it programmatically (``dapr.ext.grpc``'s ``App.subscribe`` has no such parameter).

:func:`install` replaces the SDK's bulk handlers (which call the topic handler per entry but
send each ``ctx.send`` on its own) with one that, while it runs the entries, has
:class:`BufferingBridge` keep each pub/sub ``ctx.send`` instead of sending it. Once every entry
ran, the sends of the entries that succeeded go out in one ``BulkPublishEvent`` per output
(``DaprClient.publish_events``), before the statuses are returned, so an event is acknowledged
only after its outputs were accepted. A bulk publish that fails turns exactly the entries whose
sends were in it into RETRY; the sends of an entry that failed are not sent at all (its retry
sends them again). Binding outputs have no bulk API: ``ctx.send`` to a binding still calls it
at once and returns its answer.

So in a bulk delivery ``ctx.send`` to a pub/sub output raises only for what it can know at once
(an undeclared output, data it cannot encode) and returns None; a broker failure is not raised
but retries the event. In a unary delivery (or from a thread of the function's own) it sends
at once and raises :class:`SendError` on any failure, as before.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .outputs import DaprBridge, SendError, encode

#: What the runtime declares: Dapr's default count (pubsub-bulk docs), but a short wait, since
#: daprd holds a batch up to ``maxAwaitDurationMs`` (default 1000) for it to fill; the local
#: stand-in never waits (sidecar/bulk.py).
MAX_MESSAGES = 100
MAX_AWAIT_MS = 20
#: Subscription metadata of a batch function (sidecar/bulk.py's ``BATCH_KEY``).
BATCH_KEY = "ofnotebook.batch"
#: Trailing metadata of a bulk answer: why each DROP entry was dropped, JSON
#: ``{entry_id: reason}``; the stand-in reads it (sidecar/bulk.py's ``DROP_REASONS_KEY``).
DROP_REASONS_KEY = "ofnotebook-drop-reasons"


class _Never(Exception):
    """Raised by nothing: what ``install`` catches as refused when it is given no class."""


@dataclass
class _Batch:
    """The sends kept during one bulk call: ``(entry_id, component, payload, content_type)``."""

    entry: str = ""
    sends: list[tuple[str, Any, bytes, str]] = field(default_factory=list)


class BufferingBridge(DaprBridge):
    """A :class:`DaprBridge` whose pub/sub sends are kept while a bulk call runs on the
    calling thread (:meth:`begin`/:meth:`end`), and sent by :meth:`flush`."""

    def __init__(self, fctx: Any) -> None:
        super().__init__(fctx)
        self._current = threading.local()

    def begin(self) -> _Batch:
        batch = _Batch()
        self._current.batch = batch
        return batch

    def end(self) -> None:
        self._current.batch = None

    def send(self, name: str, data: Any) -> Any:
        batch: _Batch | None = getattr(self._current, "batch", None)
        comp = self.component(name)  # an undeclared output raises now, in either mode
        if batch is None or comp.kind != "pubsub":
            return super().send(name, data)
        payload, content_type = encode(data)
        batch.sends.append((batch.entry, comp, payload, content_type))
        return None

    def flush(self, batch: _Batch, succeeded: set[str]) -> dict[str, str]:
        """Send the kept sends of the ``succeeded`` entries, one bulk publish per output;
        ``{entry_id: error}`` of the entries one of whose sends failed."""
        from dapr.clients import BulkPublishEntry

        groups: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[Any]] = {}
        owners: dict[str, str] = {}
        names: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
        for index, (entry, comp, payload, content_type) in enumerate(batch.sends):
            if entry not in succeeded:
                continue
            key = (comp.component_name, comp.topic, tuple(sorted(comp.metadata.items())))
            names[key] = comp.name
            send_id = str(index)
            owners[send_id] = entry
            groups.setdefault(key, []).append(BulkPublishEntry(
                event=payload, content_type=content_type, entry_id=send_id))
        failed: dict[str, str] = {}
        for (pubsub, topic, metadata), entries in groups.items():
            try:
                answer = self._dapr().publish_events(pubsub, topic, entries,
                                                     publish_metadata=dict(metadata))
                lost = [(f.entry_id, f.error) for f in answer.failed_entries]
            except Exception as exc:  # DaprGrpcError: the whole request failed
                details = exc.details() if hasattr(exc, "details") and callable(exc.details) \
                    else exc
                lost = [(e.entry_id, str(details)) for e in entries]
            output = names[(pubsub, topic, metadata)]
            for send_id, error in lost:
                owner = owners.get(send_id)
                if owner is not None:
                    failed.setdefault(owner, f"sending to output {output!r} ({pubsub!r}) "
                                      f"failed: {error}")
        return failed


#: The function's environment variable that turns bulk subscriptions off (``off``).
BULK_ENV = "OFNOTEBOOK_BULK"


def bulk_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the function declares bulk subscriptions: yes unless ``OFNOTEBOOK_BULK`` is
    ``off`` (or ``0``/``false``/``no``)."""
    return environ.get(BULK_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def declare(app: Any, max_messages: int = MAX_MESSAGES, max_await_ms: int = MAX_AWAIT_MS,
            batch: bool = False) -> None:
    """Mark every topic subscription of the SDK ``app`` as bulk in ``ListTopicSubscriptions``
    (``TopicSubscription.bulk_subscribe``), as daprd reads it; a batch function's also with
    :data:`BATCH_KEY`, so the local stand-in waits ``max_await_ms`` for its batches to fill."""
    from dapr.proto.runtime.v1 import appcallback_pb2

    for sub in app._servicer._registered_topics:
        sub.bulk_subscribe.CopyFrom(appcallback_pb2.BulkSubscribeConfig(
            enabled=True, max_messages_count=max_messages, max_await_duration_ms=max_await_ms))
        if batch:
            sub.metadata[BATCH_KEY] = "true"


def batch_settings(manifest: dict[str, Any]) -> tuple[int, int] | None:
    """``(size, wait_ms)`` of a batch function (the manifest's ``batch``: ``{"size": N,
    "waitMs": MS}``, from ``--batch N --batch-wait MS``), None for a function of one event."""
    raw = manifest.get("batch") or {}
    size = int(raw.get("size") or 0) if isinstance(raw, dict) else 0
    # --batch 1 is still a batch function: it gets lists (of one), as its code expects
    return (size, int(raw.get("waitMs") or MAX_AWAIT_MS)) if size >= 1 else None


def install(app: Any, bridge: BufferingBridge, refused: type[Exception] | None = None,
            batch: Callable[[Any, list[Any]], None] | None = None) -> None:
    """Serve ``OnBulkTopicEvent`` (and its ``Alpha1`` name) on the SDK ``app`` with sends in
    bulk; call before ``app.run``. A topic handler raising ``refused`` (``callbacks.Refused``:
    no retry can cure the event) makes its entry DROP, its ``reason`` in the trailing metadata,
    as a unary call's FAILED_PRECONDITION carries it.

    With ``batch`` (a batch function: ``batch(request, messages)`` runs it once on all the
    entries), the entries succeed or fail together: a failing batch, or one whose sends failed,
    is RETRY for every entry; each is then delivered again alone (a batch of one), so the
    poisoned event fails its attempts and is dead-lettered while the others pass."""
    import json

    import grpc
    from dapr.ext.grpc import TopicEventResponse
    from dapr.proto.runtime.v1 import appcallback_pb2

    servicer = app._servicer
    success = appcallback_pb2.TopicEventResponse.SUCCESS
    retry = appcallback_pb2.TopicEventResponse.RETRY
    drop = appcallback_pb2.TopicEventResponse.DROP
    cannot = refused or _Never

    def on_bulk(request: Any, context: Any) -> Any:
        cb = servicer._get_topic_callback(request.pubsub_name, request.topic, request.path)
        if cb is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          f"bulk topic {request.topic} is not implemented!")
        legacy = servicer._topic_legacy_event.get(cb, True)
        build = servicer._bulk_entry_legacy_event if legacy \
            else servicer._bulk_entry_subscription_message
        metadata = dict(context.invocation_metadata())
        if batch is not None:
            return run_batch(request, build, metadata)
        statuses: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        kept = bridge.begin()
        try:
            for entry in request.entries:
                kept.entry = entry.entry_id
                try:
                    reply = cb(build(entry, request, metadata))
                    statuses[entry.entry_id] = reply.status.value \
                        if isinstance(reply, TopicEventResponse) else success
                except cannot as exc:
                    statuses[entry.entry_id] = drop
                    reasons[entry.entry_id] = str(getattr(exc, "reason", exc))
                except Exception:
                    statuses[entry.entry_id] = retry
        finally:
            bridge.end()
        failed = bridge.flush(kept, {k for k, v in statuses.items() if v == success})
        for entry_id, error in failed.items():
            statuses[entry_id] = retry
            print(f"error handling an event of topic {request.topic!r}: {error}; the event "
                  "is delivered again", file=sys.stderr, flush=True)
        if reasons:
            context.set_trailing_metadata(((DROP_REASONS_KEY, json.dumps(reasons)),))
        return appcallback_pb2.TopicEventBulkResponse(statuses=[
            appcallback_pb2.TopicEventBulkResponseEntry(entry_id=k, status=v)
            for k, v in statuses.items()])

    def run_batch(request: Any, build: Callable[..., Any], metadata: dict[str, str]) -> Any:
        assert batch is not None
        kept = bridge.begin()  # every send belongs to the whole batch (entry "")
        try:
            batch(request, [build(entry, request, metadata) for entry in request.entries])
            failed = bridge.flush(kept, {""})
        except Exception:
            failed = {"": "the batch function raised; see its logs"}
        finally:
            bridge.end()
        if failed:
            print(f"error handling a batch of {len(request.entries)} events of topic "
                  f"{request.topic!r}: {failed['']}; each is delivered again alone",
                  file=sys.stderr, flush=True)
        status = retry if failed else success
        return appcallback_pb2.TopicEventBulkResponse(statuses=[
            appcallback_pb2.TopicEventBulkResponseEntry(entry_id=entry.entry_id, status=status)
            for entry in request.entries])

    # The App added its servicer when it was made; a registered method added again replaces
    # the one of the same name (grpc's server keeps them in a dict), not the others.
    def handler() -> Any:
        return grpc.unary_unary_rpc_method_handler(
            on_bulk, request_deserializer=appcallback_pb2.TopicEventBulkRequest.FromString,
            response_serializer=appcallback_pb2.TopicEventBulkResponse.SerializeToString)

    app._server.add_registered_method_handlers("dapr.proto.runtime.v1.AppCallback",
                                               {"OnBulkTopicEvent": handler()})
    app._server.add_registered_method_handlers("dapr.proto.runtime.v1.AppCallbackAlpha",
                                               {"OnBulkTopicEventAlpha1": handler()})


__all__ = ["BufferingBridge", "SendError", "declare", "install"]
