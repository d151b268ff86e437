"""Service invocation and the Dapr API seen from functions on the local target: real runtime
processes, the real stand-in process, the unmodified Dapr SDK inside the functions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests

import ofnotebook
from ofnotebook.backends.standin import current_standin, get_standin, stop_standin
from tests.helpers import make_function, uid

GREETER = """
def greet(request):
    return {"body": request.get_data(as_text=True), "method": request.method,
            "path": request.path, "args": dict(request.args),
            "caller": request.headers.get("dapr-caller-app-id", "")}
"""

CALLER = """
import json, warnings

def call(request):
    from dapr.clients import DaprClient

    target = request.args["target"]
    with DaprClient() as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # invoke_method over gRPC
        reply = client.invoke_method(target, "hello/there", data=b"hi", http_verb="PUT",
                                     http_querystring=(("q", "1"),))
        me = client.get_metadata().application_id
    return {"reply": json.loads(reply.data), "me": me}
"""


def test_functions_call_each_other_by_app_id(local_backend: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync function without Dapr components, deployed while no stand-in runs, is listed
    once a Dapr function starts it; the Dapr function's own SDK calls reach its HTTP server
    (gRPC ``InvokeService``), and ``GetMetadata`` answers the caller's own app id."""
    from dapr.clients import DaprClient

    stop_standin()  # the kernel's stand-in starts again with the first Dapr function below
    greeter_name = f"greeter-{uid()}"
    greeter = ofnotebook.deploy(make_function(GREETER, name="greet"), greeter_name,
                                target=local_backend)
    assert current_standin() is None  # a function without components starts no stand-in
    caller = ofnotebook.deploy(make_function(CALLER, name="call"), f"caller-{uid()}",
                               target=local_backend, outputs={"log": f"memory://log-{uid()}"})
    standin = get_standin()
    assert greeter_name in standin.stats()["apps"]

    answer = caller.invoke(params={"target": greeter_name}).json()
    assert answer == {"me": caller.name, "reply": {
        "body": "hi", "method": "PUT", "path": "/hello/there", "args": {"q": "1"},
        "caller": caller.name}}

    # the Dapr HTTP API reaches it too, with the verb, path, query and body of the call
    reply = requests.post(f"{standin.base}/v1.0/invoke/{greeter_name}/method/x?y=2",
                          data="body", headers={"Content-Type": "text/plain",
                                                "dapr-api-token": standin.token}, timeout=10)
    assert reply.status_code == 200 and reply.json() == {
        "body": "body", "method": "POST", "path": "/x", "args": {"y": "2"}, "caller": ""}

    # the SDK's own HTTP invocation (DAPR_API_METHOD_INVOCATION_PROTOCOL=http, its default)
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", standin.base)
    monkeypatch.setenv("DAPR_GRPC_ENDPOINT", f"127.0.0.1:{standin.grpc_port}")
    monkeypatch.setenv("DAPR_API_METHOD_INVOCATION_PROTOCOL", "http")
    monkeypatch.setenv("DAPR_API_TOKEN", standin.token)  # the kernel's, required by default
    with DaprClient() as client:
        via_http = client.invoke_method(greeter_name, "from/sdk", data="plain",
                                        content_type="text/plain", http_verb="POST")
    assert via_http.status_code == 200 and via_http.json()["path"] == "/from/sdk"
    # that call sets an event loop of its own and never closes it: once dropped, its
    # ResourceWarning fails whichever test is running (seen on 3.13)
    asyncio.get_event_loop_policy().get_event_loop().close()
    asyncio.set_event_loop(None)

    # a plain function deployed while the stand-in runs is listed at once, and leaves it
    late = ofnotebook.deploy(make_function(GREETER, name="greet"), f"late-{uid()}",
                             target=local_backend)
    assert late.name in standin.stats()["apps"]
    late.stop()
    assert late.name not in standin.stats()["apps"]
    unknown = requests.get(f"{standin.base}/v1.0/invoke/{late.name}/method/x", timeout=10,
                           headers={"dapr-api-token": standin.token})
    assert unknown.status_code == 500 and greeter_name in unknown.json()["message"]
    greeter.stop()
    caller.stop()


def test_unknown_metadata_is_kept_and_warned_in_the_function_log(local_backend: Any) -> None:
    handle = ofnotebook.deploy(
        make_function("def f(request):\n    return 'ok'\n"), f"warned-{uid()}",
        target=local_backend, outputs={"out": f"memory://w-{uid()}?maxLenAprox=5"})
    assert handle.invoke().text == "ok"
    logs = handle.logs()
    assert "ofnotebook: warning:" in logs and "'maxLenAprox'" in logs
    assert "kept, and ignored" in logs
    handle.stop()
