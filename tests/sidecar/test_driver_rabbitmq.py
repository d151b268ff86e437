"""RabbitMQDriver against the real RabbitMQ on 127.0.0.1:5672, guest/guest (no mocks)."""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import time
import uuid
from typing import Iterator

import pytest

from ofnotebook.sidecar.drivers.base import ComponentConfig, ComponentError, InboundEvent

pika = pytest.importorskip("pika")

from ofnotebook.sidecar.drivers.rabbitmq import RabbitMQDriver  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672"


def _broker_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _broker_up(), reason="RabbitMQ is not running on 5672 "
                                "(start it: rabbitmq-server -detached)")


def _uid() -> str:
    return uuid.uuid4().hex[:12]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """Drivers made by a test and the queues/exchanges to delete after it."""

    def __init__(self) -> None:
        self.drivers: list[RabbitMQDriver] = []
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()

    def make(self, type_: str, start: bool = True, **md: str) -> RabbitMQDriver:
        name = md.pop("name", f"rmq-{_uid()}")
        key = "host" if type_.startswith("bindings.") else "connectionString"
        driver = RabbitMQDriver(ComponentConfig(name=name, type=type_, metadata={key: URL, **md}))
        self.drivers.append(driver)
        if "queueName" in md:
            self.queues.add(md["queueName"])
        if start:
            driver.start()
        return driver

    def topic(self, *consumer_ids: str) -> str:
        topic = f"ofn-{_uid()}"
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
        for driver in self.drivers:
            t0 = time.monotonic()
            driver.close()
            assert time.monotonic() - t0 < 5
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


def _get(q: queue.Queue[InboundEvent], timeout: float = 5.0) -> InboundEvent:
    return q.get(timeout=timeout)


def test_binding_output_to_input_round_trip_with_metadata(broker: Broker) -> None:
    queue_name = f"ofn-{_uid()}"
    binding = broker.make("bindings.rabbitmq", queueName=queue_name)
    got: queue.Queue[InboundEvent] = queue.Queue()
    binding.read(got.put)
    assert binding.invoke("create", b'{"n": 1}', {"trace": "a b", "contentType": "x/y"}) == (
        b"", {})
    event = _get(got)
    assert event.data == b'{"n": 1}'
    # daprd passes the AMQP string headers (the request metadata), URL-query-escaped
    assert event.metadata == {"trace": "a+b", "contentType": "x%2Fy"}
    event.ack()
    time.sleep(0.2)
    binding.close()
    assert broker.message_count(queue_name) == 0


def test_pubsub_publish_to_subscribe_round_trip(broker: Broker) -> None:
    sub = broker.make("pubsub.rabbitmq", name=f"sub-{_uid()}",
                      publishMessagePropertiesToMetadata="true")
    topic = broker.topic(sub.name)
    pub = broker.make("pubsub.rabbitmq")
    got: queue.Queue[InboundEvent] = queue.Queue()
    sub.subscribe(topic, got.put)
    pub.publish(topic, b'{"i": 0}', {"messageId": "m-0", "contentType": "application/json"})
    pub.publish(topic, b'{"i": 1}', {})
    first, second = _get(got), _get(got)
    assert (first.data, second.data) == (b'{"i": 0}', b'{"i": 1}')
    assert first.topic == topic
    assert first.metadata == {"messageid": "m-0", "contenttype": "application/json"}
    assert second.metadata == {"contenttype": "text/plain"}
    first.ack()
    second.ack()


def test_pubsub_fans_out_to_each_consumer_id(broker: Broker) -> None:
    """A queue per consumer ID bound to the topic's fanout exchange, as daprd."""
    a, b = f"a-{_uid()}", f"b-{_uid()}"
    topic = broker.topic(a, b)
    qa: queue.Queue[InboundEvent] = queue.Queue()
    qb: queue.Queue[InboundEvent] = queue.Queue()
    broker.make("pubsub.rabbitmq", consumerID=a).subscribe(topic, qa.put)
    broker.make("pubsub.rabbitmq", consumerID=b).subscribe(topic, qb.put)
    broker.make("pubsub.rabbitmq", hostname="127.0.0.1:5672", username="guest",
                password="guest", connectionString="").publish(topic, b"both", {})
    for q in (qa, qb):
        event = _get(q)
        assert event.data == b"both"
        event.ack()


def test_pubsub_unacked_message_is_redelivered_after_restart(broker: Broker) -> None:
    cid = f"c-{_uid()}"
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
    assert _get(got).data == b"once"  # received, never acknowledged
    first.close()

    second, got = consume()
    again = _get(got)
    assert again.data == b"once"
    again.ack()
    time.sleep(0.2)
    second.close()
    assert broker.message_count(f"{cid}-{topic}") == 0


def test_binding_unacked_message_is_redelivered_after_restart(broker: Broker) -> None:
    queue_name = f"ofn-{_uid()}"
    writer = broker.make("bindings.rabbitmq", queueName=queue_name)
    reader = broker.make("bindings.rabbitmq", queueName=queue_name)
    got: queue.Queue[InboundEvent] = queue.Queue()
    reader.read(got.put)
    writer.invoke("create", b"once", {})
    assert _get(got).data == b"once"
    reader.close()
    assert broker.message_count(queue_name) == 1  # requeued when the channel closed

    again: queue.Queue[InboundEvent] = queue.Queue()
    broker.make("bindings.rabbitmq", queueName=queue_name).read(again.put)
    event = _get(again)
    assert event.data == b"once"
    event.ack()


def test_unreachable_broker_fails_fast_with_the_address() -> None:
    port = _free_port()
    driver = RabbitMQDriver(ComponentConfig(
        name="r", type="pubsub.rabbitmq",
        metadata={"connectionString": f"amqp://guest:guest@127.0.0.1:{port}"}))
    t0 = time.monotonic()
    with pytest.raises(ComponentError, match=f"127.0.0.1:{port}"):
        driver.start()
    assert time.monotonic() - t0 < 5
    driver.close()
    driver.close()


def test_wrong_credentials_fail_with_component_error() -> None:
    driver = RabbitMQDriver(ComponentConfig(
        name="r", type="bindings.rabbitmq",
        metadata={"host": "amqp://guest:wrong@127.0.0.1:5672", "queueName": "never"}))
    t0 = time.monotonic()
    with pytest.raises(ComponentError, match="127.0.0.1:5672"):
        driver.start()
    assert time.monotonic() - t0 < 5
    driver.close()


@pytest.mark.parametrize(("type_", "md", "key"), [
    ("bindings.rabbitmq", {"queueName": "q"}, "host"),
    ("bindings.rabbitmq", {"host": URL}, "queueName"),
    ("pubsub.rabbitmq", {}, "connectionString"),
    ("pubsub.rabbitmq", {"connectionString": URL, "exchangeKind": "nope"}, "exchangeKind"),
    ("pubsub.rabbitmq", {"connectionString": URL, "prefetchCount": "x"}, "prefetchCount"),
])
def test_bad_metadata_names_the_key(type_: str, md: dict[str, str], key: str) -> None:
    driver = RabbitMQDriver(ComponentConfig(name="r", type=type_, metadata=md))
    with pytest.raises(ComponentError, match=key):
        driver.start()
    driver.close()


def test_unsupported_calls_raise(broker: Broker) -> None:
    binding = broker.make("bindings.rabbitmq", queueName=f"ofn-{_uid()}")
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
    client_name = f"ofn-test-{_uid()}"
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
