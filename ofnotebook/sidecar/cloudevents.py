"""daprd's CloudEvents envelope, reproduced so that local pub/sub events match a real sidecar's.

Publisher: :func:`new_cloud_event` is the map daprd's ``PublishEvent`` stores in the broker
(components-contrib ``pubsub/envelope.go``) and :func:`to_bytes` its ``json.Marshal`` bytes.
Subscriber: :func:`topic_event_request` and :func:`grpc_metadata` are what daprd sends to
``OnTopicEvent``. Rules: reference/dapr-local-sidecar.md sections 2.2 and 5. The ``cloudevents``
package writes different JSON (no HTML escaping, Python numbers, an added ``time``), so the
tests use it only to check that these bytes are a valid structured-mode CloudEvent.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from dapr.proto.runtime.v1 import appcallback_pb2
from google.protobuf import json_format

from .golang import GoNumber, go_json, parse_bool, replace_surrogates, ttl_seconds

__all__ = ["from_raw_payload", "go_json", "grpc_metadata", "new_cloud_event", "to_bytes",
           "topic_event_request"]

DEFAULT_TYPE = "com.dapr.event.sent"
DEFAULT_SOURCE = "Dapr"
DEFAULT_CONTENT_TYPE = "text/plain"
SPEC_VERSION = "1.0"
_JSON, _CE_JSON, _XML = "application/json", "application/cloudevents+json", "application/xml"

# Keys daprd lifts into TopicEventRequest fields; every other key is an extension.
_DUPLICATE_KEYS = frozenset(
    {"id", "source", "datacontenttype", "type", "specversion", "data", "data_base64"})
# grpc-go never sends these as custom metadata (transport headers); daprd drops content-length.
_RESERVED_HEADERS = frozenset({
    "content-type", "content-length", "user-agent", "te", "grpc-encoding", "grpc-message",
    "grpc-message-type", "grpc-status", "grpc-status-details-bin", "grpc-timeout",
})
_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"  # Go's time.RFC3339 for a UTC time


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # Python accepts NaN/Infinity; Go does not


_PRECISE = json.JSONDecoder(parse_float=GoNumber, parse_constant=_reject_constant)


def _decode_first_value(data: bytes) -> Any:
    """Go's ``json.Decoder.Decode``: the first JSON value; bytes after it are ignored."""
    return _PRECISE.raw_decode(data.decode("utf-8", "replace").lstrip(" \t\r\n"))[0]


def _is_content_type(content_type: str, expected: str) -> bool:
    """components-contrib ``isContentType``: the whole value or the part before ``;``."""
    lower = content_type.lower()
    return lower == expected or lower.split(";", 1)[0] == expected


def is_raw_payload(metadata: Mapping[str, str] | None) -> bool:
    """Whether publish metadata asks for ``rawPayload`` (Go's ParseBool, as daprd reads it);
    ``ValueError`` with daprd's wording for a value that is not a boolean."""
    raw = (metadata or {}).get("rawPayload", "")
    try:
        return parse_bool(raw) if raw else False
    except ValueError:
        raise ValueError(f"rawPayload value must be a valid boolean: actual is {raw!r}") from None


def new_cloud_event(*, app_id: str, pubsub_name: str, topic: str, data: bytes,
                    data_content_type: str | None, metadata: Mapping[str, str] | None = None,
                    native_ttl: bool = False) -> dict[str, Any]:
    """The event daprd's ``PublishEvent`` would store in the broker for this publish call.

    ``metadata``: publish metadata (``cloudevent.*``, ``ttlInSeconds``, ``rawPayload``).
    ``native_ttl``: the component handles TTL itself (rabbitmq, servicebus, solace), so daprd
    adds no ``expiration``. ``ValueError``: bad ``rawPayload`` or cloudevents+json body.
    """
    md = dict(metadata or {})
    if is_raw_payload(md):
        return from_raw_payload(data, topic=topic, pubsub_name=pubsub_name)
    now = datetime.now(timezone.utc)
    content_type = data_content_type or ""
    if _is_content_type(content_type, _CE_JSON):
        ce = _from_cloud_event(data, topic=topic, pubsub_name=pubsub_name, now=now)
    else:
        ce = _envelope(app_id, pubsub_name, topic, data, content_type or DEFAULT_CONTENT_TYPE,
                       md, now)
    ttl = None if native_ttl else _ttl_seconds(md)
    if ttl is not None:
        ce["expiration"] = (now + timedelta(seconds=ttl)).strftime(_RFC3339)
    return ce


def _envelope(app_id: str, pubsub_name: str, topic: str, data: bytes, content_type: str,
              md: Mapping[str, str], now: datetime) -> dict[str, Any]:
    """``NewCloudEventsEnvelope`` after daprd applied the ``cloudevent.*`` overrides."""
    # mapstructure.WeakDecode matches keys case-insensitively; a present key wins even if empty.
    overrides = {k.lower(): v for k, v in md.items()}

    def pick(name: str, fallback: str = "") -> str:
        return overrides.get(f"cloudevent.{name}", fallback)

    traceparent = pick("traceparent") or pick("traceid")
    ce: dict[str, Any] = {
        "id": pick("id") or str(uuid.uuid4()), "specversion": SPEC_VERSION,
        "datacontenttype": content_type, "source": pick("source", app_id) or DEFAULT_SOURCE,
        "type": pick("type") or DEFAULT_TYPE, "topic": topic, "pubsubname": pubsub_name,
        "traceid": traceparent, "traceparent": traceparent, "tracestate": pick("tracestate"),
        "time": now.strftime(_RFC3339)}
    if _is_content_type(content_type, _JSON):
        try:
            ce["data"] = _decode_first_value(data)
        except ValueError:
            ce["data"] = data.decode("utf-8", "replace")
    elif _is_content_type(content_type, "application/octet-stream"):
        ce["data_base64"] = base64.b64encode(data).decode("ascii")
    else:
        ce["data"] = data.decode("utf-8", "replace")
    if pick("subject"):
        ce["subject"] = pick("subject")
    return ce


