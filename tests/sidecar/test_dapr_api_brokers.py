"""The Dapr API calls of issue 11 on real brokers and stores, through a real stand-in process and
the unmodified SDK: state transactions in the store's own transaction (Redis: one Lua script;
PostgreSQL: one SQL transaction), bulk publish and an app's own ``@app.subscribe`` topics with
their dead-letter topic on every broker, per-entry failures of a bulk publish, and Kafka's
legacy ``authRequired`` read as daprd reads it."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import grpc
import pytest
import requests

from ofnotebook.backends.standin import StandIn
from ofnotebook.spec import ComponentSpec, FunctionSpec
from tests.helpers import free_port, uid, wait_for
from tests.sidecar.support import needs_broker, wait_port

pytestmark = pytest.mark.broker

DSN = "host=127.0.0.1 user=postgres port=5432 dbname=test"


def _state_redis() -> dict[str, str]:
    return {"redisHost": "127.0.0.1:6379"}


def _state_postgres() -> dict[str, str]:
    return {"connectionString": DSN, "tableName": f"ofn_tx_{uid()}",
            "metadataTableName": f"ofn_tx_meta_{uid()}"}


def _stored_redis(md: dict[str, str], key: str) -> bytes | None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        return client.hget(key, "data")  # type: ignore[return-value]
    finally:
        client.close()


def _stored_postgres(md: dict[str, str], key: str) -> bytes | None:
    import base64
    import json

    import psycopg

    with psycopg.connect(DSN) as conn:
        row = conn.execute(f"SELECT value::text FROM {md['tableName']} WHERE key = %s",
                           (key,)).fetchone()
    return None if row is None else base64.b64decode(json.loads(row[0]))


def _drop_postgres(md: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        for table in (md["tableName"], md["metadataTableName"]):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


STORES: dict[str, tuple[str, Callable[[], dict[str, str]], Callable[..., bytes | None]]] = {
    "redis": ("state.redis", _state_redis, _stored_redis),
    "postgresql": ("state.postgresql", _state_postgres, _stored_postgres),
}


@pytest.mark.parametrize("store", [
    pytest.param("redis", marks=needs_broker("Redis")),
    pytest.param("postgresql", marks=needs_broker("PostgreSQL"))])
def test_state_transactions_in_the_stores_own_transaction(store: str, sdk_env: StandIn) -> None:
    from dapr.clients import DaprClient
    from dapr.clients.exceptions import DaprGrpcError
    from dapr.clients.grpc._request import TransactionalStateOperation as Op
    from dapr.clients.grpc._request import TransactionOperationType

    type_, make, stored = STORES[store]
    md, app, name = make(), f"tx-{uid()}", f"tx-{store}-{uid()}"
    sdk_env.register(app, 0, FunctionSpec(name=app, states=(ComponentSpec(
        name="db", type=type_, metadata=tuple(md.items()), component=name),)), timeout=10)
    try:
        with DaprClient() as client:
            client.save_state(name, "a", "1")
            client.save_state(name, "b", "1")
            etag_b = client.get_state(name, "b").etag
            client.save_state(name, "b", "2")  # etag_b is stale now
            with pytest.raises(DaprGrpcError) as info:
                client.execute_state_transaction(name, [
                    Op(key="a", data="changed"), Op(key="c", data="new"),
                    Op(key="b", data="3", etag=etag_b)])
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "etag mismatch" in info.value.details()
            # in the store itself: not one of the three writes happened
            assert stored(md, f"{app}||a") == b"1" and stored(md, f"{app}||c") is None
            assert stored(md, f"{app}||b") == b"2"

            fresh = client.get_state(name, "b").etag
            client.execute_state_transaction(name, [
                Op(key="a", data="x"), Op(key="b", data="y", etag=fresh),
                Op(key="c", data="z"),
                Op(key="a", operation_type=TransactionOperationType.delete)])
            assert [stored(md, f"{app}||{k}") for k in "abc"] == [None, b"y", b"z"]
        response = requests.post(f"{sdk_env.base}/v1.0/state/{name}/transaction", timeout=5,
                                 json={"operations": [
                                     {"operation": "delete", "request": {"key": "c"}},
                                     {"operation": "upsert",
                                      "request": {"key": "b", "value": "w", "etag": fresh}}]})
        assert response.status_code == 500 and "etag mismatch" in response.json()["message"]
        assert stored(md, f"{app}||c") == b"z"
    finally:
        sdk_env.unregister(app)
        if store == "postgresql":
            _drop_postgres(md)


#: pub/sub component type and metadata on each broker (the services of machine-services.md).
BROKER_PUBSUBS: dict[str, tuple[str, Callable[[], dict[str, str]]]] = {
    "Redis": ("pubsub.redis", lambda: {"redisHost": "127.0.0.1:6379"}),
    "RabbitMQ": ("pubsub.rabbitmq",
                 lambda: {"connectionString": "amqp://guest:guest@127.0.0.1:5672"}),
    "NATS": ("pubsub.jetstream", lambda: {"natsURL": "nats://127.0.0.1:4222"}),
    "Mosquitto": ("pubsub.mqtt3", lambda: {"url": "tcp://127.0.0.1:1883"}),
}


@pytest.fixture
def subscribing_app(standin: StandIn) -> Iterator[Callable[..., queue.Queue[tuple[str, Any]]]]:
    """Starts a ``dapr.ext.grpc.App`` subscribed to topics of a pub/sub component and
    registers it: ``start(app_id, component, topics, dead_letters)``; handlers named in
    ``drop`` answer DROP."""
    from dapr.ext.grpc import App, SubscriptionMessage, TopicEventResponse

    running: list[tuple[Any, threading.Thread, str]] = []

    def start(app_id: str, component: ComponentSpec, topics: list[str],
              dead_letters: dict[str, str], drop: tuple[str, ...] = ()
              ) -> queue.Queue[tuple[str, Any]]:
        app, got, port = App(), queue.Queue(), free_port()  # type: ignore[var-annotated]
        for topic in topics:
            def handle(message: Any, topic: str = topic) -> Any:
                got.put((topic, message.data()))
                return TopicEventResponse("drop" if topic in drop else "success")
            handle.__annotations__ = {"message": SubscriptionMessage}
            app.subscribe(component.component, topic,
                          dead_letter_topic=dead_letters.get(topic))(handle)
        thread = threading.Thread(target=app.run, kwargs={
            "app_port": port, "listen_address": "127.0.0.1"}, daemon=True)
        thread.start()
        wait_port(port)
        running.append((app, thread, app_id))
        standin.register(app_id, port, FunctionSpec(name=app_id, runtime="async",
                                                    outputs=(component,)), timeout=10)
        return got

    yield start
    for app, thread, app_id in running:
        standin.unregister(app_id)
        app.stop()
        thread.join(5)


def _received(got: queue.Queue[tuple[str, Any]], count: int) -> list[tuple[str, Any]]:
    return [got.get(timeout=10) for _ in range(count)]


@pytest.mark.parametrize("broker", [pytest.param(name, marks=needs_broker(name))
                                    for name in BROKER_PUBSUBS] + ["Kafka"])
def test_bulk_publish_reaches_the_apps_own_subscriptions_and_dead_letters(
        broker: str, subscribing_app: Callable[..., Any], sdk_env: StandIn,
        request: pytest.FixtureRequest) -> None:
    from dapr.clients import DaprClient

    if broker == "Kafka":
        kafka = request.getfixturevalue("kafka_broker")
        type_, md = "pubsub.kafka", {"brokers": kafka.bootstrap, "authRequired": "false"}
    else:
        type_, make = BROKER_PUBSUBS[broker]
        md = make()
    name, topic = f"ps-{uid()}", f"orders-{uid()}"
    component = ComponentSpec(name="bus", type=type_, metadata=tuple(md.items()),
                              topic=topic, component=name)
    got = subscribing_app(f"subscriber-{uid()}", component, [topic, f"{topic}-failing",
                                                              f"{topic}-dead"],
                          {f"{topic}-failing": f"{topic}-dead"}, drop=(f"{topic}-failing",))
    with DaprClient() as client:
        response = client.publish_events(name, topic, ['{"n": 1}', '{"n": 2}', '{"n": 3}'],
                                         data_content_type="application/json")
        assert response.failed_entries == []
        assert sorted(d["n"] for _, d in _received(got, 3)) == [1, 2, 3]
        client.publish_event(name, f"{topic}-failing", '{"n": 4}',
                             data_content_type="application/json")
        assert _received(got, 2) == [(f"{topic}-failing", {"n": 4}), (f"{topic}-dead", {"n": 4})]


@needs_broker("Redis")
def test_bulk_publish_reports_each_failed_entry(sdk_env: StandIn) -> None:
    """Entries that the broker refuses (the topic's key is no stream: XADD fails) come back
    as daprd reports them: HTTP 500 with ``failedEntries``, gRPC an INTERNAL error."""
    import redis

    from dapr.clients import DaprClient
    from dapr.clients.exceptions import DaprGrpcError

    name, topic, app = f"ps-{uid()}", f"not-a-stream-{uid()}", f"bulk-{uid()}"
    sdk_env.register(app, 0, FunctionSpec(name=app, outputs=(ComponentSpec(
        name="bus", type="pubsub.redis", metadata=(("redisHost", "127.0.0.1:6379"),),
        topic=topic, component=name),)), timeout=10)
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.set(topic, "a plain string")
    try:
        response = requests.post(f"{sdk_env.base}/v1.0-alpha1/publish/bulk/{name}/{topic}",
                                 timeout=10, json=[{"entryId": "one", "event": {"n": 1}},
                                                   {"entryId": "two", "event": {"n": 2}}])
        assert response.status_code == 500
        body = response.json()
        assert body["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
        assert [e["entryId"] for e in body["failedEntries"]] == ["one", "two"]
        assert all("WRONGTYPE" in e["error"] for e in body["failedEntries"])
        with DaprClient() as dapr, pytest.raises(DaprGrpcError) as info:
            dapr.publish_events(name, topic, ["x"])
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert f"error when publish to topic {topic} in pubsub {name}" in info.value.details()
    finally:
        client.delete(topic)
        client.close()
        sdk_env.unregister(app)


def test_kafka_auth_required_false_reads_as_auth_type_none(kafka_broker: Any,
                                                           standin: StandIn) -> None:
    """Dapr's documented ``authRequired: "false"`` starts (as ``authType: none``, with
    daprd's deprecation warning), an unknown key is kept and warned about, and an
    ``authRequired`` that is no boolean fails naming the key."""
    spec = FunctionSpec(name="legacy", outputs=(ComponentSpec(
        name="events", type="pubsub.kafka", topic="t", component=f"k-{uid()}", metadata=(
            ("brokers", kafka_broker.bootstrap), ("authRequired", "false"),
            ("consumergroup", "g"), ("maxMessageByte", "10"))),))
    answer = standin.register("legacy", 0, spec, timeout=10)
    assert any("authRequired is deprecated, use authType instead (read as authType: none)" in w
               for w in answer["warnings"])
    unknown = [w for w in answer["warnings"] if "'maxMessageByte'" in w]
    assert unknown and "did you mean 'maxMessageBytes'?" in unknown[0]
    assert not any("consumergroup" in w for w in answer["warnings"])  # keys match any case
    wait_for(lambda: any("warning: app 'legacy'" in line and "maxMessageByte" in line
                         for line in standin.logs), 5, "the warning is not in the stand-in log")
    bad = FunctionSpec(name="legacy2", outputs=(ComponentSpec(
        name="events", type="pubsub.kafka", topic="t", component=f"k-{uid()}", metadata=(
            ("brokers", kafka_broker.bootstrap), ("authRequired", "maybe"))),))
    from ofnotebook.errors import DeployError

    with pytest.raises(DeployError, match="invalid value for 'authRequired'"):
        standin.register("legacy2", 0, bad, timeout=10)
