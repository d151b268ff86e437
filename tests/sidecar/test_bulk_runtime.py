"""The runtime's bulk side (issue 14 items 1, 2): ``OnBulkTopicEvent`` served by the SDK's App
with our handler, the function's ``ctx.send`` calls sent in one bulk publish per output to a
real stand-in process, a failed send failing only its own events."""

from __future__ import annotations

import json
import threading
from typing import Any

import grpc
import pytest
import requests
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import empty_pb2

from ofnotebook.backends.standin import StandIn
from ofnotebook.context import component_name
from ofnotebook.runtime import bulk, callbacks
from ofnotebook.runtime.context import Component, FunctionContext
from ofnotebook.runtime.loader import LoadedFunction
from ofnotebook.sidecar import bulk as sidecar_bulk
from ofnotebook.sidecar import cloudevents
from tests.helpers import free_port, wait_for
from tests.sidecar.support import EVENTS, SPEC

SUCCESS = appcallback_pb2.TopicEventResponse.SUCCESS
RETRY = appcallback_pb2.TopicEventResponse.RETRY


def _outputs(standin: StandIn, after: int) -> list[Any]:
    body = requests.get(f"{standin.base}/ofnotebook/events", params={"after": after},
                        timeout=5).json()
    return [e["data"] for e in body["events"] if e["kind"] == "out"]


def _serve(function: Any, manifest: dict[str, Any] | None = None,
           environ: dict[str, str] | None = None) -> tuple[Any, int, list[Any]]:
    """An SDK App serving ``function`` (shape ``f(ctx, data)``) on input ``in``, declared as
    ``callbacks.serve_async`` declares it (``manifest``: a batch function's; ``environ``: the
    function's environment)."""
    from dapr.ext.grpc import App

    sent_to = Component(name="events", component_name=component_name(SPEC, EVENTS),
                        component_type="pubsub.in-memory", topic="orders")
    broken = Component(name="broken", component_name="not-registered",
                       component_type="pubsub.in-memory", topic="orders")
    source = Component(name="in", component_name="in-pubsub", component_type="pubsub.redis",
                       topic="scores")
    fctx = FunctionContext(name="f", version="v1", runtime="Async", port=free_port(),
                           inputs={"in": source}, outputs={"events": sent_to, "broken": broken})
    loaded = LoadedFunction(function=function, entry="f", signature="ctx_data",
                            manifest=manifest or {}, sources={})
    bridge = bulk.BufferingBridge(fctx)
    app = App()
    callbacks._register(app, loaded, fctx, bridge, "in", source)
    callbacks.declare_subscriptions(app, loaded, environ or {})
    batch = bulk.batch_settings(loaded.manifest)
    bulk.install(app, bridge, callbacks.Refused,
                 callbacks._batch_runner(loaded, fctx, bridge) if batch else None)
    threading.Thread(target=app.run, kwargs={"app_port": fctx.port,
                                              "listen_address": "127.0.0.1"},
                     daemon=True).start()
    return app, fctx.port, [bridge]


def _ready(channel: grpc.Channel) -> tuple[Any, list[Any]]:
    """The AppCallback stub once the app answers, and its subscriptions."""
    stub = appcallback_pb2_grpc.AppCallbackStub(channel)
    answer = wait_for(lambda: stub.ListTopicSubscriptions(empty_pb2.Empty(), timeout=2),
                      timeout=10, ignoring=(grpc.RpcError,))
    return stub, list(answer.subscriptions)


def _request(value: Any) -> Any:
    """The unary request the stand-in sends for ``value`` published as JSON."""
    ce = cloudevents.new_cloud_event(app_id="producer", pubsub_name="in-pubsub", topic="scores",
                                     data=json.dumps(value).encode(),
                                     data_content_type="application/json")
    return cloudevents.topic_event_request(ce, topic="scores", pubsub_name="in-pubsub")


def _bulk(values: list[Any]) -> Any:
    entries = []
    for value in values:
        ce = cloudevents.new_cloud_event(app_id="producer", pubsub_name="in-pubsub",
                                         topic="scores", data=json.dumps(value).encode(),
                                         data_content_type="application/json")
        entries.append(sidecar_bulk.cloud_event_entry(ce, json.dumps(value).encode()))
    return sidecar_bulk.bulk_request(entries, [{} for _ in values], topic="scores",
                                     pubsub_name="in-pubsub", path="")


