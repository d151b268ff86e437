"""Fixtures of the sidecar tests: drivers closed after the test, the Kafka broker, a stand-in
process for the SDK tests."""

from __future__ import annotations

from typing import Iterator

import pytest
import requests

from ofnotebook.backends.standin import StandIn
from tests.sidecar.kafka_broker import kafka_broker
from ofnotebook.sidecar.drivers import Driver
from tests.sidecar.support import SPEC, close_all

__all__ = ["drivers", "kafka_broker", "sdk_env", "standin"]  # kafka_broker: registered here for tests/sidecar

@pytest.fixture
def drivers() -> Iterator[list[Driver]]:
    """Drivers made by a test; each is closed after it, within the close budget."""
    made: list[Driver] = []
    yield made
    close_all(made)


@pytest.fixture
def standin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[StandIn]:
    """A stand-in process with ``SPEC`` registered (app ``sdk-user``); the parameter, if any, is
    its DAPR_API_TOKEN, or a dict of the environment it starts with."""
    param = getattr(request, "param", None)
    env = param if isinstance(param, dict) else {"DAPR_API_TOKEN": param} if param else {}
    with monkeypatch.context() as scoped:
        for key, value in env.items():
            scoped.setenv(key, value)
        proc = StandIn()
    # The tests' plain ``requests`` calls speak as the kernel (the stand-in always requires a
    # token); tests/sidecar/test_auth.py drops the header to speak as a stranger.
    monkeypatch.setattr(requests.sessions, "default_headers", lambda: requests.structures.
                        CaseInsensitiveDict({**requests.utils.default_headers(),
                                             "dapr-api-token": proc.token}))
    proc.register("sdk-user", 0, SPEC, timeout=5)
    yield proc
    proc.close()
    assert proc.proc.wait(5) is not None


@pytest.fixture
def sdk_env(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """The environment the Dapr SDK reads, pointing at ``standin``."""
    for key, value in standin.env().items():
        monkeypatch.setenv(key, value)
    return standin
