"""Capture: what travels by value, what is pinned, and what is refused with a clear message."""

from __future__ import annotations

import importlib
import importlib.metadata
import socket
import sqlite3
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Iterator

import cloudpickle
import pytest

from ofnotebook.capture import capture, signature_kind
from ofnotebook.errors import CaptureError, UnpicklableGlobalError
from tests.helpers import make_function


def test_closure_across_cells_travels_by_value() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    make_function("SCALE = 3\ndef helper(x):\n    return x * SCALE\n", ns, "helper")
    fn = make_function("def f(x):\n    return helper(x) + 1\n", ns)
    cap = capture(fn)
    names = {g.name: g for g in cap.globals}
    assert names["helper"].by == "value"
    assert names["SCALE"].owner == "helper"
    ns["SCALE"] = 100  # a later change in the notebook must not change the captured payload
    assert cloudpickle.loads(cap.payload)(2) == 7


def test_classes_and_closures() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    make_function(textwrap.dedent("""
        class Scorer:
            def __init__(self, w):
                self.w = w
            def score(self, x):
                return self.w * x
    """), ns, "Scorer")
    fn = make_function(textwrap.dedent("""
        def make():
            offset = 5
            def f(x):
                return Scorer(2).score(x) + offset
            return f
        f = make()
    """), ns)
    cap = capture(fn)
    assert cloudpickle.loads(cap.payload)(10) == 25
    assert any(g.name == "Scorer" and g.by == "value" for g in cap.globals)


