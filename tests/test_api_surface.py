"""Public surface, settings and errors."""

from __future__ import annotations

import pickle

import pytest

import ofnotebook
from ofnotebook import config
from ofnotebook.errors import ConfigError, RemoteFunctionError
from ofnotebook.spec import FunctionSpec, derive_name, parse_env, validate_name


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert ofnotebook.__all__ == sorted(ofnotebook.__all__)
    for name in ofnotebook.__all__:
        assert getattr(ofnotebook, name) is not None, name
    with pytest.raises(AttributeError):
        ofnotebook.no_such_name  # noqa: B018


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
