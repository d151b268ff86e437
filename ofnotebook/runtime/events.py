"""The events that CloudEvent and background functions receive, on HTTP and from Dapr.

A ``cloudevent`` function gets a ``cloudevents.http.CloudEvent``: on HTTP parsed with the
``cloudevents`` library's ``from_http`` (binary mode, ``ce-*`` headers, or structured mode,
``application/cloudevents+json``); on async the event Dapr delivered (pub/sub arrives as a
CloudEvent already; a binding event is wrapped into one). A ``background`` function (Google
Cloud Functions' legacy shape) gets ``(data, context)``, with a :class:`Context` like
functions-framework's ``google.cloud.functions.Context``: on HTTP from the legacy JSON envelope
or from a CloudEvent, converted the way functions-framework converts one.

This module imports ``cloudevents`` at the top, so the runtime imports it only for a function
of these shapes (the standby process stays fast to start).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http

from .context import Component
from .outputs import DaprBridge, DaprContext

STRUCTURED = "application/cloudevents+json"
#: The attributes binary mode carries as headers (CloudEvents HTTP binding, 1.0).
REQUIRED_HEADERS = ("ce-id", "ce-source", "ce-specversion", "ce-type")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")

# Google's CloudEvent types -> their legacy (background) event types, the inverse of
# functions-framework's _BACKGROUND_TO_CE_TYPE (event_conversion.py, Apache-2.0), for the
# background functions that get a Google CloudEvent; any other type is passed as it is.
_CE_TO_BACKGROUND_TYPE = {
    "google.cloud.pubsub.topic.v1.messagePublished": "google.pubsub.topic.publish",
    "google.cloud.storage.object.v1.finalized": "google.storage.object.finalize",
    "google.cloud.storage.object.v1.deleted": "google.storage.object.delete",
    "google.cloud.storage.object.v1.archived": "google.storage.object.archive",
    "google.cloud.storage.object.v1.metadataUpdated": "google.storage.object.metadataUpdate",
    "google.cloud.firestore.document.v1.written":
        "providers/cloud.firestore/eventTypes/document.write",
    "google.cloud.firestore.document.v1.created":
        "providers/cloud.firestore/eventTypes/document.create",
    "google.cloud.firestore.document.v1.updated":
        "providers/cloud.firestore/eventTypes/document.update",
    "google.cloud.firestore.document.v1.deleted":
        "providers/cloud.firestore/eventTypes/document.delete",
    "google.firebase.auth.user.v1.created": "providers/firebase.auth/eventTypes/user.create",
    "google.firebase.auth.user.v1.deleted": "providers/firebase.auth/eventTypes/user.delete",
    "google.firebase.analytics.log.v1.written":
        "providers/google.firebase.analytics/eventTypes/event.log",
    "google.firebase.database.ref.v1.created":
        "providers/google.firebase.database/eventTypes/ref.create",
    "google.firebase.database.ref.v1.written":
        "providers/google.firebase.database/eventTypes/ref.write",
    "google.firebase.database.ref.v1.updated":
        "providers/google.firebase.database/eventTypes/ref.update",
    "google.firebase.database.ref.v1.deleted":
        "providers/google.firebase.database/eventTypes/ref.delete",
}
_PUBSUB_SERVICE = "pubsub.googleapis.com"
_STORAGE_SERVICE = "storage.googleapis.com"
_FIREBASE_AUTH_SERVICE = "firebaseauth.googleapis.com"
_FIREBASE_DB_SERVICE = "firebasedatabase.googleapis.com"
_AUTH_METADATA = {"createTime": "createdAt", "lastSignInTime": "lastSignedInAt"}
_PUBSUB_MESSAGE_TYPE = "type.googleapis.com/google.pubsub.v1.PubsubMessage"


class NotAnEvent(ValueError):
    """Raised for an HTTP request that is not an event of the function's shape; the message
    (the body of the 400) says what is missing and how to send one."""


class Context(DaprContext):
    """What a background function ``f(event, context)`` gets as ``context``: the attributes of
    functions-framework's ``Context`` (``event_id``, ``timestamp``, ``event_type``,
    ``resource``), plus ``send``/``get_state`` for the function's declared outputs and stores."""

    def __init__(self, bridge: DaprBridge, eventId: str = "", timestamp: str = "",
                 eventType: str = "", resource: Any = "") -> None:
        self.event_id = eventId
        self.timestamp = timestamp
        self.event_type = eventType
        self.resource = resource
        self._bridge = bridge

    def __str__(self) -> str:  # as functions-framework prints it
        return (f"{{event_id: {self.event_id}, timestamp: {self.timestamp}, "
                f"event_type: {self.event_type}, resource: {self.resource}}}")

    __repr__ = __str__


