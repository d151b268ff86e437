"""Requirements (issue 12 items 2, 4, 9): their form, the kernel, the index; imports in a
function's body; globals named like secrets.

The form and the kernel are checked at capture on real distributions of this venv
(``packaging``, ``cloudpickle``, ``PyYAML``); the index check asks the real configured index
through the kernel's pip (``TestIndex``: it starts pip, so it is out of the unit tier), an
index on a closed 127.0.0.1 port or answering 503 for the warning, a find-links directory of
wheel names for the image's platform and Python (pip reads only the file names), and a venv
made without pip for the skipped check.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, ClassVar, Iterator

import pytest

from ofnotebook import builders, images, layers
from ofnotebook import requirements as reqs
from ofnotebook.backends.base import PhaseRecorder
from ofnotebook.capture import capture
from ofnotebook.errors import BackendUnavailableError, BuildError, CaptureError
from ofnotebook.package import Package, package
from ofnotebook.spec import FunctionSpec
from tests.helpers import make_function

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
KERNEL = f"{reqs.kernel_platform()} and CPython {PY}"  # what a check asks for by default
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


@pytest.mark.parametrize("module, requirement", [
    ("sklearn", "scikit-learn>=1"), ("cv2", "opencv-python-headless>=4"),
    (MADE_UP, "Ofnotebook.No-Such_Module-3F9C>=1"),  # the same name once normalised
])
def test_a_body_import_a_requirement_provides_is_no_warning(module: str,
                                                            requirement: str) -> None:
    assert importlib.util.find_spec(module) is None  # not installed: no metadata to ask
    fn = make_function(f"def f(x):\n    import {module}\n    return x\n", {"__name__": "__main__"})
    cap = capture(fn, requirements=[requirement], target="container")
    assert not cap.warnings and requirement in cap.requirements
    other = capture(fn, requirements=["scipy>=1"], target="container")
    assert other.warnings == (
        f"f() imports {module!r} inside its body, and no installed distribution provides it; "
        f"the image will not have it: add --requirements DIST (the distribution that provides "
        f"it), or guard the import if it is optional",)


def test_the_well_known_import_names_map_to_their_distributions() -> None:
    assert reqs.covers("yaml", {"pyyaml"}) and reqs.covers("PIL", {"pillow"})
    assert reqs.covers("bs4", {"beautifulsoup4"}) and reqs.covers("cv2", {"opencv-python"})
    assert reqs.covers("foo_bar", {"foo-bar"})
    assert not reqs.covers("yaml", {"yaml-tools"}) and not reqs.covers("PIL", {"pil-lite"})


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


@pytest.mark.parametrize("name, flagged", [
    ("SORT_KEY", False), ("CACHE_KEY", False), ("PRIMARY_KEY", False), ("MONKEY", False),
    ("MAX_TOKENS", False), ("special_tokens", False), ("TOKENISER", False),
    ("AWS_ACCESS_KEY_ID", False), ("PRIVATE_KEY_PATH", False),
    ("API_KEY", True), ("apikey", True), ("STRIPE_API_KEY", True), ("aws_access_key", True),
    ("SSH_PRIVATE_KEY", True), ("DJANGO_SECRET_KEY", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("HF_TOKEN", True), ("ACCESS_TOKEN", True), ("DB_PASSWD", True), ("client_secret", True),
])
def test_only_credential_names_are_flagged_as_secrets(name: str, flagged: bool) -> None:
    fn = make_function(f"def f(x):\n    return {name}\n",
                       {"__name__": "__main__", name: "some text"})
    cap = capture(fn)
    assert [g.secret for g in cap.globals if g.name == name] == [flagged]
    assert any(f"global {name!r} used by f() looks like a secret" in w
               for w in cap.warnings) is flagged


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
        assert reqs._ANSWERS[("packaging", f"=={PACKAGING}", reqs.index_target())] == ""

    def test_a_version_the_index_lacks_is_refused_with_what_it_has(self, index: None) -> None:
        with pytest.raises(BuildError) as caught:
            reqs.check_index(["packaging==0.0.1"], "f")
        message = str(caught.value)
        assert message.startswith("The package index has no version of packaging that matches "
                                  f"'packaging==0.0.1' for {KERNEL} (it has ")
        assert PACKAGING in message and message.endswith(
            "pick one of those, or give the bare name 'packaging' to pin the kernel's version. "
            "Nothing was built.")

    def test_a_misspelt_distribution_is_refused_and_the_answer_kept(
            self, index: None, monkeypatch: pytest.MonkeyPatch) -> None:
        refusal = (f"The package index has no distribution 'nunpy' for {KERNEL} (--requirements "
                   f"or lock line 'nunpy==1.0'): check its spelling (the name pip installs, as in "
                   f"'pip install nunpy'), or whether it has wheels for that platform "
                   f"(--platform). Nothing was built.")
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
            f"anyway (pip in the build says what it cannot find). It is not asked again for 5 "
            f"minutes."]
        assert ("nunpy", "==1.0", reqs.index_target()) not in reqs._ANSWERS  # not an answer

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

    # -- the image's platform and Python (8a) ------------------------------------------------

    WHEELS: ClassVar[tuple[str, ...]] = (
        "ofnd2_armonly-1.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "ofnd2_amdonly-1.0-cp312-abi3-manylinux_2_28_x86_64.whl",
        "ofnd2_macos-3.0-cp311-cp311-macosx_11_0_arm64.whl",
        "ofnd2-sdistonly-2.0.tar.gz",
    )

    @pytest.fixture
    def links(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
        """An index of wheel names only (pip's index versions reads no file)."""
        reqs.forget_index_answers()
        root = tmp_path / "links"
        root.mkdir()
        for name in self.WHEELS:
            (root / name).write_bytes(b"")
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_NO_INDEX", "1")
        monkeypatch.setenv("PIP_FIND_LINKS", str(root))
        monkeypatch.delenv("PIP_INDEX_URL", raising=False)
        monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
        yield root
        reqs.forget_index_answers()

    def test_the_images_platform_is_asked_not_the_kernels(self, links: Path) -> None:
        arm = reqs.index_target("linux/arm64", "3.11")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "did not answer" either
            reqs.check_index(["ofnd2-armonly==1.0", "ofnd2-sdistonly>=2"], "f", arm)
        with pytest.raises(BuildError) as caught:
            reqs.check_index(["ofnd2-armonly==1.0", "ofnd2-macos"], "f",
                             reqs.index_target("linux/amd64", "3.11"))
        assert str(caught.value).startswith(
            "The package index has no distribution 'ofnd2-armonly' for linux/amd64 and CPython "
            "3.11 (--requirements or lock line 'ofnd2-armonly==1.0')")
        with pytest.raises(BuildError, match="no distribution 'ofnd2-macos' for linux/arm64"):
            reqs.check_index(["ofnd2-macos"], "f", arm)

    def test_the_images_python_is_asked_and_a_source_distribution_counts(self,
                                                                         links: Path) -> None:
        reqs.check_index(["ofnd2-amdonly", "ofnd2-sdistonly"], "f",
                         reqs.index_target("linux/amd64", "3.12.1"))  # abi3 for >= 3.12
        with pytest.raises(BuildError, match="^The package index has no distribution "
                                             "'ofnd2-amdonly' for linux/amd64 and CPython 3.11 "):
            reqs.check_index(["ofnd2-amdonly", "ofnd2-sdistonly"], "f",
                             reqs.index_target("linux/amd64", "3.11"))

    def test_the_registry_build_asks_for_its_platform(self, links: Path,
                                                      tmp_path: Path) -> None:
        pkg = make_package(["ofnd2-amdonly==1.0"], tmp_path)
        for entry in pkg.capture.lock:  # the runtime's lock, as pure wheels
            name = entry.distribution.replace("-", "_")
            (links / f"{name}-{entry.version}-py3-none-any.whl").write_bytes(b"")
        with pytest.raises(BuildError, match="^The package index has no distribution "
                                             "'ofnd2-amdonly' for linux/arm64 and CPython"):
            layers.build_and_push(pkg, f"127.0.0.1:{_closed_port()}", platform="linux/arm64")
        recorder = PhaseRecorder()
        with pytest.raises(BuildError, match="no distribution 'ofnd2-armonly' for linux/amd64"):
            builders.push_source_bundle(make_package(["ofnd2-armonly==1.0"], tmp_path),
                                        f"127.0.0.1:{_closed_port()}", recorder,
                                        platform_name="linux/amd64")
        assert not recorder.events

    # -- an index that does not answer, a kernel without pip (8b, 8c) ------------------------

    def test_an_unreachable_index_is_not_asked_again_for_minutes(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        reqs.forget_index_answers()
        asked: list[str] = []

        class Down(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked.append(self.path)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Down)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
            monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
            monkeypatch.setenv("PIP_FIND_LINKS", "")
            monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
            with pytest.warns(UserWarning, match="^The package index did not answer for "
                                                 "nunpy .*not asked again for 5 minutes"):
                reqs.check_index(["nunpy==1.0"], "f")
            first = len(asked)
            assert first >= 1
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # said once: the next builds neither wait nor warn
                reqs.check_index(["nunpy==1.0", "other-dist"], "f")
                reqs.check_index(["third-dist"], "g")
            assert len(asked) == first
            reqs.forget_index_answers()
            monkeypatch.setattr(reqs, "UNREACHABLE_KEEP_S", 0.0)  # the minutes are over
            with pytest.warns(UserWarning, match="did not answer for other-dist"):
                reqs.check_index(["other-dist"], "f")
            assert len(asked) > first
        finally:
            server.shutdown()
            server.server_close()
            reqs.forget_index_answers()

    def test_a_kernel_without_pip_says_the_check_was_skipped_once(self,
                                                                  tmp_path: Path) -> None:
        venv = tmp_path / "uv-like"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        lib = tmp_path / "lib"  # ofnotebook and packaging only: no pip anywhere on the path
        lib.mkdir()
        import packaging

        (lib / "ofnotebook").symlink_to(Path(reqs.__file__).parent)
        (lib / "packaging").symlink_to(Path(packaging.__file__).parent)
        script = textwrap.dedent("""
            import json, warnings
            from ofnotebook import requirements as reqs
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reqs.check_index(["nunpy==1.0"], "f")
                reqs.check_index(["other-dist>=2"], "g")
            print(json.dumps([str(w.message) for w in caught]))
        """)
        python = venv / "bin" / "python"
        done = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(lib)), check=True)
        assert json.loads(done.stdout) == [
            f"The requirements are not checked against the package index before builds: pip "
            f"is not installed in this kernel's Python ({python}; a venv made by uv has none). "
            f"Building anyway; to have them checked, install pip there (uv pip install pip)."]


def test_platform_tags_are_pips_for_the_images_linux() -> None:
    arm = reqs.platform_tags("linux/arm64/v8")
    assert {"manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64",
            "musllinux_1_2_aarch64", "linux_aarch64"} <= set(arm)
    assert not [tag for tag in arm if "x86_64" in tag]
    amd = reqs.platform_tags("linux/amd64")
    assert {"manylinux1_x86_64", "manylinux2010_x86_64", "manylinux_2_35_x86_64"} <= set(amd)
    assert reqs.platform_tags("windows/amd64") == ()
    assert reqs.index_target("linux/arm64", "3.12.4") == reqs.IndexTarget("linux/arm64", "3.12")
    machine = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    assert reqs.index_target() == reqs.IndexTarget(f"linux/{machine}", PY)


def test_markers_are_evaluated_for_the_kernels_python() -> None:
    """The markers are evaluated for this Python: the image has the same major.minor."""
    from packaging.requirements import Requirement

    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert reqs.applies(Requirement(f"x; python_version == '{mine}'"))
    assert not reqs.applies(Requirement("x; python_version < '3'"))
