"""The Kafka driver against a real (tansu) broker: bindings, pub/sub, at-least-once, errors."""

from __future__ import annotations

import queue
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ofnotebook.sidecar.drivers.base import ComponentConfig, ComponentError, InboundEvent
from ofnotebook.sidecar.drivers import Driver
from ofnotebook.sidecar.drivers import kafka
from ofnotebook.sidecar.drivers.kafka import KafkaDriver
from tests.sidecar.conformance import BrokerConformance, RedeliveryConformance, Send
from tests.sidecar.kafka_broker import TansuBroker
from tests.sidecar.support import close_all

Make = Callable[..., KafkaDriver]


@pytest.fixture
def make_driver(kafka_broker: TansuBroker) -> Iterator[Make]:  # noqa: F811
    """Started drivers on the test's broker; each is closed after the test, quickly and fully."""
    drivers: list[KafkaDriver] = []

    def make(type_: str = "pubsub.kafka", name: str = "kafka", **metadata: str) -> KafkaDriver:
        meta = {"brokers": kafka_broker.bootstrap, "authType": "none", **metadata}
        driver = KafkaDriver(ComponentConfig(name, type_, meta))
        driver.start()
        drivers.append(driver)
        return driver

    yield make
    close_all(drivers)
    deadline = time.monotonic() + 3
    while [t for t in threading.enumerate() if t.name.startswith("kafka-")]:
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.05)


def take(events: queue.Queue[InboundEvent], count: int, timeout: float = 10) -> list[InboundEvent]:
    return [events.get(timeout=timeout) for _ in range(count)]


def publish_and_read(make_driver: Make, group: str, topic: str, count: int, prefix: bytes
                     ) -> tuple[KafkaDriver, list[InboundEvent]]:
    """A member of ``group`` that published ``count`` records and read them all, unacked."""
    first = make_driver(consumerGroup=group, initialOffset="oldest")
    for n in range(count):
        first.publish(topic, prefix + b"%d" % n, {})
    events: queue.Queue[InboundEvent] = queue.Queue()
    first.subscribe(topic, events.put)
    received = take(events, count)
    assert [e.data for e in received] == [prefix + b"%d" % n for n in range(count)]
    return first, received


def read_again(make_driver: Make, group: str, topic: str) -> queue.Queue[InboundEvent]:
    """The group's next member (after a restart), subscribed to ``topic`` from its offsets."""
    again: queue.Queue[InboundEvent] = queue.Queue()
    make_driver(consumerGroup=group, initialOffset="oldest").subscribe(topic, again.put)
    return again


def assert_quiet(events: queue.Queue[InboundEvent], wait: float = 0.5) -> None:
    with pytest.raises(queue.Empty):
        events.get(timeout=wait)


def test_output_binding_produces_record_with_key_and_headers(
        make_driver: Make, kafka_broker: TansuBroker) -> None:  # noqa: F811
    driver = make_driver("bindings.kafka", publishTopic="out")
    assert driver.invoke("create", b"hello", {"partitionKey": "k1", "trace": "t-1"}) == (b"", {})
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "reader"})
    try:
        consumer.assign([TopicPartition("out", 0, 0)])
        msg = None
        deadline = time.monotonic() + 10
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
    finally:
        consumer.close()
    assert msg is not None and msg.error() is None
    assert (msg.value(), msg.key()) == (b"hello", b"k1")
    assert dict(msg.headers() or []) == {"partitionKey": b"k1", "trace": b"t-1"}
    with pytest.raises(ComponentError, match="'create' only"):
        driver.invoke("delete", b"", {})
    with pytest.raises(ComponentError, match="does not support"):
        driver.publish("out", b"x", {})


def test_input_binding_delivers_value_headers_and_kafka_metadata(
        make_driver: Make, kafka_broker: TansuBroker) -> None:  # noqa: F811
    driver = make_driver("bindings.kafka", topics="in-a, in-b", consumerGroup="fn")
    events: queue.Queue[InboundEvent] = queue.Queue()
    began = time.monotonic()
    driver.read(events.put)  # returns once the group has its partitions
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce("in-b", b"payload", key=b"user-7", headers=[("source", b"test")])
    producer.flush(5)
    (event,) = take(events, 1)
    print(f"input binding: first delivery {time.monotonic() - began:.2f} s after read()")
    assert (event.data, event.topic) == (b"payload", "in-b")
    stamp = int(event.metadata.pop("__timestamp"))
    assert abs(stamp - time.time() * 1000) < 60_000
    assert event.metadata == {"__key": "user-7", "__topic": "in-b", "__partition": "0",
                              "__offset": "0", "source": "test"}
    event.ack()
    with pytest.raises(ComponentError, match="does not support"):
        driver.subscribe("in-a", events.put)


