"""Every function shape served and invoked in a container, on Podman's Docker API and on Docker
Engine (see conftest.py), with one image of this module's own per engine.

That image is the product's: a sync CloudEvent function deployed to the ``container`` target.
Its lock (``cloudevents``, Flask, waitress, cloudpickle) is what every sync shape needs, so the
other sync shapes run on that very image with their own package's ``function/`` folder mounted
over the built one: the runtime, the installed distributions and the entrypoint are the image's,
only the payload differs. The async CloudEvent function is deployed too; its lock is the one
of every async function (cloudevents, cloudpickle, dapr), so its dependency layers are the ones
the conformance suite built already and only its code layers are new.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

import ofnotebook
from ofnotebook.backends.container import LABEL_SESSION, SESSION, ContainerBackend
from ofnotebook.capture import capture
from ofnotebook.package import package
from ofnotebook.runtime import ERROR_HEADER, HEALTH_PATH
from ofnotebook.spec import FunctionSpec
from tests.containers.conftest import ENGINES
from tests.helpers import make_function, uid, wait_for

pytestmark = pytest.mark.container

ASYNC_CLOUD_EVENT = """
import json
from dapr.clients import DaprClient
def on_event(cloud_event):
    with DaprClient() as dapr:  # the container's own app id, known by its per-app token
        app = dapr.get_metadata().application_id
    print("EVENT", json.dumps({"class": type(cloud_event).__name__, "data": cloud_event.data,
                              "type": cloud_event["type"], "topic": cloud_event["topic"],
                              "app": app}),
          flush=True)
"""

#: The sync shapes run on the built image: (source, entry).
SYNC = {
    "request": ("""
import functions_framework
from flask import Response, abort

@functions_framework.http
def web(request):
    if request.args.get("what") == "gone":
        abort(Response("gone", 410, headers={"X-Why": "moved"}))
    if request.args.get("what") == "missing":
        abort(404)
    return {"hello": request.args.get("who")}
""", "web"),
    "cloudevent": ("""
def on_event(cloud_event):
    return {"id": cloud_event["id"], "type": cloud_event["type"], "data": cloud_event.data}
""", "on_event"),
    "background": ("""
def on_legacy(event, context):
    return {"event": event, "id": context.event_id, "type": context.event_type,
            "resource": context.resource}
""", "on_legacy"),
    "ctx_data": ("def f(ctx, data):\n    return {'name': ctx.name, 'data': data}\n", "f"),
    "context": ("def f(context):\n"
                "    return context.name + ':' + context.get_http_request().args['q']\n", "f"),
    "noarg": ("def f():\n    return 'no arguments'\n", "f"),
}


@pytest.fixture(scope="module")
def backend(client: Any, engine_name: str) -> Iterator[ContainerBackend]:
    """One container backend per engine; what it deployed is removed after the module."""
    made = ContainerBackend(start_timeout=60)
    # module scope runs before the per-test DOCKER_HOST fixture: point the product here too
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", ENGINES[engine_name])
        try:
            yield made
        finally:
            made.close()
            for image in client.images.list(name="ofnotebook/shape-*"):
                try:
                    client.images.remove(image.id)
                except Exception:
                    pass


@pytest.fixture(scope="module")
def built(backend: ContainerBackend, engine_name: str) -> dict[str, Any]:
    """The image of this module on this engine: a sync CloudEvent function, deployed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", ENGINES[engine_name])
        started = time.perf_counter()
        source, entry = SYNC["cloudevent"]
        handle = ofnotebook.deploy(make_function(source, name=entry), f"shape-ce-{uid()}",
                                   target=backend)
        print(f"\n{engine_name}: sync image built and deployed in "
              f"{time.perf_counter() - started:.1f} s")
        return {"handle": handle}


