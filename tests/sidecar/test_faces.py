"""The stand-in's two faces agree: the same verbs through the unmodified ``DaprClient`` (gRPC)
and through the Dapr HTTP API record the same events and map the same errors (``core.py``)."""

from __future__ import annotations

import json
from typing import Any, Callable

import grpc
import pytest
import requests

from ofnotebook.backends.standin import StandIn
from ofnotebook.context import component_name
from ofnotebook.sidecar.core import ERROR_STATUS
from ofnotebook.sidecar.errors import NOT_FOUND
from tests.sidecar.support import EVENTS, OUT, SPEC, STORE

#: errorCode -> (gRPC code, HTTP status): the generic ``ERR_<CODE>`` and daprd's own.
STATUS = {f"ERR_{code}": (code, status) for _cls, code, status in ERROR_STATUS}
STATUS.update({error_code: (code, status) for _m, code, status, error_code in NOT_FOUND.values()})
IGNORED = {"seq", "time"}


class Grpc:
    """The Dapr Python SDK, unmodified."""

    def __init__(self) -> None:
        from dapr.clients import DaprClient

        self.client = DaprClient()

    def invoke(self, name: str, data: bytes) -> None:
        self.client.invoke_binding(name, "create", data, {"k": "v"})

    def publish(self, pubsub: str, topic: str, data: bytes) -> None:
        self.client.publish_event(pubsub, topic, data, data_content_type="application/json")

    def save(self, store: str, key: str, value: bytes, etag: str | None = None) -> None:
        self.client.save_state(store, key, value, etag=etag)

    def get(self, store: str, key: str) -> tuple[bytes, str]:
        state = self.client.get_state(store, key)
        return state.data, state.etag

    def bulk(self, store: str, keys: list[str]) -> list[tuple[str, bytes, str]]:
        return [(i.key, i.data, i.etag) for i in self.client.get_bulk_state(store, keys).items]

    def delete(self, store: str, key: str) -> None:
        self.client.delete_state(store, key)

    def error(self, call: Callable[[], Any]) -> tuple[str, str]:
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value.code().name, info.value.details()

    def close(self) -> None:
        self.client.close()


class Http:
    """The Dapr HTTP API, as daprd serves it."""

    def __init__(self, base: str) -> None:
        self.base = base + "/v1.0"

    def _ok(self, response: requests.Response) -> requests.Response:
        if response.status_code >= 400:
            body = response.json()
            raise HttpError(response.status_code, body["message"], body["errorCode"])
        return response

    def invoke(self, name: str, data: bytes) -> None:
        self._ok(requests.post(f"{self.base}/bindings/{name}", timeout=5, json={
            "operation": "create", "data": data.decode(), "metadata": {"k": "v"}}))

    def publish(self, pubsub: str, topic: str, data: bytes) -> None:
        self._ok(requests.post(f"{self.base}/publish/{pubsub}/{topic}", data=data, timeout=5,
                               headers={"Content-Type": "application/json"}))

    def save(self, store: str, key: str, value: bytes, etag: str | None = None) -> None:
        item: dict[str, Any] = {"key": key, "value": json.loads(value)}  # daprd stores its JSON
        if etag:
            item["etag"] = etag
        self._ok(requests.post(f"{self.base}/state/{store}", json=[item], timeout=5))

    def get(self, store: str, key: str) -> tuple[bytes, str]:
        response = self._ok(requests.get(f"{self.base}/state/{store}/{key}", timeout=5))
        return response.content, response.headers.get("ETag", "")

    def bulk(self, store: str, keys: list[str]) -> list[tuple[str, bytes, str]]:
        items = self._ok(requests.post(f"{self.base}/state/{store}/bulk", json={"keys": keys},
                                       timeout=5)).json()
        return [(i["key"], json.dumps(i["data"], separators=(",", ":")).encode()
                 if "data" in i else b"", i.get("etag", "")) for i in items]

    def delete(self, store: str, key: str) -> None:
        self._ok(requests.delete(f"{self.base}/state/{store}/{key}", timeout=5))

    def error(self, call: Callable[[], Any]) -> tuple[str, str]:
        with pytest.raises(HttpError) as info:
            call()
        code, status = STATUS[info.value.error_code]
        assert status == info.value.status, (info.value.error_code, info.value.status)
        return code, info.value.message

    def close(self) -> None:
        pass


class HttpError(Exception):
    def __init__(self, status: int, message: str, error_code: str) -> None:
        super().__init__(status, message)
        self.status, self.message, self.error_code = status, message, error_code


def _scenario(face: Grpc | Http) -> list[tuple[str, str]]:
    """Every verb once, and each mapped error once; returns the errors (code, message)."""
    out, events, store = (component_name(SPEC, c) for c in (OUT, EVENTS, STORE))
    face.invoke(out, b"hello")
    face.publish(events, "orders", b'{"id": 7}')
    face.save(store, "k", b'"v1"')  # JSON values: what both faces store alike
    data, etag = face.get(store, "k")
    assert data == b'"v1"' and etag
    face.save(store, "k", b'{"v":2}', etag=etag)
    assert face.bulk(store, ["k", "missing"]) == [("k", b'{"v":2}', str(int(etag) + 1)),
                                                  ("missing", b"", "")]
    errors = [
        face.error(lambda: face.invoke("not-registered", b"x")),  # daprd's: INTERNAL / 500
        face.error(lambda: face.save(store, "k", b"3", etag=etag)),  # stale: ABORTED / 409
        face.error(lambda: face.bulk(events, ["k"])),  # not a state store: INTERNAL / 400
        face.error(lambda: face.invoke(events, b"x")),  # not a binding: INTERNAL / 400
    ]
    face.delete(store, "k")
    assert face.get(store, "k")[0] == b""
    return errors


def _events(standin: StandIn, after: int) -> list[dict[str, Any]]:
    body = requests.get(f"{standin.base}/ofnotebook/events", params={"after": after},
                        timeout=5).json()
    return [{k: v for k, v in e.items() if k not in IGNORED} for e in body["events"]]


def _last(standin: StandIn) -> int:
    return int(requests.get(f"{standin.base}/ofnotebook/events", timeout=5).json()["last"])


def test_grpc_and_http_record_the_same_events_and_map_the_same_errors(
        sdk_env: StandIn) -> None:
    recorded, errors = [], []
    for face in (Grpc(), Http(sdk_env.base)):
        mark = _last(sdk_env)
        try:
            errors.append(_scenario(face))
        finally:
            face.close()
        recorded.append(_events(sdk_env, mark))
    grpc_events, http_events = recorded
    assert [e["kind"] for e in grpc_events] == ["out", "out", "state", "state"]
    assert grpc_events == http_events
    assert errors[0] == errors[1]
    assert [code for code, _ in errors[0]] == ["INTERNAL", "ABORTED", "INTERNAL", "INTERNAL"]
    assert "not-registered" in errors[0][0][1] and "etag" in errors[0][1][1]
    assert errors[0][0][1].startswith("error invoking output binding not-registered: couldn't "
                                      "find output binding not-registered; it is not registered")
