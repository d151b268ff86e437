"""``handle.publish_many`` on the local target: many test events in one request per chunk, into
the input's broker in bulk, through the real stand-in process and real runtime processes
(in memory and on the real Redis on 127.0.0.1:6379)."""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest

import ofnotebook
from ofnotebook import handle as handle_module
from ofnotebook.backends.events import MAX_OUTPUTS
from ofnotebook.errors import InvocationError
from tests.helpers import make_function, uid, wait_for

ECHO = """
def echo(ctx, data):
    ctx.send("seen", data["i"])
"""


def _settled(handle: Any, n: int) -> dict[str, int]:
    wait_for(lambda: handle.stats["delivered"] >= n and handle.stats["events_out"] >= n, 30,
             lambda: f"stats: {handle.stats}")
    return dict(handle.stats)


def test_every_event_of_a_generator_reaches_the_function_in_memory(local_backend: Any,
                                                                   monkeypatch: Any) -> None:
    """A generator (never a list in the kernel), cut in chunks of 700: 2,500 events go in
    four requests, each delivered once and sent on once."""
    monkeypatch.setattr(handle_module, "PUBLISH_CHUNK", 700)
    handle = ofnotebook.deploy(make_function(ECHO, name="echo"), "many-memory",
                               target=local_backend, inputs={"events": f"memory://m-{uid()}"},
                               outputs={"seen": f"memory://m-out-{uid()}"})
    items = ({"i": i} for i in range(2500))
    assert handle.publish_many("events", items) == 2500
    stats = _settled(handle, 2500)
    assert stats == {"events_in": 2500, "delivered": 2500, "events_out": 2500, "retries": 0,
                     "dead_letters": 0, "errors": 0}
    kept = [o.data for o in handle.outputs]  # the last MAX_OUTPUTS of them
    assert len(kept) == min(2500, MAX_OUTPUTS) and len(set(kept)) == len(kept)
    assert set(kept) <= set(range(2500))


GATED = """
def gated(ctx, data):
    import os, time
    while not os.path.exists(GATE):
        time.sleep(0.01)
"""


def test_a_producer_faster_than_delivery_is_held_to_a_bounded_backlog(local_backend: Any,
                                                                      tmp_path: Any) -> None:
    """The in-memory bus has no broker to keep what delivery has not taken yet: a chunk of
    ``publish_many`` is answered only once at most ``inject.BACKLOG`` events of the input
    wait in the stand-in, so a million events cost the stand-in a bounded backlog, not the
    million. Here the function holds every event until a file appears: the producer waits
    (it would have returned at once), then goes on at delivery speed."""
    from ofnotebook.sidecar.inject import BACKLOG

    gate = tmp_path / "open"
    handle = ofnotebook.deploy(make_function(GATED, {"GATE": str(gate)}, name="gated"),
                               "many-gated", target=local_backend,
                               inputs={"events": f"memory://g-{uid()}"})
    total = BACKLOG + 2000
    producer = threading.Thread(target=handle.publish_many,
                                args=("events", ({"i": i} for i in range(total))))
    producer.start()
    producer.join(1.5)
    assert producer.is_alive(), "publish_many returned while the function took nothing"
    held = handle.stats["events_in"]  # what the dispatcher took: its bulk slots at most
    assert 0 < held < total, handle.stats
    gate.touch()
    producer.join(30)
    assert not producer.is_alive()
    wait_for(lambda: handle.stats["delivered"] == total, 30, lambda: f"stats: {handle.stats}")


def test_str_and_bytes_items_keep_their_content_types(local_backend: Any) -> None:
    source = "def kinds(ctx, data):\n    ctx.send('seen', [type(data).__name__, " \
             "data if isinstance(data, str) else data.hex()])\n"
    handle = ofnotebook.deploy(make_function(source, name="kinds"), "many-kinds",
                               target=local_backend, inputs={"events": f"memory://k-{uid()}"},
                               outputs={"seen": f"memory://k-out-{uid()}"})
    assert handle.publish_many("events", ["text", b"\x00\xff"]) == 2
    got = sorted(o.data for o in handle.wait_for_outputs(2, 10))
    assert got == [["bytes", "00ff"], ["str", "text"]]


def test_an_unknown_input_is_refused_before_anything_is_read(local_backend: Any) -> None:
    handle = ofnotebook.deploy(make_function(ECHO, name="echo"), "many-bad-name",
                               target=local_backend, inputs={"events": f"memory://b-{uid()}"},
                               outputs={"seen": f"memory://b-out-{uid()}"})
    with pytest.raises(InvocationError) as one:
        handle.publish("evnets", {"i": 0})
    read: list[int] = []

    def items() -> Iterator[dict[str, int]]:
        for i in range(10):
            read.append(i)
            yield {"i": i}

    with pytest.raises(InvocationError) as many:
        handle.publish_many("evnets", items())
    assert str(many.value) == str(one.value)
    assert "has no input 'evnets' (inputs: events)" in str(many.value)
    assert read == [] and handle.stats["events_in"] == 0


