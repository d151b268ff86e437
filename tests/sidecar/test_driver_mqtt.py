"""MqttDriver against the real Mosquitto on 127.0.0.1:1883 (no mocks)."""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ofnotebook.sidecar.drivers.base import ComponentConfig, ComponentError, InboundEvent
from ofnotebook.sidecar.drivers import Driver
from tests.sidecar.ack_order import receive_acking_scrambled
from tests.sidecar.conformance import BrokerConformance, RedeliveryConformance, Send
from tests.sidecar.support import close_all, free_port, get, needs_broker, uid, wait_port

mqtt = pytest.importorskip("paho.mqtt.client")

from ofnotebook.sidecar.drivers.mqtt import MqttDriver  # noqa: E402

URL = "tcp://127.0.0.1:1883"


pytestmark = needs_broker("Mosquitto")


def _forget_session(client_id: str) -> None:
    """Drop a persistent session left on the broker (connect once with a clean session)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=True)
    client.connect("127.0.0.1", 1883)
    client.loop(1.0)  # reads the CONNACK
    client.disconnect()


@pytest.fixture
def drivers(drivers: list[MqttDriver]) -> Iterator[list[MqttDriver]]:
    """The conftest's ``drivers``, and the broker sessions of their client IDs dropped."""
    yield drivers
    close_all(drivers)  # first: a session is dropped only once its client is gone
    ids = {driver.component.get("consumerID", driver.name) for driver in drivers}
    for client_id in ids:
        for suffix in ("", "-producer", "-consumer"):
            _forget_session(client_id + suffix)


def _make(drivers: list[MqttDriver], type_: str, start: bool = True, **md: str) -> MqttDriver:
    name = md.pop("name", f"mqtt-{uid()}")
    driver = MqttDriver(ComponentConfig(name=name, type=type_, metadata={"url": URL, **md}))
    drivers.append(driver)
    if start:
        driver.start()
    return driver


def test_binding_output_to_input_round_trip(drivers: list[MqttDriver]) -> None:
    topic, cid = f"ofn/{uid()}", f"c-{uid()}"
    binding = _make(drivers, "bindings.mqtt3", topic=topic, consumerID=cid)
    got: queue.Queue[InboundEvent] = queue.Queue()
    binding.read(got.put)
    assert binding.invoke("create", b'{"n": 1}', {}) == (b"", {})
    event = get(got)
    assert event.data == b'{"n": 1}'
    assert event.metadata == {"topic": topic}
    assert event.topic == topic
    event.ack()


def test_binding_topic_override_and_alias_type(drivers: list[MqttDriver]) -> None:
    """``bindings.mqtt`` (the OpenFunction samples' type) works, and request metadata ``topic``
    overrides the component's topic, as in daprd."""
    other = f"ofn/{uid()}"
    reader = _make(drivers, "bindings.mqtt", topic=other, consumerID=f"c-{uid()}")
    writer = _make(drivers, "bindings.mqtt", topic=f"ofn/{uid()}", consumerID=f"c-{uid()}")
    got: queue.Queue[InboundEvent] = queue.Queue()
    reader.read(got.put)
    writer.invoke("create", b"x", {"topic": other})
    event = get(got)
    assert (event.data, event.metadata) == (b"x", {"topic": other})
    event.ack()


def test_pubsub_publish_to_subscribe_round_trip(drivers: list[MqttDriver]) -> None:
    topic = f"ofn/{uid()}"
    pub = _make(drivers, "pubsub.mqtt3")
    sub = _make(drivers, "pubsub.mqtt3", consumerID=f"c-{uid()}")
    got: queue.Queue[InboundEvent] = queue.Queue()
    sub.subscribe(topic, got.put)
    for i in range(3):
        pub.publish(topic, b'{"i": %d}' % i, {})
    events = [get(got) for _ in range(3)]
    assert sorted(e.data for e in events) == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}']
    assert all(e.metadata == {"retained": "false"} and e.topic == topic for e in events)
    for e in events:
        e.ack()