def test_an_async_cloud_event_function_gets_the_delivered_event(
        backend: ContainerBackend, engine_name: str) -> None:
    topic = f"ce-{uid()}"
    started = time.perf_counter()
    handle = ofnotebook.deploy(make_function(ASYNC_CLOUD_EVENT, name="on_event"),
                               f"shape-ace-{uid()}", target=backend,
                               inputs={"orders": f"memory://{topic}"})
    print(f"\n{engine_name}: async image built and deployed in "
          f"{time.perf_counter() - started:.1f} s")
    assert handle.capture.signature == "cloudevent"
    assert any(e.distribution == "cloudevents" for e in handle.capture.lock)
    handle.publish("orders", {"order": 1})

    def seen() -> dict[str, Any] | None:
        for line in handle.deployment.logs():
            if "EVENT " in line:
                return dict(json.loads(line.split("EVENT ", 1)[1]))
        return None

    event = wait_for(seen, 30, lambda: "\n".join(handle.deployment.logs()[-30:]))
    assert event == {"class": "CloudEvent", "data": {"order": 1}, "type": "com.dapr.event.sent",
                     "topic": topic, "app": handle.name}
    handle.stop()


@pytest.fixture
def run_on_image(built: dict[str, Any], client: Any) -> Iterator[Any]:
    """Run the built image with another package's ``function/`` mounted; return its URL."""
    started: list[Any] = []
    image = built["handle"].deployment.reference
    image_lock = set(built["handle"].capture.requirements)

    def run(shape: str) -> str:
        source, entry = SYNC[shape]
        captured = capture(make_function(source, name=entry))
        assert captured.signature == shape
        # the image holds every distribution this shape's own image would install
        assert set(captured.requirements) <= image_lock, (captured.requirements, image_lock)
        pkg = package(captured, FunctionSpec(name=f"shape-{shape.replace('_', '-')}",
                                             entry=entry))
        container = client.containers.run(
            image, detach=True, init=True, labels={LABEL_SESSION: SESSION},
            ports={"8080/tcp": ("127.0.0.1", None)},
            volumes={str(Path(pkg.path) / "function"): {"bind": "/app/function",
                                                        "mode": "ro"}})
        started.append(container)
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(url + HEALTH_PATH, timeout=1).status_code == 200, 30,
                 lambda: container.logs().decode(errors="replace"),
                 ignoring=(requests.RequestException,), interval=0.1)
        return url

    yield run
    for container in started:
        container.remove(force=True)


def test_sync_shapes_on_the_built_image(built: dict[str, Any], run_on_image: Any) -> None:
    handle = built["handle"]  # the deployed CloudEvent function itself, through the handle
    event = CloudEvent({"id": "c-1", "source": "/orders", "type": "order.created"}, {"n": 1})
    headers, body = to_structured(event)
    assert handle.invoke(method="POST", headers=headers, data=body).json() == {
        "id": "c-1", "type": "order.created", "data": {"n": 1}}
    headers, body = to_binary(event)
    assert handle.invoke(method="POST", headers=headers, data=body).json()["id"] == "c-1"
    refused = handle.invoke(json={"n": 1})  # a 400 is an answer: invoke returns it
    assert refused.status_code == 400 and "ce-id" in refused.text

    web = run_on_image("request")
    assert requests.get(web, params={"who": "ada"}, timeout=10).json() == {"hello": "ada"}
    gone = requests.get(web, params={"what": "gone"}, timeout=10)
    assert (gone.status_code, gone.text, gone.headers["X-Why"]) == (410, "gone", "moved")
    missing = requests.get(web, params={"what": "missing"}, timeout=10)
    assert missing.status_code == 404 and ERROR_HEADER not in missing.headers

    bg = run_on_image("background")
    legacy = {"data": {"n": 2}, "context": {"eventId": "b-1", "eventType": "t",
                                            "timestamp": "", "resource": "r"}}
    assert requests.post(bg, json=legacy, timeout=10).json() == {
        "event": {"n": 2}, "id": "b-1", "type": "t", "resource": "r"}
    headers, body = to_binary(event)
    assert requests.post(bg, headers=headers, data=body, timeout=10).json() == {
        "event": {"n": 1}, "id": "c-1", "type": "order.created", "resource": "/orders"}

    openfunction = run_on_image("ctx_data")
    assert requests.post(openfunction, json=[1], timeout=10).json() == {
        "name": "shape-ctx-data", "data": [1]}
    context = run_on_image("context")
    assert requests.get(context, params={"q": "x"}, timeout=10).text == "shape-context:x"
    assert requests.get(run_on_image("noarg"), timeout=10).text == "no arguments"
