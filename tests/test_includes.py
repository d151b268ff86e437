"""``--include``: the files a function reads, packaged at the same relative path, and the
package's files folder as the working directory on every target (the container case is in
tests/containers/test_includes.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import ofnotebook
from ofnotebook.errors import CaptureError, RemoteFunctionError
from ofnotebook.includes import FILES_DIR, collect, report_lines
from tests.helpers import make_function, uid


@pytest.fixture
def notebook_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook's folder, the working directory, with a template folder and a data file."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hello.html").write_text("<p>hello {{ name }}</p>")
    (tmp_path / "templates" / "__pycache__").mkdir()
    (tmp_path / "templates" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.csv").write_text("cat\ndog\n")
    (tmp_path / "notes.txt").write_text("not included")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_files_and_folders_are_collected_by_relative_path_without_caches(
        notebook_dir: Path) -> None:
    found = collect(["templates", "./data/labels.csv", str(notebook_dir / "data")])
    assert [f.path for f in found] == ["data/labels.csv", "templates/hello.html"]
    assert found[0].data == b"cat\ndog\n"
    lines = report_lines(found)
    assert "data/labels.csv" in lines[0] and "8 B" in lines[0]


@pytest.mark.parametrize("given, words", [
    ("missing.txt", "there is no"),
    ("../elsewhere.txt", "leaves the notebook's folder"),
    ("/etc/hostname", "outside the notebook's folder"),
    (".", "whole folder"),
    ("", "not a path"),
])
def test_a_bad_include_is_one_message_with_the_fix(notebook_dir: Path, given: str,
                                                    words: str) -> None:
    with pytest.raises(CaptureError, match=words) as info:
        collect([given])
    assert "--include" in str(info.value)


def test_the_included_total_counts_against_the_globals_limit(
        notebook_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (notebook_dir / "model.bin").write_bytes(b"x" * 300_000)
    monkeypatch.setenv("OFNOTEBOOK_MAX_GLOBAL_MB", "0.25")
    with pytest.raises(CaptureError, match=r"over the limit.*model\.bin 293\.0 kB"):
        collect(["model.bin"])


def test_a_bad_include_deploys_nothing(notebook_dir: Path, local_backend: Any) -> None:
    fn = make_function("def f(request):\n    return 'x'\n")
    with pytest.raises(CaptureError, match="there is no"):
        ofnotebook.deploy(fn, f"inc-{uid()}", target=local_backend, include=["nope/"])
    assert local_backend.deployments() == []


SOURCE = """
import flask

def page(request):
    with open("data/labels.csv") as f:
        labels = f.read().split()
    html = flask.render_template("hello.html", name=request.args.get("name", "x"))
    return {"labels": labels, "html": html, "cwd": os.getcwd()}
"""


def test_included_files_are_read_by_relative_path_on_the_local_target(
        notebook_dir: Path, local_backend: Any) -> None:
    fn = make_function(SOURCE, {"os": os}, name="page")
    handle = ofnotebook.deploy(fn, f"inc-{uid()}", target=local_backend,
                               include=["templates", "data/labels.csv"])
    body = handle.invoke(params={"name": "ada"}).json()
    assert body["labels"] == ["cat", "dog"]
    assert body["html"] == "<p>hello ada</p>"  # Flask finds templates/ in the working dir
    cwd = Path(body["cwd"])
    assert cwd == (handle.package.path / FILES_DIR).resolve()
    assert (handle.package.path / FILES_DIR / "templates" / "hello.html").exists()
    assert not (cwd / "notes.txt").exists()  # only what was named travels
    assert f"{FILES_DIR}/templates/hello.html" in handle.package.files


def test_without_include_a_relative_file_fails_and_names_the_fix(
        notebook_dir: Path, local_backend: Any) -> None:
    fn = make_function(SOURCE, {"os": os}, name="page")
    handle = ofnotebook.deploy(fn, f"inc-{uid()}", target=local_backend)
    with pytest.raises(RemoteFunctionError) as info:
        handle.invoke()
    message = str(info.value)
    assert "data/labels.csv" in message and "--include" in message


def test_a_template_that_was_not_included_names_the_fix(notebook_dir: Path,
                                                         local_backend: Any) -> None:
    fn = make_function("import flask\n\ndef page(request):\n"
                       "    return flask.render_template('hello.html', name='x')\n", name="page")
    handle = ofnotebook.deploy(fn, f"inc-{uid()}", target=local_backend, include=["data"])
    with pytest.raises(RemoteFunctionError, match=r"TemplateNotFound") as info:
        handle.invoke()
    assert "--include templates/hello.html" in str(info.value)


def test_the_magic_packages_what_include_names(notebook_dir: Path, ip: Any) -> None:
    handle = ip.run_cell_magic("function", f"inc-{uid()} --include templates data/labels.csv",
                               "import os, flask\n" + SOURCE.split("import flask\n", 1)[1])
    assert handle.invoke(params={"name": "bo"}).json()["html"] == "<p>hello bo</p>"
    assert [f.path for f in handle.package.included] == ["data/labels.csv",
                                                         "templates/hello.html"]


def test_the_capture_report_lists_the_included_files_and_warns_on_big_ones(
        notebook_dir: Path, local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (notebook_dir / "model.bin").write_bytes(b"x" * 20_000)
    monkeypatch.setenv("OFNOTEBOOK_WARN_GLOBAL_MB", "0.01")
    fn = make_function("def f(request):\n    return open('model.bin', 'rb').read()[:3]\n")
    handle = ofnotebook.deploy(fn, f"inc-{uid()}", target=local_backend,
                               include=["model.bin", "data"])
    assert handle.invoke().content == b"xxx"
    report = handle.capture.report()
    assert "file   data/labels.csv" in report and "19.5 kB" in report
    assert "warning: included file 'model.bin' is 19.5 kB" in report