@pytest.fixture
def local_module(tmp_path: Path) -> Iterator[str]:
    name = "ofn_test_helpers_mod"
    (tmp_path / f"{name}.py").write_text("def double(x):\n    return 2 * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module(name)
        yield name
    finally:
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_local_module_travels_by_value(local_module: str) -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(f"import {local_module} as helpers", ns)
    fn = make_function("def f(x):\n    return helpers.double(x)\n", ns)
    cap = capture(fn)
    assert cap.local_modules == (local_module,)
    assert all(local_module not in e.modules for e in cap.lock)
    # Load where the module cannot be imported: the payload must carry the code.
    del sys.modules[local_module]
    sys.path[:] = [p for p in sys.path if not Path(p, f"{local_module}.py").exists()]
    assert cloudpickle.loads(cap.payload)(21) == 42
    # Registration by value is undone after the capture.
    assert local_module not in str(cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES)


def test_lock_pins_exactly_the_distributions_reached() -> None:
    import yaml  # PyYAML, installed with the dev extra

    ns: dict[str, Any] = {"__name__": "__main__", "yaml": yaml}
    exec("import json, os", ns)
    fn = make_function("def f(x):\n    return yaml.safe_dump(json.loads(x)) + os.sep\n", ns)
    cap = capture(fn)
    dists = {e.distribution.lower(): e for e in cap.lock}
    assert dists["pyyaml"].version == importlib.metadata.version("PyYAML")
    assert dists["pyyaml"].modules == ("yaml",)
    assert "cloudpickle" in dists and "flask" in dists  # what the runtime itself needs
    assert set(dists) == {"pyyaml", "cloudpickle", "flask", "waitress"}  # no stdlib, nothing unused
    assert f"PyYAML=={yaml.__version__}" in cap.requirements
    assert "lock PyYAML" in cap.report()


def test_by_reference_class_from_installed_distribution_is_locked() -> None:
    from flask import Response

    ns: dict[str, Any] = {"__name__": "__main__", "Response": Response}
    fn = make_function("def f(r):\n    return Response('x')\n", ns)
    cap = capture(fn)
    flask_entry = next(e for e in cap.lock if e.distribution.lower() == "flask")
    assert "flask" in flask_entry.modules


def test_extra_requirements() -> None:
    fn = make_function("def f(r):\n    return 1\n")
    cap = capture(fn, requirements=["pyyaml", "somepkg>=1,<2"])
    assert any(r.lower().startswith("pyyaml==") for r in cap.requirements)
    assert "somepkg>=1,<2" in cap.requirements
    with pytest.raises(CaptureError, match="not installed in this kernel"):
        capture(fn, requirements=["surely-not-installed-dist"])


@pytest.mark.parametrize("factory, type_fragment", [
    (threading.Lock, "lock"),
    (lambda: socket.socket(), "socket"),
    (lambda: (i for i in range(3)), "generator"),
    (lambda: open(__file__), "TextIOWrapper"),
    (lambda: sqlite3.connect(":memory:"), "Connection"),
])
def test_unpicklable_global_is_named_with_a_fix(factory: Any, type_fragment: str) -> None:
    value = factory()
    try:
        ns: dict[str, Any] = {"__name__": "__main__", "resource": value}
        fn = make_function("def f(r):\n    return resource\n", ns)
        with pytest.raises(UnpicklableGlobalError) as info:
            capture(fn)
        assert info.value.global_name == "resource"
        assert type_fragment in info.value.type_name
        message = str(info.value)
        assert "'resource'" in message and "Fix:" in message
        assert "inside the function" in message or "convert" in message or "list" in message
    finally:
        close = getattr(value, "close", None)
        if close:
            close()


def test_size_warning_and_limit() -> None:
    ns: dict[str, Any] = {"__name__": "__main__", "blob": b"x" * (3 * 1024 * 1024)}
    fn = make_function("def f(r):\n    return len(blob)\n", ns)
    cap = capture(fn, warn_global_mb=1, max_global_mb=10)
    assert any("'blob'" in w for w in cap.warnings)
    assert next(g for g in cap.globals if g.name == "blob").size > 3 * 1024 * 1024
    with pytest.raises(CaptureError, match="over the limit") as info:
        capture(fn, max_global_mb=1)
    assert "blob" in str(info.value) and "OFNOTEBOOK_MAX_GLOBAL_MB" in str(info.value)


def test_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    ns: dict[str, Any] = {"__name__": "__main__", "blob": b"x" * (2 * 1024 * 1024)}
    fn = make_function("def f(r):\n    return len(blob)\n", ns)
    monkeypatch.setenv("OFNOTEBOOK_MAX_GLOBAL_MB", "1")
    with pytest.raises(CaptureError, match="over the limit"):
        capture(fn)


def test_payload_is_stable_for_an_unchanged_cell() -> None:
    source = "LIMIT = 4\ndef f(r):\n    return [i for i in range(LIMIT)]\n"
    first = capture(make_function(source))
    second = capture(make_function(source))
    assert first.payload_sha256 == second.payload_sha256
    edited = capture(make_function(source.replace("LIMIT)", "LIMIT + 1)")))
    assert edited.payload_sha256 != first.payload_sha256


def test_versions_recorded() -> None:
    cap = capture(make_function("def f(r):\n    return 1\n"))
    assert cap.python_version == ".".join(map(str, sys.version_info[:3]))
    assert cap.cloudpickle_version == cloudpickle.__version__


def test_sources_kept_for_tracebacks() -> None:
    cap = capture(make_function("def f(r):\n    return 1 / 0\n"))
    assert "return 1 / 0" in cap.sources["f"]


@pytest.mark.parametrize("source, kind", [
    ("def f(request): pass", "request"),
    ("def f(context): pass", "context"),
    ("def f(ctx): pass", "context"),
    ("def f(ctx, data): pass", "ctx_data"),
    ("def f(context, order): pass", "ctx_data"),
    ("def f(a, b): pass", "ctx_data"),  # OpenFunction's order when the names say nothing
    ("def f(event, context): pass", "background"),
    ("def f(data, context): pass", "background"),
    ("def f(message, ctx): pass", "background"),
    ("def f(cloud_event): pass", "cloudevent"),
    ("def f(event): pass", "cloudevent"),
    ("def f(e: 'CloudEvent'): pass", "cloudevent"),
    ("def f(order): pass", "request"),
    ("def f(): pass", "noarg"),
    ("def f(request, verbose=False): pass", "request"),
])
def test_signature_kinds(source: str, kind: str) -> None:
    assert signature_kind(make_function(source)) == kind


def test_too_many_arguments() -> None:
    with pytest.raises(CaptureError, match="takes 3 required arguments") as info:
        capture(make_function("def f(a, b, c): pass"))
    assert "f(event, context)" in str(info.value) and "--signature" in str(info.value)


FF_HTTP = "import functions_framework\n@functions_framework.http\ndef {name}(request):\n" \
          "    return 'x'\n"


def test_functions_framework_decorators_are_read_and_left_behind() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    fn = make_function("import functions_framework\n@functions_framework.cloud_event\n"
                       "def hello(payload):\n    return payload['id']\n", ns, "hello")
    cap = capture(fn)
    assert cap.signature == "cloudevent"  # the decorator says so, whatever the name
    assert cap.report().startswith("captured hello() [cloudevent]")
    inner = cloudpickle.loads(cap.payload)
    assert inner({"id": "e"}) == "e" and not hasattr(inner, "__wrapped__")  # no wrapper
    dists = {e.distribution.lower(): e.version for e in cap.lock}
    assert "functions-framework" not in dists and "functions_framework" not in dists
    assert dists["cloudevents"] == importlib.metadata.version("cloudevents")  # pinned
    assert signature_kind(make_function(FF_HTTP.format(name="web"), name="web")) == "request"


def test_the_registry_is_trusted_only_for_the_decorators_own_wrapper() -> None:
    make_function(FF_HTTP.format(name="reused"), name="reused")  # REGISTRY_MAP["reused"]
    plain = make_function("def reused(cloud_event):\n    return 1\n", name="reused")
    assert signature_kind(plain) == "cloudevent"


def test_an_http_function_cannot_take_events() -> None:
    fn = make_function(FF_HTTP.format(name="web"), name="web")
    with pytest.raises(CaptureError, match="HTTP function .*asynchronous"):
        capture(fn, runtime="async")
    with pytest.raises(CaptureError, match="takes an HTTP request"):
        capture(make_function("def f(request):\n    return 1\n"), runtime="async")
    # the data of an event, under any other name, is fine
    assert capture(make_function("def f(order):\n    return 1\n"),
                   runtime="async").signature == "request"


def test_signature_override_must_fit_the_parameters() -> None:
    fn = make_function("def f(a, b):\n    return a\n")
    assert capture(fn, signature="background").signature == "background"
    with pytest.raises(CaptureError, match="--signature cloudevent calls f\\(cloud_event\\)"):
        capture(fn, signature="cloudevent")
    with pytest.raises(CaptureError, match="Unknown signature 'grpc'"):
        capture(fn, signature="grpc")


@pytest.mark.parametrize("source, has_cloudevents", [
    ("def f(request):\n    return 1\n", False),
    ("def f(cloud_event):\n    return 1\n", True),
    ("def f(event, context):\n    return 1\n", True),
])
def test_event_shapes_lock_cloudevents(source: str, has_cloudevents: bool) -> None:
    lock = {e.distribution: e for e in capture(make_function(source)).lock}
    assert ("cloudevents" in lock) is has_cloudevents
    if has_cloudevents:
        assert lock["cloudevents"].requirement == (
            f"cloudevents=={importlib.metadata.version('cloudevents')}")


def test_not_a_function() -> None:
    with pytest.raises(CaptureError, match="not a Python function"):
        capture(len)  # type: ignore[arg-type]


def test_packages_without_top_level_txt_count_as_installed() -> None:
    """Wheels not built by setuptools (cloudpickle's, Flask's, dapr's) have no top_level.txt,
    all that Python 3.10's ``packages_distributions`` reads: capture infers their packages from
    the installed files as 3.11 does, else on 3.10 they would travel by value, unpinned."""
    from ofnotebook.capture import _inferred_packages_distributions, _packages_distributions

    assert importlib.metadata.distribution("cloudpickle").read_text("top_level.txt") is None
    inferred = _inferred_packages_distributions()
    for top, dist in [("cloudpickle", "cloudpickle"), ("flask", "Flask"), ("dapr", "dapr"),
                      ("yaml", "PyYAML")]:  # PyYAML has top_level.txt: read first
        assert dist in inferred[top] and dist in _packages_distributions()[top]
