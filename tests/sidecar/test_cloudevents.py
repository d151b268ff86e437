"""daprd's CloudEvents rules (reference/dapr-local-sidecar.md sections 2.2 and 5), checked one by
one, then a round trip through the real ``dapr.ext.grpc.App`` as a subscriber sees it."""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import grpc
import pytest
from cloudevents.http import from_json
from dapr.ext.grpc import App, SubscriptionMessage, TopicEventResponse
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf.json_format import MessageToDict

from ofnotebook.sidecar.cloudevents import (
    from_raw_payload,
    go_json,
    grpc_metadata,
    new_cloud_event,
    to_bytes,
    topic_event_request,
)

ENVELOPE_KEYS = {"id", "specversion", "datacontenttype", "source", "type", "topic", "pubsubname",
                 "traceid", "traceparent", "tracestate", "time"}
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def publish(data: bytes = b'{"orderId": 1}', content_type: str | None = "application/json",
            **kwargs: Any) -> dict[str, Any]:
    """A publish as the app ``checkout`` would make it to ``orders`` on component ``pubsub``."""
    kwargs.setdefault("app_id", "checkout")
    return new_cloud_event(pubsub_name="pubsub", topic="orders", data=data,
                           data_content_type=content_type, **kwargs)


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, RFC3339).replace(tzinfo=timezone.utc)


# --- publisher side: the envelope daprd's PublishEvent stores (section 5.1) -----------------

def test_envelope_has_exactly_daprds_fields_and_defaults() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    ce = publish()
    after = datetime.now(timezone.utc)
    assert set(ce) == ENVELOPE_KEYS | {"data"}
    assert uuid.UUID(ce["id"]).version == 4
    assert ce["specversion"] == "1.0"
    assert ce["datacontenttype"] == "application/json"
    assert ce["source"] == "checkout"
    assert ce["type"] == "com.dapr.event.sent"
    assert (ce["topic"], ce["pubsubname"]) == ("orders", "pubsub")
    assert ce["traceid"] == ce["traceparent"] == ce["tracestate"] == ""
    assert ce["time"].endswith("Z") and before <= parse_time(ce["time"]) <= after
    assert ce["data"] == {"orderId": 1}


def test_every_event_gets_a_new_id() -> None:
    assert publish()["id"] != publish()["id"]


def test_source_is_dapr_without_an_app_id() -> None:
    assert publish(app_id="")["source"] == "Dapr"


@pytest.mark.parametrize("content_type", [None, ""])
def test_missing_content_type_means_text_plain(content_type: str | None) -> None:
    ce = publish(b'{"a": 1}', content_type)
    assert ce["datacontenttype"] == "text/plain"
    assert ce["data"] == '{"a": 1}'


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8",
    "Application/JSON"])
def test_json_content_types_store_the_parsed_value(content_type: str) -> None:
    ce = publish(b' {"orderId": 1, "items": [1.5, "x", null, true]}', content_type)
    assert ce["datacontenttype"] == content_type
    assert ce["data"] == {"orderId": 1, "items": [1.5, "x", None, True]}
    assert "data_base64" not in ce


@pytest.mark.parametrize(("payload", "stored"), [
    (b"not json", "not json"),
    (b"", ""),
    (b"NaN", "NaN"),  # Python would parse it; Go does not
    (b'{"a": 1', '{"a": 1'),
])
def test_unparsable_json_is_kept_as_the_raw_string(payload: bytes, stored: str) -> None:
    assert publish(payload, "application/json")["data"] == stored


def test_json_after_the_first_value_is_ignored_like_gos_decoder() -> None:
    assert publish(b'{"a": 1} trailing', "application/json")["data"] == {"a": 1}


@pytest.mark.parametrize("content_type", ["application/octet-stream",
                                          "application/octet-stream; x=1"])
