"""Bulk publish in one broker round trip (issue 14 item 4): ``Driver.publish_many`` of the
in-memory and Redis drivers, the framed test-event endpoint of a real stand-in process, and
``BulkPublishEvent`` with entries a real Redis refuses, each reported on its own."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
from typing import Any, Iterator

import pytest
import requests

from ofnotebook.backends.standin import StandIn
from ofnotebook.sidecar.drivers.base import ComponentConfig, InboundEvent
from ofnotebook.sidecar.drivers.memory import MemoryDriver
from ofnotebook.sidecar.protocol import (FRAMES_CONTENT_TYPE, INPUTS_MANY_PATH, pack_frames,
                                         unpack_frames)
from ofnotebook.spec import ComponentSpec, FunctionSpec
from tests.helpers import free_port, wait_for
from ofnotebook.context import component_name
from tests.sidecar.support import EVENTS, SPEC, get, needs_broker, nothing, uid, wait_port


def test_frames_round_trip_and_a_cut_body_is_refused_whole() -> None:
    items = [(b"", "text/plain"), (b'{"a": 1}', "application/json"), (b"\x00" * 70000, "")]
    body = pack_frames(items)
    assert unpack_frames(body) == items
    with pytest.raises(ValueError, match="frame 2 is cut short"):
        unpack_frames(body[:-1])
    with pytest.raises(ValueError, match="frame 0 is cut short at byte 0"):
        unpack_frames(b"\x00\x00")


def test_memory_publish_many_reaches_every_subscriber_in_order(drivers: list[Any]) -> None:
    bus = uid()
    make = [MemoryDriver(ComponentConfig(name=f"m-{i}-{uid()}", type="pubsub.in-memory",
                                         metadata={"bus": bus})) for i in range(3)]
    for driver in make:
        drivers.append(driver)
        driver.start()
    publisher, first, second = make
    got: list[queue.Queue[InboundEvent]] = [queue.Queue(), queue.Queue()]
    first.subscribe("t", got[0].put)
    second.subscribe("t", got[1].put)
    entries = [(str(i).encode(), {"n": str(i)}) for i in range(500)]
    assert publisher.publish_many("t", entries) == []
    for q in got:
        events = [get(q) for _ in range(500)]
        assert [e.data for e in events] == [data for data, _md in entries]
        assert events[7].metadata == {"n": "7"} and events[7].topic == "t"
    assert publisher.publish_many("t", []) == []
    first.close()  # a closed subscriber gets nothing more; the other still does
    publisher.publish_many("t", [(b"late", {})])
    assert get(got[1]).data == b"late"
    nothing(got[0], 0.3)


def test_a_state_store_cannot_publish_many(drivers: list[Any]) -> None:
    store = MemoryDriver(ComponentConfig(name=f"s-{uid()}", type="state.in-memory"))
    drivers.append(store)
    store.start()
    from ofnotebook.sidecar.drivers import ComponentError
    with pytest.raises(ComponentError, match="does not support publishing"):
        store.publish_many("t", [(b"x", {})])


# -- Redis -------------------------------------------------------------------------------------

def _redis_driver(drivers: list[Any], port: int = 6379) -> Any:
    from ofnotebook.sidecar.drivers.redis import RedisDriver

    driver = RedisDriver(ComponentConfig(name=f"redis-{uid()}", type="pubsub.redis",
                                         metadata={"redisHost": f"127.0.0.1:{port}"}))
    drivers.append(driver)
    driver.start()
    return driver


@pytest.fixture
def stream() -> Iterator[tuple[str, Any]]:
    """A fresh stream name on the shared Redis and a raw client; the key is deleted after."""
    redis = pytest.importorskip("redis")
    raw = redis.Redis(host="127.0.0.1", port=6379)
    topic = f"ofn-many-{uid()}"
    try:
        yield topic, raw
    finally:
        raw.delete(topic)
        raw.close()


@needs_broker("Redis")
def test_redis_publish_many_is_one_batch_in_order(drivers: list[Any],
                                                  stream: tuple[str, Any]) -> None:
    topic, raw = stream
    driver = _redis_driver(drivers)
    entries = [(str(i).encode(), {"i": str(i)} if i % 2 else {}) for i in range(1000)]
    assert driver.publish_many(topic, entries) == []
    stored = raw.xrange(topic)
    assert [fields[b"data"] for _id, fields in stored] == [d for d, _md in entries]
    assert json.loads(stored[1][1][b"metadata"]) == {"i": "1"}
    assert b"metadata" not in stored[0][1]


@needs_broker("Redis")
def test_redis_wrong_type_fails_every_entry_on_its_own(drivers: list[Any],
                                                       stream: tuple[str, Any]) -> None:
    topic, raw = stream
    raw.set(topic, "a string, not a stream")
    failed = _redis_driver(drivers).publish_many(topic, [(b"a", {}), (b"b", {})])
    assert [index for index, _exc in failed] == [0, 1]
    assert all("WRONGTYPE" in str(exc) and topic in str(exc) for _i, exc in failed)


@pytest.fixture
def small_redis() -> Iterator[tuple[int, Any]]:
    """A private Redis server (own port, no persistence) whose maxmemory the test may lower
    without touching the shared one."""
    redis = pytest.importorskip("redis")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--maxmemory-policy", "noeviction"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        raw = redis.Redis(host="127.0.0.1", port=port)
        yield port, raw
        raw.close()
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.broker  # a private redis-server
def test_redis_out_of_memory_mid_batch_fails_the_entries_past_it(
        drivers: list[Any], small_redis: tuple[int, Any]) -> None:
    """maxmemory reached part way through one pipelined batch: Redis refuses each XADD after
    that point (OOM), the entries before it are in the stream, and exactly the refused ones
    come back, each with Redis's reason."""
    port, raw = small_redis
    driver = _redis_driver(drivers, port)
    raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) + 256 * 1024)
    # ~1.2 MB: past the limit part way through
    entries: list[tuple[bytes, dict[str, str]]] = [(b"x" * 4096, {}) for _ in range(300)]
    failed = driver.publish_many("t", entries)
    indexes = [index for index, _exc in failed]
    assert 0 < len(indexes) < len(entries)
    assert indexes == list(range(indexes[0], len(entries)))  # every entry past the limit
    assert "used memory > 'maxmemory'" in str(failed[0][1])
    assert raw.xlen("t") == indexes[0]


