"""Every function shape on the local target: real runtime processes, real HTTP, the real
stand-in delivering pub/sub and binding events, CloudEvents made and parsed by the real
``cloudevents`` library, functions decorated by the real functions-framework."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

import ofnotebook
from ofnotebook.errors import CaptureError
from ofnotebook.runtime import ERROR_HEADER
from tests.helpers import make_function, uid, wait_for

HTTP_FUNCTION = """
import functions_framework
from flask import Response, abort
from werkzeug.exceptions import NotFound

@functions_framework.http
def web(request):
    what = request.args.get("what")
    if what == "abort":
        abort(404)
    if what == "response":
        abort(Response("gone", 410, headers={"X-Why": "moved"}))
    if what == "notfound":
        raise NotFound("no such order")
    if what == "bad-json":
        return request.get_json()  # a non-JSON body: werkzeug's BadRequest
    return {"hello": request.args.get("who")}
"""

CLOUD_EVENT_FUNCTIONS = {
    "decorated": """
import functions_framework

@functions_framework.cloud_event
def on_event(cloud_event):
    return {"class": type(cloud_event).__module__ + "." + type(cloud_event).__name__,
            "id": cloud_event["id"], "type": cloud_event["type"],
            "source": cloud_event["source"], "subject": cloud_event.get("subject"),
            "data": cloud_event.data}
""",
    "plain": """
def on_event(cloud_event):
    return {"class": type(cloud_event).__module__ + "." + type(cloud_event).__name__,
            "id": cloud_event["id"], "type": cloud_event["type"],
            "source": cloud_event["source"], "subject": cloud_event.get("subject"),
            "data": cloud_event.data}
""",
}

BACKGROUND = """
def on_legacy(event, context):
    return {"event": event, "context": [context.event_id, context.timestamp,
                                        context.event_type, context.resource],
            "text": str(context)}
