"""The engine-less image build (ofnotebook.layers) against real registries, with no engine
reachable (``DOCKER_HOST`` points at a missing socket for every test here)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from ofnotebook import images, layers, tarlayers
from ofnotebook import registry as reg
from ofnotebook.backends.base import PhaseRecorder
from ofnotebook.capture import capture
from ofnotebook.errors import BuildError
from ofnotebook.package import Package, package
from ofnotebook.registry.reference import (CONFIG_DOCKER, FAMILY, INDEX_OCI, LAYER_DOCKER,
                                           MANIFEST_DOCKER, MANIFEST_OCI, Manifest, sha256_digest)
from ofnotebook.spec import FunctionSpec
from tests.helpers import make_function
from tests.registry.conftest import PASSWORD, USER, Registry, login, push_fake_base

REFERENCE = re.compile(r"^(?P<host>[^/]+)/(?P<repo>ofnotebook/[a-z0-9-]+)@(?P<digest>sha256:"
                       r"[0-9a-f]{64})$")


def unique(prefix: str = "fn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_package(base: str, *, name: str | None = None, body: str = "'hi ' + WHO",
                 requirements: tuple[str, ...] = (), who: str = "ada") -> Package:
    fn = make_function(f"def greet(request):\n    return {body}\n", {"WHO": who}, name="greet")
    spec = FunctionSpec(name=name or unique(), requirements=requirements)
    return package(capture(fn, requirements=requirements), spec, base_image=base)


class Lines:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, phase: str, text: str) -> None:
        self.seen.append((phase, text))

    def text(self, phase: str | None = None) -> str:
        return "\n".join(t for p, t in self.seen if phase in (None, p))


def manifest_and_config(host: str, reference: str) -> tuple[Manifest, dict[str, Any]]:
    found = REFERENCE.match(reference)
    assert found, reference
    with reg.RegistryClient(host) as client:
        manifest = client.get_manifest(found["repo"], found["digest"])
        config = json.loads(client.get_blob(found["repo"], manifest.data["config"]["digest"]))
    assert manifest.digest == found["digest"]
    return manifest, config


def read_layer(host: str, repo: str, digest: str) -> tuple[bytes, list[tarfile.TarInfo], dict[str, bytes]]:
    with reg.RegistryClient(host) as client:
        data = client.get_blob(repo, digest)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
    return data, members, files


@pytest.mark.parametrize("family", ["docker", "oci"])
def test_the_image_keeps_the_base_family_and_sets_what_the_dockerfile_sets(
        plain: Registry, fake_bases: dict[str, str], family: str) -> None:
    pkg = make_package(fake_bases[family])
    recorder, lines = PhaseRecorder(), Lines()
    reference = layers.build_and_push(pkg, plain.host, phase=recorder.phase, on_line=lines)
    found = REFERENCE.match(reference)
    assert found and found["host"] == plain.host and found["repo"] == f"ofnotebook/{pkg.spec.name}"
    manifest, config = manifest_and_config(plain.host, reference)
    manifest_type = MANIFEST_DOCKER if family == "docker" else MANIFEST_OCI
    config_type, layer_type = FAMILY[manifest_type]
    data = manifest.data
    assert manifest.media_type == manifest_type and data["config"]["mediaType"] == config_type
    assert [layer["mediaType"] for layer in data["layers"]] == [layer_type] * 4
    assert ("annotations" in data) == (family == "oci")
    if family == "oci":
        assert data["annotations"]["org.opencontainers.image.base.name"] == fake_bases["oci"]
    with reg.RegistryClient(plain.host) as client:  # the tag is the package digest's head
        assert client.manifest_digest(found["repo"], pkg.digest[:16]) == manifest.digest

    inner = config["config"]
    assert {"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "PIP_DISABLE_PIP_VERSION_CHECK=1",
            "OFNOTEBOOK_PACKAGE=/app", "PYTHONPATH=/app:/app/deps",
            f"PYTHON_VERSION={'.'.join(map(str, sys.version_info[:3]))}",
            "PATH=/usr/local/bin:/usr/bin:/bin"} == set(inner["Env"])
    assert inner["WorkingDir"] == "/app" and inner["Cmd"] is None
    assert inner["Entrypoint"] == ["python", "-m", "ofnotebook.runtime"]
    assert inner["ExposedPorts"] == {"8080/tcp": {}} and inner["StopSignal"] == "SIGINT"
    assert inner["Labels"] == {images.LABEL_PYTHON: pkg.capture.python_version,
                               images.LABEL_CLOUDPICKLE: pkg.capture.cloudpickle_version,
                               layers.LABEL_PACKAGE: pkg.digest}
    assert config["created"] == layers.EPOCH and config["os"] == "linux"
    assert len(config["rootfs"]["diff_ids"]) == 4 and len(config["history"]) == 4
    assert [h["created_by"].split()[0] for h in config["history"][1:]] == ["pip", "COPY", "COPY"]

    # the layers: deps (+ requirements.txt), runtime, code; the diff_id is the tar's sha256
    contents = []
    for layer, diff_id in zip(data["layers"][1:], config["rootfs"]["diff_ids"][1:]):
        blob, members, files = read_layer(plain.host, found["repo"], layer["digest"])
        assert sha256_digest(gzip.decompress(blob)) == diff_id
        assert blob[3] & 0x08 == 0 and blob[4:8] == b"\0\0\0\0"  # gzip: no name, no mtime
        names = [m.name for m in members]
        assert names == sorted(names, key=lambda n: n.split("/")) and names[0] == "app"
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
        assert all(m.mode in (0o644, 0o755) for m in members)
        contents.append(files)
    deps, runtime, code = contents
    assert "app/requirements.txt" in deps and any(n.startswith("app/deps/flask/") for n in deps)
    assert not any(n.startswith("app/deps/bin/") for n in deps)  # no machine-specific scripts
    assert set(runtime) == {f"app/{p}" for p in pkg.files if p.startswith("ofnotebook/")}
    assert set(code) == {f"app/{p}" for p in pkg.files if p.startswith("function/")}
    assert code["app/function/payload.pkl"] == (pkg.path / "function/payload.pkl").read_bytes()

    finished = [e.phase for e in recorder.events if e.state == "finished"]
    assert finished == ["build", "push"]
    assert "layer code" in lines.text("build") and "manifest" in lines.text("push")


def test_the_same_package_gives_the_same_digests_from_two_cache_dirs(
        plain: Registry, fake_bases: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    references, layer_lists = [], []
    for n in (1, 2):
        monkeypatch.setenv("OFNOTEBOOK_CACHE_DIR", str(tmp_path / f"cache-{n}"))
        pkg = make_package(fake_bases["docker"], name="same-everywhere", who="the same")
        lines = Lines()
        references.append(layers.build_and_push(pkg, plain.host, on_line=lines))
        assert "layer deps" in lines.text() and "(built)" in lines.text()  # pip ran afresh
        layer_lists.append(sorted(p.name for p in (tmp_path / f"cache-{n}" / "layers")
                                  .glob("*.tar.gz")))
    assert references[0] == references[1]
    assert layer_lists[0] == layer_lists[1] and len(layer_lists[0]) == 3


def test_a_code_edit_uploads_the_code_layer_the_config_and_the_manifest_only(
        plain: Registry, fake_bases: dict[str, str]) -> None:
    name = unique("edit")
    first = layers.build_and_push(make_package(fake_bases["docker"], name=name), plain.host)
    mark = plain.mark()
    lines = Lines()
    edited = make_package(fake_bases["docker"], name=name, body="'hello ' + WHO")
    second = layers.build_and_push(edited, plain.host, on_line=lines)
    assert first != second
    manifest, _ = manifest_and_config(plain.host, second)
    code, config = manifest.data["layers"][-1], manifest.data["config"]
    assert sorted(plain.uploaded(mark)) == sorted([code["digest"], config["digest"]])
    writes = [(c.method, "upload" if "/blobs/uploads/" in c.path else c.path)
              for c in plain.writes(mark)]
    assert writes == [("POST", "upload"), ("PUT", "upload"), ("POST", "upload"),
                      ("PUT", "upload"),
                      ("PUT", f"/v2/ofnotebook/{name}/manifests/{edited.digest[:16]}")], writes
    sent = code["size"] + config["size"] + len(manifest.body)
    assert sent < 20_000, sent
    assert "deps layer" in lines.text("push") and "skipped" in lines.text("push")


def test_a_base_from_another_registry_is_copied_once_then_mounted(
        plain: Registry, basic: Registry, fake_bases: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    login(monkeypatch)  # the target's credentials; the source (plain) is read anonymously
    base = reg.Reference.parse(fake_bases["oci"])
    with reg.RegistryClient(plain.host) as source:
        base_layer = source.get_manifest(base.repository, base.ref).data["layers"][0]["digest"]
    lines, mark = Lines(), basic.mark()
    first = layers.build_and_push(make_package(fake_bases["oci"]), basic.host, on_line=lines)
    assert re.search(r"copying base layer 1/1 \d+ B", lines.text("push")), lines.text()
    assert base_layer in basic.uploaded(mark)

    lines, mark = Lines(), basic.mark()
    second = layers.build_and_push(make_package(fake_bases["oci"]), basic.host, on_line=lines)
    first_repo = REFERENCE.match(first)["repo"]  # type: ignore[index]
    assert f"mounted from {first_repo}" in lines.text("push"), lines.text()
    assert base_layer not in basic.uploaded(mark)
    mounts = [c for c in basic.calls(mark) if c.method == "POST" and "mount" in c.query]
    assert mounts and all(c.status == 201 and c.query["from"] == [first_repo] for c in mounts)
    assert len(mounts) == 3  # the base layer, deps and runtime: only the code layer is new
    assert REFERENCE.match(second)


def test_an_index_base_is_resolved_to_the_platform(plain: Registry,
                                                   fake_bases: dict[str, str]) -> None:
    with reg.RegistryClient(plain.host) as client:
        amd64 = client.get_manifest("base/python", "oci")
        arm64 = client.get_manifest("base/python", push_fake_base(
            client, "base/python", "arm64", family=MANIFEST_OCI, arch="arm64"))
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_OCI, "manifests": [
            {"mediaType": MANIFEST_OCI, "digest": m.digest, "size": len(m.body),
             "platform": {"os": "linux", "architecture": arch}}
            for m, arch in ((amd64, "amd64"), (arm64, "arm64"))]}).encode()
        client.put_manifest("base/python", "multi", index)
    base = f"{plain.host}/base/python:multi"
    for platform, machine in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        lines = Lines()
        reference = layers.build_and_push(make_package(base), plain.host, platform=platform,
                                          on_line=lines)
        manifest, config = manifest_and_config(plain.host, reference)
        assert config["architecture"] == platform.split("/")[1]
        base_digest = (amd64 if machine == "x86_64" else arm64).digest
        assert manifest.data["annotations"]["org.opencontainers.image.base.digest"] == \
            base_digest
        assert f"manylinux_2_28_{machine}" in config["history"][-3]["created_by"]
    with pytest.raises(reg.RegistryError, match="no image for linux/s390x"):
        layers.build_and_push(make_package(base), plain.host, platform="linux/s390x")


def test_a_distribution_without_a_wheel_is_named_before_any_upload(
        plain: Registry, fake_bases: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    sdist = io.BytesIO()
    with tarfile.open(fileobj=sdist, mode="w:gz") as tar:
        info = tarfile.TarInfo("ofn_sdist_only-1.0/setup.py")
        text = b"from setuptools import setup\nsetup(name='ofn-sdist-only', version='1.0')\n"
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    (links / "ofn_sdist_only-1.0.tar.gz").write_bytes(sdist.getvalue())
    monkeypatch.setenv("PIP_FIND_LINKS", f"{os.environ.get('PIP_FIND_LINKS', '')} {links}".strip())
    pkg = make_package(fake_bases["docker"], requirements=("ofn-sdist-only==1.0",))
    mark = plain.mark()
    with pytest.raises(BuildError) as caught:
        layers.build_and_push(pkg, plain.host)
    message = str(caught.value)
    assert "No wheel of 'ofn-sdist-only' (ofn-sdist-only==1.0) for linux/amd64" in message
    assert "--build engine" in message and "--build cluster" in message
    assert plain.writes(mark) == []  # nothing uploaded, nothing tagged


def test_the_base_python_is_checked_before_any_upload(plain: Registry,
                                                      fake_bases: dict[str, str]) -> None:
    mark = plain.mark()
    mine = ".".join(map(str, sys.version_info[:2]))
    with pytest.raises(BuildError, match=rf"Python 3\.9\.18, the notebook runs {mine}"):
        layers.build_and_push(make_package(fake_bases["old"]), plain.host)
    with pytest.raises(BuildError, match="does not say which Python it has .* PYTHON_VERSION"):
        layers.build_and_push(make_package(fake_bases["silent"]), plain.host)
    assert plain.writes(mark) == []
    with pytest.warns(UserWarning, match="same minor version"):
        assert REFERENCE.match(layers.build_and_push(make_package(fake_bases["micro"]),
                                                     plain.host))
    assert REFERENCE.match(layers.build_and_push(make_package(fake_bases["label"]), plain.host))


def test_a_full_disk_is_one_clear_message_and_tags_nothing(
        plain: Registry, fake_bases: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ENOSPC: the code layer's file is written through /dev/full."""
    pkg = make_package(fake_bases["docker"])
    code = tarlayers.files_layer(pkg, "code", "function")  # learn its cache file name
    assert code.path.name.endswith(".tar.gz")
    full = tmp_path / "full-cache"
    shutil.copytree(tarlayers.cache_root(), full / "layers",
                    ignore=shutil.ignore_patterns(code.path.name.split(".")[0] + "*"))
    (full / "layers" / (code.path.name + ".partial")).symlink_to("/dev/full")
    monkeypatch.setenv("OFNOTEBOOK_CACHE_DIR", str(full))
    again = package(pkg.capture, pkg.spec, base_image=pkg.base_image)
    mark = plain.mark()
    with pytest.raises(BuildError) as caught:
        layers.build_and_push(again, plain.host)
    message = str(caught.value)
    assert message.startswith("The disk is full: writing the code layer under ")
    assert "OFNOTEBOOK_CACHE_DIR" in message
    assert plain.writes(mark) == []
    with reg.RegistryClient(plain.host) as client:
        assert client.manifest_digest(f"ofnotebook/{pkg.spec.name}", pkg.digest[:16]) is None
    assert not list((full / "layers").glob("*.partial"))  # no half file left behind


