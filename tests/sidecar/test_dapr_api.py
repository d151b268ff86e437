"""The Dapr API calls of issue 11 through the unmodified SDK (``DaprClient``, gRPC) and the
Dapr HTTP API, against a real stand-in process: state transactions, bulk publish, the caller's
own app id in ``GetMetadata``, the local secret stores, unknown app ids in service invocation,
and what is not served (UNIMPLEMENTED / 501 naming the call and what to use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from ofnotebook.backends.standin import StandIn
from ofnotebook.context import component_name
from ofnotebook.errors import DeployError
from ofnotebook.spec import ComponentSpec, FunctionSpec
from tests.sidecar.support import EVENTS, SPEC, STORE

SECRET_ENV = {"OFNB_SECRET_DB": "s3cret", "DAPR_LEAK": "never given out"}


def _events(standin: StandIn, kind: str, after: int = 0) -> list[dict[str, Any]]:
    body = requests.get(f"{standin.base}/ofnotebook/events", params={"after": after},
                        timeout=5).json()
    return [e for e in body["events"] if e["kind"] == kind]


def _last(standin: StandIn) -> int:
    return int(requests.get(f"{standin.base}/ofnotebook/events", timeout=5).json()["last"])


def test_state_transactions_are_all_or_nothing_on_both_faces(sdk_env: StandIn) -> None:
    from dapr.clients import DaprClient
    from dapr.clients.exceptions import DaprGrpcError
    from dapr.clients.grpc._request import TransactionalStateOperation as Op
    from dapr.clients.grpc._request import TransactionOperationType

    store = component_name(SPEC, STORE)
    base = f"{sdk_env.base}/v1.0/state/{store}"
    with DaprClient() as client:
        client.save_state(store, "a", "1")
        client.save_state(store, "b", "1")
        etag_a = client.get_state(store, "a").etag
        mark = _last(sdk_env)
        client.execute_state_transaction(store, [
            Op(key="a", data="2", etag=etag_a), Op(key="c", data="3"),
            Op(key="b", operation_type=TransactionOperationType.delete)])
        assert [client.get_state(store, k).data for k in "abc"] == [b"2", b"", b"3"]
        assert [(e["key"], e["data"]) for e in _events(sdk_env, "state", mark)] == [
            ("a", 2), ("c", 3)]

        # a stale etag fails the whole transaction: nothing of it is written
        with pytest.raises(DaprGrpcError) as info:
            client.execute_state_transaction(store, [
                Op(key="c", data="written?"), Op(key="a", data="x", etag=etag_a)])
        assert info.value.code() == grpc.StatusCode.INTERNAL  # daprd's ERR_STATE_TRANSACTION
        assert "error while executing state transaction" in info.value.details()
        assert "etag mismatch" in info.value.details() and "'sdk-user||a'" in info.value.details()
        assert [client.get_state(store, k).data for k in "ac"] == [b"2", b"3"]

    response = requests.post(f"{base}/transaction", timeout=5, json={"operations": [
        {"operation": "upsert", "request": {"key": "d", "value": {"n": 4}}},
        {"operation": "upsert", "request": {"key": "a", "value": "y", "etag": etag_a}}]})
    assert response.status_code == 500 and response.json()["errorCode"] == "ERR_STATE_TRANSACTION"
    assert requests.get(f"{base}/d", timeout=5).status_code == 204  # not written
    fresh = requests.get(f"{base}/a", timeout=5).headers["ETag"]
    assert requests.post(f"{base}/transaction", timeout=5, json={"operations": [
        {"operation": "upsert", "request": {"key": "d", "value": {"n": 4}}},
        {"operation": "delete", "request": {"key": "a", "etag": fresh}}]}).status_code == 204
    assert requests.get(f"{base}/d", timeout=5).json() == {"n": 4}
    assert requests.get(f"{base}/a", timeout=5).status_code == 204
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

    # DeleteBulkState, which the SDK does not wrap, through the generated stub
    with grpc.insecure_channel(f"127.0.0.1:{sdk_env.grpc_port}") as channel:
        dapr_pb2_grpc.DaprStub(channel).DeleteBulkState(state_pb2.DeleteBulkStateRequest(
            store_name=store, states=[common_pb2.StateItem(key=k) for k in "cd"]),
            metadata=[("dapr-api-token", sdk_env.token)])
    assert [requests.get(f"{base}/{k}", timeout=5).status_code for k in "cd"] == [204, 204]
    bad = requests.post(f"{base}/transaction", timeout=5, json={"operations": [
        {"operation": "merge", "request": {"key": "d", "value": 1}}]})
    assert bad.status_code == 400 and "operation type merge not supported" in bad.json()["message"]


def test_bulk_publish_on_both_faces(sdk_env: StandIn) -> None:
    from dapr.clients import BulkPublishEntry, DaprClient
    from dapr.clients.exceptions import DaprGrpcError

    pubsub = component_name(SPEC, EVENTS)
    mark = _last(sdk_env)
    with DaprClient() as client:
        response = client.publish_events(pubsub, "orders", [
            '{"n": 1}', BulkPublishEntry(event='{"n": 2}', metadata={"partitionKey": "k"})],
            data_content_type="application/json")
        assert response.failed_entries == []
        with pytest.raises(DaprGrpcError) as info:
            client.publish_events("not-registered", "orders", ["x"])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # daprd's
        assert info.value.details().startswith("pubsub not-registered not found; it is not "
                                               "registered with the local stand-in")
        assert f"'{pubsub}' (pubsub.in-memory)" in info.value.details()
    url = f"{sdk_env.base}/v1.0-alpha1/publish/bulk/{pubsub}/orders"
    assert requests.post(url, timeout=5, json=[
        {"entryId": "e1", "event": {"n": 3}, "contentType": "application/json"},
        {"entryId": "e2", "event": "four", "contentType": "text/plain"}]).status_code == 204
    outs = _events(sdk_env, "out", mark)
    assert [(e["topic"], e["data"]) for e in outs] == [
        ("orders", {"n": 1}), ("orders", {"n": 2}), ("orders", {"n": 3}), ("orders", "four")]
    twice = requests.post(url, timeout=5, json=[{"entryId": "e", "event": 1},
                                                {"entryId": "e", "event": 2}])
    assert twice.status_code == 400 and "entryId is duplicated" in twice.json()["message"]


@pytest.mark.parametrize("standin", ["s3cret"], indirect=True)
def test_get_metadata_answers_the_callers_own_app_id(standin: StandIn,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A function's own token (``StandIn.env(app_id)``) names it, and is accepted where the
    kernel's token is required; the kernel's token is no app."""
    from dapr.clients import DaprClient

    for key, value in standin.env("sdk-user").items():
        monkeypatch.setenv(key, value)
    with DaprClient() as client:
        metadata = client.get_metadata()
    assert metadata.application_id == "sdk-user"
    assert {c.name for c in metadata.registered_components} >= {component_name(SPEC, STORE)}
    own = requests.get(f"{standin.base}/v1.0/metadata", timeout=5,
                       headers={"dapr-api-token": standin.env("sdk-user")["DAPR_API_TOKEN"]})
    assert own.status_code == 200 and own.json()["id"] == "sdk-user"
    monkeypatch.setenv("DAPR_API_TOKEN", "s3cret")
    with DaprClient() as client:
        assert client.get_metadata().application_id == "ofnotebook-standin"
    forged = standin.env("sdk-user")["DAPR_API_TOKEN"][:-4] + "0000"
    assert requests.get(f"{standin.base}/v1.0/metadata", headers={"dapr-api-token": forged},
                        timeout=5).status_code == 401