def test_octet_stream_goes_to_data_base64(content_type: str) -> None:
    payload = bytes(range(256))
    ce = publish(payload, content_type)
    assert base64.b64decode(ce["data_base64"]) == payload
    assert "data" not in ce


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/csv", "application/xml", "application/vnd.api+json",
    "application/json ;charset=utf-8",  # daprd only strips what follows ";" exactly
    "image/png"])
def test_other_content_types_store_the_utf8_string(content_type: str) -> None:
    ce = publish('{"x": "é"}'.encode(), content_type)
    assert ce["data"] == '{"x": "é"}'
    assert "data_base64" not in ce


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert publish(b"a\xffb", "text/plain")["data"] == "a\ufffdb"


@pytest.mark.parametrize(("key", "field", "value"), [
    ("cloudevent.id", "id", "my-id"),
    ("cloudevent.source", "source", "billing"),
    ("cloudevent.type", "type", "order.created"),
    ("cloudevent.tracestate", "tracestate", "vendor=1"),
    ("cloudevent.subject", "subject", "order-7"),
    ("CloudEvent.Type", "type", "order.created"),  # mapstructure ignores case
])
def test_cloudevent_metadata_overrides_a_field(key: str, field: str, value: str) -> None:
    assert publish(metadata={key: value})[field] == value


@pytest.mark.parametrize("key", ["cloudevent.traceparent", "cloudevent.traceid"])
def test_a_trace_override_fills_traceid_and_traceparent(key: str) -> None:
    parent = "00-113ad9c4e42b27583ae98ba698d54255-e3743e35ff56f219-01"
    ce = publish(metadata={key: parent})
    assert ce["traceid"] == ce["traceparent"] == parent


def test_traceparent_wins_over_traceid() -> None:
    ce = publish(metadata={"cloudevent.traceid": "old", "cloudevent.traceparent": "new"})
    assert ce["traceid"] == ce["traceparent"] == "new"


def test_an_empty_source_override_falls_back_to_dapr_not_the_app_id() -> None:
    assert publish(metadata={"cloudevent.source": ""})["source"] == "Dapr"


def test_subject_only_when_given() -> None:
    assert "subject" not in publish(metadata={"cloudevent.subject": ""})


def test_topic_pubsub_and_content_type_cannot_be_overridden() -> None:
    ce = publish(metadata={"cloudevent.topic": "x", "cloudevent.pubsubname": "y",
                           "cloudevent.datacontenttype": "z", "cloudevent.data": "d",
                           "custom": "not copied"})
    assert (ce["topic"], ce["pubsubname"], ce["datacontenttype"]) == (
        "orders", "pubsub", "application/json")
    assert ce["data"] == {"orderId": 1}
    assert set(ce) == ENVELOPE_KEYS | {"data"}


@pytest.mark.parametrize(("metadata", "seconds"), [
    ({"ttlInSeconds": "60"}, 60),
    ({"TTLINSECONDS": "5"}, 5),
    ({"ttl": "1m30s"}, 90),  # newer components-contrib also reads "ttl" as a Go duration
    ({"ttl": "10", "ttlInSeconds": "99"}, 10),
])
def test_ttl_adds_an_expiration(metadata: dict[str, str], seconds: int) -> None:
    ce = publish(metadata=metadata)
    expires = parse_time(ce["expiration"]) - parse_time(ce["time"])
    assert expires == timedelta(seconds=seconds)


def test_native_ttl_components_get_no_expiration() -> None:
    assert "expiration" not in publish(metadata={"ttlInSeconds": "60"}, native_ttl=True)


@pytest.mark.parametrize("value", ["abc", "-5", "", "1.5"])
def test_an_unusable_ttl_is_ignored(value: str) -> None:
    assert "expiration" not in publish(metadata={"ttlInSeconds": value})


