"""The stand-in as an unmodified Dapr SDK sees it: a real stand-in process, ``DaprClient``."""

from __future__ import annotations

import os
from typing import Any

import grpc
import pytest
import requests

from ofnotebook.backends.standin import StandIn, components_payload
from ofnotebook.context import component_name
from ofnotebook.errors import DeployError
from ofnotebook.spec import ComponentSpec, FunctionSpec
from tests.sidecar.support import EVENTS, OUT, SPEC, STORE

def _events(standin: StandIn, kind: str) -> list[dict[str, Any]]:
    body = requests.get(f"{standin.base}/ofnotebook/events", params={"after": 0},
                        headers={"dapr-api-token": standin.token or ""}, timeout=5).json()
    return [e for e in body["events"] if e["kind"] == kind or not kind]


def test_unmodified_dapr_client(sdk_env: StandIn) -> None:
    from dapr.clients import DaprClient

    out_name = component_name(SPEC, OUT)
    with DaprClient() as client:
        client.invoke_binding(out_name, "create", b'{"n": 1}', {"k": "v"})
        client.publish_event(component_name(SPEC, EVENTS), "orders", '{"id": 7}',
                             data_content_type="application/json")
        store = component_name(SPEC, STORE)
        client.save_state(store, "key1", "value1")
        assert client.get_state(store, "key1").data == b"value1"
        client.delete_state(store, "key1")
        assert client.get_state(store, "key1").data == b""
        metadata = client.get_metadata()
        assert {c.name for c in metadata.registered_components} == {
            c["componentName"] for c in components_payload(SPEC)}
        with pytest.raises(grpc.RpcError) as info:
            client.invoke_binding("not-registered", "create", b"x")
        assert info.value.code() == grpc.StatusCode.INTERNAL  # daprd's ERR_INVOKE_OUTPUT_BINDING
    from ofnotebook.sidecar.protocol import EVENT_KINDS

    assert {e["kind"] for e in _events(sdk_env, "")} <= set(EVENT_KINDS)
    outs = _events(sdk_env, "out")
    assert [(e["name"], e["data"]) for e in outs] == [("out", {"n": 1}), ("events", {"id": 7})]
    assert outs[0]["metadata"] == {"k": "v"} and outs[1]["topic"] == "orders"


def test_http_api(standin: StandIn) -> None:
    base = standin.base
    assert requests.get(f"{base}/v1.0/healthz/outbound", timeout=5).status_code == 204
    out_name = component_name(SPEC, OUT)
    response = requests.post(f"{base}/v1.0/bindings/{out_name}", timeout=5,
                             json={"operation": "create", "data": {"x": 1}})
    assert response.status_code in (200, 204)
    store = component_name(SPEC, STORE)
    assert requests.post(f"{base}/v1.0/state/{store}", json=[{"key": "a", "value": {"v": 2}}],
                         timeout=5).status_code == 204
    got = requests.get(f"{base}/v1.0/state/{store}/a", timeout=5)
    assert got.json() == {"v": 2} and got.headers["ETag"]
    assert requests.delete(f"{base}/v1.0/state/{store}/a", timeout=5).status_code == 204
    assert requests.get(f"{base}/v1.0/state/{store}/a", timeout=5).status_code == 204
    assert requests.post(f"{base}/v1.0/publish/{component_name(SPEC, EVENTS)}/orders",
                         data="hello", headers={"Content-Type": "text/plain"},
                         timeout=5).status_code == 204
    names = {c["name"] for c in requests.get(f"{base}/v1.0/metadata", timeout=5).json()[
        "components"]}
    assert out_name in names