def test_pubsub_wildcard_subscription(drivers: list[MqttDriver]) -> None:
    base = f"ofn/{uid()}"
    ps = _make(drivers, "pubsub.mqtt", qos="0")
    got: queue.Queue[InboundEvent] = queue.Queue()
    ps.subscribe(f"{base}/+/x", got.put)
    ps.publish(f"{base}/a/x", b"1", {})
    event = get(got)
    assert (event.data, event.topic) == (b"1", f"{base}/+/x")
    event.ack()


@pytest.mark.parametrize("kind", ["pubsub", "bindings"])
def test_unacked_message_is_redelivered_after_restart(drivers: list[MqttDriver],
                                                      kind: str) -> None:
    """At least once: QoS 1 with a persistent session; no PUBACK until ``event.ack()``."""
    topic, cid = f"ofn/{uid()}", f"c-{uid()}"
    md = {"consumerID": cid} if kind == "pubsub" else {"consumerID": cid, "topic": topic}
    producer = _make(drivers, f"{kind}.mqtt3", **{**md, "consumerID": f"p-{uid()}"})

    def consume() -> tuple[MqttDriver, queue.Queue[InboundEvent]]:
        got: queue.Queue[InboundEvent] = queue.Queue()
        driver = _make(drivers, f"{kind}.mqtt3", name="same-component", **md)
        if kind == "pubsub":
            driver.subscribe(topic, got.put)
        else:
            driver.read(got.put)
        return driver, got

    first, got = consume()
    if kind == "pubsub":
        producer.publish(topic, b"once", {})
    else:
        producer.invoke("create", b"once", {})
    assert get(got).data == b"once"  # received, never acknowledged
    first.close()

    second, got = consume()
    again = get(got)
    assert again.data == b"once"
    again.ack()
    time.sleep(0.2)  # let the PUBACK reach the broker
    second.close()

    third, got = consume()
    with pytest.raises(queue.Empty):
        got.get(timeout=0.5)


def test_acks_out_of_order_then_a_restart_brings_back_only_the_unacked(
        drivers: list[MqttDriver]) -> None:
    """PUBACKs from 8 threads in any order, as the Dispatcher acks: the broker keeps only its
    in-flight window (Mosquitto: 20) unacked, so acking while receiving lets all 60 through
    although m23 is never acked; after a restart the session gives back m23 alone."""
    topic, cid = f"ofn/{uid()}", f"c-{uid()}"
    producer = _make(drivers, "pubsub.mqtt3", consumerID=f"p-{uid()}")
    got: queue.Queue[InboundEvent] = queue.Queue()
    first = _make(drivers, "pubsub.mqtt3", consumerID=cid)
    first.subscribe(topic, got.put)
    for n in range(60):
        producer.publish(topic, b"m%d" % n, {})
    received = receive_acking_scrambled(got, 60, keep=b"m23")
    assert sorted(e.data for e in received) == sorted(b"m%d" % n for n in range(60))
    time.sleep(0.2)  # let the PUBACKs reach the broker
    first.close()

    again: queue.Queue[InboundEvent] = queue.Queue()
    second = _make(drivers, "pubsub.mqtt3", consumerID=cid)
    second.subscribe(topic, again.put)
    assert get(again).data == b"m23"
    with pytest.raises(queue.Empty):
        again.get(timeout=0.5)


def test_publish_many_arrives_in_order_with_retain_per_entry(drivers: list[MqttDriver]) -> None:
    topic = f"ofn/{uid()}"
    driver = _make(drivers, "pubsub.mqtt3", consumerID=f"c-{uid()}")
    got: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, got.put)
    entries = [(b"m%d" % n, {}) for n in range(150)]  # more than paho's default in-flight 20
    assert driver.publish_many(topic, entries) == []
    received = []
    for _ in range(150):  # acked as they come: Mosquitto sends 20 unacked at most
        received.append(get(got))
        received[-1].ack()
    assert [e.data for e in received] == [data for data, _md in entries]
    late = _make(drivers, "pubsub.mqtt3", consumerID=f"c-{uid()}")
    assert late.publish_many(topic, [(b"kept", {"retain": "true"}), (b"not", {})]) == []
    retained: queue.Queue[InboundEvent] = queue.Queue()
    late.subscribe(topic, retained.put)  # after the publish: only the retained one comes
    event = get(retained)
    assert (event.data, event.metadata) == (b"kept", {"retained": "true"})
    event.ack()
    late.publish(topic, b"", {"retain": "true"})  # clears the retained message


