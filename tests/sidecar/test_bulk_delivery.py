"""Adaptive bulk delivery (issue 14 item 1): the stand-in's Dispatcher against real AppCallback
gRPC servers, ours (answering each entry as told) and the Dapr SDK's ``dapr.ext.grpc.App``."""

from __future__ import annotations

import json
import threading
from concurrent import futures
from typing import Any

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc

from ofnotebook.sidecar import cloudevents
from ofnotebook.sidecar.apps import App, Endpoint
from ofnotebook.sidecar.bulk import DROP_REASONS_KEY, BulkSettings
from ofnotebook.sidecar.delivery import Dispatcher
from ofnotebook.sidecar.drivers.base import ComponentConfig, InboundEvent
from ofnotebook.sidecar.drivers.memory import MemoryDriver
from ofnotebook.sidecar.eventlog import EventLog
from ofnotebook.sidecar.protocol import EVENT_DEAD_LETTER, EVENT_DELIVERED, ROLE_INPUT
from tests.helpers import uid, wait_for

SUCCESS = appcallback_pb2.TopicEventResponse.SUCCESS
RETRY = appcallback_pb2.TopicEventResponse.RETRY
DROP = appcallback_pb2.TopicEventResponse.DROP


class _App(appcallback_pb2_grpc.AppCallbackServicer):
    """Records each call; answers by the event's data: ``drop`` DROP (with a reason),
    ``flaky`` RETRY the first time, ``nostatus`` no status in bulk; SUCCESS otherwise.
    ``gate`` holds the first call until set (so a burst piles up behind it)."""

    def __init__(self, bulk: bool = True) -> None:
        self.bulk = bulk
        self.unary: list[bytes] = []
        self.batches: list[list[bytes]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.bulk_gate = threading.Event()  # holds bulk calls only
        self.bulk_gate.set()
        self.bulk_waiting = 0
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self.calls: list[list[bytes]] = []  # every call's data, unary or bulk, as answered
        self.in_flight = self.most_in_flight = 0

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _leave(self, data: list[bytes]) -> None:
        with self._lock:
            self.in_flight -= 1
            self.calls.append(data)

    def _status(self, data: bytes) -> int:
        with self._lock:
            first = data not in self._seen
            self._seen.add(data)
        if data == b'"drop"':
            return DROP
        if data.startswith(b'"flaky') and first:
            return RETRY
        return SUCCESS

    def OnTopicEvent(self, request: Any, context: Any) -> Any:
        self._enter()
        self.gate.wait(10)
        self.unary.append(request.data)
        self._leave([request.data])
        return appcallback_pb2.TopicEventResponse(status=self._status(request.data))

    def OnBulkTopicEvent(self, request: Any, context: Any) -> Any:
        if not self.bulk:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "no bulk here")
        self.gate.wait(10)
        with self._lock:
            self.bulk_waiting += 1
        self.bulk_gate.wait(10)
        self._enter()
        self.batches.append([e.cloud_event.data for e in request.entries])
        self._leave(self.batches[-1])
        statuses, reasons = [], {}
        for entry in request.entries:
            if entry.cloud_event.data == b'"nostatus"':
                continue
            status = self._status(entry.cloud_event.data)
            if status == DROP:
                reasons[entry.entry_id] = "ctx.send('nope'): 'nope' is not a declared output"
            statuses.append(appcallback_pb2.TopicEventBulkResponseEntry(
                entry_id=entry.entry_id, status=status))
        context.set_trailing_metadata(((DROP_REASONS_KEY, json.dumps(reasons)),))
        return appcallback_pb2.TopicEventBulkResponse(statuses=statuses)


def _serve(servicer: Any) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class _OrderedDriver(MemoryDriver):
    """A driver whose broker wants a partition's records in order (as Kafka's)."""

    ordered = True


def _dispatcher(port: int, bulk: BulkSettings | None = BulkSettings(max_messages=50),
                attempts: int = 4, kind: str = "pubsub.redis", ordered: bool = False
                ) -> tuple[Dispatcher, EventLog]:
    app = App(app_id=f"app-{uid()}", port=port)
    component = ComponentConfig(name="in-pubsub", type=kind)
    endpoint = Endpoint(role=ROLE_INPUT, name="in", topic="orders", bulk=bulk,
                        component=component,
                        driver=_OrderedDriver(component) if ordered else None)
    log = EventLog()
    return Dispatcher(app, endpoint, log, attempts), log


