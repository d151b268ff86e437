"""Shared fixtures: a clean environment per test, a private cache, and a process-leak check."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from tests.helpers import runtime_children


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
    finally:
        shell.run_line_magic("function", "stop --all")
        shell.run_line_magic("unload_ext", "ofnotebook")