"""


def event(data: Any, **attributes: str) -> CloudEvent:
    return CloudEvent({"id": "ev-1", "source": "//storage.googleapis.com/projects/_/buckets/b",
                       "type": "com.example.order", **attributes}, data)


def test_http_decorator_and_http_exceptions_keep_their_status(local_backend: Any) -> None:
    handle = ofnotebook.deploy(make_function(HTTP_FUNCTION, name="web"), "shape-http",
                               target=local_backend)
    assert handle.capture.signature == "request" and "[request]" in handle.capture.report()
    # the decorator's wrapper was left behind: the image needs no functions-framework
    assert not any(e.distribution.startswith("functions") for e in handle.capture.lock)
    assert handle.invoke(params={"who": "ada"}).json() == {"hello": "ada"}
    # an HTTPException is the function's answer, not its failure: invoke returns it
    aborted = handle.invoke(params={"what": "abort"})
    assert aborted.status_code == 404 and "Not Found" in aborted.text
    assert ERROR_HEADER not in aborted.headers
    gone = handle.invoke(params={"what": "response"})
    assert (gone.status_code, gone.text, gone.headers["X-Why"]) == (410, "gone", "moved")
    missing = handle.invoke(params={"what": "notfound"})
    assert missing.status_code == 404 and "no such order" in missing.text
    bad = handle.invoke(params={"what": "bad-json"}, data="not json",
                        headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and ERROR_HEADER not in bad.headers


@pytest.mark.parametrize("style", sorted(CLOUD_EVENT_FUNCTIONS))
def test_cloud_event_function_over_http(local_backend: Any, style: str) -> None:
    fn = make_function(CLOUD_EVENT_FUNCTIONS[style], name="on_event")
    handle = ofnotebook.deploy(fn, f"shape-ce-{style}", target=local_backend)
    assert handle.capture.signature == "cloudevent" and "[cloudevent]" in handle.capture.report()
    assert any(e.distribution == "cloudevents" for e in handle.capture.lock)
    expected = {"class": "cloudevents.http.event.CloudEvent", "id": "ev-1",
                "type": "com.example.order",
                "source": "//storage.googleapis.com/projects/_/buckets/b", "subject": "o-1"}

    headers, body = to_binary(event({"order": 7}, subject="o-1"))  # ce-* headers
    assert handle.invoke(method="POST", headers=headers, data=body).json() == {
        **expected, "data": {"order": 7}}
    headers, body = to_structured(event({"order": 8}, subject="o-1"))  # one JSON document
    assert headers["content-type"] == "application/cloudevents+json"
    assert handle.invoke(method="POST", headers=headers, data=body).json() == {
        **expected, "data": {"order": 8}}

    plain = handle.invoke(json={"order": 9})  # not a CloudEvent: a 400 that says why
    assert plain.status_code == 400 and ERROR_HEADER not in plain.headers
    assert "ce-id, ce-source, ce-specversion, ce-type" in plain.text
    assert "--signature request" in plain.text
    partial = handle.invoke(method="POST", headers={"ce-id": "1", "ce-specversion": "1.0"},
                            data=b"x")
    assert partial.status_code == 400 and "lacks the headers ce-source, ce-type" in partial.text


def test_background_function_over_http(local_backend: Any) -> None:
    handle = ofnotebook.deploy(make_function(BACKGROUND, name="on_legacy"), "shape-bg",
                               target=local_backend)
    assert handle.capture.signature == "background"
    context = {"eventId": "e-1", "timestamp": "2024-05-01T10:00:00Z",
               "eventType": "google.pubsub.topic.publish", "resource": "projects/p/topics/t"}
    nested = handle.invoke(json={"data": {"n": 1}, "context": context}).json()
    assert nested["event"] == {"n": 1}
    assert nested["context"] == ["e-1", "2024-05-01T10:00:00Z", "google.pubsub.topic.publish",
                                 "projects/p/topics/t"]
    assert nested["text"].startswith("{event_id: e-1, timestamp: 2024-05-01T10:00:00Z")
    flat = handle.invoke(json={**context, "data": "hi"}).json()
    assert flat["event"] == "hi" and flat["context"][0] == "e-1"

    # A CloudEvent, converted as functions-framework converts one: Google's types map back
    # to their legacy names; the resource is the source's path and the subject.
    object_data = {"name": "o", "kind": "storage#object"}
    storage = event(object_data, type="google.cloud.storage.object.v1.finalized",
                    subject="objects/o", time="2024-05-01T10:00:00Z")
    headers, body = to_binary(storage)
    got = handle.invoke(method="POST", headers=headers, data=body).json()
    assert got["event"] == object_data
    assert got["context"] == ["ev-1", "2024-05-01T10:00:00Z", "google.storage.object.finalize",
                              {"name": "projects/_/buckets/b/objects/o",
                               "service": "storage.googleapis.com", "type": "storage#object"}]
    headers, body = to_structured(event([1, 2]))
    got = handle.invoke(method="POST", headers=headers, data=body).json()
    assert got["event"] == [1, 2] and got["context"][2] == "com.example.order"

    neither = handle.invoke(data="just text")
    assert neither.status_code == 400 and "legacy JSON envelope" in neither.text


def test_cloud_event_and_background_functions_get_delivered_events(local_backend: Any,
                                                                    tmp_path: Path) -> None:
    """On async the delivered event: pub/sub as Dapr's CloudEvent, a binding (cron) event
    wrapped into one; a background function gets the data and a context it can send with."""
    seen = tmp_path / "seen.jsonl"
    ce_fn = make_function("""
import json
def on_event(cloud_event):
    with open(SEEN, "a") as out:
        out.write(json.dumps({"class": type(cloud_event).__name__,
                              "attributes": dict(cloud_event.get_attributes()),
                              "data": cloud_event.data}, default=str) + "\\n")
""", {"SEEN": str(seen)}, name="on_event")
    topic = f"shape-{uid()}"
    ce = ofnotebook.deploy(ce_fn, "shape-ce-async", target=local_backend,
                           inputs={"orders": f"memory://{topic}",
                                   "tick": "cron://@every 200ms"})
    assert ce.capture.signature == "cloudevent" and ce.runtime == "async"

    bg_fn = make_function("""
def on_legacy(event, context):
    context.send("out", {"event": event, "id": context.event_id,
                         "type": context.event_type, "resource": context.resource,
                         "has_time": bool(context.timestamp)})