@pytest.mark.parametrize("standin", ["s3cret"], indirect=True)
def test_api_token_is_required(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    from dapr.clients import DaprClient

    for key, value in standin.env().items():
        monkeypatch.setenv(key, value)
    base = standin.base
    assert requests.get(f"{base}/v1.0/healthz/outbound", timeout=5).status_code == 204
    assert requests.get(f"{base}/v1.0/metadata", headers={"dapr-api-token": None},
                        timeout=5).status_code == 401
    assert requests.get(f"{base}/v1.0/metadata", headers={"dapr-api-token": "s3cret"},
                        timeout=5).status_code == 200
    out_name = component_name(SPEC, OUT)
    with DaprClient() as client:  # DAPR_API_TOKEN is in the environment
        client.invoke_binding(out_name, "create", b"with token")
    monkeypatch.setenv("DAPR_API_TOKEN", "wrong")
    with DaprClient() as client, pytest.raises(grpc.RpcError) as info:
        client.invoke_binding(out_name, "create", b"without")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unsupported_component_type_names_the_supported_ones(standin: StandIn) -> None:
    spec = FunctionSpec(name="exotic", outputs=(
        ComponentSpec(name="q", type="bindings.azure.storagequeues", operation="create"),))
    with pytest.raises(DeployError) as info:
        standin.register("exotic", 0, spec, timeout=5)
    message = str(info.value)
    assert "cannot run on the local target" in message and "bindings.kafka" in message
    assert "exotic" not in standin.stats()["apps"]


def test_standin_stops_with_its_kernel(tmp_path: Any) -> None:
    import subprocess
    import sys
    import time

    import psutil

    code = ("import sys, time\nsys.path.insert(0, %r)\n"
            "from ofnotebook.backends.standin import get_standin\n"
            "print(get_standin().proc.pid, flush=True)\ntime.sleep(60)\n"
            % os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    kernel = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert kernel.stdout is not None
    pid = int(kernel.stdout.readline())
    assert psutil.pid_exists(pid)
    kernel.kill()
    kernel.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie":
        assert time.monotonic() < deadline, "the stand-in outlived its kernel"
        time.sleep(0.05)


def test_the_kernel_speaks_the_protocol_the_standin_names() -> None:
    """The component payload the kernel builds has exactly ``protocol.COMPONENT_KEYS``."""
    from ofnotebook.sidecar import protocol
    from ofnotebook.sidecar.apps import Endpoint

    payload = components_payload(SPEC)
    assert payload and all(sorted(c) == sorted(protocol.COMPONENT_KEYS) for c in payload)
    assert {c["role"] for c in payload} <= set(protocol.ROLES)
    endpoints = [Endpoint.from_payload(c) for c in payload]
    assert [(e.role, e.name, e.component.type) for e in endpoints] == [
        ("output", "out", "bindings.in-memory"), ("output", "events", "pubsub.in-memory"),
        ("state", "store", "state.in-memory")]


# -- a stand-in that dies, or does not start (issue 12 items 3 and 6) --------------------------

def _sidecars() -> set[int]:
    """The stand-in processes of this test process that are alive."""
    import psutil

    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "ofnotebook.sidecar" in " ".join(child.cmdline()) and child.status() != "zombie":
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("setting, value, says", [
    # No interpreter imports gRPC and binds two ports in 10 ms: the real start, too slow.
    ("OFNOTEBOOK_START_TIMEOUT", "0.01",
     ["did not announce its ports within 0.01 s", "was stopped", "OFNOTEBOOK_START_TIMEOUT="]),
    # Read by the stand-in itself, validated as the kernel validates it.
    ("OFNOTEBOOK_DELIVERY_ATTEMPTS", "0",
     ["exited with code 2", "OFNOTEBOOK_DELIVERY_ATTEMPTS='0'"]),
])
def test_a_standin_that_does_not_start_is_one_error_and_leaves_nothing(
        setting: str, value: str, says: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    before = _sidecars()
    monkeypatch.setenv(setting, value)
    with pytest.raises(DeployError) as info:
        StandIn()
    assert all(part in str(info.value) for part in says), str(info.value)
    assert _sidecars() == before


def test_a_killed_standin_comes_back_on_its_ports_with_its_apps(sdk_env: StandIn) -> None:
    standin = sdk_env
    import signal

    from dapr.clients import DaprClient

    ports, old = (standin.http_port, standin.grpc_port), standin.proc
    os.kill(old.pid, signal.SIGKILL)
    old.wait(5)
    # A call made meanwhile waits for the restart instead of failing with urllib3's text.
    assert "sdk-user" in standin.stats()["apps"]
    assert standin.proc.pid != old.pid and standin.restarts == 1 and standin.alive
    assert (standin.http_port, standin.grpc_port) == ports
    assert any("exited with code -9" in line for line in standin.logs)
    # The same token, the same app key: an SDK started before the death still gets in, as
    # the app it was (its own token names it).
    sdk = standin.env("sdk-user")
    assert requests.get(f"{standin.base}/v1.0/metadata", timeout=5,
                        headers={"dapr-api-token": sdk["DAPR_API_TOKEN"]}).json()["id"] \
        == "sdk-user"
    with DaprClient() as client:  # the environment functions got before the death
        client.invoke_binding(component_name(SPEC, OUT), "create", b'{"after": 1}')
    assert [e["data"] for e in _events(standin, "out")] == [{"after": 1}]
    assert standin.proc.pid in _sidecars() and old.pid not in _sidecars()


def test_a_standin_that_cannot_come_back_says_why(standin: StandIn,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import socket

    from ofnotebook.backends import standin as module

    monkeypatch.setattr(module, "_instance", standin)  # as the kernel's own
    tracker = standin.tracker("sdk-user")
    old = standin.proc
    others = _sidecars() - {old.pid}
    os.kill(old.pid, signal.SIGKILL)
    old.wait(5)
    # Its HTTP port goes to someone else before the new process (still importing) binds it.
    taken = socket.create_server(("127.0.0.1", standin.http_port))
    try:
        with pytest.raises(DeployError) as info:
            standin.stats()
    finally:
        taken.close()
    message = str(info.value)
    assert "could not be started again" in message and f"HTTP {standin.http_port}" in message
    assert "cannot listen on HTTP port" in message and "%function stop --all" in message
    assert not standin.alive and _sidecars() == others
    # The next deploy starts a new stand-in; the names' counts carry over to it.
    fresh = module.get_standin()
    try:
        assert fresh is not standin and fresh.tracker("sdk-user") is tracker
        assert tracker.standin_restarts == 1
    finally:
        fresh.close()
