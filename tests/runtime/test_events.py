"""The events CloudEvent and background functions get, checked against the libraries they come
from: CloudEvents made by the ``cloudevents`` library, background events converted as
functions-framework's own ``event_conversion`` converts them, pub/sub deliveries as the Dapr
SDK's ``SubscriptionMessage`` from a real ``TopicEventRequest``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from dapr.common.pubsub.subscription import SubscriptionMessage
from dapr.ext.grpc import BindingRequest
from dapr.proto.runtime.v1.appcallback_pb2 import TopicEventRequest
from flask import Flask, request
from functions_framework import event_conversion

from ofnotebook.runtime.context import Component, FunctionContext
from ofnotebook.runtime.events import (
    NotAnEvent, background_from_http, cloud_event_from_binding, cloud_event_from_http,
    cloud_event_from_topic)
from ofnotebook.runtime.outputs import DaprBridge

BRIDGE = DaprBridge(FunctionContext(name="f", version="v1", runtime="Knative", port=8080))


def test_binary_and_structured_cloud_events() -> None:
    sent = CloudEvent({"id": "1", "source": "/s", "type": "t", "subject": "x"}, {"a": 1})
    for headers, body in (to_binary(sent), to_structured(sent)):
        got = cloud_event_from_http(headers, body)
        assert isinstance(got, CloudEvent) and got.data == {"a": 1}
        assert (got["id"], got["source"], got["type"], got["subject"]) == ("1", "/s", "t", "x")


@pytest.mark.parametrize("headers, body, says", [
    ({"content-type": "application/json"}, b"{}",
     "lacks the headers ce-id, ce-source, ce-specversion, ce-type (binary mode)"),
    ({"ce-id": "1", "ce-source": "/s", "ce-specversion": "1.0"}, b"", "lacks the header ce-type"),
    ({"content-type": "application/cloudevents+json"}, b'{"id": "1", "specversion": "1.0"}',
     "body lacks source, type"),
    ({"content-type": "application/cloudevents+json; charset=utf-8"}, b"nope", "is not JSON"),
    ({"ce-id": "1", "ce-source": "/s", "ce-specversion": "9.9", "ce-type": "t"}, b"",
     "not a valid CloudEvent"),
])
def test_a_request_that_is_not_a_cloud_event_is_named(headers: dict[str, str], body: bytes,
                                                      says: str) -> None:
    with pytest.raises(NotAnEvent, match="takes CloudEvents") as info:
        cloud_event_from_http(headers, body)
    assert says in str(info.value) and "--signature request" in str(info.value)


def functions_framework_conversion(headers: dict[str, str], body: bytes) -> tuple[Any, Any]:
    """What functions-framework gives a background function for this request."""
    with Flask(__name__).test_request_context("/", method="POST", headers=headers, data=body):
        return event_conversion.cloud_event_to_background_event(request)  # type: ignore[no-any-return]


@pytest.mark.parametrize("attributes, data", [
    ({"type": "google.cloud.pubsub.topic.v1.messagePublished",
      "source": "//pubsub.googleapis.com/projects/p/topics/t"},
     {"message": {"data": "aGk=", "attributes": {"k": "v"}, "messageId": "m",
                  "publishTime": "2024-05-01T10:00:00Z"}}),
    ({"type": "google.cloud.storage.object.v1.finalized",
      "source": "//storage.googleapis.com/projects/_/buckets/b", "subject": "objects/o.txt"},
     {"kind": "storage#object", "name": "o.txt"}),
    ({"type": "google.cloud.firestore.document.v1.written",
      "source": "//firestore.googleapis.com/projects/p/databases/(default)",
      "subject": "documents/users/ada"}, {"value": {"name": "ada"}}),
    ({"type": "google.firebase.auth.user.v1.created",
      "source": "//firebaseauth.googleapis.com/projects/p", "subject": "users/u1"},
     {"uid": "u1", "metadata": {"createTime": "2024-05-01T10:00:00Z"}}),
    ({"type": "google.firebase.database.ref.v1.written",
      "source": "//firebasedatabase.googleapis.com/projects/_/locations/us-central1/instances/i",
      "subject": "refs/a/b"}, {"data": None, "delta": {"x": 1}}),
])
def test_a_cloud_event_converts_as_functions_framework_converts_it(
        attributes: dict[str, str], data: Any) -> None:
    event = CloudEvent({"id": "e-1", "time": "2024-05-01T10:00:00Z", **attributes}, data)
    headers, body = to_binary(event)
    expected_data, expected = functions_framework_conversion(headers, body)
    got_data, got = background_from_http(headers, body, BRIDGE)
    assert got_data == expected_data
    assert (got.event_id, got.timestamp, got.event_type, got.resource) == (
        expected.event_id, expected.timestamp, expected.event_type, expected.resource)
    assert str(got) == str(expected)


def test_legacy_envelopes() -> None:
    context = {"eventId": "1", "timestamp": "t", "eventType": "e", "resource": "r"}
    for body in ({"data": {"x": 1}, "context": context}, {**context, "data": {"x": 1}}):
        data, ctx = background_from_http({"content-type": "application/json"},
                                         json.dumps(body).encode(), BRIDGE)
        assert data == {"x": 1}
        assert (ctx.event_id, ctx.timestamp, ctx.event_type, ctx.resource) == ("1", "t", "e", "r")
    with pytest.raises(NotAnEvent, match="legacy JSON envelope"):
        background_from_http({"content-type": "application/json"}, b'{"x": 1}', BRIDGE)


def test_a_pubsub_delivery_is_the_cloud_event_dapr_sent() -> None:
    proto = TopicEventRequest(id="9", source="orders-app", type="com.dapr.event.sent",
                              spec_version="1.0", data_content_type="application/json",
                              data=b'{"n": 1}', topic="orders", pubsub_name="bus")
    proto.extensions.update({"traceid": "00-ab-cd-01", "Not-A-CE-Name": "dropped"})
    message = SubscriptionMessage(proto)
    event = cloud_event_from_topic(message, message.data())
    assert event.data == {"n": 1}
    assert dict(event.get_attributes()) | {"time": None} == {
        "id": "9", "source": "orders-app", "type": "com.dapr.event.sent", "specversion": "1.0",
        "datacontenttype": "application/json", "topic": "orders", "pubsubname": "bus",
        "traceid": "00-ab-cd-01", "time": None}


def test_a_binding_event_is_wrapped_into_a_cloud_event() -> None:
    kafka = Component(name="in", component_name="serving-x-bindings-in-abc",
                      component_type="bindings.kafka")
    with_id = cloud_event_from_binding(
        BindingRequest(b"{}", {"Id": "k-7", "content-type": "application/json"}), kafka, {})
    assert (with_id["id"], with_id["type"], with_id["source"], with_id["datacontenttype"]) == (
        "k-7", "dapr.binding.kafka", "serving-x-bindings-in-abc", "application/json")
    assert with_id["time"].endswith("Z")
    fresh = [cloud_event_from_binding(BindingRequest(b"", {}), kafka, None)["id"]
             for _ in range(2)]
    assert fresh[0] != fresh[1]  # no id in the delivery: a new one each time