""", name="on_legacy")
    bg = ofnotebook.deploy(bg_fn, "shape-bg-async", target=local_backend,
                           inputs={"orders": f"memory://{topic}-bg"},
                           outputs={"out": f"memory://{topic}-out"})
    assert bg.capture.signature == "background"

    ce.publish("orders", {"order": 1})
    bg.publish("orders", {"order": 2})

    def events() -> list[dict[str, Any]]:
        lines = seen.read_text().splitlines() if seen.exists() else []
        return [json.loads(line) for line in lines]

    def both() -> bool:
        kinds = {e["attributes"]["type"] for e in events()}
        return "dapr.binding.cron" in kinds and any(e["data"] == {"order": 1} for e in events())

    wait_for(both, 15, lambda: f"events seen: {events()}; logs: {ce.logs()[-2000:]}")
    published = next(e for e in events() if e["data"] == {"order": 1})
    assert published["class"] == "CloudEvent"
    attributes = published["attributes"]
    assert attributes["topic"] == topic and attributes["specversion"] == "1.0"
    assert attributes["type"] == "com.dapr.event.sent" and attributes["id"]
    assert attributes["datacontenttype"] == "application/json"
    tick = next(e for e in events() if e["attributes"]["type"] == "dapr.binding.cron")
    assert "-bindings-tick-" in tick["attributes"]["source"] and tick["attributes"]["id"]
    assert tick["attributes"]["time"]

    sent = bg.wait_for_outputs(1, timeout=10)[0].data
    assert sent["event"] == {"order": 2} and sent["id"] and sent["has_time"]
    assert (sent["type"], sent["resource"]) == ("com.dapr.event.sent", f"{topic}-bg")


@pytest.mark.parametrize("source, message", [
    ("import functions_framework\n"
     "class Order:\n"
     "    @staticmethod\n    def from_dict(d):\n        return Order()\n"
     "    def to_dict(self):\n        return {}\n"
     "@functions_framework.typed(Order)\n"
     "def f(order):\n    return order\n", "@functions_framework.typed"),
    ("def f(a, b, c):\n    return a\n", "takes 3 required arguments"),
    ("import functions_framework.aio\n"
     "@functions_framework.aio.http\n"
     "async def f(request):\n    return 'x'\n", "Starlette"),
])
def test_a_shape_that_cannot_be_served_is_refused_at_deploy(local_backend: Any, source: str,
                                                            message: str) -> None:
    with pytest.raises(CaptureError, match=message) as info:
        ofnotebook.deploy(make_function(source), "shape-refused", target=local_backend)
    assert "f(cloud_event)" in str(info.value) and "--signature" in str(info.value)
    assert local_backend.deployments() == []  # refused before anything ran


def test_an_http_function_with_inputs_is_refused(local_backend: Any) -> None:
    fn = make_function("import functions_framework\n@functions_framework.http\n"
                       "def f(request):\n    return 'x'\n")
    with pytest.raises(CaptureError, match="HTTP function .* asynchronous"):
        ofnotebook.deploy(fn, "shape-http-async", target=local_backend,
                          inputs={"in": f"memory://{uid()}"})
    assert local_backend.deployments() == []


def test_the_magic_keeps_a_functions_framework_decorator_for_detection(ip: Any) -> None:
    """The cell magic must not unwrap the decorator's wrapper (only a handle's), or
    ``@functions_framework.cloud_event`` is taken for ``f(request)`` again."""
    handle = ip.run_cell_magic("function", f"shape-magic-{uid()}",
                               CLOUD_EVENT_FUNCTIONS["decorated"])
    assert handle.capture.signature == "cloudevent"
    headers = {"ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-specversion": "1.0"}
    assert handle.invoke(json={"n": 1}, headers=headers).json()["id"] == "1"
    again = ip.run_cell_magic("function", handle.name, CLOUD_EVENT_FUNCTIONS["decorated"])
    assert again.deployment is handle.deployment  # the re-run over the handle still reuses
    with pytest.raises(CaptureError, match="aio.http"):
        ip.run_cell_magic("function", "shape-magic-aio",
                          "import functions_framework.aio\n@functions_framework.aio.http\n"
                          "async def f(request):\n    return 'x'\n")