# -- a real stand-in process ------------------------------------------------------------------

@needs_broker("Redis")
def test_bulk_publish_event_reports_refused_entries_by_id(sdk_env: StandIn,
                                                          stream: tuple[str, Any]) -> None:
    """``BulkPublishEvent`` (the SDK's ``publish_events``) into a Redis component whose
    stream key is of the wrong type: as daprd, INTERNAL naming Redis's reason and every
    failed entry id."""
    from dapr.clients import DaprClient
    from dapr.clients.exceptions import DaprGrpcError

    topic, raw = stream
    spec = FunctionSpec(name="redis-user", outputs=(ComponentSpec(
        name="bus", type="pubsub.redis", metadata=(("redisHost", "127.0.0.1:6379"),),
        topic=topic),))
    sdk_env.register("redis-user", 0, spec, timeout=10)
    pubsub = component_name(spec, spec.outputs[0])
    with DaprClient() as client:
        ok = client.publish_events(pubsub, topic, ["a", "b", "c"])
        assert list(ok.failed_entries) == [] and raw.xlen(topic) == 3
        raw.delete(topic)
        raw.set(topic, "a string")
        with pytest.raises(DaprGrpcError) as refused:
            client.publish_events(pubsub, topic, ["d", "e"])
    assert refused.value.code().name == "INTERNAL"
    message = refused.value.details() or ""
    assert "WRONGTYPE" in message
    assert len(message.split("(failed entries: ")[1].split(", ")) == 2


def test_framed_test_events_reach_an_input_and_a_bad_body_sends_nothing(
        standin: StandIn) -> None:
    """The control API's many-events endpoint: a malformed body or another content type is
    refused whole (nothing sent), an unknown input named as ``publish`` names it."""
    bus = uid()
    spec = FunctionSpec(name="listener", runtime="async", inputs=(ComponentSpec(
        name="in", type="pubsub.in-memory", metadata=(("bus", bus),), topic="t"),))
    standin.register("listener", 0, spec, timeout=5)
    url = standin.base + INPUTS_MANY_PATH.format(app_id="listener", name="in")
    headers = {"Content-Type": FRAMES_CONTENT_TYPE}
    before = standin.stats()["counts"].get("listener", {}).get("in", 0)
    body = pack_frames([(b'{"n": 1}', "application/json"), (b"two", "text/plain")])
    cut = requests.post(url, data=body[:-1], headers=headers, timeout=5)
    assert cut.status_code == 400 and "frame 1 is cut short" in cut.json()["error"]
    assert requests.post(url, data=body, headers={"Content-Type": "application/json"},
                         timeout=5).status_code == 415
    wrong = requests.post(url.replace("/in/", "/nope/"), data=body, headers=headers, timeout=5)
    assert "'listener' has no input 'nope' (inputs: in)" in wrong.json()["error"]
    assert standin.stats()["counts"].get("listener", {}).get("in", 0) == before
    assert standin.inject_many("listener", "in", unpack_frames(body)) == []

    def arrived() -> list[Any]:
        events = requests.get(f"{standin.base}/ofnotebook/events",
                              params={"after": "0", "app": "listener"}, timeout=5).json()
        return [e["data"] for e in events["events"] if e["kind"] == "in"]

    wait_for(lambda: len(arrived()) >= 2, 5, lambda: f"arrived: {arrived()}")
    assert arrived() == [{"n": 1}, "two"]


def test_one_refused_entry_of_a_bulk_publish_fails_alone(standin: StandIn) -> None:
    """HTTP bulk publish with one entry whose ``rawPayload`` is no boolean (daprd refuses
    it): only that entry fails, by its id and daprd's reason; the others are published, each
    with its own ``out`` record, in order, and the refused one is an ``error`` record."""
    pubsub = component_name(SPEC, EVENTS)
    entries = [{"entryId": f"e{i}", "event": {"n": i}, "contentType": "application/json"}
               for i in range(5)]
    entries[2]["metadata"] = {"rawPayload": "maybe"}
    answer = requests.post(f"{standin.base}/v1.0/publish/bulk/{pubsub}/orders", json=entries,
                           timeout=5)
    assert answer.status_code == 500
    failed = answer.json()["failedEntries"]
    assert [f["entryId"] for f in failed] == ["e2"]
    assert "rawPayload value must be a valid boolean" in failed[0]["error"]
    events = requests.get(f"{standin.base}/ofnotebook/events",
                          params={"after": "0", "app": "sdk-user"}, timeout=5).json()["events"]
    assert [e["data"] for e in events if e["kind"] == "out"] == [{"n": n} for n in (0, 1, 3, 4)]
    assert [e["kind"] for e in events].count("error") == 1