# --------------------------------------------------------------------------------------------
# HTTP


def _missing(headers: Mapping[str, str], body: bytes) -> str:
    """What keeps the request from being a CloudEvent, or "" when it is one."""
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == STRUCTURED:
        try:
            event = json.loads(body)
        except ValueError as exc:
            return f"its {STRUCTURED} body is not JSON ({exc})"
        if not isinstance(event, dict):
            return f"its {STRUCTURED} body is not a JSON object"
        absent = [a for a in ("id", "source", "specversion", "type") if a not in event]
        return f"its {STRUCTURED} body lacks {', '.join(absent)}" if absent else ""
    lowered = {k.lower() for k in headers}
    absent = [h for h in REQUIRED_HEADERS if h not in lowered]
    if not absent:
        return ""
    return (f"the request lacks the header{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
            f"(binary mode) and is not {STRUCTURED} (structured mode)")


def cloud_event_from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """The CloudEvent of an HTTP request, in binary or structured mode; :class:`NotAnEvent`
    names what is missing."""
    plain = {str(k): str(v) for k, v in headers.items()}
    why = _missing({k.lower(): v for k, v in plain.items()}, body)
    if not why:
        try:
            return from_http(plain, body)
        except CloudEventError as exc:
            why = f"it is not a valid CloudEvent ({exc})"
    raise NotAnEvent(
        f"This function takes CloudEvents, but {why}. Send a CloudEvent, e.g. the headers "
        f"ce-id, ce-source, ce-type and ce-specversion: 1.0 with the data as the body; or "
        f"deploy the function with --signature request to get the plain request.")


def background_from_cloud_event(event: CloudEvent, bridge: DaprBridge,
                                resource: Any = None) -> tuple[Any, Context]:
    """``(data, context)`` of a CloudEvent, as functions-framework converts one: Google's
    event types map back to their legacy names and the resource is the source's path and the
    subject, with its special cases for Google's services (a Pub/Sub topic or a Storage
    object becomes a resource dict, the Pub/Sub message is unwrapped). ``resource`` is given
    for a Dapr delivery (the topic or the binding)."""
    data = event.data
    source = str(event.get("source", ""))
    service, _, name = source[2:].partition("/") if source.startswith("//") else ("", "", "")
    subject = event.get("subject")
    if resource is None:
        if service == _PUBSUB_SERVICE:
            resource = {"service": service, "name": name, "type": _PUBSUB_MESSAGE_TYPE}
            if isinstance(data, dict) and isinstance(data.get("message"), dict):
                data = {k: v for k, v in data["message"].items()
                        if k not in ("messageId", "publishTime")}
        elif service == _STORAGE_SERVICE and isinstance(data, dict):
            resource = {"name": f"{name}/{subject}", "service": service,
                        "type": data.get("kind")}
        elif service == _FIREBASE_AUTH_SERVICE:
            resource = name
            if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
                data = {**data, "metadata": {_AUTH_METADATA.get(k, k): v
                                             for k, v in data["metadata"].items()}}
        elif service == _FIREBASE_DB_SERVICE:
            resource = f"{re.sub('/locations/[^/]+', '', name)}/{subject}"
        elif name:
            resource = f"{name}/{subject}" if subject else name
        else:
            resource = f"{source}/{subject}" if subject else source
    event_type = str(event.get("type", ""))
    return data, Context(bridge, eventId=str(event.get("id", "")),
                         timestamp=str(event.get("time", "")),
                         eventType=_CE_TO_BACKGROUND_TYPE.get(event_type, event_type),
                         resource=resource)