def _event(data: Any, acks: list[Any]) -> InboundEvent:
    ce = cloudevents.from_raw_payload(data=json.dumps(data).encode(), topic="orders",
                                      pubsub_name="in-pubsub")
    return InboundEvent(data=json.dumps(ce).encode(), _ack=lambda: acks.append(data))


def _records(log: EventLog, kind: str) -> list[dict[str, Any]]:
    return [r for r in log.since(0, 0) if r["kind"] == kind]


def test_an_isolated_event_goes_unary_at_once() -> None:
    servicer = _App()
    server, port = _serve(servicer)
    dispatcher, log = _dispatcher(port)
    acks: list[Any] = []
    try:
        dispatcher(_event(1, acks))
        wait_for(lambda: acks == [1], timeout=10)
        assert servicer.unary == [b"1"] and servicer.batches == []
    finally:
        dispatcher.close()
        server.stop(None)


def test_a_burst_goes_in_bulk_calls_each_event_acked_once() -> None:
    servicer = _App()
    servicer.gate.clear()  # the first call waits, so the rest pile up behind it
    server, port = _serve(servicer)
    dispatcher, log = _dispatcher(port)
    acks: list[Any] = []
    try:
        feeder = threading.Thread(target=lambda: [dispatcher(_event(i, acks))
                                                  for i in range(300)])
        feeder.start()
        wait_for(lambda: len(dispatcher._waiting) > 100, timeout=10)
        servicer.gate.set()
        feeder.join(10)
        wait_for(lambda: len(acks) == 300, timeout=20)
        assert sorted(acks) == list(range(300))
        assert servicer.batches, "no bulk call was made"
        assert max(len(b) for b in servicer.batches) <= 50
        assert max(len(b) for b in servicer.batches) > 1
        delivered = sum(len(b) for b in servicer.batches) + len(servicer.unary)
        assert delivered == 300
        assert len(_records(log, EVENT_DELIVERED)) == 300
    finally:
        dispatcher.close()
        server.stop(None)


def test_an_ordered_input_gets_bulk_calls_one_at_a_time_in_order() -> None:
    """Kafka's records of a partition reach the app in order (daprd's consumer is sequential
    per partition, its bulk subscriber too): one call in flight, unary or bulk, each batch in
    the order read, so the app sees every event in order."""
    servicer = _App()
    servicer.gate.clear()
    server, port = _serve(servicer)
    dispatcher, _log = _dispatcher(port, ordered=True)
    acks: list[Any] = []
    try:
        feeder = threading.Thread(target=lambda: [dispatcher(_event(i, acks))
                                                  for i in range(200)])
        feeder.start()
        wait_for(lambda: len(dispatcher._waiting) >= 40, timeout=10)  # room: one call of 50
        servicer.gate.set()
        feeder.join(10)
        wait_for(lambda: len(acks) == 200, timeout=20)
        assert servicer.most_in_flight == 1
        assert max(len(b) for b in servicer.batches) > 1, servicer.calls
        seen = [int(data) for call in servicer.calls for data in call]
        assert seen == list(range(200)) and acks == list(range(200))
    finally:
        dispatcher.close()
        server.stop(None)


@pytest.mark.parametrize("bad", [
    {"data_base64": "!! not base64"},  # ValueError building the request
    {"data": {"n": 1}, "seq": int("1" * 400)},  # OverflowError: protobuf's Struct cannot hold it
])
def test_an_undeliverable_envelope_is_a_dead_letter_and_the_input_goes_on(
        bad: dict[str, Any]) -> None:
    """An event whose AppCallback request cannot be built is recorded, dead-lettered and
    acknowledged, alone or in a batch; it neither stops the input's drainer nor stays
    unacknowledged (an ack window would stall behind it)."""
    servicer = _App()
    servicer.gate.clear()
    server, port = _serve(servicer)
    dispatcher, log = _dispatcher(port, ordered=True)  # one drainer: one stuck would stop all
    acks: list[Any] = []
    envelope = {"specversion": "1.0", "id": "bad", "type": "t", "source": "s",
                "datacontenttype": "application/json", **bad}
    try:
        dispatcher(InboundEvent(data=json.dumps(envelope).encode(),
                                _ack=lambda: acks.append("bad")))  # alone
        feeder = threading.Thread(target=lambda: [dispatcher(_event(i, acks))
                                                  for i in range(30)])
        feeder.start()
        wait_for(lambda: "bad" in acks, timeout=10)
        dispatcher(InboundEvent(data=json.dumps(envelope).encode(),
                                _ack=lambda: acks.append("bad")))  # among others
        servicer.gate.set()
        feeder.join(10)
        wait_for(lambda: len(acks) == 32, timeout=20)
        assert sorted(a for a in acks if a != "bad") == list(range(30))
        dead = _records(log, EVENT_DEAD_LETTER)
        assert len(dead) == 2 and all("cannot be delivered" in d["error"] for d in dead), dead
        dispatcher(_event(99, acks))  # still delivering
        wait_for(lambda: 99 in acks, timeout=10)
    finally:
        dispatcher.close()
        server.stop(None)


