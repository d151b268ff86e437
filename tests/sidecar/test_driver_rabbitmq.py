"""RabbitMQDriver against the real RabbitMQ on 127.0.0.1:5672, guest/guest (no mocks)."""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from typing import Callable, Iterator

import pytest

from ofnotebook.sidecar.drivers.base import ComponentConfig, ComponentError, InboundEvent
from ofnotebook.sidecar.drivers import Driver
from tests.sidecar.ack_order import receive_acking_scrambled
from tests.sidecar.conformance import BrokerConformance, RedeliveryConformance, Send
from tests.sidecar.support import close_all, get, needs_broker, uid

pika = pytest.importorskip("pika")

from ofnotebook.sidecar.drivers.rabbitmq import RabbitMQDriver  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672"


pytestmark = needs_broker("RabbitMQ")


class Broker:
    """Drivers made by a test and the queues/exchanges to delete after it."""

    def __init__(self) -> None:
        self.drivers: list[RabbitMQDriver] = []
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()

    def make(self, type_: str, start: bool = True, **md: str) -> RabbitMQDriver:
        name = md.pop("name", f"rmq-{uid()}")
        key = "host" if type_.startswith("bindings.") else "connectionString"
        driver = RabbitMQDriver(ComponentConfig(name=name, type=type_, metadata={key: URL, **md}))
        self.drivers.append(driver)
        if "queueName" in md:
            self.queues.add(md["queueName"])
        if start:
            driver.start()
        return driver

    def topic(self, *consumer_ids: str) -> str:
        topic = f"ofn-{uid()}"
        self.exchanges.add(topic)
        self.queues.update(f"{cid}-{topic}" for cid in consumer_ids)
        return topic

    def message_count(self, queue_name: str) -> int:
        conn = pika.BlockingConnection(pika.URLParameters(URL))
        try:
            return int(conn.channel().queue_declare(queue_name, passive=True).method.message_count)
        finally:
            conn.close()

    def cleanup(self) -> None:
        close_all(self.drivers)
        conn = pika.BlockingConnection(pika.URLParameters(URL))
        try:
            ch = conn.channel()
            for name in self.queues:
                ch.queue_delete(name)
            for name in self.exchanges:
                ch.exchange_delete(name)
        finally:
            conn.close()


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.cleanup()


def test_binding_output_to_input_round_trip_with_metadata(broker: Broker) -> None:
    queue_name = f"ofn-{uid()}"
    binding = broker.make("bindings.rabbitmq", queueName=queue_name)
    got: queue.Queue[InboundEvent] = queue.Queue()
    binding.read(got.put)
    assert binding.invoke("create", b'{"n": 1}', {"trace": "a b", "contentType": "x/y"}) == (
        b"", {})
    event = get(got)
    assert event.data == b'{"n": 1}'
    # daprd passes the AMQP string headers (the request metadata), URL-query-escaped
    assert event.metadata == {"trace": "a+b", "contentType": "x%2Fy"}
    event.ack()
    time.sleep(0.2)
    binding.close()
    assert broker.message_count(queue_name) == 0


def test_pubsub_publish_to_subscribe_round_trip(broker: Broker) -> None:
    sub = broker.make("pubsub.rabbitmq", name=f"sub-{uid()}",
                      publishMessagePropertiesToMetadata="true")
    topic = broker.topic(sub.name)
    pub = broker.make("pubsub.rabbitmq")
    got: queue.Queue[InboundEvent] = queue.Queue()
    sub.subscribe(topic, got.put)
    pub.publish(topic, b'{"i": 0}', {"messageId": "m-0", "contentType": "application/json"})
    pub.publish(topic, b'{"i": 1}', {})
    first, second = get(got), get(got)
    assert (first.data, second.data) == (b'{"i": 0}', b'{"i": 1}')
    assert first.topic == topic
    assert first.metadata == {"messageid": "m-0", "contenttype": "application/json"}
    assert second.metadata == {"contenttype": "text/plain"}
    first.ack()
    second.ack()