@pytest.mark.parametrize("standin", [SECRET_ENV], indirect=True)
def test_local_secret_stores(standin: StandIn, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from dapr.clients import DaprClient

    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db": {"password": "pw", "hosts": ["a", "b"]}, "token": "t",
                                   "port": 5432}))
    stores = [("env", "secretstores.local.env", {"prefix": "OFNB_SECRET_"}),
              ("daprenv", "secretstores.local.env", {"prefix": "DAPR_"}),
              ("file", "secretstores.local.file", {"secretsFile": str(secrets)}),
              ("multi", "secretstores.local.file", {"secretsFile": str(secrets),
                                                    "multiValued": "true"})]
    spec = FunctionSpec(name="vault", outputs=tuple(
        ComponentSpec(name=name, type=type_, metadata=tuple(md.items()), component=name)
        for name, type_, md in stores))
    standin.register("vault", 0, spec, timeout=5)
    for key, value in standin.env().items():
        monkeypatch.setenv(key, value)
    with DaprClient() as client:
        assert client.get_secret("env", "DB").secret == {"DB": "s3cret"}
        assert client.get_bulk_secret("env").secrets == {"DB": {"DB": "s3cret"}}
        assert client.get_secret("daprenv", "LEAK").secret == {"LEAK": ""}  # as daprd
        assert client.get_bulk_secret("daprenv").secrets == {}
        assert client.get_secret("file", "db:password").secret == {"db:password": "pw"}
        assert client.get_secret("file", "db:hosts:1").secret == {"db:hosts:1": "b"}
        assert client.get_secret("file", "port").secret == {"port": "%!s(float64=5432)"}
        assert client.get_secret("multi", "db").secret == {"password": "pw", "hosts:0": "a",
                                                           "hosts:1": "b"}
        assert set(client.get_bulk_secret("file").secrets) == {
            "db:password", "db:hosts:0", "db:hosts:1", "token", "port"}
        with pytest.raises(grpc.RpcError) as missing:  # get_secret does not wrap
            client.get_secret("file", "nope")
        assert missing.value.code() == grpc.StatusCode.INTERNAL
        assert "secret nope not found" in missing.value.details()
        with pytest.raises(grpc.RpcError) as unknown:
            client.get_secret("vaulty", "x")
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "failed finding secret store with key vaulty" in unknown.value.details()
        assert "daprenv, env, file, multi" in unknown.value.details()
    base = f"{standin.base}/v1.0/secrets"
    assert requests.get(f"{base}/file/token", timeout=5).json() == {"token": "t"}
    assert requests.get(f"{base}/env/bulk", timeout=5).json() == {"DB": {"DB": "s3cret"}}
    assert requests.get(f"{base}/vaulty/x", timeout=5).status_code == 401  # daprd's status
    assert requests.get(f"{base}/file/nope", timeout=5).json()["errorCode"] == "ERR_SECRET_GET"
    missing_file = FunctionSpec(name="vault2", outputs=(ComponentSpec(
        name="f", type="secretstores.local.file", component="gone",
        metadata=(("secretsFile", str(tmp_path / "gone.json")),)),))
    with pytest.raises(DeployError, match=r"output 'f' \(secretstores.local.file, Dapr "
                                          r"component 'gone'\) failed to start: cannot read"):
        standin.register("vault2", 0, missing_file, timeout=5)


