"""RedisDriver against the real Redis on 127.0.0.1:6379 (no mocks; the server is never restarted)."""

from __future__ import annotations

import json
import queue
import time
from typing import Callable, Any, Iterator

import pytest

from ofnotebook.sidecar.drivers.base import ComponentConfig, ComponentError, InboundEvent
from ofnotebook.sidecar.drivers import Driver
from tests.sidecar.conformance import BrokerConformance, RedeliveryConformance, Send
from tests.sidecar.support import free_port, get, needs_broker, nothing, uid

redis = pytest.importorskip("redis")

from ofnotebook.sidecar.drivers.redis import RedisDriver  # noqa: E402

HOST = "127.0.0.1:6379"


pytestmark = needs_broker("Redis")


@pytest.fixture
def raw() -> Iterator[Any]:
    """A plain client for checking what the driver wrote; deletes the test's keys afterwards."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.test_keys = []  # type: ignore[attr-defined]
    yield client
    if client.test_keys:  # type: ignore[attr-defined]
        client.delete(*client.test_keys)  # type: ignore[attr-defined]
    client.close()


def _make(drivers: list[RedisDriver], type_: str, start: bool = True, **md: str) -> RedisDriver:
    name = md.pop("name", f"redis-{uid()}")
    driver = RedisDriver(ComponentConfig(name=name, type=type_,
                                         metadata={"redisHost": HOST, **md}))
    drivers.append(driver)
    if start:
        driver.start()
    return driver


def _key(raw: Any, prefix: str) -> str:
    key = f"ofn-test-{prefix}-{uid()}"
    raw.test_keys.append(key)
    return key


# -- pub/sub ----------------------------------------------------------------------------------
def test_publish_subscribe_round_trip_stores_data_field(drivers: list, raw: Any) -> None:
    topic = _key(raw, "topic")
    driver = _make(drivers, "pubsub.redis")
    received: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, received.put)
    event_bytes = json.dumps({"specversion": "1.0", "id": "1", "data": {"x": 1}}).encode()
    driver.publish(topic, event_bytes, {})
    driver.publish(topic, b"second", {"ttlInSeconds": "60"})
    first, second = get(received), get(received)
    assert (first.data, first.topic, first.metadata) == (event_bytes, topic, {})
    assert (second.data, second.metadata) == (b"second", {"ttlInSeconds": "60"})
    first.ack()
    second.ack()
    entries = raw.xrange(topic)
    assert entries[0][1] == {b"data": event_bytes}  # the field daprd writes and reads
    assert json.loads(entries[1][1][b"metadata"]) == {"ttlInSeconds": "60"}
    # the consumer group is named after the component (consumerID default) and all is acked
    groups = raw.xinfo_groups(topic)
    assert [(g["name"], g["pending"]) for g in groups] == [(driver.name.encode(), 0)]


def test_subscribe_gets_entries_published_before_the_group_existed(drivers: list,
                                                                   raw: Any) -> None:
    topic = _key(raw, "topic")
    raw.xadd(topic, {"data": b"early"})  # group created at "0", as Dapr does
    driver = _make(drivers, "pubsub.redis", consumerID=f"grp-{uid()}")
    received: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, received.put)
    assert get(received).data == b"early"
    with pytest.raises(ComponentError, match="already subscribed"):
        driver.subscribe(topic, received.put)


def test_unacked_entries_are_redelivered_to_the_next_instance(drivers: list, raw: Any) -> None:
    topic = _key(raw, "topic")
    group = f"grp-{uid()}"
    first = _make(drivers, "pubsub.redis", consumerID=group)
    got: queue.Queue[InboundEvent] = queue.Queue()
    first.subscribe(topic, got.put)
    for n in range(3):
        first.publish(topic, f"m{n}".encode(), {})
    events = [get(got) for _ in range(3)]
    events[1].ack()
    t0 = time.monotonic()
    first.close()
    assert time.monotonic() - t0 < 5
    # the stand-in may still ack after close: ignored, the entry stays pending
    events[2].ack()
    assert raw.xpending(topic, group)["pending"] == 2

    second = _make(drivers, "pubsub.redis", consumerID=group)
    again: queue.Queue[InboundEvent] = queue.Queue()
    second.subscribe(topic, again.put)
    redelivered = sorted([get(again).data, get(again).data])
    assert redelivered == [b"m0", b"m2"]
    nothing(again)
    second.publish(topic, b"m3", {})
    assert get(again).data == b"m3"


def test_acked_entries_are_not_redelivered(drivers: list, raw: Any) -> None:
    topic = _key(raw, "topic")
    group = f"grp-{uid()}"
    first = _make(drivers, "pubsub.redis", consumerID=group)
    got: queue.Queue[InboundEvent] = queue.Queue()
    first.subscribe(topic, got.put)
    first.publish(topic, b"only", {})
    event = get(got)
    event.ack()
    event.ack()  # exactly once
    deadline = time.monotonic() + 3
    while raw.xpending(topic, group)["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert raw.xpending(topic, group)["pending"] == 0
    first.close()
    second = _make(drivers, "pubsub.redis", consumerID=group)
    again: queue.Queue[InboundEvent] = queue.Queue()
    second.subscribe(topic, again.put)
    nothing(again)


def test_entries_idle_at_another_consumer_are_reclaimed(drivers: list, raw: Any) -> None:
    topic = _key(raw, "topic")
    group = f"grp-{uid()}"
    raw.xgroup_create(topic, group, id="0", mkstream=True)
    raw.xadd(topic, {"data": b"stuck"})
    raw.xreadgroup(group, "crashed-consumer", {topic: ">"})  # read, never acked
    driver = _make(drivers, "pubsub.redis", consumerID=group, processingTimeout="300ms",
                   redeliverInterval="200ms")
    got: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, got.put)
    event = get(got, timeout=5)
    assert event.data == b"stuck"
    event.ack()
    nothing(got)  # an entry in flight here is not delivered twice by the next reclaims
    deadline = time.monotonic() + 3
    while raw.xpending(topic, group)["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert raw.xpending(topic, group)["pending"] == 0


def test_in_flight_entries_are_not_reclaimed_twice(drivers: list, raw: Any) -> None:
    topic = _key(raw, "topic")
    driver = _make(drivers, "pubsub.redis", processingTimeout="100ms", redeliverInterval="100ms")
    got: queue.Queue[InboundEvent] = queue.Queue()
    driver.subscribe(topic, got.put)
    driver.publish(topic, b"slow", {})
    event = get(got)
    nothing(got, wait=0.6)  # idle past processingTimeout, but still being handled here
    event.ack()


def test_max_len_approx_trims_the_stream(drivers: list, raw: Any) -> None:
    topic = _key(raw, "topic")
    driver = _make(drivers, "pubsub.redis", maxLenApprox="10")
    for n in range(500):
        driver.publish(topic, str(n).encode(), {})
    assert raw.xlen(topic) < 500


# -- output binding ---------------------------------------------------------------------------
def test_binding_operations(drivers: list, raw: Any) -> None:
    key = _key(raw, "bind")
    driver = _make(drivers, "bindings.redis")
    assert driver.invoke("create", b"hello", {"key": key}) == (b"", {})
    assert raw.get(key) == b"hello"
    assert driver.invoke("get", b"", {"key": key}) == (b"hello", {})
    assert driver.invoke("delete", b"", {"key": key}) == (b"", {})
    assert raw.exists(key) == 0
    assert driver.invoke("get", b"", {"key": key}) == (b"", {})
    driver.invoke("increment", b"", {"key": key})
    driver.invoke("increment", b"", {"key": key, "ttlInSeconds": "100"})
    assert raw.get(key) == b"2"
    assert 0 < raw.ttl(key) <= 100
    driver.invoke("create", b"v", {"key": key, "ttlInSeconds": "50"})
    assert 0 < raw.ttl(key) <= 50
    assert driver.invoke("get", b"", {"key": key, "delete": "true"}) == (b"v", {})
    assert raw.exists(key) == 0


def test_binding_errors(drivers: list) -> None:
    driver = _make(drivers, "bindings.redis")
    with pytest.raises(ComponentError, match="create, get, delete, increment"):
        driver.invoke("publish", b"", {"key": "k"})
    with pytest.raises(ComponentError, match="missing key"):
        driver.invoke("get", b"", {})
    with pytest.raises(ComponentError, match="ttlInSeconds"):
        driver.invoke("create", b"", {"key": "k", "ttlInSeconds": "soon"})
    with pytest.raises(ComponentError, match="does not support"):
        driver.publish("t", b"", {})
    with pytest.raises(ComponentError, match="does not support"):
        driver.get_state("k")


# -- state store ------------------------------------------------------------------------------
def test_state_get_save_delete_with_etags(drivers: list, raw: Any) -> None:
    key = _key(raw, "state")
    driver = _make(drivers, "state.redis")
    assert driver.get_state(key) == (None, "")
    driver.save_state(key, b"\x00binary\xff")
    assert raw.hgetall(key) == {b"data": b"\x00binary\xff", b"version": b"1"}  # Dapr's layout
    value, etag = driver.get_state(key)
    assert (value, etag) == (b"\x00binary\xff", "1")
    driver.save_state(key, b"two", etag)  # right etag: written, version bumped
    assert driver.get_state(key) == (b"two", "2")
    with pytest.raises(ComponentError, match="etag mismatch"):
        driver.save_state(key, b"stale", "1")
    with pytest.raises(ComponentError, match="invalid etag"):
        driver.save_state(key, b"x", "abc")
    driver.save_state(key, b"three")  # no etag: last write wins
    assert driver.get_state(key) == (b"three", "3")
    with pytest.raises(ComponentError, match="etag mismatch"):
        driver.delete_state(key, "2")
    driver.delete_state(key, "3")
    assert driver.get_state(key) == (None, "")
    driver.save_state(key, b"again")
    driver.delete_state(key)  # no etag: unconditional
    assert raw.exists(key) == 0
    raw.set(key, b"plain")  # a value written without etags is still readable
    assert driver.get_state(key) == (b"plain", "")


def test_state_ttl_from_component_metadata(drivers: list, raw: Any) -> None:
    key = _key(raw, "state")
    driver = _make(drivers, "state.redis", ttlInSeconds="30")
    driver.save_state(key, b"v")
    assert 0 < raw.ttl(key) <= 30


# -- failures ---------------------------------------------------------------------------------
def test_unreachable_server_fails_fast(drivers: list) -> None:
    port = free_port()
    driver = _make(drivers, "pubsub.redis", start=False, redisHost=f"127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(ComponentError, match=f"127.0.0.1:{port}.*redis-server"):
        driver.start()
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("type_", ["pubsub.redis", "bindings.redis", "state.redis"])
def test_missing_or_bad_metadata(drivers: list, type_: str) -> None:
    driver = RedisDriver(ComponentConfig(name="r", type=type_, metadata={}))
    drivers.append(driver)
    with pytest.raises(ComponentError, match="redisHost"):
        driver.start()
    bad = _make(drivers, type_, start=False, redeliverInterval="soon")
    with pytest.raises(ComponentError, match="redeliverInterval"):
        bad.start()
    bad = _make(drivers, type_, start=False, redisDB="zero")
    with pytest.raises(ComponentError, match="redisDB"):
        bad.start()


def test_close_is_idempotent_and_unstarted_close_is_safe(drivers: list) -> None:
    unstarted = _make(drivers, "state.redis", start=False)
    unstarted.close()
    driver = _make(drivers, "pubsub.redis")
    driver.close()
    driver.close()
    with pytest.raises(ComponentError, match="closed"):
        driver.publish("t", b"", {})


class TestRedisConformance(RedeliveryConformance, BrokerConformance):
    types = ("pubsub.redis", "bindings.redis", "state.redis")
    bad_metadata = (
        ("pubsub.redis", {}, "redisHost"),
        ("state.redis", {"redisHost": HOST, "redeliverInterval": "soon"}, "redeliverInterval"),
        ("bindings.redis", {"redisHost": HOST, "redisDB": "zero"}, "redisDB"),
        ("pubsub.redis", {"redisHost": "not a host:x"}, "redisHost"),
    )

    def metadata(self, type_: str) -> dict[str, str]:
        return {"redisHost": HOST}

    unreachable_fix = ("redis-server", "redisHost")

    def unreachable(self, type_: str, port: int) -> dict[str, str]:
        return {"redisHost": f"127.0.0.1:{port}"}

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        topic = f"ofn-test-conf-{consumer}"
        self.__dict__.setdefault("topics", set()).add(topic)
        sender = self.make(made, "pubsub.redis")
        receiver = self.make(made, "pubsub.redis", consumerID=consumer)
        receiver.subscribe(topic, deliver)
        return receiver, lambda data: sender.publish(topic, data, {})

    def cleanup(self, drivers: list[Driver]) -> None:
        topics = self.__dict__.get("topics")
        if topics:
            client = redis.Redis(host="127.0.0.1", port=6379)
            client.delete(*topics)
            client.close()