def test_pubsub_fans_out_to_each_consumer_id(broker: Broker) -> None:
    """A queue per consumer ID bound to the topic's fanout exchange, as daprd."""
    a, b = f"a-{uid()}", f"b-{uid()}"
    topic = broker.topic(a, b)
    qa: queue.Queue[InboundEvent] = queue.Queue()
    qb: queue.Queue[InboundEvent] = queue.Queue()
    broker.make("pubsub.rabbitmq", consumerID=a).subscribe(topic, qa.put)
    broker.make("pubsub.rabbitmq", consumerID=b).subscribe(topic, qb.put)
    broker.make("pubsub.rabbitmq", hostname="127.0.0.1:5672", username="guest",
                password="guest", connectionString="").publish(topic, b"both", {})
    for q in (qa, qb):
        event = get(q)
        assert event.data == b"both"
        event.ack()


def test_pubsub_unacked_message_is_redelivered_after_restart(broker: Broker) -> None:
    cid = f"c-{uid()}"
    topic = broker.topic(cid)
    md = {"consumerID": cid, "deletedWhenUnused": "false"}
    pub = broker.make("pubsub.rabbitmq", **md)

    def consume() -> tuple[RabbitMQDriver, queue.Queue[InboundEvent]]:
        got: queue.Queue[InboundEvent] = queue.Queue()
        driver = broker.make("pubsub.rabbitmq", **md)
        driver.subscribe(topic, got.put)
        return driver, got

    first, got = consume()
    pub.publish(topic, b"once", {})
    assert get(got).data == b"once"  # received, never acknowledged
    first.close()

    second, got = consume()
    again = get(got)
    assert again.data == b"once"
    again.ack()
    time.sleep(0.2)
    second.close()
    assert broker.message_count(f"{cid}-{topic}") == 0


def test_acks_out_of_order_go_grouped_and_only_the_unacked_come_back(broker: Broker) -> None:
    """Acks from 8 threads in any order (as the Dispatcher sends them) go as multiple acks up to
    the first gap; with prefetchCount 20 the one never acked (m150) must not starve the window:
    the acks behind it go one by one, so all 200 arrive. After a restart only m150 comes back."""
    cid = f"c-{uid()}"
    topic = broker.topic(cid)
    md = {"consumerID": cid, "deletedWhenUnused": "false", "prefetchCount": "20"}
    pub = broker.make("pubsub.rabbitmq", **md)
    got: queue.Queue[InboundEvent] = queue.Queue()
    first = broker.make("pubsub.rabbitmq", **md)
    first.subscribe(topic, got.put)
    for n in range(200):
        pub.publish(topic, b"m%d" % n, {})
    received = receive_acking_scrambled(got, 200, keep=b"m150")
    assert sorted(e.data for e in received) == sorted(b"m%d" % n for n in range(200))
    first.close()

    second = broker.make("pubsub.rabbitmq", **md)
    again: queue.Queue[InboundEvent] = queue.Queue()
    second.subscribe(topic, again.put)
    assert get(again).data == b"m150"
    with pytest.raises(queue.Empty):
        again.get(timeout=0.5)


def test_publish_many_arrives_in_order(broker: Broker) -> None:
    cid = f"c-{uid()}"
    topic = broker.topic(cid)
    driver = broker.make("pubsub.rabbitmq", consumerID=cid,
                         publishMessagePropertiesToMetadata="true")
    got: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, got.put)
    entries = [(b"m%d" % n, {"messageId": f"id-{n}"}) for n in range(50)]
    assert driver.publish_many(topic, entries) == []
    received = [get(got) for _ in range(50)]
    assert [(e.data, e.metadata["messageid"]) for e in received] == [
        (data, md["messageId"]) for data, md in entries]
    for event in received:
        event.ack()


def test_binding_unacked_message_is_redelivered_after_restart(broker: Broker) -> None:
    queue_name = f"ofn-{uid()}"
    writer = broker.make("bindings.rabbitmq", queueName=queue_name)
    reader = broker.make("bindings.rabbitmq", queueName=queue_name)
    got: queue.Queue[InboundEvent] = queue.Queue()
    reader.read(got.put)
    writer.invoke("create", b"once", {})
    assert get(got).data == b"once"
    reader.close()
    assert broker.message_count(queue_name) == 1  # requeued when the channel closed

    again: queue.Queue[InboundEvent] = queue.Queue()
    broker.make("bindings.rabbitmq", queueName=queue_name).read(again.put)
    event = get(again)
    assert event.data == b"once"
    event.ack()


