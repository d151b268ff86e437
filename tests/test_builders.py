"""``--build auto|engine|registry|cluster`` and ``--platform``: checked where they enter, and
``auto`` made concrete by asking whether an engine answers (a real socket, or none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ofnotebook import builders, images
from ofnotebook.backends import get_backend
from ofnotebook.backends.gitops import YamlBackend
from ofnotebook.errors import ConfigError


def test_build_modes_and_platforms_are_checked_where_they_enter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert builders.build_mode() == "auto"
    assert builders.build_mode("Registry") == "registry"
    assert builders.build_mode(False) == builders.NO_BUILD
    with pytest.raises(ConfigError, match=r"--build 'kaniko' is not one of auto, engine, "
                                          r"registry, cluster"):
        builders.build_mode("kaniko")
    monkeypatch.setenv("OFNOTEBOOK_BUILD", "docker")
    with pytest.raises(ConfigError, match="OFNOTEBOOK_BUILD='docker'"):
        builders.build_mode()
    assert builders.platform() == "linux/amd64"
    assert builders.platform("linux/ARM64/v8") == "linux/arm64/v8"
    with pytest.raises(ConfigError, match=r"--platform 'amd64'.*os/arch"):
        builders.platform("amd64")


def test_auto_takes_the_registry_builder_when_no_engine_answers(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    monkeypatch.setattr(images, "_engines", {})
    assert builders.resolve("auto") == "registry"
    assert builders.resolve("engine") == "engine"  # an explicit choice is kept (and fails later)


@pytest.mark.container
def test_auto_takes_the_engine_when_one_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    socket = images.PODMAN_SOCKET
    if not os.path.exists(socket):
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Podman's Docker API at {socket} (.ci/setup-containers)")
        pytest.skip(f"no engine at {socket}")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    assert builders.resolve("auto") == "engine"


def test_the_yaml_target_refuses_a_build_without_a_registry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--build registry pushes to a registry"):
        YamlBackend(tmp_path, build="registry")
    with pytest.raises(ConfigError, match="is not one of"):
        YamlBackend(tmp_path, build="podman", registry="127.0.0.1:5000")
    assert YamlBackend(tmp_path).build == builders.NO_BUILD  # writes only, as before


def test_the_local_target_refuses_a_build_option() -> None:
    with pytest.raises(ConfigError, match="takes no --build option"):
        get_backend("local", build="registry")
