"""Shared fixtures and the test tiers.

Fixtures: a clean environment per test, a private cache, a process-leak check on every
``local_backend``, the IPython shell, and (imported here so every test module sees them) the
Kubernetes API server double's and the Kafka broker's.

Tiers, by marker (registered in pyproject.toml): ``container``, ``browser``, ``broker`` and
``typecheck`` say what a test needs; ``unit`` is given here to every test that needs none of
that, uses no fixture that starts a process, a server or a shell, and is not listed in
``STARTS_PROCESSES``. ``pytest -m unit`` runs that tier alone in seconds, for a quick loop
while editing; a unit test that starts a process anyway fails, so the tier stays what it says.
"""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess
from typing import Any, Iterator

import pytest

from tests.helpers import runtime_children
from tests.k8s_double.fixtures import cluster, crd, kubeconfig  # noqa: F401  (fixtures)
from tests.sidecar.kafka_broker import kafka_broker  # noqa: F401  (fixture)

#: Fixtures that start a process, a server, an engine's container or a shell.
NOT_UNIT_FIXTURES = frozenset({
    "ip", "local_backend", "kafka_broker", "standin", "sdk_env", "cluster", "kubeconfig",
    "client", "engine_name", "registry_binary", "lab",
})
#: Test modules (path prefixes) that need a running broker.
BROKER_MODULES = ("tests/sidecar/test_driver_", "tests/backends/test_local_brokers.py")
#: Tests (node id prefixes: a module, a class or a test) that start processes without a
#: fixture that says so: the runtime in a subprocess, a fresh interpreter, the registry.
STARTS_PROCESSES = (
    "tests/runtime/test_runtime.py",
    "tests/test_examples.py",
    "tests/test_api_surface.py::test_the_testing_helpers_are_reachable_as_the_readme_writes_them",
    "tests/backends/test_local.py",
    "tests/test_magics.py::test_load_ext_imports_no_heavy_packages",
    "tests/test_gitops.py::test_the_yaml_target_pushes_the_image_without_an_engine",
    "tests/sidecar/test_standin.py",
    "tests/sidecar/test_drivers_builtin.py::TestCronConformance::test_bad_metadata_names_the_key",
    "tests/test_requirements.py::TestIndex",
    # an in-cluster build checks its pins with the kernel's pip (the index check) first
    "tests/test_gitops.py::test_the_magic_writes_an_in_cluster_build",
)
#: Markers that keep a test out of the unit tier.
NEEDS = ("container", "browser", "broker", "typecheck")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give ``broker`` to the broker modules' tests and ``unit`` to the tests that need
    nothing outside the test process."""
    for item in items:
        path = item.nodeid.split("::")[0]
        if path.startswith(BROKER_MODULES) or "kafka_broker" in getattr(item, "fixturenames",
                                                                         ()):
            item.add_marker(pytest.mark.broker)
        if (isinstance(item, pytest.Function) and not item.nodeid.startswith(STARTS_PROCESSES)
                and not any(item.get_closest_marker(name) for name in NEEDS)
                and NOT_UNIT_FIXTURES.isdisjoint(item.fixturenames)):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def unit_starts_no_process(request: pytest.FixtureRequest,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``unit`` test that starts a process fails, naming the test to move out of the tier."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{request.node.nodeid} is in the unit tier but starts a "
                             f"process; give it a fixture of NOT_UNIT_FIXTURES or list its "
                             f"node id in STARTS_PROCESSES (tests/conftest.py)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(_posixsubprocess, "fork_exec", refuse)  # multiprocessing's spawn
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI a skip is a failure: a missing broker, browser or engine must not pass
    silently. (Elsewhere the skip reason tells what to start or install.)"""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No OFNOTEBOOK_/DOCKER_/KUBECONFIG setting of the developer leaks into a test."""
    for key in list(os.environ):
        if key.startswith(("OFNOTEBOOK_", "DOCKER_", "DAPR_")) or key == "KUBECONFIG":
            monkeypatch.delenv(key)
    monkeypatch.setenv("OFNOTEBOOK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def local_backend() -> Iterator[object]:
    """A private LocalBackend; after the test, it is closed and no process may remain."""
    from ofnotebook.backends.local import LocalBackend

    backend = LocalBackend(start_timeout=20)
    try:
        yield backend
    finally:
        spawned = [p.pid for p in list(backend._processes)]
        backend.close()
        alive = {p.pid for p in runtime_children()}
        leftovers = sorted(set(spawned) & alive)
        assert not leftovers, f"runtime processes left behind: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def stop_kernel_wide_backends() -> Iterator[None]:
    """Backends made by ``get_backend("local")`` live for the session; close them at the end."""
    yield
    from ofnotebook.backends import active_backends

    for backend in active_backends():
        backend.close()


@pytest.fixture
def ip() -> Iterator[Any]:
    """A fresh shell with history off; the extension loaded; every deployment stopped after."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.reset()
    shell.run_line_magic("load_ext", "ofnotebook")
    try:
        yield shell
    finally:  # each by name: stop --all would also stop the warm parts the next test uses
        import ofnotebook

        for name in {h.name for h in ofnotebook.deployments()}:
            ofnotebook.stop(name)
        shell.run_line_magic("unload_ext", "ofnotebook")
