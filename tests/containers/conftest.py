"""Every container test runs against each engine: Podman's Docker-compatible service and Docker
Engine itself, both as ``.ci/setup-containers`` starts them.

The engine is a module-scoped parameter, so pytest runs a module's tests on one engine, then on
the other; each test sees ``DOCKER_HOST`` pointing at its engine (set after the root conftest
clears the developer's ``DOCKER_*``), so the product picks the engine exactly as it does for a
user. An engine that does not answer skips its tests with the reason, and fails them under
``CI``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from ofnotebook import images
from ofnotebook.errors import BackendUnavailableError

ENGINES = {
    "podman": "unix:///run/podman/podman.sock",
    "docker": "unix:///run/ofnotebook-docker/docker.sock",
}


@pytest.fixture(scope="module", params=sorted(ENGINES, reverse=True))
def engine_name(request: pytest.FixtureRequest) -> str:
    """``podman`` or ``docker`` (the test id says which)."""
    return str(request.param)


@pytest.fixture(scope="module")
def client(engine_name: str) -> Iterator[Any]:
    """The docker SDK client of this engine, exactly as the product makes it."""
    url = ENGINES[engine_name]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", url)
        try:
            made = images.engine()
        except BackendUnavailableError as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI must provide {engine_name} at {url} (.ci/setup-containers): "
                            f"{exc}")
            pytest.skip(f"{engine_name} does not answer at {url} (run .ci/setup-containers "
                        f"as root): {exc}")
    yield made
    # the next engine's tests must not see this one's cached clients or base Pythons
    images._engines.pop(url, None)
    images._base_pythons.clear()
    made.close()


@pytest.fixture(autouse=True)
def docker_host(request: pytest.FixtureRequest, clean_env: None,
                monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the product at the test's engine (after ``clean_env`` removed DOCKER_*)."""
    if "engine_name" in request.fixturenames:
        monkeypatch.setenv("DOCKER_HOST", ENGINES[request.getfixturevalue("engine_name")])
