"""The ``yaml`` target and ``%function export``: folders for GitOps review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import ofnotebook
from ofnotebook.backends.gitops import WRITTEN, YamlBackend
from ofnotebook.errors import ConfigError, UnsupportedError
from ofnotebook.manifests import ManifestError
from tests.backends.conformance import BackendConformance
from tests.helpers import make_function, shared_file


@pytest.fixture
def crd_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = shared_file("schemas/openfunction-function-crd.yaml")
    monkeypatch.setenv("OFNOTEBOOK_FUNCTION_CRD", str(path))
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY", "registry.example.com:5000")
    return path


class TestYamlConformance(BackendConformance):
    """The contract where it applies: a folder is written, nothing runs, so invoke and the
    Dapr verbs raise ``UnsupportedError``; an unchanged cell is written again."""

    target = "yaml"
    running_status = WRITTEN
    replaced_status = WRITTEN  # the folder is rewritten; the old handle's files are the new
    reuses_unchanged = False
    reachable = False
    invoke_unsupported = True
    supports_dapr_verbs = False

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Any:
        return YamlBackend(tmp_path)

    def logged_line(self, handle: Any) -> str:
        return f"written to {handle.deployment.folder}"


def test_publish_on_the_yaml_target_says_what_to_do_instead(tmp_path: Path) -> None:
    fn = make_function("def handle(ctx, data):\n    ctx.send('out', data)\n", name="handle")
    handle = ofnotebook.deploy(fn, "no-publish", target=YamlBackend(tmp_path),
                               inputs={"logs": "kafka://kafka.default.svc:9092/logs?group=g"})
    with pytest.raises(UnsupportedError) as info:
        handle.publish("logs", {"line": "x"})
    assert str(info.value) == (
        f"The yaml target does not publish test events from the notebook: it wrote "
        f"{tmp_path / 'no-publish'} and runs nothing; apply that folder to a cluster "
        f"(kubectl apply -f), or use the local target.")


def test_the_yaml_target_writes_a_valid_function_and_its_build_context(
        tmp_path: Path, crd_env: Path) -> None:
    fn = make_function("def handle(ctx, data):\n    ctx.send('out', data)\n", name="handle")
    handle = ofnotebook.deploy(fn, "gitops-fn", target=YamlBackend(tmp_path),
                               inputs={"logs": "kafka://kafka.default.svc:9092/logs?group=g"},
                               outputs={"out": "kafka://kafka.default.svc:9092/alerts"},
                               env={"MODE": "prod"})
    folder = tmp_path / "gitops-fn"
    assert handle.status == WRITTEN and handle.url == folder.resolve().as_uri()
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "build", "function.yaml"]
    manifest = yaml.safe_load((folder / "function.yaml").read_text())
    image = f"registry.example.com:5000/ofnotebook/gitops-fn:{handle.digest[:16]}"
    assert manifest["spec"]["image"] == image
    assert manifest["spec"]["serving"]["triggers"]["dapr"] == [{"name": "logs",
                                                                "type": "bindings.kafka"}]
    container = manifest["spec"]["serving"]["template"]["containers"][0]
    assert container["env"] == [{"name": "MODE", "value": "prod"}]
    # the build context is byte for byte the package the container target builds
    for rel in handle.package.files:
        assert (folder / "build" / rel).read_bytes() == (handle.package.path / rel).read_bytes()
    readme = (folder / "README.md").read_text()
    assert f"docker build -t {image} build/" in readme and "kubectl apply -f function.yaml" \
        in readme
    assert [e.phase for e in handle.events if e.state == "finished"][-1] == "write"


def test_a_re_export_replaces_the_folder_whole(tmp_path: Path, crd_env: Path) -> None:
    backend = YamlBackend(tmp_path)
    ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "again", target=backend)
    stale = tmp_path / "again" / "build" / "stale.txt"
    stale.write_text("left from an older export")
    ofnotebook.deploy(make_function("def f(request):\n    return 2\n"), "again", target=backend)
    assert not stale.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_an_unreadable_crd_path_is_a_clear_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFNOTEBOOK_FUNCTION_CRD", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="OFNOTEBOOK_FUNCTION_CRD=.*cannot be read"):
        ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "nocrd",
                          target=YamlBackend(tmp_path / "out"))
    assert not (tmp_path / "out" / "nocrd").exists()


def test_a_manifest_that_does_not_fit_the_crd_writes_nothing(
        tmp_path: Path, crd_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ofnotebook.manifests as manifests

    real = manifests.function_manifest

    def with_a_typo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = real(*args, **kwargs)
        manifest["spec"]["serving"]["workloadTypo"] = "Deployment"
        return manifest

    monkeypatch.setattr("ofnotebook.backends.gitops.function_manifest", with_a_typo)
    with pytest.raises(ManifestError, match="spec.serving.workloadTypo: unknown field"):
        ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "typo",
                          target=YamlBackend(tmp_path))
    assert not (tmp_path / "typo").exists()


def test_function_export_writes_a_locally_deployed_function(ip: Any, tmp_path: Path,
                                                            crd_env: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    ip.run_cell_magic("function", "exported", "def f(request):\n    return 'x'\n")
    ip.run_line_magic("function", f"export exported {tmp_path}")
    assert f"written: {tmp_path / 'exported'}" in capsys.readouterr().out
    manifest = yaml.safe_load((tmp_path / "exported" / "function.yaml").read_text())
    assert manifest["metadata"]["name"] == "exported"
    assert manifest["spec"]["serving"]["triggers"] == {"http": {"port": 8080}}


def test_target_options_from_the_magic(ip: Any, tmp_path: Path, crd_env: Path) -> None:
    out = tmp_path / "gitops"
    handle = ip.run_cell_magic("function", f"from-magic --target yaml --out {out}",
                               "def f(request):\n    return 'x'\n")
    assert handle.status == WRITTEN and (out / "from-magic" / "function.yaml").is_file()
    # the same options give the same kernel-wide target; an option a target lacks is refused
    again = ip.run_cell_magic("function", f"from-magic --target yaml --out {out}",
                              "def f(request):\n    return 'y'\n")
    assert again.backend is handle.backend
    # --namespace is a cluster setting: the written Function is in that namespace
    ip.run_cell_magic("function", f"in-ns --target yaml --out {out} --namespace demo",
                      "def f(request):\n    return 'x'\n")
    written = yaml.safe_load((out / "in-ns" / "function.yaml").read_text())
    assert written["metadata"] == {"name": "in-ns", "namespace": "demo"}
    with pytest.raises(ConfigError, match="'yaml' takes no --timeout option"):
        ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "bad-option",
                          target="yaml", target_options={"folder": str(out), "timeout": 3})


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real registry with the base, and no engine (a JupyterHub pod)."""
    from tests.helpers import LOCAL_BASE, require_local_registry

    require_local_registry()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("OFNOTEBOOK_BASE_IMAGE", LOCAL_BASE)


