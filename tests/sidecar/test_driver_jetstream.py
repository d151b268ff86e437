"""JetStreamDriver against the real NATS server with JetStream on 127.0.0.1:4222 (no mocks)."""

from __future__ import annotations

import asyncio
import json
import queue
import random
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Any, Iterator

import pytest

from ofnotebook.sidecar.drivers.base import ComponentConfig, ComponentError, InboundEvent
from ofnotebook.sidecar.drivers import Driver
from tests.sidecar.conformance import BrokerConformance, RedeliveryConformance, Send
from tests.sidecar.support import close_all, free_port, get, needs_broker, nothing, uid, wait_port

nats = pytest.importorskip("nats")

from ofnotebook.sidecar.drivers.jetstream import JetStreamDriver  # noqa: E402

URL = "nats://127.0.0.1:4222"


pytestmark = needs_broker("NATS")


def _admin(action: Any) -> Any:
    """Run ``action(js)`` on a short-lived connection of its own."""
    async def run() -> Any:
        nc = await nats.connect(URL)
        try:
            return await action(nc.jetstream())
        finally:
            await nc.close()
    return asyncio.run(run())


def _event(data: Any) -> bytes:
    """A CloudEvent like the stand-in publishes: its ``id`` becomes ``Nats-Msg-Id``."""
    return json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": "t",
                       "type": "com.dapr.event.sent", "data": data}).encode()


class Server:
    """Drivers made by a test and the streams to delete after it."""

    def __init__(self) -> None:
        self.drivers: list[JetStreamDriver] = []
        self.streams: set[str] = set()
        self.subjects: set[str] = set()

    def make(self, **md: str) -> JetStreamDriver:
        name = md.pop("name", f"js-{uid()}")
        driver = JetStreamDriver(ComponentConfig(name=name, type="pubsub.jetstream",
                                                 metadata={"natsURL": URL, **md}))
        self.drivers.append(driver)
        driver.start()
        return driver

    def topic(self) -> str:
        topic = f"ofn.{uid()}"
        self.subjects.add(topic)
        return topic

    def cleanup(self) -> None:
        close_all(self.drivers)

        async def delete(js: Any) -> None:
            names = set(self.streams)
            for subject in self.subjects:
                try:
                    names.add(await js.find_stream_name_by_subject(subject))
                except nats.js.errors.NotFoundError:
                    pass
            for name in names:
                try:
                    await js.delete_stream(name)
                except nats.js.errors.NotFoundError:
                    pass
        _admin(delete)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.cleanup()


def test_publish_to_subscribe_round_trip_creates_the_stream(server: Server) -> None:
    topic = server.topic()
    pub, sub = server.make(), server.make()
    early, late = _event("early"), _event("late")
    pub.publish(topic, early, {})  # no stream yet: the driver creates one (daprd would fail)
    got: queue.Queue[InboundEvent] = queue.Queue()
    sub.subscribe(topic, got.put)
    pub.publish(topic, late, {})
    first, second = get(got), get(got)
    assert (first.data, second.data) == (early, late)  # deliverPolicy all (the default)
    assert first.metadata == {"Topic": topic} and first.topic == topic
    first.ack()
    second.ack()


def test_cloudevent_id_deduplicates(server: Server) -> None:
    topic = server.topic()
    driver = server.make()
    got: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, got.put)
    data = _event({"n": 1})
    driver.publish(topic, data, {})
    driver.publish(topic, data, {})  # same Nats-Msg-Id: stored once
    driver.publish(topic, b"not a cloudevent", {})
    assert get(got).data == data
    assert get(got).data == b"not a cloudevent"
    with pytest.raises(queue.Empty):
        got.get(timeout=0.3)


def test_unacked_event_is_redelivered_after_ack_wait_and_restart(server: Server) -> None:
    topic, durable = server.topic(), f"d-{uid()}"
    md = {"durableName": durable, "ackWait": "1s"}
    first = server.make(**md)
    got: queue.Queue[InboundEvent] = queue.Queue()
    first.subscribe(topic, got.put)
    data = _event("once")
    first.publish(topic, data, {})
    assert get(got).data == data
    t0 = time.monotonic()
    assert get(got).data == data  # not acknowledged: redelivered after ackWait
    assert time.monotonic() - t0 > 0.5
    first.close()  # still not acknowledged

    second = server.make(**md)
    got = queue.Queue()
    second.subscribe(topic, got.put)
    event = get(got)
    assert event.data == data
    event.ack()
    time.sleep(0.2)
    second.close()

    third = server.make(**md)
    got = queue.Queue()
    third.subscribe(topic, got.put)
    with pytest.raises(queue.Empty):
        got.get(timeout=1.5)  # acknowledged: never again, even after ackWait


@pytest.mark.parametrize("policy", ["explicit", "all"])
def test_acks_out_of_order_then_a_restart_brings_back_only_what_is_unacked(
        server: Server, policy: str) -> None:
    """Acks from 8 threads in any order (as the Dispatcher sends them) leave the loop in
    groups. Explicit: each message is acked alone, so after a restart only the one never acked
    (m37) comes back. AckAll acks everything up to a sequence, so the driver never sends one
    past m37 (still in the app): m37 and all after it come back, none before it."""
    topic, durable = server.topic(), f"d-{uid()}"
    md = {"durableName": durable, "ackWait": "1s", "ackPolicy": policy}
    first = server.make(**md)
    for n in range(100):
        first.publish(topic, b"m%d" % n, {})
    got: queue.Queue[InboundEvent] = queue.Queue()
    first.subscribe(topic, got.put)
    received = [get(got) for _ in range(100)]
    assert [e.data for e in received] == [b"m%d" % n for n in range(100)]
    acked = [e for e in received if e.data != b"m37"]
    random.Random(14).shuffle(acked)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(InboundEvent.ack, acked))
    time.sleep(0.2)  # the loop sends the acks
    first.close()

    second = server.make(**md)
    again: queue.Queue[InboundEvent] = queue.Queue()
    second.subscribe(topic, again.put)
    expected = [b"m37"] if policy == "explicit" else [b"m%d" % n for n in range(37, 100)]
    back = [get(again) for _ in expected]
    assert [e.data for e in back] == expected
    nothing(again, 0.5)
    for event in back:
        event.ack()


