"""The local Dapr API is authenticated by default (issue 12, item 8): 127.0.0.1 is shared by
every user of the machine, so a caller without the kernel's token (random per kernel when the
user sets no ``DAPR_API_TOKEN``) or a function's own is refused on the gRPC Dapr API, the HTTP
Dapr API and the control API, and a function's AppCallback port refuses calls without its
``APP_API_TOKEN``, while the kernel's own paths go on working. Real stand-in, real runtime."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import requests
from dapr.proto.runtime.v1 import appcallback_pb2_grpc, dapr_pb2_grpc, metadata_pb2
from google.protobuf import empty_pb2

import ofnotebook
from ofnotebook.backends.standin import StandIn, current_standin
from ofnotebook.sidecar.protocol import TOKEN_HEADER
from tests.helpers import make_function, uid

STRANGER = {TOKEN_HEADER: None}  # drops the kernel's header the fixture's requests carry


def _stranger_grpc(port: int, token: str | None = None) -> grpc.StatusCode:
    """The status of a GetMetadata call on the gRPC Dapr API, with ``token`` or none."""
    metadata = [(TOKEN_HEADER, token)] if token else None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            dapr_pb2_grpc.DaprStub(channel).GetMetadata(metadata_pb2.GetMetadataRequest(),
                                                        metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_kernel_without_a_token_still_gets_one(standin: StandIn) -> None:
    """No DAPR_API_TOKEN in the kernel: a random one, given to the process but not in ps."""
    assert len(standin.token) >= 32 and standin.env()["DAPR_API_TOKEN"] == standin.token
    with open(f"/proc/{standin.proc.pid}/cmdline", "rb") as cmdline:
        assert standin.token.encode() not in cmdline.read()


def test_strangers_are_refused_on_every_face(standin: StandIn) -> None:
    base = standin.base
    # gRPC Dapr API: no token, a wrong one, a function's callback token are all refused
    assert _stranger_grpc(standin.grpc_port) == grpc.StatusCode.UNAUTHENTICATED
    assert _stranger_grpc(standin.grpc_port, "guess") == grpc.StatusCode.UNAUTHENTICATED
    callback = standin.env("sdk-user")["APP_API_TOKEN"]
    assert _stranger_grpc(standin.grpc_port, callback) == grpc.StatusCode.UNAUTHENTICATED
    assert _stranger_grpc(standin.grpc_port, standin.token) == grpc.StatusCode.OK
    # HTTP Dapr API (its health probes stay open, as daprd's)
    assert requests.get(f"{base}/v1.0/healthz", headers=STRANGER, timeout=5).status_code == 204
    assert requests.get(f"{base}/v1.0/metadata", headers=STRANGER,
                        timeout=5).status_code == 401
    assert requests.post(f"{base}/v1.0/state/store", json=[{"key": "k", "value": 1}],
                         headers=STRANGER, timeout=5).status_code == 401
    # control API: the event log (every payload), test events, registering and re-pointing
    events = requests.get(f"{base}/ofnotebook/events", headers=STRANGER, timeout=5)
    assert events.status_code == 401 and "events" not in events.text
    assert requests.post(f"{base}/ofnotebook/apps/sdk-user/inputs/in", data=b"x",
                         headers=STRANGER, timeout=5).status_code == 401
    hijack = {"port": 1, "timeout": 5, "appProtocol": "grpc", "components": []}
    for app_id in ("sdk-user", "intruder"):
        assert requests.put(f"{base}/ofnotebook/apps/{app_id}", json=hijack,
                            headers=STRANGER, timeout=5).status_code == 401
    assert requests.get(f"{base}/ofnotebook/stats", headers=STRANGER,
                        timeout=5).status_code == 401
    assert standin.stats()["apps"] == ["sdk-user"]  # the kernel's own path; nothing changed


ECHO = """
def relay(ctx, data):
    ctx.send("out", data)
"""


def test_a_functions_callback_port_refuses_strangers(local_backend: Any) -> None:
    """An async function on the local target: a stranger's AppCallback call is
    UNAUTHENTICATED and its control calls change nothing; the kernel's publish, outputs and
    stats and the notebook's own ``dapr_env()`` client still work."""
    topic = f"auth-{uid()}"
    handle = ofnotebook.deploy(make_function(ECHO, name="relay"), f"relay-{uid()}",
                               target=local_backend, inputs={"in": f"memory://{topic}"},
                               outputs={"out": f"memory://{topic}-out"})
    standin = current_standin()
    assert standin is not None
    port = int(handle.url.rsplit(":", 1)[1])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = appcallback_pb2_grpc.AppCallbackStub(channel)
        for token in (None, standin.token, standin.env(handle.name)["DAPR_API_TOKEN"]):
            with pytest.raises(grpc.RpcError) as info:
                stub.ListInputBindings(empty_pb2.Empty(), timeout=5,
                                       metadata=[(TOKEN_HEADER, token)] if token else None)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # a stranger re-pointing the function's callback port or injecting is refused ...
    hijack = {"port": 1, "timeout": 5, "appProtocol": "grpc", "components": []}
    session = requests.Session()
    session.trust_env = False
    assert session.put(f"{standin.base}/ofnotebook/apps/{handle.name}", json=hijack,
                       timeout=5).status_code == 401
    assert session.post(f"{standin.base}/ofnotebook/apps/{handle.name}/inputs/in",
                        data=b"{}", timeout=5).status_code == 401
    # ... and the kernel's paths still deliver, through the stand-in's authenticated calls
    handle.publish("in", {"n": 1})
    assert handle.wait_for_outputs(1, timeout=10)[0].data == {"n": 1}
    assert handle.stats["delivered"] == 1
    from dapr.clients import DaprClient

    env = ofnotebook.dapr_env()
    assert env["DAPR_API_TOKEN"] not in (standin.token, "") and "APP_API_TOKEN" not in env
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with DaprClient() as client:
            assert client.get_metadata().application_id == "notebook"