def _from_cloud_event(data: bytes, *, topic: str, pubsub_name: str,
                      now: datetime) -> dict[str, Any]:
    """``FromCloudEvent``: the app's own event, completed; only topic and pubsubname change."""
    try:
        ce = _decode_first_value(data)
    except ValueError as exc:
        raise ValueError(f"the application/cloudevents+json body is not JSON: {exc}") from exc
    if not isinstance(ce, dict):
        raise ValueError("the application/cloudevents+json body is not a JSON object")
    ce.setdefault("time", now.strftime(_RFC3339))
    for key in ("traceid", "traceparent", "tracestate"):
        ce.setdefault(key, "")  # no trace context locally; an app's own value is kept
    ce["topic"] = topic
    ce["pubsubname"] = pubsub_name
    for key, default in (("source", DEFAULT_SOURCE), ("type", DEFAULT_TYPE),
                         ("specversion", SPEC_VERSION)):
        if ce.get(key) is None:
            ce[key] = default
    return ce


def _ttl_seconds(md: Mapping[str, str]) -> float | None:
    """components-contrib ``TryGetTTL``: ``ttl``/``ttlInSeconds``, a Go duration or seconds."""
    lower = {k.lower(): v for k, v in md.items()}
    value = lower["ttl"] if "ttl" in lower else lower.get("ttlinseconds", "")
    return ttl_seconds(value)


def from_raw_payload(data: bytes, *, topic: str, pubsub_name: str) -> dict[str, Any]:
    """``FromRawPayload``: the event daprd makes up for a message published with rawPayload."""
    return {"id": str(uuid.uuid4()), "specversion": SPEC_VERSION,
            "datacontenttype": "application/octet-stream", "source": DEFAULT_SOURCE,
            "type": DEFAULT_TYPE, "topic": topic, "pubsubname": pubsub_name,
            "data_base64": base64.b64encode(data).decode("ascii")}


def to_bytes(ce: Mapping[str, Any]) -> bytes:
    """The bytes daprd stores in the broker: ``json.Marshal`` of the event map."""
    return go_json(ce, keep_numbers=True).encode("utf-8")


def topic_event_request(ce: Mapping[str, Any] | bytes, *, topic: str, pubsub_name: str,
                        path: str = "") -> appcallback_pb2.TopicEventRequest:
    """The ``TopicEventRequest`` daprd sends for a stored event (dict, or the broker's bytes).

    ``topic`` is the subscribed topic, ``pubsub_name`` the component name, ``path`` the matched
    route. Raises ``ValueError`` where daprd fails the delivery as retriable (bad envelope data).
    """
    event = json.loads(ce.decode("utf-8", "replace"), parse_constant=_reject_constant) \
        if isinstance(ce, (bytes, bytearray)) else ce
    if not isinstance(event, Mapping):
        raise ValueError("the stored event is not a JSON object")

    def prop(name: str) -> str:
        value = event.get(name)
        return value if isinstance(value, str) else ""

    request = appcallback_pb2.TopicEventRequest(
        id=prop("id"), source=prop("source"), type=prop("type"),
        spec_version=prop("specversion"), data_content_type=prop("datacontenttype"),
        data=_event_data(event, prop("datacontenttype")), topic=topic,
        pubsub_name=pubsub_name, path=path)
    extensions = {k: v for k, v in event.items() if k not in _DUPLICATE_KEYS}
    json_format.Parse(go_json(extensions), request.extensions)
    return request


def _event_data(event: Mapping[str, Any], content_type: str) -> bytes:
    encoded = event.get("data_base64")
    if encoded is not None:
        if not isinstance(encoded, str):
            raise ValueError("unexpected data type encountered in envelope")
        try:
            return base64.b64decode(encoded.replace("\r", "").replace("\n", ""), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"data_base64 is not valid base64: {exc}") from exc
    data = event.get("data")
    if data is None:
        return b""
    if content_type.lower().startswith("text/") or _is_content_type(content_type, _XML):
        if not isinstance(data, str):
            raise ValueError("unexpected data type encountered in envelope")
        return replace_surrogates(data).encode("utf-8")
    if _is_content_type(content_type, _JSON) or _is_content_type(content_type, _CE_JSON):
        return go_json(data).encode("utf-8")
    return b""  # daprd leaves data empty for every other content type


def grpc_metadata(pubsub_name: str,
                  extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The gRPC metadata daprd sends with ``OnTopicEvent``: the broker message's metadata
    (``extra``), lowercased, plus ``pubsubname``, which always names the component here."""
    pairs = [(k.lower(), v) for k, v in (extra or {}).items()]
    return sorted([("pubsubname", pubsub_name), *((k, v) for k, v in pairs if not (
        k in _RESERVED_HEADERS or k == "pubsubname" or k.startswith(":")))])
