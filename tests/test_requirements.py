"""Requirements (issue 12 items 2, 4, 9): their form, the kernel, the index; imports in a
function's body; globals named like secrets.

The form and the kernel are checked at capture on real distributions of this venv
(``packaging``, ``cloudpickle``, ``PyYAML``); the index check asks the real configured index
through the kernel's pip (``TestIndex``: it starts pip, so it is out of the unit tier), and an
index on a closed 127.0.0.1 port for the warning.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from ofnotebook import builders, images, layers
from ofnotebook import requirements as reqs
from ofnotebook.backends.base import PhaseRecorder
from ofnotebook.capture import capture
from ofnotebook.errors import BackendUnavailableError, BuildError, CaptureError
from ofnotebook.package import Package, package
from ofnotebook.spec import FunctionSpec
from tests.helpers import make_function

FORM = "Requirements are one distribution per item, in PEP 508 form"
MADE_UP = "ofnotebook_no_such_module_3f9c"
PACKAGING = importlib.metadata.version("packaging")
PYYAML = importlib.metadata.version("PyYAML")


def simple() -> Any:
    return make_function("def f(x):\n    return x\n", {"__name__": "__main__"})


# --------------------------------------------------------------------------------------------
# The form


@pytest.mark.parametrize("bad, fix", [
    ("numpy=>1", "write 'numpy>=1'"),
    ("numpy=<2", "write 'numpy<=2'"),
    ("pandas==", "give a version (pandas==X.Y), or the bare name 'pandas'"),
    ("foo bar", "give each as its own item: 'foo', 'bar'"),
    ("numpy=1.2", "write 'numpy==1.2'"),
    ("x[y", "(Expected matching RIGHT_BRACKET"),
])
def test_a_malformed_requirement_is_one_message_with_the_form_meant(bad: str, fix: str) -> None:
    with pytest.raises(CaptureError) as caught:
        capture(simple(), requirements=["cloudpickle", bad])
    message = str(caught.value)
    assert message.startswith(f"Bad --requirements {bad!r}") and fix in message, message
    assert FORM in message and "cloudpickle" not in message.split(FORM)[0]


def test_every_malformed_requirement_is_named_in_the_one_message() -> None:
    with pytest.raises(CaptureError) as caught:
        capture(simple(), requirements=["numpy=>1", "pandas=="])
    message = str(caught.value)
    assert "'numpy=>1': write 'numpy>=1'" in message and "'pandas==': give a version" in message


def test_passthrough_requirements_reach_the_lock_as_written() -> None:
    lines = ["PyYAML[libyaml]>=5", "packaging; python_version >= '3.8'",
             "git+https://example.invalid/x.git#egg=x", "--extra-index-url https://mirror.invalid",
             "demo @ https://example.invalid/demo-1.0-py3-none-any.whl"]
    cap = capture(simple(), requirements=lines)
    assert [line for line in cap.requirements if line in lines] == lines
    assert "PyYAML==" not in " ".join(cap.requirements)  # nothing imports it: no pin added


def test_a_bare_requirement_is_pinned_at_the_kernels_version() -> None:
    cap = capture(simple(), requirements=["packaging"])
    assert f"packaging=={PACKAGING}" in cap.requirements


# --------------------------------------------------------------------------------------------
# The kernel


def test_local_target_refuses_a_requirement_the_kernel_lacks_with_the_pip_install() -> None:
    with pytest.raises(CaptureError) as caught:
        capture(simple(), requirements=[f"{MADE_UP}==1.0", "packaging"], target="local")
    assert str(caught.value) == (
        f"--requirements '{MADE_UP}==1.0': not installed in this kernel, and the local target "
        f"runs functions on the kernel's own packages (it installs nothing). Install first: "
        f"%pip install '{MADE_UP}==1.0' (then run the cell again), or deploy to an image "
        f"target (--target container) that installs them.")


def test_image_targets_take_a_requirement_the_kernel_lacks() -> None:
    cap = capture(simple(), requirements=[f"{MADE_UP}==1.0"], target="container")
    assert f"{MADE_UP}==1.0" in cap.requirements


def test_local_target_says_the_kernels_version_runs_when_a_requirement_contradicts_it() -> None:
    cap = capture(simple(), requirements=["packaging==20.0"], target="local")
    assert any(w.startswith(f"--requirements 'packaging==20.0': this kernel has packaging "
                            f"{PACKAGING}, and the local target runs the function on the "
                            f"kernel's packages, so it runs with {PACKAGING}.")
               and "%pip install 'packaging==20.0'" in w for w in cap.warnings), cap.warnings


def test_a_requirement_the_kernel_satisfies_is_no_warning() -> None:
    cap = capture(simple(), requirements=[f"packaging>={PACKAGING}", "cloudpickle>=1"],
                  target="local")
    assert not cap.warnings


def test_on_an_image_target_a_contradicting_requirement_replaces_the_pin() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    fn = make_function("def f(x):\n    import packaging\n    return x\n", ns)
    cap = capture(fn, requirements=["packaging==20.0"], target="kubernetes")
    assert "packaging==20.0" in cap.requirements
    assert not [r for r in cap.requirements if r.startswith("packaging==") and r != "packaging==20.0"]
    assert (f"--requirements 'packaging==20.0' replaces the kernel's packaging {PACKAGING} in "
            f"the image: the function was tried here with {PACKAGING}") in cap.warnings


# --------------------------------------------------------------------------------------------
# Imports inside the function body


def test_imports_in_the_body_are_locked_like_cell_level_imports() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    fn = make_function(textwrap.dedent("""
        def f(x):
            import yaml
            import json, os.path
            from packaging.version import Version
            return yaml.safe_dump({"v": str(Version(x))})
    """), ns)
    cap = capture(fn)
    assert f"PyYAML=={PYYAML}" in cap.requirements and f"packaging=={PACKAGING}" in cap.requirements
    assert ("yaml", "f") in cap.body_imports and ("packaging.version", "f") in cap.body_imports
    assert not [m for m, _ in cap.body_imports if m in ("json", "os.path")]  # stdlib skipped
    assert "  body import yaml in f()" in cap.report()
    assert not cap.warnings


def test_imports_in_nested_functions_lambdas_comprehensions_and_helpers_are_found() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    make_function("def helper():\n    import cloudpickle\n    return cloudpickle\n", ns, "helper")
    fn = make_function(textwrap.dedent("""
        def f(x):
            def inner():
                import yaml
                return yaml
            load = lambda: __import__("json") and [__import__("os") for _ in ()]
            names = [m for m in [1] if __import__("sys")]
            pick = [(lambda: __import__("packaging"))() for _ in [1]]
            from . import sibling_not_checked  # relative: the function's own package
            return helper(), inner(), load, names
    """), ns)
    cap = capture(fn)
    found = {module for module, _ in cap.body_imports}
    assert {"yaml", "cloudpickle"} <= found and "sibling_not_checked" not in found
    assert f"PyYAML=={PYYAML}" in cap.requirements
    assert ("cloudpickle", "helper") in cap.body_imports


def test_a_body_import_no_distribution_provides_is_named_with_the_fix() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    fn = make_function(f"def f(x):\n    import {MADE_UP}.sub\n    return x\n", ns)
    image = capture(fn, target="container")
    assert image.warnings == (
        f"f() imports {MADE_UP!r} inside its body, and no installed distribution provides it; "
        f"the image will not have it: add --requirements DIST (the distribution that provides "
        f"it), or guard the import if it is optional",)
    local = capture(fn, target="local")
    assert "the local target runs on the kernel's packages: %pip install" in local.warnings[0]
    covered = capture(fn, requirements=[f"{MADE_UP}>=1"], target="container")
    assert not covered.warnings and f"{MADE_UP}>=1" in covered.requirements


def test_a_local_module_imported_in_the_body_is_named(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ofn_helpers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = make_function(f"def f(x):\n    import {name}\n    return {name}.double(x)\n",
                       {"__name__": "__main__"})
    cap = capture(fn)
    assert cap.warnings == (
        f"f() imports the local module {name!r} inside its body: a module imported there is "
        f"looked up where the function runs, and local modules travel only by value. Import it "
        f"at cell level, outside the function, and use it from there",)


# --------------------------------------------------------------------------------------------
# Globals named like secrets


def test_globals_named_like_secrets_are_flagged_with_the_secret_env_fix() -> None:
    ns: dict[str, Any] = {"__name__": "__main__", "DB_PASSWORD": "hunter2",
                          "openai_api_key": "sk-x", "GithubToken": b"ghp", "MAX_TOKENS": 4096,
                          "TOKENIZER": "bert-base", "API_KEY": "k", "ENDPOINT": "http://x"}
    fn = make_function("def f(x):\n    return (DB_PASSWORD, openai_api_key, GithubToken, "
                       "MAX_TOKENS, TOKENIZER, API_KEY, ENDPOINT)\n", ns)
    cap = capture(fn)
    flagged = {g.name for g in cap.globals if g.secret}
    assert flagged == {"DB_PASSWORD", "openai_api_key", "GithubToken", "API_KEY"}
    assert (f"global 'DB_PASSWORD' used by f() looks like a secret: the image will contain it; "
            f"pass it with --secret-env DB_PASSWORD instead (and read os.environ['DB_PASSWORD'] "
            f"in the function)") in cap.warnings
    assert len([w for w in cap.warnings if "looks like a secret" in w]) == 4
    line = next(line for line in cap.report().splitlines() if "global DB_PASSWORD" in line)
    assert line.endswith("LOOKS LIKE A SECRET: the image will contain it")
    assert "hunter2" not in cap.report()


# --------------------------------------------------------------------------------------------
# The package index


def _index_reachable() -> bool:
    answer = reqs.ask_index("packaging")
    return answer.reachable and bool(answer.versions)


@pytest.fixture
def index() -> Iterator[None]:
    """The configured index answers (CI must reach it; elsewhere the test is skipped)."""
    reqs.forget_index_answers()
    if not _index_reachable():
        if os.environ.get("CI"):
            pytest.fail("the configured package index does not answer (pip index versions)")
        pytest.skip("the configured package index does not answer")
    yield
    reqs.forget_index_answers()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_package(requirements: list[str], tmp_path: Path) -> Package:
    fn = make_function("def greet(request):\n    return 'hi'\n", {"__name__": "__main__"},
                       name="greet")
    name = f"req-{uuid.uuid4().hex[:8]}"
    return package(capture(fn, requirements=requirements),
                   FunctionSpec(name=name, requirements=tuple(requirements)),
                   cache_dir=tmp_path)


class TestIndex:
    """Asks the index through the kernel's pip: starts processes."""

    def test_the_configured_index_has_the_lock(self, index: None) -> None:
        reqs.check_index([f"packaging=={PACKAGING}", "cloudpickle>=1", "PyYAML"], "f")
        assert reqs._ANSWERS[("packaging", f"=={PACKAGING}")] == ""

    def test_a_version_the_index_lacks_is_refused_with_what_it_has(self, index: None) -> None:
        with pytest.raises(BuildError) as caught:
            reqs.check_index(["packaging==0.0.1"], "f")
        message = str(caught.value)
        assert message.startswith("The package index has no version of packaging that matches "
                                  "'packaging==0.0.1' (it has ")
        assert PACKAGING in message and message.endswith(
            "pick one of those, or give the bare name 'packaging' to pin the kernel's version. "
            "Nothing was built.")

    def test_a_misspelt_distribution_is_refused_and_the_answer_kept(
            self, index: None, monkeypatch: pytest.MonkeyPatch) -> None:
        refusal = ("The package index has no distribution 'nunpy' (--requirements or lock line "
                   "'nunpy==1.0'): check its spelling (the name pip installs, as in 'pip "
                   "install nunpy'). Nothing was built.")
        with pytest.raises(BuildError) as caught:
            reqs.check_index(["nunpy==1.0"], "f")
        assert str(caught.value) == refusal
        # the next deploy asks no one: with the index gone it still knows, and does not warn
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{_closed_port()}/simple")
        with pytest.raises(BuildError) as again:
            reqs.check_index(["nunpy==1.0"], "f")
        assert str(again.value) == refusal

    def test_an_unreachable_index_is_a_warning(self, monkeypatch: pytest.MonkeyPatch) -> None:
        reqs.forget_index_answers()
        port = _closed_port()
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no extra index, no find-links
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
        monkeypatch.setenv("PIP_FIND_LINKS", "")
        monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
        with pytest.warns(UserWarning) as caught:
            reqs.check_index(["nunpy==1.0"], "f")
        assert [str(w.message) for w in caught] == [
            f"The package index did not answer for nunpy (http://127.0.0.1:{port}/simple/nunpy/: "
            f"Connection refused), so whether it has the requirements is not known; building "
            f"anyway (pip in the build says what it cannot find)."]
        assert ("nunpy", "==1.0") not in reqs._ANSWERS  # asked again next time

    def test_the_registry_build_refuses_before_any_upload(self, index: None,
                                                          tmp_path: Path) -> None:
        pkg = make_package(["nunpy==1.0"], tmp_path)
        # a registry on a closed port: any upload would fail with a connection error instead
        with pytest.raises(BuildError, match="^The package index has no distribution 'nunpy'"):
            layers.build_and_push(pkg, f"127.0.0.1:{_closed_port()}")

    def test_the_cluster_build_refuses_before_pushing_the_bundle(self, index: None,
                                                                 tmp_path: Path) -> None:
        pkg = make_package(["packaging==0.0.1"], tmp_path)
        recorder = PhaseRecorder()
        with pytest.raises(BuildError, match="no version of packaging that matches"):
            builders.push_source_bundle(pkg, f"127.0.0.1:{_closed_port()}", recorder)
        assert not recorder.events  # no push phase started

    @pytest.mark.container
    def test_the_engine_build_refuses_before_any_step(self, index: None, tmp_path: Path) -> None:
        try:
            client = images.engine()
        except BackendUnavailableError:
            if os.environ.get("CI"):
                raise
            pytest.skip("no Docker-compatible engine answers")
        before = {image.id for image in client.images.list()}
        pkg = make_package(["nunpy==1.0"], tmp_path)
        with pytest.raises(BuildError, match="^The package index has no distribution 'nunpy'"):
            images.build(pkg, client=client)
        assert {image.id for image in client.images.list()} == before
        assert not client.images.list(name=f"ofnotebook/{pkg.spec.name}")


def test_markers_are_evaluated_for_the_kernels_python() -> None:
    """The markers are evaluated for this Python: the image has the same major.minor."""
    from packaging.requirements import Requirement

    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert reqs.applies(Requirement(f"x; python_version == '{mine}'"))
    assert not reqs.applies(Requirement("x; python_version < '3'"))