def test_pubsub_publish_subscribe_round_trip(make_driver: Make) -> None:
    driver = make_driver()
    events: queue.Queue[InboundEvent] = queue.Queue()
    driver.publish("orders", b'{"old": true}', {})  # before subscribing: newest skips it
    began = time.monotonic()
    driver.subscribe("orders", events.put)
    joined = time.monotonic() - began
    cloud_event = b'{"specversion":"1.0","id":"1","data":{"n":1}}'
    driver.publish("orders", cloud_event, {"traceparent": "00-abc"})
    (event,) = take(events, 1)
    print(f"pubsub: subscribe() took {joined:.2f} s, first delivery at "
          f"{time.monotonic() - began:.2f} s")
    assert joined < 5
    assert (event.data, event.topic, event.metadata["traceparent"]) == (cloud_event, "orders",
                                                                        "00-abc")
    assert "__key" not in event.metadata
    event.ack()
    assert_quiet(events)
    with pytest.raises(ComponentError, match="does not support"):
        driver.invoke("create", b"", {})


def test_unacked_messages_come_again_after_restart_acked_ones_do_not(make_driver: Make) -> None:
    first, received = publish_and_read(make_driver, "workers", "jobs", 5, b"job-")
    for event in received[:3]:  # in order, as the stand-in acknowledges an ordered driver
        event.ack()
    first.close()
    received[3].ack()  # too late: the consumer is gone, so nothing is committed for it

    again = read_again(make_driver, "workers", "jobs")
    redelivered = take(again, 2)
    assert [e.data for e in redelivered] == [b"job-3", b"job-4"]
    assert_quiet(again)


def test_an_ack_after_a_gap_waits_for_the_gap(make_driver: Make) -> None:
    """Offsets are a watermark: an ack beyond an unacked message commits nothing past it."""
    first = make_driver(consumerGroup="gap", initialOffset="oldest")
    for n in range(3):
        first.publish("steps", b"s%d" % n, {})
    events: queue.Queue[InboundEvent] = queue.Queue()
    first.subscribe("steps", events.put)
    s0, _s1, s2 = take(events, 3)
    s0.ack()
    s2.ack()
    first.close()

    again = read_again(make_driver, "gap", "steps")
    assert [e.data for e in take(again, 2)] == [b"s1", b"s2"]


def test_new_subscription_rebalance_neither_duplicates_nor_skips(make_driver: Make) -> None:
    driver = make_driver()
    events: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe("a", events.put)
    driver.publish("a", b"a1", {})
    (a1,) = take(events, 1)  # pending (not acked) while the group rebalances
    joining = threading.Thread(target=driver.subscribe, args=("b", events.put))
    joining.start()
    time.sleep(0.2)
    driver.publish("a", b"a2", {})  # during the rebalance: must not be skipped
    joining.join()
    driver.publish("b", b"b1", {})
    later = take(events, 2)
    assert sorted(e.data for e in later) == [b"a2", b"b1"]
    assert_quiet(events)
    for event in (a1, *later):
        event.ack()


def test_a_stuck_handler_neither_stalls_the_consumer_nor_keeps_the_group(make_driver: Make,
                                                                         ) -> None:
    """The stand-in's deliver() blocks while an ordered event is in flight: the consumer must
    keep polling (back-pressure pauses fetching) and, on close, leave the group at once."""
    release = threading.Event()
    seen: list[bytes] = []

    def stuck(event: InboundEvent) -> None:
        seen.append(event.data)
        release.wait(20)

    first = make_driver(consumerGroup="slow", initialOffset="oldest")
    for n in range(150):  # held by the pump behind the stuck one
        first.publish("work", b"w%d" % n, {})
    first.subscribe("work", stuck)
    while not seen:
        time.sleep(0.05)
    began = time.monotonic()
    first.close()
    assert time.monotonic() - began < 5

    second = make_driver(consumerGroup="slow", initialOffset="oldest")
    events: queue.Queue[InboundEvent] = queue.Queue()
    began = time.monotonic()
    second.subscribe("work", events.put)
    received = take(events, 150)
    assert time.monotonic() - began < 8  # the stuck member left the group when it closed
    assert [e.data for e in received] == [b"w%d" % n for n in range(150)]
    for event in received:
        event.ack()
    release.set()