def test_sends_of_a_bulk_call_go_in_bulk_and_a_failed_one_fails_only_its_event(
        sdk_env: StandIn) -> None:
    def score(ctx: Any, data: Any) -> None:
        if data["n"] == 2:
            raise ValueError("bad row")
        ctx.send("broken" if data["n"] == 3 else "events", {"score": data["n"] * 10})
        if data["n"] == 4:
            ctx.send("events", {"score": 41})

    app, port, (bridge,) = _serve(score)
    mark = int(requests.get(f"{sdk_env.base}/ofnotebook/events", timeout=5).json()["last"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub, subs = _ready(channel)
            assert [(s.topic, s.bulk_subscribe.enabled, s.bulk_subscribe.max_messages_count,
                     s.bulk_subscribe.max_await_duration_ms) for s in subs] == [
                ("scores", True, bulk.MAX_MESSAGES, bulk.MAX_AWAIT_MS)]
            assert sidecar_bulk.BulkSettings.from_subscription(subs[0]).fill_ms == 0
            reply = stub.OnBulkTopicEvent(_bulk([{"n": i} for i in range(5)]), timeout=10,
                                          metadata=[("pubsubname", "in-pubsub")])
            statuses = {e.entry_id: e.status for e in reply.statuses}
            assert statuses == {"0": SUCCESS, "1": SUCCESS, "2": RETRY, "3": RETRY,
                                "4": SUCCESS}
            # every send of the succeeded entries is out before the answer; none of the others
            assert _outputs(sdk_env, mark) == [{"score": 0}, {"score": 10}, {"score": 40},
                                               {"score": 41}]
            alpha = appcallback_pb2_grpc.AppCallbackAlphaStub(channel)
            again = alpha.OnBulkTopicEventAlpha1(_bulk([{"n": 5}]), timeout=10)
            assert [e.status for e in again.statuses] == [SUCCESS]
            assert _outputs(sdk_env, mark)[-1] == {"score": 50}
            # unary: the send goes at once (and a failing one raises, so the event retries)
            assert stub.OnTopicEvent(_request({"n": 3}), timeout=10).status == RETRY
            assert stub.OnTopicEvent(_request({"n": 6}), timeout=10).status == SUCCESS
            assert _outputs(sdk_env, mark)[-1] == {"score": 60}
    finally:
        app.stop()
        bridge.close()


@pytest.mark.parametrize("value", ["off", "0", "False"])
def test_bulk_off_in_the_environment_declares_one_event_a_call_but_not_for_batches(
        value: str) -> None:
    for manifest, bulk_on in (({}, False), ({"batch": {"size": 5, "waitMs": 10}}, True)):
        app, port, (bridge,) = _serve(lambda ctx, data: None, manifest,
                                      {"OFNOTEBOOK_BULK": value})
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                _stub, subs = _ready(channel)
                assert [s.bulk_subscribe.enabled for s in subs] == [bulk_on], manifest
                # and the stand-in reads it so: unary delivery unless it is a batch function
                assert (sidecar_bulk.BulkSettings.from_subscription(subs[0]) is not None) \
                    is bulk_on
        finally:
            app.stop()
            bridge.close()


def test_a_refused_entry_is_dropped_with_its_reason_the_others_succeed(sdk_env: StandIn
                                                                       ) -> None:
    def score(ctx: Any, data: Any) -> None:
        ctx.send("nope" if data["n"] == 1 else "events", data)

    app, port, (bridge,) = _serve(score)
    assert bulk.DROP_REASONS_KEY == sidecar_bulk.DROP_REASONS_KEY
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub, _subs = _ready(channel)
            reply, call = stub.OnBulkTopicEvent.with_call(_bulk([{"n": i} for i in range(3)]),
                                                          timeout=10)
            outcomes = sidecar_bulk.entry_outcomes(reply, 3, call.trailing_metadata())
            assert [o for o, _ in outcomes] == ["success", "drop", "success"]
            assert "'nope'" in outcomes[1][1] and "not declared" in outcomes[1][1]
    finally:
        app.stop()
        bridge.close()


def test_a_batch_function_gets_the_whole_bulk_call_and_a_failing_batch_retries_each_alone(
        sdk_env: StandIn) -> None:
    sizes: list[int] = []

    def score(ctx: Any, events: list[Any]) -> None:
        sizes.append(len(events))
        if any(e["n"] == 13 for e in events):
            raise ValueError("poisoned row")
        for e in events:
            ctx.send("events", {"batch": e["n"]})

    app, port, (bridge,) = _serve(score, {"batch": {"size": 50, "waitMs": 5}})
    mark = int(requests.get(f"{sdk_env.base}/ofnotebook/events", timeout=5).json()["last"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub, subs = _ready(channel)
            assert [(s.bulk_subscribe.max_messages_count, s.bulk_subscribe.max_await_duration_ms)
                    for s in subs] == [(50, 5)]
            assert sidecar_bulk.BulkSettings.from_subscription(subs[0]) == \
                sidecar_bulk.BulkSettings(max_messages=50, max_await_ms=5, fill_ms=5)
            reply = stub.OnBulkTopicEvent(_bulk([{"n": i} for i in range(5)]), timeout=10)
            assert [e.status for e in reply.statuses] == [SUCCESS] * 5 and sizes == [5]
            assert _outputs(sdk_env, mark) == [{"batch": i} for i in range(5)]
            failing = stub.OnBulkTopicEvent(_bulk([{"n": i} for i in range(10, 15)]),
                                            timeout=10)
            assert [e.status for e in failing.statuses] == [RETRY] * 5
            assert len(_outputs(sdk_env, mark)) == 5  # no send of the failed batch went out
            # the stand-in then delivers each alone: a batch of one
            assert stub.OnTopicEvent(_request({"n": 13}), timeout=10).status == RETRY
            assert stub.OnTopicEvent(_request({"n": 12}), timeout=10).status == SUCCESS
            assert sizes[-2:] == [1, 1]
            assert _outputs(sdk_env, mark)[-1] == {"batch": 12}
    finally:
        app.stop()
        bridge.close()
