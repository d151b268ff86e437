"""An app written with the unmodified ``dapr.ext.grpc.App``, registered with a real stand-in
process: the topics it declares with ``@app.subscribe`` are delivered to it (routes, dead-letter
topics), its ``@app.method`` handlers answer service invocation over gRPC and HTTP, and
``GetMetadata`` lists its subscriptions."""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import grpc
import pytest
import requests

from ofnotebook.backends.standin import StandIn
from ofnotebook.spec import ComponentSpec, FunctionSpec
from tests.helpers import free_port, uid, wait_for
from tests.sidecar.support import BUS, wait_port

PUBSUB = f"user-pubsub-{uid()}"
SPEC = FunctionSpec(name="user-app", runtime="async", outputs=(
    ComponentSpec(name="bus", type="pubsub.in-memory", metadata=(("bus", BUS),), topic="orders",
                  component=PUBSUB),))


def _handler(got: queue.Queue[tuple[str, Any]], label: str, status: str = "success") -> Any:
    """A topic handler that records ``(label, data)`` and answers ``status``."""
    from dapr.ext.grpc import SubscriptionMessage, TopicEventResponse

    def handle(message: Any) -> Any:
        got.put((label, message.data()))
        return TopicEventResponse(status)

    handle.__annotations__ = {"message": SubscriptionMessage}  # the SDK's modern event type
    handle.__name__ = label.replace("-", "_")  # a routing rule's path is its handler's name
    return handle


@pytest.fixture
def user_app(standin: StandIn) -> Iterator[tuple[queue.Queue[tuple[str, Any]], dict[str, Any]]]:
    """The app, serving AppCallback on a free port, registered as ``user-app``; yields what
    its handlers received and the registration's answer."""
    from dapr.ext.grpc import App, Rule

    app, got, port = App(), queue.Queue(), free_port()  # type: ignore[var-annotated]
    app.subscribe(PUBSUB, "orders")(_handler(got, "orders"))
    app.subscribe(PUBSUB, "payments", dead_letter_topic="payments-dead")(
        _handler(got, "payments", "drop"))
    app.subscribe(PUBSUB, "payments-dead")(_handler(got, "payments-dead"))
    app.subscribe(PUBSUB, "routed", rule=Rule('event.type == "refund"', 1))(
        _handler(got, "refunds"))
    app.subscribe("not-registered", "ghost")(_handler(got, "ghost"))

    @app.method("echo")
    def echo(request: Any) -> bytes:
        return b"echo:" + request.data

    thread = threading.Thread(target=app.run, kwargs={"app_port": port,
                                                      "listen_address": "127.0.0.1"},
                              daemon=True)
    thread.start()
    wait_port(port)
    answer = standin.register("user-app", port, SPEC, timeout=5)
    try:
        yield got, answer
    finally:
        app.stop()
        thread.join(5)


def test_the_apps_own_subscriptions_are_delivered(user_app: Any, sdk_env: StandIn) -> None:
    from dapr.clients import DaprClient

    got, answer = user_app
    assert [PUBSUB, "orders"] in answer["subscriptions"]
    assert any("'not-registered', which is not registered with the local stand-in" in w
               for w in answer["warnings"])
    with DaprClient() as client:
        client.publish_event(PUBSUB, "orders", '{"id": 1}', data_content_type="application/json")
        assert got.get(timeout=5) == ("orders", {"id": 1})

        # DROP: the event goes, as stored, to the subscription's dead-letter topic
        client.publish_event(PUBSUB, "payments", '{"id": 2}',
                             data_content_type="application/json")
        assert got.get(timeout=5) == ("payments", {"id": 2})
        assert got.get(timeout=5) == ("payments-dead", {"id": 2})

        # routes: the rule's path gets matching events; others match no route
        client.publish_event(PUBSUB, "routed", '{"id": 3}', data_content_type="application/json",
                             publish_metadata={"cloudevent.type": "refund"})
        assert got.get(timeout=5) == ("refunds", {"id": 3})
        client.publish_event(PUBSUB, "routed", '{"id": 4}', data_content_type="application/json")
    def dead_letters() -> list[dict[str, Any]]:
        return [e for e in requests.get(
            f"{sdk_env.base}/ofnotebook/events", params={"app": "user-app"}, timeout=5).json()[
            "events"] if e["kind"] == "dead-letter"]

    # both: the unrouted event is given up on after the DROP's dead letter, maybe a moment later
    events = wait_for(lambda: (found := dead_letters()) and len(found) >= 2 and found, 5,
                      lambda: f"dead letters: {dead_letters()}")
    assert [(e["name"], e.get("topic")) for e in events] == [
        (f"{PUBSUB}/payments", "payments-dead"), (f"{PUBSUB}/routed", None)]
    assert "no route" in events[1]["error"]
    assert got.empty()


