"""Registry names and every ``OFNOTEBOOK_*`` setting are checked where they enter (issue 12
item 2): ``--registry`` / ``target_options['registry']`` and OFNOTEBOOK_REGISTRY alike, each
bad value refused with one message naming the value, the cause and the correct form, before
anything is deployed or written."""

from __future__ import annotations

from pathlib import Path

import pytest

import ofnotebook
from ofnotebook import config
from ofnotebook.errors import ConfigError

FORM = "HOST[:PORT][/NAMESPACE], such as 127.0.0.1:5000 or registry.example:443/team"

BAD = [
    ("http://127.0.0.1:5000", "drop the scheme 'http://': a registry is named by its host; "
                              "plain HTTP goes to loopback hosts and to those listed in "
                              "OFNOTEBOOK_INSECURE_REGISTRIES"),
    ("https://registry.example", "drop the scheme 'https://'"),
    ("registry example:5000", "it contains spaces"),
    (" 127.0.0.1:5000", "it contains spaces"),
    ("Registry.Example:443", "the host 'Registry.Example' has upper case letters: host names "
                             "are written in lower case, 'registry.example:443'"),
    ("127.0.0.1:0", "the port '0' is not a number from 1 to 65535"),
    ("127.0.0.1:70000", "the port '70000' is not a number from 1 to 65535"),
    ("127.0.0.1:http", "the port 'http' is not a number from 1 to 65535"),
    ("127.0.0.1:", "the port after ':' is empty"),
    (":5000", "the host is empty"),
    ("-bad-.example", "'-bad-.example' is not a host name: dot-separated labels"),
    ("registry.example/Team", "the namespace 'Team' is not a repository path"),
    ("registry.example/team/app:v1", "the namespace 'team/app:v1' is not a repository path"),
    ("[not-ipv6]:5000", "'[not-ipv6]:5000' is no bracketed IPv6 address"),
]
GOOD = [("127.0.0.1:5000", "127.0.0.1:5000"), ("localhost:5000", "localhost:5000"),
        ("registry.example:443/team", "registry.example:443/team"),
        ("ghcr.io/my-org/sub_team", "ghcr.io/my-org/sub_team"),
        ("127.0.0.1:5000/", "127.0.0.1:5000"), ("[::1]:5000", "[::1]:5000"),
        ("docker.io", "docker.io")]


@pytest.mark.parametrize("value, cause", BAD)
def test_a_bad_registry_variable_is_refused_naming_it(value: str, cause: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY", value)
    with pytest.raises(ConfigError) as info:
        config.get("registry")
    message = str(info.value)
    assert message.startswith(f"OFNOTEBOOK_REGISTRY={value!r} is not a valid value for "
                              f"'registry' ({cause}")
    assert f"expected a registry to push images to, {FORM}. Unset it or fix the value." \
        in message
    with pytest.raises(ConfigError, match="OFNOTEBOOK_REGISTRY"):
        config.check()  # what a deploy calls first


@pytest.mark.parametrize("value, cause", BAD)
def test_a_bad_registry_argument_is_refused_naming_it(value: str, cause: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.get("registry", value)
    message = str(info.value)
    assert message.startswith(f"registry={value!r} is not a valid value ({cause}")
    assert message.endswith(f"expected a registry to push images to, {FORM}. Fix --registry "
                            f"(in deploy(): target_options={{'registry': ...}}).")


@pytest.mark.parametrize("value, normal", GOOD)
def test_good_registry_names_pass_both_ways(value: str, normal: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.get("registry", value) == normal
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY", value)
    assert config.get("registry") == normal


def test_no_registry_stays_no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFNOTEBOOK_REGISTRY", raising=False)
    assert config.get("registry") == "" and config.get("registry", "") == ""
    with pytest.raises(ConfigError, match=r"registry=5000 is not a valid value \(a int, not a "
                                          r"string\)"):
        config.get("registry", 5000)


def test_deploy_refuses_a_bad_registry_before_writing_anything(tmp_path: Path) -> None:
    """``deploy(..., target_options={'registry': ...})`` (what ``--registry`` becomes)."""
    def f(request):  # type: ignore[no-untyped-def]
        return "hi"

    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        ofnotebook.deploy(f, name="f", target="yaml",
                          target_options={"registry": "http://127.0.0.1:5000",
                                          "folder": str(out)})
    assert str(info.value).startswith("registry='http://127.0.0.1:5000' is not a valid value "
                                      "(drop the scheme 'http://'")
    assert not out.exists()


SETTINGS_BAD = [
    ("OFNOTEBOOK_INSECURE_REGISTRIES", "127.0.0.1:5000,Reg.Local:80",
     "the host 'Reg.Local' has upper case letters", "comma-separated host[:port]"),
    ("OFNOTEBOOK_INSECURE_REGISTRIES", "127.0.0.1:99999", "the port '99999'",
     "comma-separated host[:port]"),
    ("OFNOTEBOOK_BASE_IMAGE", "https://python:3.11", "an image reference has no scheme",
     "an image reference"),
    ("OFNOTEBOOK_BASE_IMAGE", "python 3.11", "an image reference has no scheme and no spaces",
     "an image reference"),
    ("OFNOTEBOOK_LOG_LINES", "-5", "must be positive", "a positive number of lines"),
    ("OFNOTEBOOK_LOG_LINES", "0", "must be positive", "a positive number of lines"),
    ("OFNOTEBOOK_DELIVERY_ATTEMPTS", "0", "must be positive", "0 would dead-letter"),
    ("OFNOTEBOOK_INVOKE_TIMEOUT", "0", "must be positive", "a positive number of seconds"),
    ("OFNOTEBOOK_WARN_GLOBAL_MB", "-1", "must be positive", "megabytes"),
    ("OFNOTEBOOK_PLATFORM", "amd64", "expected os/arch[/variant]", "linux/amd64"),
    ("OFNOTEBOOK_WIDGETS", "maybe", "not one of auto, on, off", "text only"),
]


@pytest.mark.parametrize("var, value, cause, expected", SETTINGS_BAD)
def test_every_setting_is_checked_when_read(var: str, value: str, cause: str, expected: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, value)
    key = var.removeprefix("OFNOTEBOOK_").lower()
    with pytest.raises(ConfigError) as info:
        config.get(key)
    message = str(info.value)
    assert message.startswith(f"{var}={value!r} is not a valid value for {key!r} ({cause}")
    assert expected in message
    assert message.endswith("Unset it or fix the value.")


def test_good_hosts_and_images_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """(OFNOTEBOOK_REGISTRY_CA and OFNOTEBOOK_FUNCTION_CRD are checked where the file is read,
    naming the variable: tests/registry/test_client.py, tests/test_gitops.py.)"""
    monkeypatch.setenv("OFNOTEBOOK_INSECURE_REGISTRIES", "127.0.0.1:5000, registry.lan")
    monkeypatch.setenv("OFNOTEBOOK_BASE_IMAGE", "python:3.11-slim")
    assert config.get("insecure_registries") == "127.0.0.1:5000, registry.lan"
    assert config.get("base_image") == "python:3.11-slim"