def test_the_password_is_never_in_a_line_a_log_or_the_image(
        plain: Registry, basic: Registry, fake_bases: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    login(monkeypatch)
    recorder, lines = PhaseRecorder(), Lines()
    reference = layers.build_and_push(make_package(fake_bases["docker"]), basic.host,
                                      phase=recorder.phase, on_line=lines)
    manifest, config = manifest_and_config(basic.host, reference)
    login(monkeypatch, USER, PASSWORD + "x")
    with pytest.raises(reg.RegistryError) as caught:
        layers.build_and_push(make_package(fake_bases["docker"]), basic.host)
    texts = [lines.text(), caplog.text, manifest.body.decode(), json.dumps(config),
             str(caught.value), repr(caught.value), basic.log_path.read_text()]
    texts += [e.detail for e in recorder.events]
    assert not any(PASSWORD in text for text in texts)


def test_the_source_bundle_is_a_scratch_image_and_a_repush_uploads_nothing(
        plain: Registry, fake_bases: dict[str, str]) -> None:
    pkg = make_package(fake_bases["docker"])
    reference = layers.push_bundle(pkg, plain.host)
    repo = f"ofnotebook/{pkg.spec.name}-source"
    assert reference == f"{plain.host}/{repo}:{pkg.digest[:16]}"
    with reg.RegistryClient(plain.host) as client:
        manifest = client.get_manifest(repo, pkg.digest[:16])
        config = json.loads(client.get_blob(repo, manifest.data["config"]["digest"]))
    assert manifest.media_type == MANIFEST_DOCKER
    assert manifest.data["config"]["mediaType"] == CONFIG_DOCKER
    assert [layer["mediaType"] for layer in manifest.data["layers"]] == [LAYER_DOCKER]
    assert config == {"architecture": "", "os": "", "created": "1970-01-01T00:00:00Z",
                      "rootfs": {"type": "layers", "diff_ids": config["rootfs"]["diff_ids"]},
                      "config": {}}
    _, members, files = read_layer(plain.host, repo, manifest.data["layers"][0]["digest"])
    assert all(m.isdir() or m.isfile() for m in members)
    assert all(m.name == "workspace" or m.name.startswith("workspace/") for m in members)
    assert files == {f"workspace/{p}": (pkg.path / p).read_bytes() for p in pkg.files}
    assert "workspace/Dockerfile" in files
    mark = plain.mark()
    assert layers.push_bundle(pkg, plain.host) == reference
    assert plain.writes(mark) == []