def test_an_unencodable_item_is_named_and_its_chunk_is_not_sent(local_backend: Any,
                                                                monkeypatch: Any) -> None:
    monkeypatch.setattr(handle_module, "PUBLISH_CHUNK", 10)
    handle = ofnotebook.deploy(make_function(ECHO, name="echo"), "many-unencodable",
                               target=local_backend, inputs={"events": f"memory://u-{uid()}"},
                               outputs={"seen": f"memory://u-out-{uid()}"})
    items: list[Any] = [{"i": i} for i in range(25)]
    items[13] = {(1, 2): "a tuple key"}  # json.dumps: keys must be str, int, float...
    with pytest.raises(InvocationError, match=r"item 13 cannot be encoded \(TypeError: .*"
                                              r"Items 0-9 were sent, none from 10 on"):
        handle.publish_many("events", items)
    stats = _settled(handle, 10)
    assert stats["events_in"] == 10
    assert sorted(o.data for o in handle.outputs) == list(range(10))


@pytest.fixture
def on_redis(local_backend: Any) -> Iterator[tuple[Any, Any, str]]:
    """ECHO deployed on a fresh Redis stream: (handle, a raw client, the stream), which is
    deleted after the test."""
    redis = pytest.importorskip("redis")
    stream = f"ofn-many-{uid()}"
    handle = ofnotebook.deploy(make_function(ECHO, name="echo"), "many-redis",
                               target=local_backend,
                               inputs={"events": f"redis://127.0.0.1:6379/{stream}"},
                               outputs={"seen": f"memory://r-out-{uid()}"})
    raw = redis.Redis(host="127.0.0.1", port=6379)
    try:
        yield handle, raw, stream
    finally:
        raw.delete(stream)
        raw.close()


@pytest.mark.broker  # Redis
def test_redis_streams_get_every_event_in_order(on_redis: tuple[Any, Any, str]) -> None:
    handle, raw, stream = on_redis
    assert handle.publish_many("events", [{"i": i} for i in range(3000)]) == 3000
    stats = _settled(handle, 3000)
    assert stats["events_in"] == 3000 and stats["retries"] == stats["errors"] == 0
    kept = [o.data for o in handle.outputs]
    assert len(kept) == min(3000, MAX_OUTPUTS) and len(set(kept)) == len(kept)
    # the stream holds the CloudEvents in the order they were given
    order = [json.loads(fields[b"data"])["data"]["i"] for _id, fields in raw.xrange(stream)]
    assert order == list(range(3000))


@pytest.mark.broker  # Redis
def test_events_redis_refuses_are_named_per_item(on_redis: tuple[Any, Any, str]) -> None:
    """The input's stream key turned into a string under the function: every XADD of the
    batch gets WRONGTYPE, and the error names the items and the cause."""
    handle, raw, stream = on_redis
    raw.delete(stream)
    raw.set(stream, "not a stream")
    with pytest.raises(InvocationError, match=r"5 of items 0-4 were not published into "
                                              r"'events' \(item 0: .*WRONGTYPE"):
        handle.publish_many("events", [{"i": i} for i in range(5)])
    wait_for(lambda: handle.stats["errors"] == 5, 10, lambda: f"stats: {handle.stats}")


@pytest.mark.parametrize("kind", ["pubsub+kafka", "kafka"])
def test_an_ordered_input_gets_them_in_order(kind: str, local_backend: Any,
                                             kafka_broker: Any) -> None:
    """Kafka acknowledges in order, so its input delivers one event at a time: what
    ``publish_many`` sent arrives in the order given, through a pub/sub input (the core's
    bulk path) and through a binding input (its producer, item by item)."""
    topic = f"ofn-many-{uid()}"
    handle = ofnotebook.deploy(
        make_function(ECHO, name="echo"), f"many-{kind.replace('+', '-')}",
        target=local_backend,
        inputs={"events": f"{kind}://{kafka_broker.bootstrap}/{topic}?initialOffset=oldest"},
        outputs={"seen": f"memory://o-out-{uid()}"})
    assert handle.publish_many("events", ({"i": i} for i in range(150))) == 150
    assert [o.data for o in handle.wait_for_outputs(150, 30)] == list(range(150))


def test_a_target_without_test_events_refuses_as_publish_does(tmp_path: Any) -> None:
    """The yaml target runs nothing: ``publish_many`` refuses with ``publish``'s own message
    (the contract's default goes through ``publish``)."""
    from ofnotebook.backends.gitops import YamlBackend
    from ofnotebook.errors import UnsupportedError

    handle = ofnotebook.deploy(make_function(ECHO, name="echo"), "no-publish-many",
                               target=YamlBackend(tmp_path),
                               inputs={"logs": "kafka://kafka.default.svc:9092/logs?group=g"})
    with pytest.raises(UnsupportedError) as one:
        handle.publish("logs", {"i": 0})
    with pytest.raises(UnsupportedError) as many:
        handle.publish_many("logs", [{"i": 0}, {"i": 1}])
    assert str(many.value) == str(one.value)