def test_each_entry_is_settled_by_its_own_status() -> None:
    servicer = _App()
    servicer.gate.clear()
    server, port = _serve(servicer)
    dispatcher, log = _dispatcher(port)
    acks: list[Any] = []
    try:
        for blocker in range(4):  # every drainer held at the gate: the rest wait together
            dispatcher(_event(f"b{blocker}", acks))
        wait_for(lambda: dispatcher._draining == 4 and not dispatcher._waiting, timeout=5)
        for data in ["ok1", "drop", "flaky", "nostatus", "ok2"]:
            dispatcher(_event(data, acks))
        servicer.gate.set()
        wait_for(lambda: len(acks) == 9, timeout=20)
        assert sorted(acks) == sorted(["b0", "b1", "b2", "b3", "ok1", "drop", "flaky",
                                       "nostatus", "ok2"])
        assert any(b'"flaky"' in batch and len(batch) > 1 for batch in servicer.batches)
        letters = _records(log, EVENT_DEAD_LETTER)
        assert len(letters) == 1 and letters[0]["attempts"] == 1
        assert "'nope' is not a declared output" in letters[0]["error"]
        # the RETRY entry and the one without a status went on alone, and arrived
        assert b'"flaky"' in servicer.unary and b'"nostatus"' in servicer.unary
        assert len(_records(log, EVENT_DELIVERED)) == 8
    finally:
        dispatcher.close()
        server.stop(None)


def test_an_app_without_the_bulk_rpc_gets_every_event_unary() -> None:
    servicer = _App(bulk=False)
    servicer.gate.clear()
    server, port = _serve(servicer)
    dispatcher, log = _dispatcher(port)
    acks: list[Any] = []
    try:
        dispatcher(_event(0, acks))
        wait_for(lambda: dispatcher._draining == 1, timeout=5)
        for i in range(1, 40):
            dispatcher(_event(i, acks))
        servicer.gate.set()
        wait_for(lambda: len(acks) == 40, timeout=20)
        assert sorted(acks) == list(range(40)) and servicer.batches == []
        assert len(servicer.unary) == 40 and not _records(log, EVENT_DEAD_LETTER)
    finally:
        dispatcher.close()
        server.stop(None)


def test_a_batch_for_an_unreachable_app_is_held_and_burns_no_attempt() -> None:
    holder = __import__("socket").socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = holder.getsockname()[1]
    dispatcher, log = _dispatcher(port, attempts=1)
    acks: list[Any] = []
    servicer = _App()
    try:
        for i in range(20):
            dispatcher(_event(i, acks))
        wait_for(lambda: dispatcher._draining == 4, timeout=5)
        holder.close()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        appcallback_pb2_grpc.add_AppCallbackServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        wait_for(lambda: len(acks) == 20, timeout=20)
        assert sorted(acks) == list(range(20)) and not _records(log, EVENT_DEAD_LETTER)
        server.stop(None)
    finally:
        holder.close()
        dispatcher.close()


