"""The runtime as a container runs it: ``python -m ofnotebook.runtime`` on a package, configured
by the controller's exact context variables, over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from ofnotebook.capture import capture
from ofnotebook.package import package
from ofnotebook.runtime import ERROR_HEADER, EXIT_BAD_PACKAGE, HEALTH_PATH
from ofnotebook.spec import FunctionSpec
from tests.helpers import free_port, make_function, wait_for
from tests.contexts import SYNC_OUT_V1, SYNC_OUT_V2

ROOT = Path(__file__).resolve().parents[2]


def build(source: str, namespace: dict[str, Any] | None = None, name: str = "f") -> Path:
    fn = make_function(source, namespace, name)
    return package(capture(fn), FunctionSpec(name="sync-out", entry=name)).path


def private_copy(source: str, tmp_path: Path) -> Path:
    """A package the test may tamper with, outside the shared cache."""
    return Path(shutil.copytree(build(source), tmp_path / "pkg"))


def start(pkg: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, "-m", "ofnotebook.runtime", "--package", str(pkg),
                             "--host", "127.0.0.1"], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=10)  # also closes the pipe


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"runtime exited: {proc.stdout.read() if proc.stdout else ''}")
        return requests.get(url + HEALTH_PATH, timeout=1).status_code == 200

    wait_for(ready, timeout, "runtime not ready", ignoring=(requests.ConnectionError,),
             interval=0.05)


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    procs: list[subprocess.Popen[str]] = []

    def _serve(source: str, namespace: dict[str, Any] | None = None, name: str = "f") -> str:
        port = free_port()
        pkg = build(source, namespace, name)
        # The controller's exact context, with only the port moved off 8080.
        env = {"FUNC_CONTEXT": SYNC_OUT_V1.replace('"8080"', f'"{port}"'),
               "FUNC_CONTEXT_V1BETA2": SYNC_OUT_V2.replace("8080", str(port))}
        proc = start(pkg, env)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        return url

    yield _serve
    for proc in procs:
        stop(proc)


def test_request_signature_all_paths_and_methods(serve: Callable[..., str]) -> None:
    url = serve("""
        def f(request):
            return {"method": request.method, "path": request.path,
                    "name": request.args.get("name"), "body": request.get_data(as_text=True)}
    """)
    assert requests.get(url + "/?name=ada").json() == {
        "method": "GET", "path": "/", "name": "ada", "body": ""}
    got = requests.put(url + "/a/b", data="xyz").json()
    assert (got["method"], got["path"], got["body"]) == ("PUT", "/a/b", "xyz")


def test_ctx_data_signature_decodes_the_body(serve: Callable[..., str]) -> None:
    url = serve("""
        def f(ctx, data):
            return {"name": ctx.name, "type": type(data).__name__, "data": data if not isinstance(data, bytes) else len(data)}
    """)
    assert requests.post(url, json={"a": 1}).json() == {"name": "sync-out", "type": "dict",
                                                         "data": {"a": 1}}
    assert requests.post(url, data="hello").json()["data"] == "hello"
    assert requests.post(url, data=b"\xff\xfe").json() == {"name": "sync-out", "type": "bytes",
                                                           "data": 2}
    assert requests.post(url).json()["type"] == "NoneType"


def test_openfunction_context_signature(serve: Callable[..., str]) -> None:
    url = serve("""
        def f(context):
            req = context.get_http_request()
            return f"{context.name}:{req.args['q']}:{','.join(context.outputs)}"
    """)
    assert requests.get(url, params={"q": "1"}).text == "sync-out:1:kafka-out"


@pytest.mark.parametrize("body, check", [
    ('"text"', lambda r: r.text == "text" and r.headers["content-type"].startswith("text/html")),
    ('b"\\x00\\x01"', lambda r: r.content == b"\x00\x01"),
    ('[1, 2]', lambda r: r.json() == [1, 2]),
    ('({"error": "no"}, 418, {"X-Extra": "yes"})',
     lambda r: r.status_code == 418 and r.json() == {"error": "no"} and r.headers["X-Extra"] == "yes"),
    ('("created", 201)', lambda r: r.status_code == 201 and r.text == "created"),
    ('None', lambda r: r.status_code == 204 and r.content == b""),
    ('Response("raw", status=202, mimetype="text/plain")',
     lambda r: r.status_code == 202 and r.text == "raw"),
    ('{"s": {3, 1, 2}}', lambda r: r.json() == {"s": [1, 2, 3]}),
])
def test_return_values(serve: Callable[..., str], body: str, check: Callable[[Any], bool]) -> None:
    from flask import Response

    url = serve(f"def f(request):\n    return {body}\n", {"__name__": "__main__",
                                                        "Response": Response})
    response = requests.get(url)
    assert check(response), (response.status_code, response.headers, response.content)


def test_async_def_is_awaited(serve: Callable[..., str]) -> None:
    url = serve("""
        import asyncio
        async def f(request):
            await asyncio.sleep(0)
            return "awaited"
    """)
    assert requests.get(url).text == "awaited"


def test_exception_gives_500_with_remote_traceback(serve: Callable[..., str]) -> None:
    url = serve("""
        def helper(x):
            raise KeyError(x)

        def f(request):
            return helper("missing-key")
    """)
    response = requests.get(url)
    assert response.status_code == 500 and response.headers[ERROR_HEADER] == "1"
    error = response.json()["error"]
    assert error["type"] == "KeyError" and "missing-key" in error["message"]
    assert 'raise KeyError(x)' in error["traceback"] and "in helper" in error["traceback"]
    assert "ofnotebook/runtime" not in error["traceback"]  # the runtime's frames are hidden
    # The process keeps serving after a failure.
    assert requests.get(url + HEALTH_PATH).json()["status"] == "ok"


def test_unserializable_return_value_is_explained(serve: Callable[..., str]) -> None:
    url = serve("def f(request):\n    return object()\n")
    response = requests.get(url)
    assert response.status_code == 500
    assert "cannot be sent as a response" in response.json()["error"]["message"]


def test_context_from_package_when_env_has_none(tmp_path: Path) -> None:
    pkg = private_copy("def f(request):\n    return 'from package context'\n", tmp_path)
    context = json.loads((pkg / "function" / "context.json").read_text())
    assert json.loads(context["FUNC_CONTEXT"])["port"] == "8080"
    port = free_port()
    (pkg / "function" / "context.json").write_text(json.dumps(
        {"FUNC_CONTEXT": context["FUNC_CONTEXT"].replace('"8080"', f'"{port}"')}))
    proc = start(pkg, {})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert requests.get(f"http://127.0.0.1:{port}/").text == "from package context"
    finally:
        stop(proc)


def _run_to_exit(pkg: Path) -> tuple[int, str]:
    proc = start(pkg, {"FUNC_CONTEXT": SYNC_OUT_V1.replace('"8080"', f'"{free_port()}"')})
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


def test_tampered_payload_is_refused(tmp_path: Path) -> None:
    pkg = private_copy("def f(request):\n    return 'x'\n", tmp_path)
    (pkg / "function" / "payload.pkl").write_bytes(b"tampered")
    code, out = _run_to_exit(pkg)
    assert code == EXIT_BAD_PACKAGE
    assert "does not match the manifest" in out and "deploy the function again" in out


@pytest.mark.parametrize("field, value, message", [
    ("python", "2.7.18", "pickled by Python 2.7.18"),
    ("cloudpickle", "0.0.1", "pin cloudpickle==0.0.1"),
])
def test_version_mismatch_is_refused(field: str, value: str, message: str,
                                     tmp_path: Path) -> None:
    pkg = private_copy("def f(request):\n    return 'x'\n", tmp_path)
    manifest_path = pkg / "function" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[field] = value
    manifest_path.write_text(json.dumps(manifest))
    code, out = _run_to_exit(pkg)
    assert code == EXIT_BAD_PACKAGE and message in out


def test_missing_context_is_refused(tmp_path: Path) -> None:
    pkg = private_copy("def f(request):\n    return 'x'\n", tmp_path)
    (pkg / "function" / "context.json").unlink()
    proc = start(pkg, {})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_BAD_PACKAGE and "neither FUNC_CONTEXT" in out


def test_the_standby_imports_no_cloudevents() -> None:
    """A standby process imports the HTTP server ahead of any package; cloudevents is only for
    the event shapes, imported when such a function is loaded (the standby stays fast)."""
    code = ("import sys, ofnotebook.runtime.http, ofnotebook.runtime.shapes\n"
            "assert 'cloudevents' not in sys.modules, 'cloudevents imported'\n")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- refusals: what no retry can cure is refused on the first delivery (issue 12 item 3) -----

ASYNC_CONTEXT = {
    "name": "refuser", "version": "v1", "runtime": "Async",
    "inputs": {"orders": {"componentName": "serving-x-bindings-orders-a1",
                          "componentType": "bindings.kafka"},
               "news": {"componentName": "serving-x-pubsub-news-b2",
                        "componentType": "pubsub.redis", "topic": "news"}},
    "outputs": {"alerts": {"componentName": "serving-x-bindings-alerts-c3",
                           "componentType": "bindings.kafka", "operation": "create"},
                "store": {"componentName": "serving-x-state-store-d4",
                          "componentType": "state.redis"}}}


@pytest.fixture
def callback() -> Iterator[Callable[[str], Any]]:
    """Serve an async function on the AppCallback API; gives its real Dapr gRPC stub."""
    import grpc
    from dapr.proto.runtime.v1 import appcallback_pb2_grpc

    procs: list[subprocess.Popen[str]] = []
    channels: list[Any] = []

    def _serve(source: str) -> Any:
        port = free_port()
        proc = start(build(source), {"FUNC_CONTEXT": json.dumps({**ASYNC_CONTEXT,
                                                                  "port": str(port)})})
        procs.append(proc)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        health = appcallback_pb2_grpc.AppCallbackHealthCheckStub(channel)
        from google.protobuf import empty_pb2

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"runtime exited: {proc.stdout.read() if proc.stdout else ''}")
            health.HealthCheck(empty_pb2.Empty(), timeout=1)
            return True

        wait_for(ready, 20, "async runtime not ready", ignoring=(grpc.RpcError,), interval=0.05)
        return appcallback_pb2_grpc.AppCallbackStub(channel)

    yield _serve
    for channel in channels:
        channel.close()
    for proc in procs:
        stop(proc)


def _deliver_both(stub: Any) -> tuple[Any, Any]:
    """OnBindingEvent and OnTopicEvent once each; the RpcError each raised."""
    import grpc
    from dapr.proto.runtime.v1.appcallback_pb2 import BindingEventRequest, TopicEventRequest

    errors = []
    for call, request in (
            (stub.OnBindingEvent, BindingEventRequest(name="serving-x-bindings-orders-a1",
                                                      data=b'{"n": 1}')),
            (stub.OnTopicEvent, TopicEventRequest(
                id="e1", source="test", type="com.dapr.event.sent", spec_version="1.0",
                data_content_type="application/json", data=b'{"n": 1}', topic="news",
                pubsub_name="serving-x-pubsub-news-b2"))):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        errors.append(info.value)
    return errors[0], errors[1]


def test_an_undeclared_output_is_refused_with_failed_precondition(
        callback: Callable[[str], Any]) -> None:
    """``ctx.send`` to an output the function did not declare raises before any network call
    (no sidecar runs here: a network call would fail otherwise), and the event's RPC ends in
    FAILED_PRECONDITION naming the output, the declared ones and the fix, for bindings and
    topics alike: the stand-in dead-letters that at once with the reason."""
    import grpc

    stub = callback("def f(ctx, data):\n    ctx.send('nope', data)\n")
    for error in _deliver_both(stub):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = error.details()
        assert "output 'nope' is not declared for this function" in details
        assert "(declared outputs: 'alerts', 'store')" in details
        assert "declare it with --output nope=URI" in details
        assert "refused, not retried" in details


def test_a_chained_refusal_is_refused_and_other_failures_are_retried(
        callback: Callable[[str], Any]) -> None:
    """A non-retryable SendError the function chained (``raise ... from``) is still refused; a state
    store it did not declare too; an ordinary exception keeps its retry (an UNKNOWN gRPC error
    for a binding, RETRY for a topic)."""
    import grpc
    from dapr.proto.runtime.v1.appcallback_pb2 import TopicEventRequest, TopicEventResponse

    chained = callback("""
        def f(ctx, data):
            try:
                ctx.get_state('cache', 'k')
            except Exception as exc:
                raise RuntimeError('no cache') from exc
    """)
    for error in _deliver_both(chained):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "state store 'cache' is not declared for this function (declared state " \
               "stores: none); declare it with --state cache=URI" in error.details()
    wrong_kind = callback("def f(ctx, data):\n    ctx.send('store', data)\n")
    for error in _deliver_both(wrong_kind):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "output 'store' has type 'state.redis', which is neither a binding nor a " \
               "pub/sub component" in error.details()
    flaky = callback("def f(ctx, data):\n    raise ValueError('try again')\n")
    with pytest.raises(grpc.RpcError) as info:
        from dapr.proto.runtime.v1.appcallback_pb2 import BindingEventRequest

        flaky.OnBindingEvent(BindingEventRequest(name="serving-x-bindings-orders-a1", data=b"1"),
                             timeout=10)
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    reply = flaky.OnTopicEvent(TopicEventRequest(
        id="e2", source="test", type="t", spec_version="1.0", data_content_type="text/plain",
        data=b"x", topic="news", pubsub_name="serving-x-pubsub-news-b2"), timeout=10)
    assert reply.status == TopicEventResponse.RETRY


def test_a_sync_send_to_an_undeclared_output_answers_500_naming_it(
        serve: Callable[..., str]) -> None:
    url = serve("def f(ctx, data):\n    ctx.send('nope', data)\n")
    response = requests.post(url, json={"a": 1})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "SendError"
    assert error["message"] == ("output 'nope' is not declared for this function (declared "
                                "outputs: 'kafka-out'); declare it with --output nope=URI, or "
                                "send to a declared output")


@pytest.mark.parametrize("scheme", ["memory", "cron"])
def test_an_undeclared_output_is_dead_lettered_at_once_with_its_reason(
        local_backend: Any, scheme: str) -> None:
    """End to end on the local target (pub/sub and binding inputs): one attempt, no retry,
    the reason in the dead letter instead of "the function raised; see its logs"."""
    import ofnotebook
    from tests.helpers import uid

    fn = make_function("def f(ctx, data):\n    ctx.send('nope', data)\n")
    source = f"memory://refused-{uid()}" if scheme == "memory" else "cron://@every 1h"
    handle = ofnotebook.deploy(fn, f"refuses-{scheme}", target=local_backend,
                               inputs={"in": source}, outputs={"audit": f"memory://a-{uid()}"})
    handle.publish("in", {"n": 1})
    wait_for(lambda: handle.dead_letters, 20, lambda: f"no dead letter; stats: {handle.stats}")
    letter = handle.dead_letters[0]
    assert letter["attempts"] == 1 and handle.stats["retries"] == 0
    assert letter["error"] == ("event from input 'in' refused, not retried: output 'nope' is not "
                               "declared for this function (declared outputs: 'audit'); "
                               "declare it with --output nope=URI, or send to a declared output")