def test_unsupported_calls_raise(drivers: list[MqttDriver]) -> None:
    binding = _make(drivers, "bindings.mqtt3", topic=f"ofn/{uid()}", consumerID=f"c-{uid()}")
    pubsub = _make(drivers, "pubsub.mqtt3")
    with pytest.raises(ComponentError, match="create"):
        binding.invoke("delete", b"", {})
    with pytest.raises(ComponentError):
        binding.publish("t", b"", {})
    with pytest.raises(ComponentError):
        pubsub.invoke("create", b"", {})
    with pytest.raises(ComponentError):
        pubsub.get_state("k")
    with pytest.raises(ComponentError, match="a/#/b"):
        pubsub.subscribe("a/#/b", lambda e: None)  # an invalid filter


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="no mosquitto binary")
def test_reconnects_after_a_broker_restart_and_closes_fast_when_it_is_down(
        tmp_path: Path) -> None:
    """A private broker on a free port (the shared one is left alone): stopped and started
    again, the driver reconnects and subscribes again; stopped for good, close() is quick."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")

    def broker() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_port(port)
        return proc

    proc = broker()
    driver = MqttDriver(ComponentConfig(name=f"m-{uid()}", type="pubsub.mqtt3",
                                        metadata={"url": f"tcp://127.0.0.1:{port}"}))
    try:
        driver.start()
        got: queue.Queue[InboundEvent] = queue.Queue()
        driver.subscribe("ofn/restart", got.put)
        proc.terminate()
        proc.wait()
        proc = broker()
        deadline = time.monotonic() + 10
        while True:  # the client reconnects on its own within a few seconds
            try:
                driver.publish("ofn/restart", b"again", {})
                break
            except ComponentError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert get(got).data == b"again"
        proc.terminate()
        proc.wait()
        t0 = time.monotonic()
        driver.close()
        assert time.monotonic() - t0 < 5
    finally:
        driver.close()
        proc.terminate()
        proc.wait()


class TestMqttConformance(RedeliveryConformance, BrokerConformance):
    types = ("bindings.mqtt3", "pubsub.mqtt3")
    bad_metadata = (
        ("bindings.mqtt3", {"topic": "t", "consumerID": "c"}, "url"),
        ("bindings.mqtt3", {"url": URL, "consumerID": "c"}, "topic"),
        ("bindings.mqtt3", {"url": URL, "topic": "t"}, "consumerID"),
        ("pubsub.mqtt3", {}, "url"),
        ("pubsub.mqtt3", {"url": URL, "qos": "5"}, "qos"),
        ("pubsub.mqtt3", {"url": "http://127.0.0.1:1883"}, "url"),
    )

    def metadata(self, type_: str) -> dict[str, str]:
        if type_.startswith("bindings."):
            return {"url": URL, "topic": f"ofn/{uid()}", "consumerID": f"c-{uid()}"}
        return {"url": URL, "consumerID": f"c-{uid()}"}

    unreachable_fix = ("mosquitto", "url")

    def unreachable(self, type_: str, port: int) -> dict[str, str]:
        return {**self.metadata(type_), "url": f"tcp://127.0.0.1:{port}"}

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        topic = f"ofn/conf/{consumer}"
        sender = self.make(made, "pubsub.mqtt3")
        receiver = self.make(made, "pubsub.mqtt3", consumerID=consumer)
        receiver.subscribe(topic, deliver)
        return receiver, lambda data: sender.publish(topic, data, {})

    def cleanup(self, drivers: list[Driver]) -> None:
        for client_id in {d.component.get("consumerID") for d in drivers} - {""}:
            for suffix in ("", "-producer", "-consumer"):
                _forget_session(client_id + suffix)