def test_cloudevents_json_is_passed_through_and_completed() -> None:
    own = {"id": "app-id-1", "source": "app-source", "type": "app.type", "specversion": "1.0",
           "datacontenttype": "application/json", "data": {"a": 1}, "myext": "kept",
           "topic": "wrong", "pubsubname": "wrong"}
    ce = publish(json.dumps(own).encode(), "application/cloudevents+json",
                 metadata={"cloudevent.id": "ignored", "cloudevent.type": "ignored"})
    assert {k: ce[k] for k in own} == {**own, "topic": "orders", "pubsubname": "pubsub"}
    assert ce["traceid"] == ce["traceparent"] == ce["tracestate"] == ""
    assert ce["time"].endswith("Z")
    assert set(ce) == set(own) | {"traceid", "traceparent", "tracestate", "time"}


def test_cloudevents_json_fills_only_missing_fields() -> None:
    own = {"id": "x", "data": "hi", "time": "2020-09-23T06:23:21Z", "traceparent": "tp",
           "traceid": "ti", "tracestate": "ts"}
    ce = publish(json.dumps(own).encode(), "application/cloudevents+json; charset=utf-8")
    assert {k: ce[k] for k in own} == own
    assert (ce["source"], ce["type"], ce["specversion"]) == ("Dapr", "com.dapr.event.sent", "1.0")
    assert "datacontenttype" not in ce


def test_cloudevents_json_still_gets_an_expiration() -> None:
    ce = publish(b'{"id": "x"}', "application/cloudevents+json", metadata={"ttlInSeconds": "3"})
    assert parse_time(ce["expiration"]) - parse_time(ce["time"]) == timedelta(seconds=3)


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]"])
def test_an_invalid_cloudevents_json_body_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="cloudevents"):
        publish(payload, "application/cloudevents+json")


@pytest.mark.parametrize("flag", ["true", "True", "1", "t"])
def test_raw_payload_makes_no_envelope(flag: str) -> None:
    ce = publish(b"\x00raw", "application/json", metadata={"rawPayload": flag,
                                                             "cloudevent.id": "ignored"})
    assert ce.keys() == {"id", "specversion", "datacontenttype", "source", "type", "topic",
                         "pubsubname", "data_base64"}
    assert ce["id"] != "ignored" and uuid.UUID(ce["id"]).version == 4
    assert (ce["datacontenttype"], ce["source"], ce["type"]) == (
        "application/octet-stream", "Dapr", "com.dapr.event.sent")
    assert base64.b64decode(ce["data_base64"]) == b"\x00raw"


def test_raw_payload_false_still_wraps() -> None:
    assert publish(metadata={"rawPayload": "false"})["data"] == {"orderId": 1}


def test_an_invalid_raw_payload_flag_is_refused() -> None:
    with pytest.raises(ValueError, match="rawPayload"):
        publish(metadata={"rawPayload": "yes"})


def test_from_raw_payload_matches_daprds() -> None:
    ce = from_raw_payload(b"abc", topic="t", pubsub_name="p")
    assert ce == {"id": ce["id"], "specversion": "1.0", "datacontenttype": "application/octet-stream",
                  "source": "Dapr", "type": "com.dapr.event.sent", "topic": "t",
                  "pubsubname": "p", "data_base64": "YWJj"}


# --- Go's json.Marshal ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (1.0, "1"), (1.5, "1.5"), (-0.0, "-0"), (0.1, "0.1"), (100.0, "100"),
    (1e20, "100000000000000000000"), (1e21, "1e+21"), (1e-6, "0.000001"), (1e-7, "1e-7"),
    (1.5e-10, "1.5e-10"), (2**53 + 1, "9007199254740992"), (12345678901234567890,
                                                            "12345678901234567000"),
])
def test_numbers_are_written_as_go_float64(value: float, expected: str) -> None:
    assert go_json(value) == expected


