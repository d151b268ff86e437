"""At-least-once delivery of one input's events to its app's AppCallback.

Delivery follows daprd: a binding event goes to ``OnBindingEvent``, a topic event to
``OnTopicEvent`` with the CloudEvent envelope daprd builds, on the ``path`` its subscription's
routes pick (the first rule that matches, else the default route). SUCCESS acknowledges; RETRY
or a gRPC error of a reachable app is retried with exponential backoff; DROP, UNIMPLEMENTED, no
matching route or the last failed attempt record a dead letter and acknowledge.
FAILED_PRECONDITION is the runtime's word for a deterministic failure (``ctx.send`` to an
undeclared output): retrying cannot help, so it is dead-lettered at once with its details.

An app that cannot be reached (:func:`connect_failure`: the connection was refused or never
became a gRPC connection, so the call never reached it; its process died and is being
restarted) burns no attempt: as daprd stops delivering to an unhealthy app, the event is
*held*, tried again on the app's current port once it accepts connections, with a pause that
grows across the event's consecutive holds (a port that accepts TCP but never serves gRPC is
not tried at 20 Hz forever). Counting those failures as attempts is what dead-lettered events
that a restart a few seconds later would have handled. An UNAVAILABLE after the call reached
the app (the handler killed its process: ``os._exit``, a segfault, OOM) counts as an attempt,
so a poison event is dead-lettered after the attempts instead of killing every restart.

An event held when the input closes is left unacknowledged for a broker that redelivers it to
the next consumer; one of an input without redelivery (in-memory, cron: :data:`NO_REDELIVERY`)
is recorded as a dead letter saying so, as it would otherwise vanish.

A pub/sub input whose subscription enables bulk subscribe (``Endpoint.bulk``: daprd's
``bulkSubscribe``, see ``sidecar/bulk.py``) is delivered adaptively: whatever is waiting when a
slot frees goes in one ``OnBulkTopicEvent`` (``Alpha1`` when the app lacks the stable name;
unary for good when it lacks both, where daprd 1.11 would drop the batch), a lone event unary,
at once. Each entry is then settled as its unary attempt would be: SUCCESS acks, DROP is a dead
letter (with the runtime's reason), RETRY goes on unary with backoff for the attempts left. A
bulk call that never reached the app holds the whole batch, burning no attempt.

A topic event given up on goes, as it was stored, to the subscription's dead-letter topic on
the same pub/sub, as daprd's ``sendToDeadLetter`` does, when the subscription names one. No event is dropped without a record in the log.

Routing rules are CEL expressions in daprd; the stand-in evaluates the form nearly every rule
takes, comparisons of CloudEvent attributes joined by ``&&`` (``event.type == "order"``), and
the registry warns about any other (:func:`rule_error`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, NamedTuple

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2

from . import bulk, cloudevents
from .apps import App, Endpoint
from .drivers.base import ComponentError, InboundEvent
from .eventlog import EventLog, payload_view
from .protocol import EVENT_DEAD_LETTER, EVENT_DELIVERED, EVENT_IN, EVENT_RETRY

DEFAULT_ATTEMPTS = 8
#: What building an event's AppCallback request raises for an envelope it cannot carry (bad
#: data_base64, a number protobuf's Struct cannot hold): the event is dead-lettered, never left
#: unacknowledged (an ack window would stall behind it).
UNDELIVERABLE = (ValueError, OverflowError)
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
#: Longest pause between two tries of an event held for an unreachable app: short, so an app
#: back after a restart gets its events within about a second.
HOLD_MAX = 1.0
#: Component types whose events exist only in the stand-in: one not acknowledged is not
#: redelivered, so a held event left at close is recorded as a dead letter.
NO_REDELIVERY = frozenset({"pubsub.in-memory", "bindings.in-memory", "bindings.cron"})
#: The dead letter's error of an event held when its input closed (:data:`NO_REDELIVERY`).
CLOSED_WHILE_UNREACHABLE = ("the input closed while the app was unreachable (its process was "
                            "restarting or stopped)")
# Events in flight per input (as pubsub.redis's default `concurrency`); measured: 4, 10 and 16 give
# the same rate within noise on 2 cores, more threads only contend for the GIL.
DELIVERY_CONCURRENCY = 10
#: Bulk calls in flight per input (the reference's measurement: 4 calls of 10 or 100 entries).
BULK_IN_FLIGHT = 4


class _Entry(NamedTuple):
    """One event of a bulk call: its stored CloudEvent and route (a retry's unary request is
    built from them), content type and data."""

    event: InboundEvent
    ce: dict[str, Any]
    path: str
    content_type: str
    data: bytes


def connect_failure(exc: grpc.RpcError) -> bool:
    """Whether a failed call never reached the app: UNAVAILABLE from a connection that was
    refused or did not become a gRPC connection ("failed to connect to all addresses"), as
    opposed to one that broke during the call (``Socket closed``: the handler may be what
    killed the app, so that try counts as an attempt)."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (exc.details() or "").lower()
    return "failed to connect" in details or "connection refused" in details