def test_the_apps_methods_answer_service_invocation(user_app: Any, sdk_env: StandIn,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from dapr.clients import DaprClient

    monkeypatch.setenv("DAPR_API_TOKEN", sdk_env.env("sdk-user")["DAPR_API_TOKEN"])
    with DaprClient() as client:
        with pytest.warns(DeprecationWarning, match="invoke_method with protocol gRPC"):
            reply = client.invoke_method("user-app", "echo", b"hi")
        assert reply.data == b"echo:hi"
        with pytest.raises(grpc.RpcError) as info, pytest.warns(DeprecationWarning):
            client.invoke_method("user-app", "nope", b"")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    base = f"{sdk_env.base}/v1.0/invoke/user-app/method"
    response = requests.post(f"{base}/echo", data=b"there", timeout=5)
    assert (response.status_code, response.content) == (200, b"echo:there")
    assert requests.post(f"{base}/nope", timeout=5).status_code == 501

    monkeypatch.setenv("DAPR_API_TOKEN", sdk_env.env("user-app")["DAPR_API_TOKEN"])
    with DaprClient() as client:
        metadata = requests.get(f"{sdk_env.base}/v1.0/metadata", timeout=5, headers={
            "dapr-api-token": sdk_env.env("user-app")["DAPR_API_TOKEN"]}).json()
        assert client.get_metadata().application_id == "user-app"
    subscriptions = {s["topic"]: s for s in metadata["subscriptions"]}
    assert subscriptions["payments"]["deadLetterTopic"] == "payments-dead"
    assert {"match": 'event.type == "refund"', "path": "refunds"} in subscriptions["routed"][
        "rules"]
    assert metadata["appConnectionProperties"]["protocol"] == "grpc"


@pytest.mark.parametrize("standin", [{"OFNOTEBOOK_DELIVERY_ATTEMPTS": "2"}], indirect=True)
def test_a_declared_inputs_dead_letter_topic_gets_what_fails_every_retry(
        standin: StandIn) -> None:
    """A pub/sub input's ``deadLetterTopic`` metadata (the runtime subscribes without one):
    after the last retry the event goes, as stored, to that topic on the same pub/sub."""
    from dapr.ext.grpc import App

    topic, name = f"jobs-{uid()}", f"jobs-{uid()}"
    app, got, port = App(), queue.Queue(), free_port()  # type: ignore[var-annotated]
    app.subscribe(name, topic)(_handler(got, "jobs", "retry"))
    app.subscribe(name, f"{topic}-dlq")(_handler(got, "dead"))
    thread = threading.Thread(target=app.run, kwargs={"app_port": port,
                                                      "listen_address": "127.0.0.1"},
                              daemon=True)
    thread.start()
    wait_port(port)
    spec = FunctionSpec(name="worker", runtime="async", inputs=(ComponentSpec(
        name="jobs", type="pubsub.in-memory", topic=topic, component=name,
        metadata=(("bus", BUS), ("deadLetterTopic", f"{topic}-dlq"))),))
    try:
        standin.register("worker", port, spec, timeout=5)
        standin.inject("worker", "jobs", b'{"job": 1}', "application/json")
        assert [got.get(timeout=5) for _ in range(3)] == [
            ("jobs", {"job": 1}), ("jobs", {"job": 1}), ("dead", {"job": 1})]
        letters = wait_for(lambda: [e for e in requests.get(
            f"{standin.base}/ofnotebook/events", params={"app": "worker"}, timeout=5).json()[
            "events"] if e["kind"] == "dead-letter"], 5)
        assert [(e["name"], e["topic"], e["attempts"]) for e in letters] == [
            ("jobs", f"{topic}-dlq", 2)]
    finally:
        app.stop()
        thread.join(5)