def test_keys_sorted_output_compact_and_html_escaped() -> None:
    value = {"b": [1.0, {"z": None, "y": True}], "a": "<tag> & \u2028", "A": "\n\x01\"\\"}
    assert go_json(value) == ('{"A":"\\n\\u0001\\"\\\\","a":"\\u003ctag\\u003e \\u0026 \\u2028",'
                              '"b":[1,{"y":true,"z":null}]}')


@pytest.mark.parametrize("keep_numbers", [False, True])
def test_plain_values_take_one_dumps_and_give_the_walks_bytes(keep_numbers: bool) -> None:
    """The fast path (one C ``json.dumps`` and escapes over its text) against the walk, on
    values that take it: surrogates, every escape, keys needing order, exact and inexact
    integers, nesting."""
    from ofnotebook.sidecar.golang import _go_json, _plain

    values = [
        {"z": 1, "a": [True, None, "x"], "é": {"<": "&>", "b": "\u2028\u2029"}},
        {"k": "lone \ud800 surrogate", "\udfff": "key"}, "\n\t\x00\x7f\"\\",
        [2**53, -2**53, 0, -1], {"B": {}, "A": [], "a": [[], {}]}, "",
    ]
    for value in values:
        assert _plain(value, keep_numbers), value
        assert go_json(value, keep_numbers=keep_numbers) == _go_json(value, keep_numbers)
    # floats, big integers (unless kept as written), tuples and odd keys take the walk
    assert not _plain({"x": 1.0}, keep_numbers) and not _plain((1,), keep_numbers)
    assert not _plain({1: "a"}, keep_numbers)
    assert _plain(2**53 + 1, keep_numbers) is keep_numbers


def test_non_ascii_is_written_as_utf8() -> None:
    assert go_json({"k": "é€"}) == '{"k":"é€"}'


def test_nan_cannot_be_marshalled() -> None:
    with pytest.raises(ValueError):
        go_json(float("nan"))


def test_broker_bytes_keep_numbers_as_published() -> None:
    ce = publish(b'{"price": 1.0, "big": 12345678901234567890, "e": 1E3, "s": "<"}')
    stored = to_bytes(ce)
    assert b'"data":{"big":12345678901234567890,"e":1E3,"price":1.0,"s":"\\u003c"}' in stored
    assert json.loads(stored) == ce


def test_broker_bytes_are_compact_sorted_json() -> None:
    ce = publish()
    stored = to_bytes(ce)
    assert b" " not in stored
    assert list(json.loads(stored)) == sorted(ce)


@pytest.mark.parametrize(("payload", "content_type"), [
    (b'{"orderId": 1}', "application/json"), (b"hi", "text/plain"),
    (b"\x00\x01", "application/octet-stream")])
def test_broker_bytes_are_a_structured_cloudevent(payload: bytes, content_type: str) -> None:
    ce = publish(payload, content_type, metadata={"cloudevent.subject": "s"})
    event = from_json(to_bytes(ce))
    for attribute in ("id", "source", "type", "specversion", "datacontenttype", "time",
                      "subject", "topic", "pubsubname"):
        assert event[attribute] == ce[attribute]
    expected = json.loads(payload) if content_type == "application/json" else (
        payload if content_type == "application/octet-stream" else payload.decode())
    assert event.get_data() == expected


# --- subscriber side: the TopicEventRequest daprd sends (sections 2.2 and 5.2) ---------------

def test_request_fields_come_from_the_event_and_the_subscription() -> None:
    ce = publish(b'{"orderId": 1.0, "note": "a<b"}',
                 metadata={"cloudevent.subject": "s", "ttlInSeconds": "9"})
    request = topic_event_request(to_bytes(ce), topic="orders-sub", pubsub_name="component",
                                  path="/orders")
    assert (request.id, request.source, request.type, request.spec_version) == (
        ce["id"], "checkout", "com.dapr.event.sent", "1.0")
    assert request.data_content_type == "application/json"
    assert (request.topic, request.pubsub_name, request.path) == ("orders-sub", "component",
                                                                   "/orders")
    assert request.data == b'{"note":"a\\u003cb","orderId":1}'
    assert MessageToDict(request.extensions) == {
        "topic": "orders", "pubsubname": "pubsub", "traceid": "", "traceparent": "",
        "tracestate": "", "time": ce["time"], "subject": "s", "expiration": ce["expiration"]}