def test_the_yaml_target_pushes_the_image_without_an_engine(tmp_path: Path, crd_env: Path,
                                                            no_engine: None) -> None:
    """``--target yaml --build registry``: the folder's Function names the pushed image by
    digest, so the README says only ``kubectl apply``."""
    import requests

    from tests.helpers import LOCAL_REGISTRY, MANIFEST_ACCEPT

    target = YamlBackend(tmp_path, build="registry", registry=LOCAL_REGISTRY)
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 'pushed'\n"),
                               "yaml-pushed", target=target)
    manifest = yaml.safe_load((tmp_path / "yaml-pushed" / "function.yaml").read_text())
    image = manifest["spec"]["image"]
    assert image.startswith(f"{LOCAL_REGISTRY}/ofnotebook/yaml-pushed@sha256:")
    assert requests.head(f"http://{LOCAL_REGISTRY}/v2/ofnotebook/yaml-pushed/manifests/"
                         f"{image.partition('@')[2]}", headers={"Accept": MANIFEST_ACCEPT},
                         timeout=5).status_code == 200
    readme = (tmp_path / "yaml-pushed" / "README.md").read_text()
    assert "docker build" not in readme and "kubectl apply -f function.yaml" in readme
    assert [e.phase for e in handle.events if e.state == "finished"][-3:] == \
        ["build", "push", "write"]


def test_the_magic_writes_an_in_cluster_build(tmp_path: Path, crd_env: Path, no_engine: None
                                              ) -> None:
    """``%%function --target yaml --build cluster``: the bundle is pushed for real and the
    Function declares OpenFunction's kaniko build of it (validated against the CRD)."""
    from IPython.core.interactiveshell import InteractiveShell

    from tests.helpers import LOCAL_REGISTRY

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "ofnotebook")
    ip.run_cell_magic("function", f"yaml-built --target yaml --out {tmp_path} --build cluster "
                                  f"--registry {LOCAL_REGISTRY}",
                      "def greet(request):\n    return 'hi'\n")
    handle = ip.user_ns["greet"]
    spec = yaml.safe_load((tmp_path / "yaml-built" / "function.yaml").read_text())["spec"]
    tag = handle.digest[:16]
    assert spec["image"] == f"{LOCAL_REGISTRY}/ofnotebook/yaml-built:{tag}"
    assert spec["build"]["srcRepo"]["bundleContainer"]["image"] == \
        f"{LOCAL_REGISTRY}/ofnotebook/yaml-built-source:{tag}"
    readme = (tmp_path / "yaml-built" / "README.md").read_text()
    assert "Shipwright source bundle" in readme and "kaniko" in readme
    ofnotebook.stop("yaml-built")


def test_a_named_component_is_its_own_file_scoped_to_every_function_using_it(
        tmp_path: Path, crd_env: Path) -> None:
    """v1beta2: ``_components/<name>.yaml``, a ``dapr.io/v1alpha1`` Component valid against
    its CRD, whose scopes grow with each function of the folder that uses it."""
    from ofnotebook.cluster import ClusterOptions
    from ofnotebook.manifests import validate

    dapr_crd = yaml.safe_load(shared_file("schemas/dapr-component-crd.yaml").read_text())
    backend = YamlBackend(tmp_path, options=ClusterOptions(namespace="demo"))
    events = {"events": "kafka://kafka.demo.svc:9092/events"}
    handles = [ofnotebook.deploy(make_function("def handle(ctx, data):\n    ctx.send('out', "
                                               "data)\n", name="handle"), name, target=backend,
                                 components=events, inputs={"in": "@events"},
                                 outputs={"out": "kafka://kafka.demo.svc:9092/alerts"})
               for name in ("first-fn", "second-fn")]
    path = tmp_path / "_components" / "events.yaml"
    component = yaml.safe_load(path.read_text())
    validate(component, dapr_crd)
    assert component["metadata"] == {"name": "events", "namespace": "demo"}
    assert component["scopes"] == ["first-fn-demo", "second-fn-demo"]
    function = yaml.safe_load((tmp_path / "second-fn" / "function.yaml").read_text())
    assert function["spec"]["serving"]["triggers"]["dapr"] == [
        {"name": "events", "type": "bindings.kafka", "inputName": "in"}]
    assert "events" not in function["spec"]["serving"].get("bindings", {})
    readme = (tmp_path / "second-fn" / "README.md").read_text()
    assert "kubectl apply -f ../_components/events.yaml\nkubectl apply -f function.yaml" in readme
    for handle in handles:
        handle.stop()
