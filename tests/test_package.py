"""Packages: one build context per deployment, named by a content digest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cloudpickle

from ofnotebook.capture import capture
from ofnotebook.package import build_files, digest_files, package
from ofnotebook.spec import FunctionSpec
from tests.helpers import make_function

SOURCE = "GREETING = 'hi'\ndef f(request):\n    return GREETING\n"


def test_layout_and_contents(tmp_path: Path) -> None:
    cap = capture(make_function(SOURCE))
    pkg = package(cap, FunctionSpec(name="greet"), cache_dir=tmp_path)
    assert pkg.path.parent == tmp_path / "packages" / "greet"
    assert pkg.path.name == pkg.digest[:16]
    files = set(pkg.files)
    assert {"Dockerfile", "requirements.txt", "ofnotebook/__init__.py",
            "ofnotebook/runtime/__main__.py", "ofnotebook/runtime/http.py",
            "function/payload.pkl", "function/manifest.json", "function/context.json",
            "function/sources.json"} <= files
    assert not any(name.endswith(".pyc") for name in files)
    manifest = json.loads((pkg.path / "function/manifest.json").read_text())
    assert manifest["entry"] == "f" and manifest["signature"] == "request"
    assert manifest["python"] == ".".join(map(str, sys.version_info[:3]))
    assert manifest["cloudpickle"] == cloudpickle.__version__
    assert (pkg.path / "function/payload.pkl").read_bytes() == cap.payload
    requirements = (pkg.path / "requirements.txt").read_text().split()
    assert f"cloudpickle=={cloudpickle.__version__}" in requirements
    context = json.loads((pkg.path / "function/context.json").read_text())
    assert json.loads(context["FUNC_CONTEXT"])["port"] == "8080"  # the cluster's, not a local one


def test_dockerfile_installs_dependencies_before_code(tmp_path: Path) -> None:
    pkg = package(capture(make_function(SOURCE)), FunctionSpec(name="greet"), cache_dir=tmp_path)
    lines = (pkg.path / "Dockerfile").read_text().splitlines()
    major_minor = "{}.{}".format(*sys.version_info[:2])
    assert lines[lines.index(next(l for l in lines if l.startswith("FROM")))] == (
        f"FROM python:{major_minor}-slim")
    order = [next(i for i, l in enumerate(lines) if l.startswith(prefix)) for prefix in (
        "COPY requirements.txt", "RUN pip install", "COPY ofnotebook", "COPY function")]
    assert order == sorted(order)
    # settings come before the layers, so a code edit rebuilds the code layer only
    assert lines.index('ENTRYPOINT ["python", "-m", "ofnotebook.runtime"]') < order[0]
    assert lines[-1] == "COPY function /app/function"


def test_digest_is_stable_and_content_addressed(tmp_path: Path) -> None:
    spec = FunctionSpec(name="greet")
    first = package(capture(make_function(SOURCE)), spec, cache_dir=tmp_path)
    second = package(capture(make_function(SOURCE)), spec, cache_dir=tmp_path)
    assert first.digest == second.digest and first.path == second.path
    edited = package(capture(make_function(SOURCE.replace("'hi'", "'hello'"))), spec,
                     cache_dir=tmp_path)
    assert edited.digest != first.digest and edited.path != first.path
    renamed = package(capture(make_function(SOURCE)), FunctionSpec(name="greet2"),
                      cache_dir=tmp_path)
    assert renamed.digest != first.digest  # the name is in the context and the manifest


def test_digest_covers_every_file() -> None:
    files = build_files(capture(make_function(SOURCE)), FunctionSpec(name="greet"))
    base = digest_files(files)
    for rel in files:
        changed = dict(files)
        changed[rel] = files[rel] + b" "
        assert digest_files(changed) != base, rel


def test_existing_package_is_not_rewritten(tmp_path: Path) -> None:
    spec = FunctionSpec(name="greet")
    pkg = package(capture(make_function(SOURCE)), spec, cache_dir=tmp_path)
    marker = pkg.path / "function" / "payload.pkl"
    before = marker.stat().st_mtime_ns
    package(capture(make_function(SOURCE)), spec, cache_dir=tmp_path)
    assert marker.stat().st_mtime_ns == before
    assert not [p for p in pkg.path.parent.iterdir() if p.name.startswith(".staging")]