def test_publish_many_arrives_in_order_and_deduplicates(server: Server) -> None:
    topic = server.topic()
    driver = server.make()
    twice = _event("twice")
    entries = [(_event(n), {}) for n in range(50)] + [(twice, {}), (twice, {})]
    assert driver.publish_many(topic, entries) == []  # the stream is created first
    got: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, got.put)
    received = [get(got) for _ in range(51)]
    assert [e.data for e in received] == [data for data, _md in entries[:51]]
    nothing(got, 0.3)
    for event in received:
        event.ack()


def test_deliver_policy_new_skips_older_messages(server: Server) -> None:
    topic = server.topic()
    driver = server.make(deliverPolicy="new")
    driver.publish(topic, _event("old"), {})
    got: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, got.put)
    new = _event("new")
    driver.publish(topic, new, {})
    event = get(got)
    assert event.data == new
    event.ack()


def test_named_stream_is_created_and_durable_conflict_is_explained(server: Server) -> None:
    stream, base, durable = f"S{uid()}", f"ofn.{uid()}", f"d-{uid()}"
    server.streams.add(stream)

    async def create(js: Any) -> None:
        await js.add_stream(name=stream, subjects=[f"{base}.*"])
    _admin(create)
    driver = server.make(streamName=stream, durableName=durable)
    driver.subscribe(f"{base}.a", lambda e: None)
    with pytest.raises(ComponentError, match="durableName"):
        driver.subscribe(f"{base}.b", lambda e: None)

    missing = f"M{uid()}"
    server.streams.add(missing)
    other = server.make(streamName=missing)
    topic = f"ofn.{uid()}"
    other.publish(topic, _event(1), {})

    async def subjects(js: Any) -> list[str]:
        return list((await js.stream_info(missing)).config.subjects)
    assert _admin(subjects) == [topic]


def test_unsupported_calls_raise(server: Server) -> None:
    driver = server.make()
    with pytest.raises(ComponentError):
        driver.invoke("create", b"", {})
    with pytest.raises(ComponentError):
        driver.read(lambda e: None)


@pytest.mark.skipif(shutil.which("nats-server") is None, reason="no nats-server binary")
def test_reconnects_after_a_server_restart_and_closes_fast_when_it_is_down(
        tmp_path: Path) -> None:
    """A private server on a free port (the shared one is left alone): stopped and started
    again, the driver reconnects and its consumer resumes; stopped for good, close() is quick."""
    port = free_port()
    cmd = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path)]

    def server() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return proc

    proc = server()
    driver = JetStreamDriver(ComponentConfig(name=f"j-{uid()}", type="pubsub.jetstream",
                                             metadata={"natsURL": f"nats://127.0.0.1:{port}"}))
    try:
        driver.start()
        got: queue.Queue[InboundEvent] = queue.Queue()
        driver.subscribe("ofn.restart", got.put)
        proc.terminate()
        proc.wait()
        proc = server()
        deadline = time.monotonic() + 10
        while True:  # the client reconnects on its own within a few seconds
            try:
                driver.publish("ofn.restart", _event("again"), {})
                break
            except ComponentError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        event = get(got)
        assert json.loads(event.data)["data"] == "again"
        event.ack()
        proc.terminate()
        proc.wait()
        t0 = time.monotonic()
        driver.close()
        assert time.monotonic() - t0 < 5
    finally:
        driver.close()
        proc.terminate()
        proc.wait()


class TestJetStreamConformance(RedeliveryConformance, BrokerConformance):
    types = ("pubsub.jetstream",)
    bad_metadata = (
        ("pubsub.jetstream", {}, "natsURL"),
        ("pubsub.jetstream", {"natsURL": URL, "deliverPolicy": "sometimes"}, "deliverPolicy"),
        ("pubsub.jetstream", {"natsURL": URL, "ackWait": "soon"}, "ackWait"),
        ("pubsub.jetstream", {"natsURL": URL, "maxDeliver": "many"}, "maxDeliver"),
        ("pubsub.jetstream", {"natsURL": URL, "jwt": "x", "seedKey": "y"}, "jwt"),
    )
    redelivery_wait = 10.0  # ackWait 1 s: the unacknowledged event comes after it

    def metadata(self, type_: str) -> dict[str, str]:
        return {"natsURL": URL}

    unreachable_fix = ("nats-server", "natsURL")

    def unreachable(self, type_: str, port: int) -> dict[str, str]:
        return {"natsURL": f"nats://127.0.0.1:{port}"}

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        topic = f"ofn.conf.{consumer}"
        self.__dict__.setdefault("subjects", set()).add(topic)
        sender = self.make(made, "pubsub.jetstream")
        receiver = self.make(made, "pubsub.jetstream", durableName=consumer, ackWait="1s")
        receiver.subscribe(topic, deliver)
        return receiver, lambda data: sender.publish(topic, data, {})

    def cleanup(self, drivers: list[Driver]) -> None:
        subjects = self.__dict__.get("subjects", ())

        async def delete(js: Any) -> None:
            for subject in subjects:
                try:
                    await js.delete_stream(await js.find_stream_name_by_subject(subject))
                except nats.js.errors.NotFoundError:
                    pass
        if subjects:
            _admin(delete)