def test_backlog_pauses_and_resumes_without_loss_or_duplicates(
        make_driver: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pause at 128 (2 x BACKLOG), reached at once: each poll while the backlog is full brings
    # at most one record, and it waits HOLD for the backlog to drain first.
    monkeypatch.setattr(kafka, "BACKLOG", 64)
    monkeypatch.setattr(kafka, "HOLD", 0.001)
    driver = make_driver(initialOffset="oldest")
    gate = threading.Event()
    got: list[bytes] = []

    def slow(event: InboundEvent) -> None:
        gate.wait(20)
        got.append(event.data)
        event.ack()

    for n in range(200):
        driver.publish("burst", b"b%d" % n, {})
    driver.subscribe("burst", slow)
    deadline = time.monotonic() + 5
    while not driver._paused and time.monotonic() < deadline:  # the backlog fills up
        time.sleep(0.02)
    assert driver._paused
    gate.set()
    deadline = time.monotonic() + 10
    while len(got) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got == [b"b%d" % n for n in range(200)]


def test_acks_out_of_order_from_many_threads_commit_up_to_the_first_gap(make_driver: Make,
                                                                       ) -> None:
    """Acks arrive as the Dispatcher sends them: from several threads, in any order. The
    commit moves to the lowest offset still unacked (one commit per poll, not per ack), so
    after a death exactly that offset and what follows it come again, nothing below it."""
    first, received = publish_and_read(make_driver, "scrambled", "many", 300, b"m")
    order = received[:137] + received[138:]
    random.Random(14).shuffle(order)  # m137 is never acked
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(InboundEvent.ack, order))
    first.close()  # commits what the acks recorded last

    again = read_again(make_driver, "scrambled", "many")
    assert [e.data for e in take(again, 163)] == [b"m%d" % n for n in range(137, 300)]
    assert_quiet(again)


def test_publish_many_is_one_batch_and_fails_entry_by_entry(make_driver: Make) -> None:
    """One produce batch and one flush; a record librdkafka refuses (over message.max.bytes)
    fails alone, naming why, and the others arrive in order with their keys and headers."""
    driver = make_driver(initialOffset="oldest")
    entries = [(b"a", {"partitionKey": "k"}), (b"x" * 2_000_000, {}), (b"b", {"h": "1"})]
    failed = driver.publish_many("batch", entries)
    assert [index for index, _error in failed] == [1]
    assert "too large" in str(failed[0][1]).lower()
    events: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe("batch", events.put)
    a, b = take(events, 2)
    assert (a.data, a.metadata["__key"], b.data, b.metadata["h"]) == (b"a", "k", b"b", "1")
    assert_quiet(events)


@pytest.mark.parametrize(("metadata", "message"), [
    ({}, "needs metadata 'authType'"),
    ({"authType": "password"}, "only authType none works locally"),
    ({"authType": "mtls"}, "only authType none works locally"),
    ({"authType": "kerberos"}, "is not valid"),
    ({"authType": "none", "initialOffset": "latest"}, "newest or oldest"),
    ({"authType": "none", "brokers": ""}, "needs metadata 'brokers'"),
    ({"authType": "none", "sessionTimeout": "ten seconds"}, "is not a duration"),
])
def test_bad_metadata_is_a_component_error(metadata: dict[str, str], message: str) -> None:
    meta = {"brokers": "127.0.0.1:9", **metadata}
    driver = KafkaDriver(ComponentConfig("bus", "bindings.kafka", meta))
    with pytest.raises(ComponentError, match=message):
        driver.start()
    driver.close()


class TestKafkaConformance(RedeliveryConformance, BrokerConformance):
    types = ("bindings.kafka", "pubsub.kafka")
    bad_metadata = tuple(("bindings.kafka", {"brokers": "127.0.0.1:9", **md}, key) for md, key in (
        ({}, "authType"),
        ({"authType": "password"}, "authType"),
        ({"authType": "kerberos"}, "authType"),
        ({"authType": "none", "initialOffset": "latest"}, "initialOffset"),
        ({"authType": "none", "brokers": ""}, "brokers"),
        ({"authType": "none", "sessionTimeout": "ten seconds"}, "sessionTimeout"),
    ))

    unreachable_fix = ("brokers", "tansu broker")
    unreachable_types = ("pubsub.kafka",)  # one connect path for both types: 3 s each

    @pytest.fixture(autouse=True)
    def _broker(self, kafka_broker: TansuBroker) -> None:
        self.bootstrap = kafka_broker.bootstrap

    def metadata(self, type_: str) -> dict[str, str]:
        return {"brokers": self.bootstrap, "authType": "none"}

    def unreachable(self, type_: str, port: int) -> dict[str, str]:
        return {"brokers": f"127.0.0.1:{port}", "authType": "none"}

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        topic = f"conf-{consumer}"
        sender = self.make(made, "pubsub.kafka")
        receiver = self.make(made, "pubsub.kafka", consumerGroup=consumer,
                             initialOffset="oldest")
        receiver.subscribe(topic, deliver)
        return receiver, lambda data: sender.publish(topic, data, {})
