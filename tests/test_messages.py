"""Failures a user meets by mistake end in one message naming the cause and the fix (an
``OfnotebookError``, so the notebook shows no traceback wall), not in the text of whatever
Python or urllib3 raised deep inside.

The folders "that cannot be written" are paths under an existing *file*: the tests run as
root, where a read-only mode would not stop the write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import ofnotebook
from ofnotebook.backends import get_backend
from ofnotebook.backends.gitops import YamlBackend
from ofnotebook.errors import ConfigError, DeployError, InvocationError
from tests.helpers import make_function

SOURCE = "def greet(request):\n    return 'hello'\n"


def unwritable(tmp_path: Path) -> Path:
    """A folder that cannot be made: its parent is a file."""
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path / "afile" / "out"


def test_the_yaml_target_names_a_folder_it_cannot_write_and_deploys_nothing(
        tmp_path: Path) -> None:
    folder = unwritable(tmp_path)
    with pytest.raises(DeployError) as excinfo:
        ofnotebook.deploy(make_function(SOURCE, name="greet"), "greet",
                          target=YamlBackend(folder))
    message = str(excinfo.value)
    assert f"Cannot write {folder / 'greet'}" in message
    assert "is a file, not a folder" in message and str(tmp_path / "afile") in message
    assert "--out" in message and "OFNOTEBOOK_YAML_DIR" in message
    assert excinfo.value.__suppress_context__  # no chained traceback under it
    assert ofnotebook.deployments() == []
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_the_magic_out_option_and_export_name_the_folder(ip: InteractiveShell,
                                                         tmp_path: Path) -> None:
    folder = unwritable(tmp_path)
    result = ip.run_cell(f"%%function greet --target yaml --out {folder}\n{SOURCE}")
    error = result.error_in_exec
    assert isinstance(error, DeployError), error
    assert "is a file, not a folder" in str(error) and "--out" in str(error)
    assert ofnotebook.deployments() == []

    good = tmp_path / "good"
    assert ip.run_cell(f"%%function greet --target yaml --out {good}\n{SOURCE}").success
    with pytest.raises(DeployError) as excinfo:
        ip.run_line_magic("function", f"export greet {folder}")
    message = str(excinfo.value)
    assert f"Cannot write {folder / 'greet'}" in message
    assert "is a file, not a folder" in message and "%function export" in message
    assert not list(tmp_path.glob("afile*/**"))[1:]  # nothing written beside the file


@pytest.mark.parametrize("target", ["local", "container"])
def test_out_on_a_target_without_a_folder_names_the_flag_the_user_wrote(target: str) -> None:
    options: dict[str, Any] = {"folder": "out"}
    if target == "container":
        options["registry"] = "127.0.0.1:5000"
    with pytest.raises(ConfigError) as excinfo:
        get_backend(target, **options)
    message = str(excinfo.value)
    assert f"Target {target!r} takes no --out (folder=, for --target yaml only) option" in message
    assert "--folder" not in message
    assert "--target yaml" in message


def test_invoke_on_a_stopped_function_says_so_before_any_http(local_backend: Any) -> None:
    handle = ofnotebook.deploy(make_function(SOURCE, name="greet"), "greet",
                               target=local_backend)
    assert handle.invoke().text == "hello"
    handle.stop()
    last = handle.last_invocation
    with pytest.raises(InvocationError) as excinfo:
        handle.invoke()
    assert str(excinfo.value) == (f"Function 'greet' is {handle.status}: Redeploy or run the "
                                  f"cell again.")
    assert handle.status == "stopped"
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None
    assert handle.last_invocation is last  # no request was attempted


def test_get_state_names_the_stores_and_the_fix(local_backend: Any) -> None:
    """No store declared: say how to declare one; several: name them and the argument."""
    handle = ofnotebook.deploy(make_function(SOURCE, name="greet"), "nostate",
                               target=local_backend)
    with pytest.raises(InvocationError) as excinfo:
        handle.get_state("k")
    assert str(excinfo.value) == ("Function 'nostate' declares no state store: add --state "
                                  "NAME=URI (states={'NAME': URI} in deploy()) and re-run the "
                                  "cell.")
    two = ofnotebook.deploy(make_function(SOURCE, name="greet"), "twostates",
                            target=local_backend,
                            states={"a": "memory://", "b": "memory://"})
    with pytest.raises(InvocationError) as excinfo:
        two.get_state("k")
    assert str(excinfo.value) == ("Function 'twostates' has state stores 'a', 'b': name one, "
                                  "handle.get_state(key, store='a').")
    assert two.get_state("k", store="a") is None  # named: read, nothing stored yet


def test_an_error_the_view_shows_is_one_line_in_the_cell() -> None:
    """The live view shows a failed deploy's whole message (folded); the cell's report of
    the same error is its first line, pointing there, so nothing is printed twice."""
    from ofnotebook.errors import BuildError

    error = BuildError("Step 9/10 RUN pip install failed: ERROR: No matching distribution\n"
                       "line two\nline three")
    assert error._render_traceback_() == ["\x1b[0;31mBuildError\x1b[0m: " + str(error)]
    setattr(error, "shown_in_view", True)
    assert error._render_traceback_() == [
        "\x1b[0;31mBuildError\x1b[0m: Step 9/10 RUN pip install failed: ERROR: No matching "
        "distribution (details in the view above)"]