def background_from_http(headers: Mapping[str, str], body: bytes, bridge: DaprBridge
                         ) -> tuple[Any, Context]:
    """``(data, context)`` of an HTTP request: a CloudEvent (binary or structured), or the
    legacy JSON envelope, ``{"data": ..., "context": {"eventId", "timestamp", "eventType",
    "resource"}}`` or the flat ``{"eventId", "timestamp", "eventType", "resource", "data"}``."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if "ce-id" in lowered or lowered.get("content-type", "").startswith(STRUCTURED):
        try:
            return background_from_cloud_event(cloud_event_from_http(headers, body), bridge)
        except NotAnEvent as exc:
            raise NotAnEvent(str(exc).replace("takes CloudEvents", "takes events")) from None
    try:
        envelope = json.loads(body) if body else None
    except ValueError:
        envelope = None
    if isinstance(envelope, dict) and ("data" in envelope or "context" in envelope
                                       or "eventId" in envelope):
        context = envelope.get("context")
        if not isinstance(context, dict):
            context = {key: envelope.get(key, "")
                       for key in ("eventId", "timestamp", "eventType", "resource")}
        known = {k: context.get(k, "") for k in ("eventId", "timestamp", "eventType",
                                                 "resource")}
        return envelope.get("data"), Context(bridge, **known)
    raise NotAnEvent(
        "This function takes background events (event, context), but the request is neither "
        'the legacy JSON envelope ({"data": ..., "context": {"eventId": ..., "timestamp": ..., '
        '"eventType": ..., "resource": ...}}) nor a CloudEvent (ce-id, ce-source, ce-type and '
        "ce-specversion headers, or application/cloudevents+json). Send one of those, or deploy "
        "the function with --signature request to get the plain request.")


# --------------------------------------------------------------------------------------------
# Dapr deliveries


def cloud_event_from_topic(message: Any, data: Any) -> CloudEvent:
    """The CloudEvent of a pub/sub delivery (the SDK's ``SubscriptionMessage``): Dapr delivers
    a CloudEvent already, so its attributes are kept, with ``data`` as decoded for the
    function and Dapr's extensions (``topic``, ``pubsubname``, trace ids) as extensions."""
    attributes: dict[str, Any] = {}
    for key, value in (message.extensions() or {}).items():
        if _EXTENSION_NAME.match(str(key)) and isinstance(value, (str, int, bool)):
            attributes[str(key)] = value
    attributes.update({"id": message.id() or str(uuid.uuid4()),
                       "source": message.source() or "dapr",
                       "type": message.type() or "com.dapr.event.sent",
                       "specversion": message.spec_version() or "1.0",
                       "topic": message.topic(), "pubsubname": message.pubsub_name()})
    if message.data_content_type():
        attributes["datacontenttype"] = message.data_content_type()
    return CloudEvent(attributes, data)


def cloud_event_from_binding(request: Any, component: Component, data: Any) -> CloudEvent:
    """A binding event wrapped into a CloudEvent: bindings carry no envelope, so ``type`` is
    ``dapr.binding.<type>`` (``dapr.binding.kafka``), ``source`` the component's Dapr name,
    ``id`` the delivery's own id when its metadata has one (else a fresh one), ``time`` now;
    the binding's metadata stays on ``request.binding_metadata``."""
    metadata = {str(k).lower(): str(v) for k, v in (request.binding_metadata or {}).items()}
    kind = component.component_type.split(".", 1)[-1] or "binding"
    attributes = {
        "id": next((metadata[k] for k in ("id", "cloudevent.id", "messageid", "message-id")
                    if metadata.get(k)), str(uuid.uuid4())),
        "source": component.component_name,
        "type": f"dapr.binding.{kind}",
        "specversion": "1.0",
        "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }
    content_type = metadata.get("content-type") or metadata.get("contenttype")
    if content_type:
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, data)