def test_the_dapr_sdk_app_answers_bulk_calls_entry_by_entry() -> None:
    """``dapr.ext.grpc.App`` (>= 1.17) routes each bulk entry to the topic handler."""
    from dapr.ext.grpc import App as SdkApp
    from dapr.ext.grpc import SubscriptionMessage, TopicEventResponse

    seen: list[Any] = []
    gate = threading.Event()
    sdk = SdkApp()

    def handle(message: SubscriptionMessage) -> Any:
        gate.wait(10)
        value = json.loads(message.raw_data())
        seen.append(value)
        return TopicEventResponse("retry" if value == 3 and seen.count(3) == 1 else "success")

    handle.__annotations__ = {"message": SubscriptionMessage}  # the SDK reads the object
    sdk.subscribe(pubsub_name="in-pubsub", topic="orders")(handle)

    bulk_sizes: list[int] = []
    sdk_bulk = sdk._servicer.OnBulkTopicEvent

    def counted(request: Any, context: Any) -> Any:
        bulk_sizes.append(len(request.entries))
        return sdk_bulk(request, context)

    sdk._servicer.OnBulkTopicEvent = counted
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(sdk._servicer, server)
    appcallback_pb2_grpc.add_AppCallbackAlphaServicer_to_server(sdk._servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    dispatcher, log = _dispatcher(port)
    acks: list[Any] = []
    try:
        for i in range(30):
            dispatcher(_event(i, acks))
        gate.set()
        wait_for(lambda: len(acks) == 30, timeout=20)
        assert sorted(acks) == list(range(30)) and seen.count(3) == 2
        assert bulk_sizes and max(bulk_sizes) > 1
        assert len(_records(log, EVENT_DELIVERED)) == 30
    finally:
        dispatcher.close()
        server.stop(None)


@pytest.mark.parametrize("settings", [None, BulkSettings(max_messages=1)])
def test_without_bulk_settings_every_event_is_unary(settings: BulkSettings | None) -> None:
    servicer = _App()
    server, port = _serve(servicer)
    dispatcher, _log = _dispatcher(port, bulk=settings)
    acks: list[Any] = []
    try:
        for i in range(25):
            dispatcher(_event(i, acks))
        wait_for(lambda: len(acks) == 25, timeout=20)
        assert servicer.batches == [] and len(servicer.unary) == 25
    finally:
        dispatcher.close()
        server.stop(None)


@pytest.mark.parametrize("extensions", [
    {}, {"traceparent": "00-abc-01", "n": 3, "ratio": 0.5, "big": 2**53 + 1, "ok": True,
         "nothing": None, "nested": {"a": [1, "x", {"b": False}]}, "html": "<a&b>"}])
def test_a_bulk_entry_is_the_unary_request_of_the_same_event(extensions: dict[str, Any]
                                                              ) -> None:
    """The bulk entry is built without the Go-JSON round trip of ``topic_event_request``; it
    must carry the same attributes, data and extensions."""
    from ofnotebook.sidecar.bulk import cloud_event_entry

    ce = cloudevents.new_cloud_event(app_id="p", pubsub_name="in-pubsub", topic="orders",
                                     data=b'{"z": 1, "a": [1.0, "<>"]}',
                                     data_content_type="application/json")
    ce.update(extensions)
    unary = cloudevents.topic_event_request(ce, topic="orders", pubsub_name="in-pubsub")
    entry = cloud_event_entry(ce, cloudevents._event_data(ce, ce["datacontenttype"]))
    assert (entry.id, entry.source, entry.type, entry.spec_version, entry.data_content_type,
            entry.data) == (unary.id, unary.source, unary.type, unary.spec_version,
                            unary.data_content_type, unary.data)
    assert entry.extensions == unary.extensions


def test_events_waiting_when_an_input_without_redelivery_closes_are_each_recorded() -> None:
    """In-memory events exist only in the stand-in: closed while waiting for a batch (or
    between retries), each is delivered or a dead letter saying why, none silently gone."""
    servicer = _App()
    servicer.bulk_gate.clear()
    server, port = _serve(servicer)
    dispatcher, log = _dispatcher(port, kind="pubsub.in-memory")
    acks: list[Any] = []
    try:
        # bulk calls held at close answer RETRY: their entries' retries start after the close
        for i in range(120):
            dispatcher(_event(f"flaky{i}", acks))
        wait_for(lambda: servicer.bulk_waiting >= 2, timeout=5)
        dispatcher.close()
        servicer.bulk_gate.set()
        wait_for(lambda: len(acks) == 120, timeout=20,
                 message=lambda: f"{len(acks)} of 120 settled")
        letters = _records(log, EVENT_DEAD_LETTER)
        assert len(_records(log, EVENT_DELIVERED)) + len(letters) == 120
        assert any(len(batch) > 1 for batch in servicer.batches)
        assert letters and all("does not redeliver" in letter["error"] for letter in letters)
    finally:
        server.stop(None)


def test_a_batch_functions_subscription_waits_for_its_batch_to_fill() -> None:
    """``fill_ms`` (a batch function's --batch-wait): events arriving one by one, each well
    within the wait of the previous, still go as one bulk call."""
    servicer = _App()
    server, port = _serve(servicer)
    dispatcher, _log = _dispatcher(port, bulk=BulkSettings(max_messages=5, fill_ms=5000))
    acks: list[Any] = []
    try:
        for i in range(5):
            dispatcher(_event(i, acks))
            if i == 0:
                wait_for(lambda: dispatcher._draining == 1, timeout=5)
        wait_for(lambda: len(acks) == 5, timeout=10)
        assert servicer.batches == [[b"0", b"1", b"2", b"3", b"4"]] and servicer.unary == []
    finally:
        dispatcher.close()
        server.stop(None)