def test_dict_and_broker_bytes_give_the_same_request() -> None:
    ce = publish(b'{"a": [1.0, 2.5e-7], "b": {"c": "&"}}')
    assert topic_event_request(ce, topic="orders", pubsub_name="pubsub") == topic_event_request(
        to_bytes(ce), topic="orders", pubsub_name="pubsub")


def test_custom_extensions_are_kept_with_their_json_types() -> None:
    own = {"id": "1", "source": "s", "type": "t", "specversion": "1.0", "data": None,
           "flag": True, "n": 3, "nested": {"list": [1, "x", None]}}
    ce = publish(json.dumps(own).encode(), "application/cloudevents+json")
    extensions = MessageToDict(topic_event_request(ce, topic="orders", pubsub_name="pubsub")
                               .extensions)
    assert extensions["flag"] is True and extensions["n"] == 3
    assert extensions["nested"] == {"list": [1, "x", None]}
    assert not extensions.keys() & {"id", "source", "type", "specversion", "data",
                                    "datacontenttype", "data_base64"}


@pytest.mark.parametrize(("content_type", "data", "expected"), [
    ("text/plain", "hello é", "hello é".encode()),
    ("text/html; charset=utf-8", "<p>", b"<p>"),
    ("application/xml", "<a/>", b"<a/>"),
    ("application/json", {"b": 1.0, "a": [True]}, b'{"a":[true],"b":1}'),
    ("application/json; charset=utf-8", "plain string", b'"plain string"'),
    ("application/cloudevents+json", {"x": 1}, b'{"x":1}'),
    ("application/vnd.api+json", {"x": 1}, b""),  # daprd leaves other types empty
    ("image/png", "abc", b""),
    ("text/plain", None, b""),
])
def test_data_follows_daprds_content_type_rules(content_type: str, data: Any,
                                                expected: bytes) -> None:
    ce = {"id": "1", "source": "s", "type": "t", "specversion": "1.0",
          "datacontenttype": content_type, "data": data}
    assert topic_event_request(ce, topic="t", pubsub_name="p").data == expected


def test_data_base64_is_decoded_whatever_the_content_type() -> None:
    ce = {"id": "1", "datacontenttype": "application/json", "data_base64": "AAEC", "data": "x"}
    assert topic_event_request(ce, topic="t", pubsub_name="p").data == b"\x00\x01\x02"


def test_invalid_json_published_as_json_arrives_as_a_json_string() -> None:
    ce = publish(b"oops <", "application/json")
    assert topic_event_request(to_bytes(ce), topic="orders", pubsub_name="pubsub").data == (
        b'"oops \\u003c"')


