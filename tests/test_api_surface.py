"""Public surface, settings and errors."""

from __future__ import annotations

import ast
import importlib.util
import pickle
import sys
from pathlib import Path
from types import ModuleType

import pytest

import ofnotebook
from ofnotebook import config
from ofnotebook.errors import ConfigError, RemoteFunctionError
from ofnotebook.spec import FunctionSpec, derive_name, parse_env, validate_name


def public_names(path: Path) -> set[str]:
    """The names a package's ``__init__.py`` offers without an underscore: what it defines
    (``def``, ``class``, assignments), what it imports from itself (relative imports), and the
    keys of its lazy table ``_LAZY`` (PEP 562); not what it imports from elsewhere."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                if isinstance(target, ast.Name) and target.id == "_LAZY":
                    assert isinstance(node.value, ast.Dict)
                    names.update(ast.literal_eval(key) for key in node.value.keys
                                 if key is not None)
    return {name for name in names if not name.startswith("_")}


def surface_problems(module: ModuleType) -> list[str]:
    """What is wrong with ``module.__all__``: a public name left out, a name exported that
    the module does not offer or that is private, a name that does not import."""
    exported = list(module.__all__)
    offered = public_names(Path(str(module.__file__)))
    problems = [f"public but not in __all__: {name}" for name in sorted(offered - set(exported))]
    problems += [f"private but exported: {name}" for name in exported if name.startswith("_")]
    problems += [f"exported twice: {name}" for name in sorted(set(exported))
                 if exported.count(name) > 1]
    for name in exported:
        try:
            getattr(module, name)
        except Exception as exc:  # an AttributeError, or the lazy import failing
            problems.append(f"exported but does not import: {name} ({type(exc).__name__}: "
                            f"{exc})")
    return problems


def test_every_public_name_is_exported_and_imports() -> None:
    assert surface_problems(ofnotebook) == []
    assert {"deploy", "FunctionHandle", "OfnotebookError", "view_for"} <= set(ofnotebook.__all__)
    with pytest.raises(AttributeError):
        ofnotebook.no_such_name  # noqa: B018


def test_the_surface_check_catches_each_mistake(tmp_path: Path) -> None:
    package = tmp_path / "badsurface"
    package.mkdir()
    (package / "sub.py").write_text("Thing = 1\n")
    (package / "__init__.py").write_text(
        "from typing import Any\n"
        "from .sub import Thing\n"
        "_LAZY = {'lazy_ok': 'badsurface.sub', 'lazy_broken': 'badsurface.sub'}\n"
        "__all__ = ['Thing', 'lazy_ok', 'lazy_broken', 'gone', '_hidden', 'Thing']\n"
        "def helper() -> None: ...\n"
        "def _hidden() -> None: ...\n"
        "def __getattr__(name: str) -> Any:\n"
        "    if name == 'lazy_ok':\n"
        "        return 2\n"
        "    raise AttributeError(name)\n")
    spec = importlib.util.spec_from_file_location("badsurface", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["badsurface"] = module
    try:
        spec.loader.exec_module(module)
        problems = surface_problems(module)
    finally:
        sys.modules.pop("badsurface", None)
        sys.modules.pop("badsurface.sub", None)
    assert problems == [
        "public but not in __all__: helper",
        "private but exported: _hidden",
        "exported twice: Thing",
        "exported but does not import: lazy_broken (AttributeError: lazy_broken)",
        "exported but does not import: gone (AttributeError: gone)",
    ]


def test_setting_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.get("start_timeout") == config.DEFAULT_START_TIMEOUT
    monkeypatch.setenv("OFNOTEBOOK_START_TIMEOUT", "12.5")
    assert config.get("start_timeout") == 12.5
    assert config.get("start_timeout", 3.0) == 3.0


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_bad_setting_names_key_value_and_variable(monkeypatch: pytest.MonkeyPatch,
                                                  value: str) -> None:
    monkeypatch.setenv("OFNOTEBOOK_START_TIMEOUT", value)
    with pytest.raises(ConfigError) as info:
        config.get("start_timeout")
    assert "OFNOTEBOOK_START_TIMEOUT" in str(info.value) and repr(value) in str(info.value)
    assert info.value.key == "start_timeout"


def test_unknown_target_lists_the_available_ones() -> None:
    from ofnotebook.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError,
                       match="available: container, kubernetes, local, yaml"):
        ofnotebook.deploy(lambda r: 1, "x", target="nowhere")


def test_inputs_on_a_sync_function_are_refused() -> None:
    def handler(ctx, data):  # noqa: ANN001, ANN202
        return data

    with pytest.raises(ConfigError, match="only trigger asynchronous functions"):
        ofnotebook.deploy(handler, runtime="sync", inputs={"logs": "memory://logs"})


@pytest.mark.parametrize("python_name, expected", [
    ("greet", "greet"), ("greet_user", "greet-user"), ("greetUser", "greet-user"),
    ("_private", "private"), ("X" * 60, "x" * 40), ("__", "fn"),
])
def test_derive_name(python_name: str, expected: str) -> None:
    assert derive_name(python_name) == expected
    validate_name(derive_name(python_name))


@pytest.mark.parametrize("name", ["", "UPPER", "-lead", "trail-", "under_score", "a" * 41])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ConfigError):
        FunctionSpec(name=name)


def test_spec_checks() -> None:
    with pytest.raises(ConfigError, match="Unknown runtime"):
        FunctionSpec(name="a", runtime="batch")
    with pytest.raises(ConfigError, match="not a TCP port"):
        FunctionSpec(name="a", port=70000)
    with pytest.raises(ConfigError, match="not valid"):
        FunctionSpec(name="a", env=(("1BAD", "x"),))
    assert parse_env(["B=2", "A=1=x"]) == (("A", "1=x"), ("B", "2"))
    assert parse_env({"K": 3}) == (("K", "3"),)  # type: ignore[dict-item]


def test_remote_error_pickles_and_renders_short(monkeypatch: pytest.MonkeyPatch) -> None:
    err = RemoteFunctionError("KeyError", "'x'", "Traceback...\nKeyError: 'x'", function_name="f")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.ename, clone.evalue, clone.traceback, clone.function_name) == (
        "KeyError", "'x'", "Traceback...\nKeyError: 'x'", "f")
    rendered = "\n".join(err._render_traceback_())
    assert "deployed function raised in function 'f'" in rendered and "KeyError: 'x'" in rendered
    short = ConfigError("bad value")._render_traceback_()
    assert len(short) == 1 and "bad value" in short[0]
    monkeypatch.setenv("OFNOTEBOOK_TRACEBACK", "1")
    try:
        raise ConfigError("bad value")
    except ConfigError as exc:
        assert "Traceback" in "".join(exc._render_traceback_())


def test_the_testing_helpers_are_reachable_as_the_readme_writes_them() -> None:
    """``ofnotebook.testing.local_kafka()`` without ``import ofnotebook.testing`` first (in a
    fresh interpreter, where nothing else imported the submodule)."""
    import subprocess
    import sys

    code = "import ofnotebook; print(callable(ofnotebook.testing.local_kafka))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "True"