class Dispatcher:
    """Delivers one input's events to its app with bounded concurrency and retries."""

    def __init__(self, app: App, endpoint: Endpoint, log: EventLog, attempts: int) -> None:
        self.app, self.endpoint, self.log, self.attempts = app, endpoint, log, attempts
        ordered = bool(endpoint.driver and endpoint.driver.ordered)
        width = 1 if ordered else DELIVERY_CONCURRENCY
        #: bulkSubscribe of a pub/sub input. An ordered input (Kafka: a partition's records in
        #: order, as daprd's consumer) gets one call in flight, unary or bulk: a batch keeps
        #: their order, as daprd's Kafka bulk subscriber does; a retried entry goes after.
        self.bulk = endpoint.bulk if endpoint.kind == "pubsub" else None
        self._in_flight = 1 if ordered else BULK_IN_FLIGHT
        self._bulk_off = False  # the app implements neither bulk RPC: unary from then on
        self._waiting: deque[_Entry] = deque()  # parsed and recorded as in
        self._waiting_lock = threading.Lock()
        self._arrived = threading.Condition(self._waiting_lock)
        self._draining = 0
        room = width if self.bulk is None else self._in_flight * self.bulk.max_messages
        self._slots = threading.BoundedSemaphore(room)
        workers = width if self.bulk is None else self._in_flight + width
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix=f"deliver-{endpoint.name}")
        self._closed = threading.Event()

    def __call__(self, event: InboundEvent) -> None:
        self._slots.acquire()  # back-pressure on the driver's consumer
        if self._closed.is_set():
            self._slots.release()
            return  # not acknowledged: the broker keeps it for the next consumer
        if self.bulk is None:
            self._pool.submit(self._deliver, event)
            return
        entry = self._prepare(event)
        if entry is None:
            return
        with self._waiting_lock:
            self._waiting.append(entry)
            self._arrived.notify()
            if self._draining >= self._in_flight:
                return  # a busy drainer takes it with the next batch
            self._draining += 1
        self._later(self._drain)

    def _prepare(self, event: InboundEvent) -> _Entry | None:
        """A bulk input's event as it arrives: routed, parsed and recorded as in *now*, so an
        event that waits for a call slot is counted (in, not yet settled: lost if the
        stand-in dies). None when it is already on its way: no route (a dead letter) or an
        envelope the bulk path cannot read (delivered unary, which fails it as it should)."""
        try:
            ce, path = self._routed(event)
            content_type = ce.get("datacontenttype")
            content_type = content_type if isinstance(content_type, str) else ""
            data = cloudevents._event_data(ce, content_type)  # as topic_event_request
        except UNDELIVERABLE:  # unary, where it is recorded and dead-lettered
            self._later(self._deliver, event)
            return None
        self._record_in(event, content_type, data)
        if path is None:
            self._give_up(event, "no route of the subscription matches the event", 0, data,
                          content_type)
            self._slots.release()
            return None
        return _Entry(event, ce, path, content_type, data)

    def _deliver(self, event: InboundEvent) -> None:
        try:
            self._deliver_with_retries(event)
        finally:
            self._slots.release()

    def _later(self, task: Any, *args: Any) -> None:
        """Run ``task`` on the pool; inline once the pool is shut down (the input closed: the
        task then ends at once, recording what it leaves), so no event is dropped unrecorded."""
        try:
            self._pool.submit(task, *args)
        except RuntimeError:
            task(*args)

    def _drain(self) -> None:
        try:
            self._drain_waiting()
        except BaseException:  # never leave a drainer counted that is gone
            with self._waiting_lock:
                self._draining -= 1
            raise

    def _drain_waiting(self) -> None:
        """Deliver what is waiting, as it is: one event unary (it never waits for company),
        more in one bulk call of at most ``maxMessagesCount``; until nothing waits. Only a
        batch function's subscription (``BulkSettings.fill_ms``) waits for a batch to fill."""
        assert self.bulk is not None
        fill = self.bulk.fill_ms / 1000
        while True:
            with self._waiting_lock:
                if fill and 0 < len(self._waiting) < self.bulk.max_messages:
                    # a batch function's --batch-wait: up to that long for the batch to fill
                    deadline = time.monotonic() + fill
                    while len(self._waiting) < self.bulk.max_messages \
                            and not self._closed.is_set():
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._arrived.wait(left):
                            break
                count = min(len(self._waiting), self.bulk.max_messages)
                if count == 0:
                    self._draining -= 1
                    return
                batch = [self._waiting.popleft() for _ in range(count)]
            if len(batch) == 1 or self._bulk_off:
                for entry in batch:
                    self._unary_entry(entry, 0, "")
                continue
            try:
                self._deliver_bulk(batch)
            except Exception:  # never lose the slots of a batch: deliver what is left unary
                for entry in batch:
                    if not entry.event.acked:
                        self._later(self._unary_entry, entry, 0, "")

    def _record_in(self, event: InboundEvent, content_type: str, data: bytes) -> None:
        ep = self.endpoint
        self.log.record(self.app.app_id, EVENT_IN, name=ep.name, component=ep.component.name,
                        type=ep.component.type, metadata=dict(event.metadata),
                        **payload_view(data, content_type))

    def _deliver_with_retries(self, event: InboundEvent) -> None:
        try:
            request, content_type, data = self._request(event)
        except UNDELIVERABLE as exc:  # a bad envelope: recorded and dead-lettered, acked
            self._record_in(event, "", event.data)
            self._give_up(event, f"the event cannot be delivered: {exc}", 0, event.data, "")
            return
        self._record_in(event, content_type, data)
        if request is None:
            self._give_up(event, "no route of the subscription matches the event", 0, data,
                          content_type)
            return
        self._retry_loop(event, request, content_type, data)

    def _retry_loop(self, event: InboundEvent, request: Any, content_type: str, data: bytes,
                    attempt: int = 0, error: str = "", delay: float = BACKOFF_START) -> None:
        """Try ``event`` until it succeeds, is dropped or has had its attempts (``attempt``
        of them made already, by a bulk call)."""
        ep = self.endpoint
        hold_pause = BACKOFF_START
        while attempt < self.attempts:
            if self._closed.is_set():  # unacknowledged: redelivered by the broker, if it does
                self._left_at_close(event, "the input closed before the event was delivered",
                                    error, attempt, data, content_type)
                return
            outcome, error = self._attempt(request)
            if outcome == "unreachable":
                hold_pause = self._hold(hold_pause)
                if hold_pause == 0:
                    self._left_at_close(event, CLOSED_WHILE_UNREACHABLE, error, attempt, data,
                                        content_type)
                    return
                continue  # the app is back: this try did not count
            hold_pause = BACKOFF_START
            attempt += 1
            if outcome == "success":
                self.log.record(self.app.app_id, EVENT_DELIVERED, name=ep.name, attempt=attempt)
                event.ack()
                return
            if outcome == "drop":
                break
            self.log.record(self.app.app_id, EVENT_RETRY, name=ep.name, attempt=attempt,
                            error=error)
            if attempt < self.attempts:
                self._closed.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        self._give_up(event, error, attempt, data, content_type)

    # -- bulk -----------------------------------------------------------------------------------
    def _deliver_bulk(self, batch: list[_Entry]) -> None:
        """One ``OnBulkTopicEvent`` per route path of ``batch``; each entry then settled by its
        own status, as the unary attempt's outcome would settle it."""
        groups: dict[str, list[_Entry]] = {}
        for entry in batch:
            groups.setdefault(entry.path, []).append(entry)
        for path, entries in groups.items():
            self._bulk_call(path, entries)

    def _bulk_call(self, path: str, entries: list[_Entry]) -> None:
        ep = self.endpoint
        try:
            request = bulk.bulk_request([bulk.cloud_event_entry(e.ce, e.data) for e in entries],
                                        [dict(e.event.metadata) for e in entries],
                                        topic=ep.topic, pubsub_name=ep.component.name,
                                        path=path)
        except UNDELIVERABLE:  # one bad entry: each alone, where the bad one is given up
            for e in entries:
                self._later(self._unary_entry, e, 0, "")
            return
        hold_pause = BACKOFF_START
        while True:
            if self._closed.is_set():
                for e in entries:
                    self._left_at_close(e.event, "the input closed before the event was "
                                        "delivered", "", 0, e.data, e.content_type)
                    self._slots.release()
                return
            try:
                outcomes = self._bulk_rpc(request, len(entries))
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self._bulk_off = True  # daprd 1.11 would DROP the batch; unary instead
                    for e in entries:
                        self._later(self._unary_entry, e, 0, "")
                    return
                if connect_failure(exc):
                    hold_pause = self._hold(hold_pause)
                    if hold_pause == 0:
                        for e in entries:
                            self._left_at_close(e.event, CLOSED_WHILE_UNREACHABLE,
                                                f"UNAVAILABLE: {exc.details()}", 0, e.data,
                                                e.content_type)
                            self._slots.release()
                        return
                    continue  # the app is back: this try did not count
                outcome = "drop" if exc.code() == grpc.StatusCode.FAILED_PRECONDITION \
                    else "retry"
                outcomes = [(outcome, f"{exc.code().name}: {exc.details()}")] * len(entries)
            except Exception as exc:  # e.g. the channel closed by an unregister: a retry each
                outcomes = [("retry", f"{type(exc).__name__}: {exc}")] * len(entries)
            break
        for e, (outcome, error) in zip(entries, outcomes):
            self._settle(e, outcome, error)

    def _bulk_rpc(self, request: Any, count: int) -> list[tuple[str, str]]:
        """``OnBulkTopicEvent``, else (UNIMPLEMENTED) the ``Alpha1`` name, as daprd >= 1.17."""
        stub = self.app.stub()
        metadata = cloudevents.grpc_metadata(self.endpoint.component.name)
        try:
            reply, call = stub.OnBulkTopicEvent.with_call(request, timeout=60,
                                                          metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            alpha = self.app.alpha_stub()
            reply, call = alpha.OnBulkTopicEventAlpha1.with_call(request, timeout=60,
                                                                 metadata=metadata)
        return bulk.entry_outcomes(reply, count, call.trailing_metadata())

    def _settle(self, e: _Entry, outcome: str, error: str) -> None:
        ep = self.endpoint
        if outcome == "success":
            self.log.record(self.app.app_id, EVENT_DELIVERED, name=ep.name, attempt=1)
            e.event.ack()
        elif outcome == "drop" or self.attempts <= 1:
            self._give_up(e.event, error, 1, e.data, e.content_type)
        else:
            self.log.record(self.app.app_id, EVENT_RETRY, name=ep.name, attempt=1, error=error)
            self._later(self._unary_entry, e, 1, error)
            return  # its slot is released when the retries end
        self._slots.release()

    def _unary_entry(self, e: _Entry, attempt: int, error: str) -> None:
        """The rest of a bulk entry's attempts, unary, with the backoff it would have had."""
        try:
            delay = BACKOFF_START
            if attempt:
                self._closed.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            try:
                request = self._topic_request(e.ce, e.path)
            except UNDELIVERABLE as exc:
                self._give_up(e.event, f"the event cannot be delivered: {exc}", attempt,
                              e.data, e.content_type)
                return
            self._retry_loop(e.event, request, e.content_type, e.data, attempt, error, delay)
        finally:
            self._slots.release()

    def _hold(self, pause: float) -> float:
        """Wait, with backoff from ``pause``, until the app is reachable again (its port
        re-read on each try, as a restart may move it); the pause the event's next hold
        starts from, or 0 when the input closed first."""
        while not self._closed.wait(pause):
            pause = min(pause * 2, HOLD_MAX)
            if self.app.reachable():
                return pause
        return 0

    def _left_at_close(self, event: InboundEvent, reason: str, error: str, attempts: int,
                       data: bytes, content_type: str) -> None:
        """The input closed before the event was delivered: left unacknowledged for a broker
        to redeliver, or, when nothing will (:data:`NO_REDELIVERY`), a dead letter saying so."""
        if self.endpoint.component.type in NO_REDELIVERY:
            last = f" (last error: {error})" if error else ""
            self._give_up(event, f"{reason}; this input does not redeliver events{last}",
                          attempts, data, content_type)

    def _give_up(self, event: InboundEvent, error: str, attempts: int, data: bytes,
                 content_type: str) -> None:
        """Record the dead letter, send it to the dead-letter topic if there is one, ack."""
        ep = self.endpoint
        extra: dict[str, Any] = {}
        topic = ep.dead_letter_topic if ep.kind == "pubsub" else ""
        if topic and ep.driver is not None:
            try:  # as stored: daprd publishes msg.Data with msg.Metadata
                ep.driver.publish(topic, event.data, event.metadata)
                extra["topic"] = topic
            except ComponentError as exc:
                error = f"{error}; sending it to the dead-letter topic {topic!r} failed: {exc}"
        self.log.record(self.app.app_id, EVENT_DEAD_LETTER, name=ep.name,
                        component=ep.component.name, error=error, attempts=attempts,
                        **extra, **payload_view(data, content_type))
        event.ack()

    def _request(self, event: InboundEvent) -> tuple[Any, str, bytes]:
        """The AppCallback request for ``event`` (None: no route matches it), its content
        type and data."""
        ep = self.endpoint
        if ep.kind == "bindings":
            return (appcallback_pb2.BindingEventRequest(name=ep.component.name, data=event.data,
                                                        metadata=event.metadata), "", event.data)
        ce, path = self._routed(event)
        request = self._topic_request(ce, path)
        return (None if path is None else request), request.data_content_type, request.data

    def _routed(self, event: InboundEvent) -> tuple[dict[str, Any], str | None]:
        """The stored CloudEvent of a topic event (one built for a raw payload) and the path
        its subscription's routes pick (None: none matches)."""
        ep = self.endpoint
        try:
            ce = json.loads(event.data)
            if not isinstance(ce, dict) or "specversion" not in ce:
                raise ValueError("not a CloudEvent")
        except ValueError:
            ce = cloudevents.from_raw_payload(data=event.data, topic=ep.topic,
                                              pubsub_name=ep.component.name)
        return ce, route(ep.rules, ep.default_path, ce)

    def _topic_request(self, ce: dict[str, Any], path: str | None) -> Any:
        ep = self.endpoint
        return cloudevents.topic_event_request(ce, topic=ep.topic, pubsub_name=ep.component.name,
                                               path=path or "")

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
            if connect_failure(exc):
                return "unreachable", f"UNAVAILABLE: {exc.details()}"
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return "drop", exc.details() or "FAILED_PRECONDITION"
            return "retry", f"{exc.code().name}: {exc.details()}"
        if reply.status == appcallback_pb2.TopicEventResponse.RETRY:
            return "retry", "the function raised; see its logs"
        if reply.status == appcallback_pb2.TopicEventResponse.DROP:
            return "drop", "the app answered DROP"
        return "success", ""

    def close(self) -> None:
        self._closed.set()
        # Bulk: events wait in the drainers' queue and retries are tasks of their own; let
        # them run, as each ends at once when closed, recorded (``_left_at_close``), never lost.
        self._pool.shutdown(wait=False, cancel_futures=self.bulk is None)


_COMPARISON = re.compile(r"""\s*event\.([A-Za-z0-9_]+)\s*(==|!=)\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*""")


def rule_error(match: str) -> str:
    """Why the stand-in cannot evaluate the routing rule ``match`` ("" when it can)."""
    if all(_COMPARISON.fullmatch(part) for part in match.split("&&")):
        return ""
    return (f"routing rule {match!r} is not evaluated by the local stand-in (it evaluates "
            "event.ATTRIBUTE == \"value\" comparisons joined by &&); events will not match it")


def matches(match: str, event: Mapping[str, Any]) -> bool:
    """Whether the CloudEvent ``event`` satisfies the rule ``match`` (see :func:`rule_error`)."""
    for part in match.split("&&"):
        found = _COMPARISON.fullmatch(part)
        if found is None:
            return False
        attribute, operator, double, single = found.groups()
        equal = str(event.get(attribute, "")) == (double if double is not None else single)
        if equal != (operator == "=="):
            return False
    return True


def route(rules: tuple[tuple[str, str], ...], default: str, event: Mapping[str, Any]
          ) -> str | None:
    """daprd's ``findMatchingRoute``: the path of the first rule ``event`` matches, else the
    default route; None when the subscription has rules, no default and no match."""
    for match, path in rules:
        if not match or matches(match, event):
            return path
    return default if default or not rules else None