@pytest.mark.parametrize("ce", [
    {"datacontenttype": "text/plain", "data": {"not": "a string"}},
    {"data_base64": "not base64!"},
    {"data_base64": 12},
])
def test_envelopes_daprd_would_retry_are_refused(ce: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        topic_event_request(ce, topic="t", pubsub_name="p")


def test_non_string_attributes_become_empty() -> None:
    request = topic_event_request({"id": 7, "source": None, "datacontenttype": 1},
                                  topic="t", pubsub_name="p")
    assert (request.id, request.source, request.data_content_type) == ("", "", "")


def test_grpc_metadata_is_lowercased_without_transport_headers() -> None:
    extra = {"Content-Type": "application/json", "content-length": "12", "X-Key": "v",
             "pubsubName": "spoofed", "kafka.topic": "orders"}
    assert grpc_metadata("pubsub", extra) == [
        ("kafka.topic", "orders"), ("pubsubname", "pubsub"), ("x-key", "v")]
    assert grpc_metadata("pubsub") == [("pubsubname", "pubsub")]


# --- round trip through the real dapr.ext.grpc.App --------------------------------------------

@pytest.fixture(scope="module")
def app_callback() -> Iterator[tuple[appcallback_pb2_grpc.AppCallbackStub,
                                     dict[str, SubscriptionMessage]]]:
    """A real ``App`` subscribed to three topics, served on 127.0.0.1, and a stub to call it."""
    seen: dict[str, SubscriptionMessage] = {}
    app = App()

    def on_event(message: SubscriptionMessage) -> TopicEventResponse:
        seen[message.topic()] = message
        return TopicEventResponse("success")

    for topic in ("orders", "notes", "blobs"):
        app.subscribe(pubsub_name="pubsub", topic=topic)(on_event)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = threading.Thread(target=app.run, daemon=True,
                              kwargs={"app_port": port, "listen_address": "127.0.0.1"})
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield appcallback_pb2_grpc.AppCallbackStub(channel), seen
    finally:
        channel.close()
        app.stop()
        server.join(timeout=10)


@pytest.mark.parametrize(("topic", "payload", "content_type", "data"), [
    ("orders", b'{"orderId": 42, "note": "a<b", "price": 1.0}', "application/json",
     {"note": "a<b", "orderId": 42, "price": 1}),
    ("notes", "hello é".encode(), "text/plain", "hello é"),
    ("blobs", bytes(range(256)), "application/octet-stream", None),
])
def test_the_real_app_receives_what_daprd_would_send(
        app_callback: tuple[appcallback_pb2_grpc.AppCallbackStub, dict[str, SubscriptionMessage]],
        topic: str, payload: bytes, content_type: str, data: Any) -> None:
    stub, seen = app_callback
    ce = new_cloud_event(app_id="checkout", pubsub_name="pubsub", topic=topic, data=payload,
                         data_content_type=content_type,
                         metadata={"cloudevent.type": "order.created", "cloudevent.subject": "s"})
    request = topic_event_request(to_bytes(ce), topic=topic, pubsub_name="pubsub")
    reply = stub.OnTopicEvent(request, timeout=10, metadata=grpc_metadata(
        "pubsub", {"Content-Type": "application/json", "X-Header": "kept"}))
    assert reply.status == appcallback_pb2.TopicEventResponse.SUCCESS
    message = seen[topic]
    assert (message.id(), message.source(), message.type(), message.spec_version()) == (
        ce["id"], "checkout", "order.created", "1.0")
    assert (message.topic(), message.pubsub_name(), message.data_content_type()) == (
        topic, "pubsub", content_type)
    assert message.data() == data
    assert message.raw_data() == (payload if data is None else request.data)
    assert message.extensions() == {"topic": topic, "pubsubname": "pubsub", "traceid": "",
                                    "traceparent": "", "tracestate": "", "time": ce["time"],
                                    "subject": "s"}
    assert message.metadata()["pubsubname"] == "pubsub"
    assert message.metadata()["x-header"] == "kept"


def test_raw_payload_is_read_as_go_parse_bool_in_one_place() -> None:
    """The stand-in's publish and the envelope builder decide rawPayload alike (daprd:
    strconv.ParseBool), so "1" or "True" stores the raw bytes, never a wrapped event."""
    from ofnotebook.sidecar.cloudevents import is_raw_payload

    for yes in ("1", "t", "T", "true", "TRUE", "True"):
        assert is_raw_payload({"rawPayload": yes}) is True
    for no in ("0", "f", "false", "False", ""):
        assert is_raw_payload({"rawPayload": no}) is False
    assert is_raw_payload(None) is False and is_raw_payload({}) is False
    with pytest.raises(ValueError, match="rawPayload value must be a valid boolean"):
        is_raw_payload({"rawPayload": "yes"})
