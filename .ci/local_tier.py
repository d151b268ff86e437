"""pytest plugin for .ci/pythons: the tests a kernel's own Python decides, on every Python.

What runs on the kernel's interpreter is the capture, the package, the magics, the local target's
runtime subprocesses and its Dapr stand-in with the broker clients: those tests are kept (the unit
tier, ``local_backend``, ``standin``, ``ip``, the brokers and tansu, the notebooks under nbval).
Dropped are the tests whose subject runs on another Python or needs a part that .ci/pythons does
not install: an engine's containers and the images built for them (the base image is 3.11), the
Kubernetes API double, the registry binary and the pushes into it, Chromium, mypy (which checks
the 3.10 API on any Python, from ``python_version`` in pyproject.toml). The rule is by marker and
fixture, not by file, so a new local test runs on every Python without a change here.

Use: ``PYTHONPATH=.ci python -m pytest -p local_tier``.
"""

from __future__ import annotations

import pytest

#: Markers of the tests that need an engine, a browser or the type checker.
OTHER_MARKERS = ("container", "browser", "typecheck")
#: Fixtures that start an engine client, the cluster double, the registry or JupyterLab, or
#: point the yaml target's pushes at the registry of .ci/setup-containers.
OTHER_FIXTURES = frozenset({"client", "engine_name", "cluster", "kubeconfig", "registry_binary",
                            "lab", "no_engine"})


def needs_more(item: pytest.Item) -> bool:
    """True for a test that needs more than this Python, its packages and the brokers."""
    return (any(item.get_closest_marker(name) for name in OTHER_MARKERS)
            or not OTHER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip: CI fails on skips) every test that needs more."""
    dropped = [item for item in items if needs_more(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not needs_more(item)]
