"""The HTTP state API stores values as daprd does, and unknown components fail as daprd's do.

daprd decodes a state ``value`` of the HTTP API into a Go ``any`` and the store marshals it
as JSON, a string included: Dapr's own quickstart (``POST /v1.0/state/statestore`` with
``[{"key": "name", "value": "Bruce Wayne"}]``) then reads ``"Bruce Wayne"`` as JSON over HTTP
and ``b'"Bruce Wayne"'`` over gRPC. The SDK's gRPC path keeps bytes as they are. Each value
type goes through both faces against one store of a real stand-in process."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
import requests

from ofnotebook.backends.standin import StandIn
from ofnotebook.context import component_name
from ofnotebook.sidecar.protocol import app_token
from tests.sidecar.support import EVENTS, OUT, SPEC, STORE

#: (value posted over HTTP, the bytes daprd stores: Go's json.Marshal of the decoded value)
VALUES: list[tuple[Any, bytes]] = [
    ("Bruce Wayne", b'"Bruce Wayne"'),
    ({"b": [1, 2.5], "a": {"z": None, "y": True}}, b'{"a":{"y":true,"z":null},"b":[1,2.5]}'),
    (1.0, b"1"),  # a float64 in Go: no ".0"
    (12345678901234567890, b"12345678901234567000"),
    (1e-7, b"1e-7"),
    (False, b"false"),
    (["x", 3], b'["x",3]'),
    ("<a & b>", b'"\\u003ca \\u0026 b\\u003e"'),  # Go escapes these for HTML
    ("caf\u00e9 \u2603", '"caf\u00e9 \u2603"'.encode()),
]


@pytest.fixture
def base(sdk_env: StandIn) -> str:
    return f"{sdk_env.base}/v1.0/state/{component_name(SPEC, STORE)}"


def test_the_dapr_quickstart_reads_its_string_back_as_json(sdk_env: StandIn, base: str) -> None:
    from dapr.clients import DaprClient

    assert requests.post(base, json=[{"key": "name", "value": "Bruce Wayne"}],
                         timeout=5).status_code == 204
    got = requests.get(f"{base}/name", timeout=5)
    assert got.status_code == 200 and got.headers["Content-Type"] == "application/json"
    assert got.json() == "Bruce Wayne" and got.headers["ETag"]
    with DaprClient() as client:
        assert client.get_state(component_name(SPEC, STORE), "name").data == b'"Bruce Wayne"'


def test_every_value_type_is_stored_as_daprd_stores_it(sdk_env: StandIn, base: str) -> None:
    from dapr.clients import DaprClient

    store = component_name(SPEC, STORE)
    keys = [f"v{i}" for i in range(len(VALUES))]
    assert requests.post(base, json=[{"key": k, "value": v} for k, (v, _) in zip(keys, VALUES)],
                         timeout=5).status_code == 204
    assert requests.post(f"{base}/transaction", timeout=5, json={"operations": [
        {"operation": "upsert", "request": {"key": "tx", "value": "in a transaction"}}]}
    ).status_code == 204
    with DaprClient() as client:
        assert [client.get_state(store, k).data for k in keys] == [b for _, b in VALUES]
        assert client.get_state(store, "tx").data == b'"in a transaction"'
        # the SDK's bytes go in and come out unchanged, JSON or not
        client.save_state(store, "raw-json", b'{"n": 1}')
        client.save_state(store, "raw-text", b"plain text")
        client.save_state(store, "raw-bin", b"\x00\xff\x10")
        assert [client.get_state(store, k).data for k in ("raw-json", "raw-text", "raw-bin")] \
            == [b'{"n": 1}', b"plain text", b"\x00\xff\x10"]
    for key, (value, stored) in zip(keys, VALUES):
        got = requests.get(f"{base}/{key}", timeout=5)
        assert (got.content, got.headers["Content-Type"]) == (stored, "application/json")
        assert got.json() == pytest.approx(value, rel=1e-15) if isinstance(value, (int, float)) \
            and not isinstance(value, bool) else got.json() == value  # ints: as float64
    # GET answers the stored bytes as they are, as daprd's withJSON does
    assert requests.get(f"{base}/raw-bin", timeout=5).content == b"\x00\xff\x10"
    bulk = requests.post(f"{base}/bulk", timeout=5, json={"keys": [
        keys[0], keys[1], "raw-json", "raw-text", "raw-bin", "missing"]})
    assert bulk.headers["Content-Type"] == "application/json"
    items = bulk.json()
    assert [i.get("data") for i in items] == [
        "Bruce Wayne", VALUES[1][0], {"n": 1}, "plain text",
        base64.b64encode(b"\x00\xff\x10").decode(), None]
    assert items[-1] == {"key": "missing"}  # daprd omits data and etag of a missing key
    assert all(i["etag"] for i in items[:-1])
    assert json.loads(bulk.content)[0]["key"] == keys[0]


def test_unknown_components_fail_as_daprd_names_them_and_list_what_is_there(
        sdk_env: StandIn) -> None:
    """A function's own token: the error lists its components and the kernel's named ones,
    and says how to declare the missing one."""
    from dapr.clients import DaprClient
    from dapr.clients.exceptions import DaprGrpcError

    token = app_token(sdk_env._app_key, "sdk-user")
    headers = {"dapr-api-token": token}
    v1 = f"{sdk_env.base}/v1.0"
    published = requests.post(f"{v1}/publish/kafka-receiver/t", json={}, headers=headers,
                              timeout=5)
    assert published.status_code == 404
    body = published.json()
    assert body["errorCode"] == "ERR_PUBSUB_NOT_FOUND"
    assert body["message"].startswith("pubsub kafka-receiver not found; it is not registered "
                                      "with the local stand-in ('sdk-user''s components: ")
    for c in (OUT, EVENTS, STORE):
        assert f"{component_name(SPEC, c)!r} ({c.type})" in body["message"]
    assert "the kernel's named components: none" in body["message"]
    assert "Declare it with --component kafka-receiver=URI" in body["message"]
    bulk = requests.post(f"{sdk_env.base}/v1.0-alpha1/publish/bulk/kafka-receiver/t",
                         json=[{"entryId": "1", "event": 1}], headers=headers, timeout=5)
    assert (bulk.status_code, bulk.json()["errorCode"]) == (404, "ERR_PUBSUB_NOT_FOUND")
    state = requests.get(f"{v1}/state/nostore/k", headers=headers, timeout=5)
    assert (state.status_code, state.json()["errorCode"]) == (400, "ERR_STATE_STORE_NOT_FOUND")
    assert state.json()["message"].startswith("state store nostore is not found; ")
    binding = requests.post(f"{v1}/bindings/kafka-receiver", json={"data": 1}, headers=headers,
                            timeout=5)
    assert (binding.status_code, binding.json()["errorCode"]) == (500,
                                                                  "ERR_INVOKE_OUTPUT_BINDING")
    with DaprClient() as client:
        with pytest.raises(DaprGrpcError) as info:
            client.save_state("nostore", "k", b"v")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "state store nostore is not found" in info.value.details()
