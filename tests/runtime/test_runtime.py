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
