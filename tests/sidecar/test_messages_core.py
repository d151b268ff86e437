"""A state call naming a store the app did not declare answers one message: the unknown store,
the stores the app declared (or none), and the fix, over gRPC, HTTP and the kernel's own read
(``handle.get_state``) alike (issue 12 item 3). Against a real stand-in process."""

from __future__ import annotations

import grpc
import pytest
import requests

from ofnotebook.backends.standin import StandIn
from ofnotebook.context import component_name
from ofnotebook.errors import DeployError
from ofnotebook.sidecar.protocol import app_token
from ofnotebook.spec import FunctionSpec
from tests.sidecar.support import SPEC, STORE

FIX = ("Declare it with --state nostore=URI (or --component nostore=URI for a store apps "
       "share), or call a declared store by the name listed")


def test_an_unknown_store_lists_the_callers_stores_and_the_fix(sdk_env: StandIn) -> None:
    from dapr.clients import DaprClient
    from dapr.clients.exceptions import DaprGrpcError

    headers = {"dapr-api-token": app_token(sdk_env._app_key, "sdk-user")}
    listed = (f"the state stores 'sdk-user' declared: {component_name(SPEC, STORE)!r} "
              f"(--state store, state.in-memory)")
    expected = f"state store nostore is not found; {listed}. {FIX}"
    answer = requests.get(f"{sdk_env.base}/v1.0/state/nostore/k", headers=headers, timeout=5)
    assert (answer.status_code, answer.json()["errorCode"]) == (400, "ERR_STATE_STORE_NOT_FOUND")
    assert answer.json()["message"] == expected
    saved = requests.post(f"{sdk_env.base}/v1.0/state/nostore", json=[{"key": "k", "value": 1}],
                          headers=headers, timeout=5)
    assert saved.json()["message"] == expected
    with DaprClient() as client:  # sdk_env's token is the kernel's: every store is listed
        for call in (lambda: client.get_state("nostore", "k"),
                     lambda: client.save_state("nostore", "k", b"v"),
                     lambda: client.delete_state("nostore", "k")):
            with pytest.raises(DaprGrpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == (
                "state store nostore is not found; the state stores registered with the local "
                f"stand-in: {component_name(SPEC, STORE)!r} (--state store, state.in-memory). "
                f"{FIX}")


def test_an_app_without_stores_is_told_none_are_declared(sdk_env: StandIn) -> None:
    sdk_env.register("stateless", 0, FunctionSpec(name="stateless"), timeout=5)
    headers = {"dapr-api-token": app_token(sdk_env._app_key, "stateless")}
    answer = requests.get(f"{sdk_env.base}/v1.0/state/nostore/k", headers=headers, timeout=5)
    assert answer.json()["message"] == ("state store nostore is not found; the state stores "
                                        f"'stateless' declared: none declared. {FIX}")


def test_the_kernels_read_names_the_apps_stores(sdk_env: StandIn) -> None:
    """``handle.get_state("nostore", key)`` reads through the control API."""
    with pytest.raises(DeployError) as info:
        sdk_env.read_state("sdk-user", "nostore", "k")
    assert ("state store 'nostore' is not declared by 'sdk-user' (its state stores: 'store'); "
            "declare it with --state nostore=URI and re-run the cell, or name one of its "
            "stores: handle.get_state(key, store=NAME)") in str(info.value)
    sdk_env.register("stateless", 0, FunctionSpec(name="stateless"), timeout=5)
    with pytest.raises(DeployError) as none:
        sdk_env.read_state("stateless", "nostore", "k")
    assert "(its state stores: none declared); declare it with --state nostore=URI" in str(
        none.value)