def test_wrong_credentials_fail_with_component_error() -> None:
    driver = RabbitMQDriver(ComponentConfig(
        name="r", type="bindings.rabbitmq",
        metadata={"host": "amqp://guest:wrong@127.0.0.1:5672", "queueName": "never"}))
    t0 = time.monotonic()
    with pytest.raises(ComponentError, match="127.0.0.1:5672"):
        driver.start()
    assert time.monotonic() - t0 < 5
    driver.close()


def test_unsupported_calls_raise(broker: Broker) -> None:
    binding = broker.make("bindings.rabbitmq", queueName=f"ofn-{uid()}")
    pubsub = broker.make("pubsub.rabbitmq")
    with pytest.raises(ComponentError, match="create"):
        binding.invoke("get", b"", {})
    with pytest.raises(ComponentError):
        binding.subscribe("t", lambda e: None)
    with pytest.raises(ComponentError):
        pubsub.read(lambda e: None)


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=30)
    if done.returncode:
        pytest.skip(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="no rabbitmqctl")
def test_reconnects_after_the_broker_drops_the_connection(broker: Broker) -> None:
    """The broker closes only this driver's connection (found by its clientName); the driver
    reconnects after reconnectWaitSeconds and consumes again."""
    client_name = f"ofn-test-{uid()}"
    sub = broker.make("pubsub.rabbitmq", clientName=client_name, reconnectWaitSeconds="1")
    topic = broker.topic(sub.name)
    got: queue.Queue[InboundEvent] = queue.Queue()
    sub.subscribe(topic, got.put)
    rows = _rabbitmqctl("list_connections", "pid", "client_properties").splitlines()
    pids = [row.split("\t")[0] for row in rows if client_name in row]
    assert len(pids) == 1, rows
    _rabbitmqctl("close_connection", pids[0], "test")
    deadline = time.monotonic() + 15
    while True:
        try:
            sub.publish(topic, b"again", {})
            event = got.get(timeout=0.5)
            break
        except (ComponentError, queue.Empty):
            assert time.monotonic() < deadline
    assert event.data == b"again"
    event.ack()


class TestRabbitMQConformance(RedeliveryConformance, BrokerConformance):
    types = ("pubsub.rabbitmq", "bindings.rabbitmq")
    bad_metadata = (
        ("bindings.rabbitmq", {"queueName": "q"}, "host"),
        ("bindings.rabbitmq", {"host": URL}, "queueName"),
        ("pubsub.rabbitmq", {}, "connectionString"),
        ("pubsub.rabbitmq", {"connectionString": URL, "exchangeKind": "nope"}, "exchangeKind"),
        ("pubsub.rabbitmq", {"connectionString": URL, "prefetchCount": "x"}, "prefetchCount"),
    )

    def metadata(self, type_: str) -> dict[str, str]:
        if type_.startswith("bindings."):
            return {"host": URL, "queueName": f"ofn-{uid()}"}
        return {"connectionString": URL}

    unreachable_fix = ("rabbitmq-server",)

    def unreachable(self, type_: str, port: int) -> dict[str, str]:
        url = f"amqp://guest:guest@127.0.0.1:{port}"
        if type_.startswith("bindings."):
            return {"host": url, "queueName": "never"}
        return {"connectionString": url}

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        topic = f"ofn-conf-{consumer}"
        self.__dict__.setdefault("topics", set()).add((topic, f"{consumer}-{topic}"))
        sender = self.make(made, "pubsub.rabbitmq", deletedWhenUnused="false")  # same exchange
        receiver = self.make(made, "pubsub.rabbitmq", consumerID=consumer,
                             deletedWhenUnused="false")
        receiver.subscribe(topic, deliver)
        return receiver, lambda data: sender.publish(topic, data, {})

    def cleanup(self, drivers: list[Driver]) -> None:
        queues = {d.component.get("queueName") for d in drivers} - {""}
        exchanges: set[str] = set()
        for topic, queue_name in self.__dict__.get("topics", ()):
            exchanges.add(topic)
            queues.add(queue_name)
        conn = pika.BlockingConnection(pika.URLParameters(URL))
        try:
            ch = conn.channel()
            for name in queues:
                ch.queue_delete(name)
            for name in exchanges:
                ch.exchange_delete(name)
        finally:
            conn.close()