def test_unknown_app_and_what_is_not_served(sdk_env: StandIn) -> None:
    from dapr.clients import DaprClient

    with DaprClient() as client:
        with pytest.raises(grpc.RpcError) as unknown, \
                pytest.warns(DeprecationWarning, match="invoke_method with protocol gRPC"):
            client.invoke_method("nobody", "hello", b"x", http_verb="POST")
        assert unknown.value.code() == grpc.StatusCode.INTERNAL
        assert unknown.value.details() == (
            "fail to invoke, id: nobody, err: couldn't find service: nobody (the apps "
            "registered with the local stand-in: sdk-user)")
        with pytest.raises(grpc.RpcError) as lock, pytest.warns(UserWarning, match="Alpha"):
            client.try_lock("locks", "resource", "me", 10)
        assert lock.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "TryLockAlpha1 (distributed locks) is not served" in lock.value.details()
        assert "execute_state_transaction" in lock.value.details()
    response = requests.post(f"{sdk_env.base}/v1.0/invoke/nobody/method/hello", timeout=5)
    assert response.status_code == 500 and response.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    actor = requests.put(f"{sdk_env.base}/v1.0/actors/Cart/1/method/add", timeout=5)
    assert actor.status_code == 501
    assert "actors" in actor.json()["message"] and "kubernetes target" in actor.json()["message"]
    assert requests.get(f"{sdk_env.base}/v1.0/nothing", timeout=5).status_code == 501
