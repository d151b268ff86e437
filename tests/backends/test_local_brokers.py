"""Each broker end to end through deployed functions: a producer function sends to the broker
through its output, a consumer function is triggered by it through its input."""

from __future__ import annotations

from typing import Any, Callable

import pytest

import ofnotebook
from tests.helpers import make_function, uid, wait_for

PRODUCER = "def produce(ctx, data):\n    ctx.send('out', data)\n    return 'ok'\n"
CONSUMER = "def consume(ctx, data):\n    ctx.send('seen', data['i'])\n"


BROKERS: dict[str, Callable[[str, Any], str]] = {
    "redis-streams": lambda t, _: f"redis://127.0.0.1:6379/{t}",
    "mqtt-binding": lambda t, _: f"mqtt://127.0.0.1:1883/{t}",
    "mqtt-pubsub": lambda t, _: f"pubsub+mqtt://127.0.0.1:1883/{t}",
    "jetstream": lambda t, _: f"nats://127.0.0.1:4222/{t}",
    "rabbitmq-pubsub": lambda t, _: f"amqp://guest:guest@127.0.0.1:5672/{t}",
    "rabbitmq-binding": lambda t, _: f"bindings+amqp://guest:guest@127.0.0.1:5672/{t}",
    "kafka-binding": lambda t, k: f"kafka://{k.bootstrap}/{t}?initialOffset=oldest",
    "kafka-pubsub": lambda t, k: f"pubsub+kafka://{k.bootstrap}/{t}?initialOffset=oldest",
}


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_function_to_function_through_a_real_broker(broker: str, local_backend: Any,
                                                    request: pytest.FixtureRequest) -> None:
    kafka = request.getfixturevalue("kafka_broker") if broker.startswith("kafka") else None
    uri = BROKERS[broker](f"ofn-{broker}-{uid()}", kafka)
    consumer = ofnotebook.deploy(make_function(CONSUMER, name="consume"), f"consume-{broker}",
                                 target=local_backend, inputs={"events": uri},
                                 outputs={"seen": f"memory://seen-{uid()}"})
    producer = ofnotebook.deploy(make_function(PRODUCER, name="produce"), f"produce-{broker}",
                                 target=local_backend, outputs={"out": uri})
    for i in range(5):
        assert producer.invoke(json={"i": i}).text == "ok"
    outputs = consumer.wait_for_outputs(5, timeout=30)
    assert sorted(o.data for o in outputs) == [0, 1, 2, 3, 4]
    # the producer's counts reach the kernel through the stand-in's event log, on their own
    wait_for(lambda: producer.stats["events_out"] == 5, 10,
             lambda: f"producer stats: {producer.stats}")
    # A test event from the notebook goes through the same broker.
    consumer.publish("events", {"i": 99})
    assert consumer.wait_for_outputs(6, timeout=30)[-1].data == 99


STATE_COUNTER = ("def count(ctx, data):\n"
                 "    n = (ctx.get_state('store', 'hits') or 0) + 1\n"
                 "    ctx.save_state('store', 'hits', n)\n"
                 "    return n\n")


@pytest.mark.parametrize("store", ["redis://127.0.0.1:6379",
                                   "postgresql://postgres@127.0.0.1:5432/test"])
def test_state_store_through_a_real_server(store: str, local_backend: Any) -> None:
    name = f"state-{uid()}"
    handle = ofnotebook.deploy(make_function(STATE_COUNTER, name="count"), name,
                               target=local_backend, states={"store": store})
    try:
        assert [handle.invoke(json={}).json() for _ in range(3)] == [1, 2, 3]
        assert handle.get_state("hits") == 3
    finally:
        _cleanup_state(store, f"{name}||hits")  # Dapr's key prefix: the app id


def _cleanup_state(store: str, key: str) -> None:
    if store.startswith("redis"):
        import redis

        redis.Redis(host="127.0.0.1", port=6379).delete(key)
    else:
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test") as conn:
            conn.execute("DELETE FROM state WHERE key = %s", (key,))


def test_redis_output_binding(local_backend: Any) -> None:
    import redis

    key = f"ofn-key-{uid()}"
    fn = make_function("def f(ctx, data):\n    ctx.send('cache', data)\n    return 'ok'\n")
    component = ofnotebook.Component("bindings.redis", {"redisHost": "127.0.0.1:6379"},
                                     output_metadata={"key": key})
    handle = ofnotebook.deploy(fn, "redis-out", target=local_backend,
                               outputs={"cache": component})
    handle.invoke(json={"v": 1})
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        assert client.get(key) == b'{"v": 1}'
    finally:
        client.delete(key)
