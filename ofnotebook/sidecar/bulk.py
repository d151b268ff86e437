"""Bulk subscribe on the stand-in's side: the settings, the ``OnBulkTopicEvent`` request and
the per-entry answer, as daprd's bulk subscriber builds and reads them.

Why a bulk call at all: one Python gRPC call-side costs about 190 us, so a unary call per event
caps a two-hop chain near 2,000 events/s; ``OnBulkTopicEvent`` carries many events in one call
(measured app side: ~20,000 events/s at 10 entries, ~73,000 at 100; reference dapr-bulk.md).

daprd enables it per subscription (``bulkSubscribe{enabled, maxMessagesCount,
maxAwaitDurationMs}``, declaratively or in ``ListTopicSubscriptions``) and waits up to
``maxAwaitDurationMs`` for a batch to fill. The stand-in takes the same settings but never
waits: a batch is whatever is already waiting when a delivery slot frees (up to
``maxMessagesCount``), so an isolated event goes at once, unary (:class:`delivery.Dispatcher`).

Each entry's status is SUCCESS, RETRY or DROP; an entry with no status counts as RETRY (Dapr's
docs). The entry statuses carry no reason, so the ofnotebook runtime adds one per dropped entry
in the trailing metadata :data:`DROP_REASONS_KEY` (JSON ``{entry_id: details}``), the details a
unary ``FAILED_PRECONDITION`` would carry.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from dapr.proto.runtime.v1 import appcallback_pb2

#: CloudEvent keys that are attributes or data, not extensions (as ``topic_event_request``).
EXTENSION_SKIPPED = frozenset(
    {"id", "source", "datacontenttype", "type", "specversion", "data", "data_base64"})
#: Subscription metadata of a batch function (``--batch``): its batches wait to fill.
BATCH_KEY = "ofnotebook.batch"
#: Trailing metadata of a bulk answer: why each DROP entry was dropped (JSON object).
DROP_REASONS_KEY = "ofnotebook-drop-reasons"
#: Dapr's defaults for a component without native bulk support (pubsub-bulk docs).
DEFAULT_MAX_MESSAGES = 100
DEFAULT_MAX_AWAIT_MS = 1000


@dataclass(frozen=True)
class BulkSettings:
    """``bulkSubscribe`` of one subscription: at most ``max_messages`` events per call;
    ``fill_ms``: how long the stand-in waits for a batch to fill (0, adaptive, unless the
    subscription is a batch function's: :data:`BATCH_KEY` in its metadata)."""

    max_messages: int = DEFAULT_MAX_MESSAGES
    max_await_ms: int = DEFAULT_MAX_AWAIT_MS
    fill_ms: int = 0

    @classmethod
    def from_subscription(cls, sub: Any) -> BulkSettings | None:
        """The settings of a ``TopicSubscription`` (``ListTopicSubscriptions``), None when its
        ``bulk_subscribe`` is absent or not enabled."""
        if not sub.HasField("bulk_subscribe") or not sub.bulk_subscribe.enabled:
            return None
        config = sub.bulk_subscribe
        wait = config.max_await_duration_ms or DEFAULT_MAX_AWAIT_MS
        return cls(max_messages=config.max_messages_count or DEFAULT_MAX_MESSAGES,
                   max_await_ms=wait,
                   fill_ms=wait if sub.metadata.get(BATCH_KEY) == "true" else 0)


def cloud_event_entry(ce: Mapping[str, Any], data: bytes) -> Any:
    """The ``TopicEventCERequest`` of a stored CloudEvent ``ce`` whose data daprd would send
    as ``data`` (``cloudevents._event_data``): the attributes as ``topic_event_request`` takes
    them, the extensions set from the decoded JSON values, which is what that function's Go-JSON
    round trip gives for them, at a fraction of its cost (the stand-in's hot path in bulk)."""
    def prop(name: str) -> str:
        value = ce.get(name)
        return value if isinstance(value, str) else ""

    entry = appcallback_pb2.TopicEventCERequest(
        id=prop("id"), source=prop("source"), type=prop("type"),
        spec_version=prop("specversion"), data_content_type=prop("datacontenttype"), data=data)
    entry.extensions.update({k: v for k, v in ce.items() if k not in EXTENSION_SKIPPED})
    return entry


def bulk_request(entries: Sequence[Any], metadata: Sequence[dict[str, str]], *, topic: str,
                 pubsub_name: str, path: str) -> Any:
    """The ``TopicEventBulkRequest`` of ``TopicEventCERequest`` s of one topic and route path
    (entry ids are their positions), each entry's broker metadata with it."""
    return appcallback_pb2.TopicEventBulkRequest(
        id=str(uuid.uuid4()), topic=topic, pubsub_name=pubsub_name,
        type="com.dapr.event.sent.bulk", path=path, entries=[
            appcallback_pb2.TopicEventBulkRequestEntry(
                entry_id=str(index), cloud_event=ce, content_type=ce.data_content_type,
                metadata=entry_metadata)
            for index, (ce, entry_metadata) in enumerate(zip(entries, metadata))])


def entry_outcomes(reply: Any, count: int, trailing: Iterable[tuple[str, Any]] | None
                   ) -> list[tuple[str, str]]:
    """``(outcome, error)`` per entry position, outcome as the unary attempt's: "success",
    "retry" (also an entry without status) or "drop" (with the runtime's reason if given)."""
    reasons: dict[str, str] = {}
    for key, value in trailing or ():
        if key == DROP_REASONS_KEY:
            try:
                found = json.loads(value)
            except ValueError:
                found = {}
            reasons = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) \
                else {}
    statuses = {entry.entry_id: entry.status for entry in reply.statuses}
    outcomes = []
    for index in range(count):
        status = statuses.get(str(index))
        if status == appcallback_pb2.TopicEventResponse.SUCCESS:
            outcomes.append(("success", ""))
        elif status == appcallback_pb2.TopicEventResponse.DROP:
            outcomes.append(("drop", reasons.get(str(index), "the app answered DROP")))
        elif status is None:
            outcomes.append(("retry", "the app gave no status for the entry (RETRY)"))
        else:
            outcomes.append(("retry", "the function raised; see its logs"))
    return outcomes
