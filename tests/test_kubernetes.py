"""The kubernetes target against the API server double (tests/k8s_double.py), which enforces
the real OpenFunction CRD schema and plays the controller's state machine. No real cluster
was used: see the README for what this does and does not prove."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import ofnotebook
from ofnotebook.backends.kubernetes import KubernetesBackend
from ofnotebook.errors import ConfigError, DeployError
from tests.helpers import make_function, shared_file
from tests.k8s_double import KubeDouble


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(shared_file("schemas/openfunction-function-crd.yaml").read_text(),
                     Loader=loader)


@pytest.fixture
def cluster(crd: dict[str, Any]) -> Iterator[KubeDouble]:
    from ofnotebook import api

    with KubeDouble(crd) as double:
        yield double
        # what the test left deployed goes while the API server still answers
        for key, handle in list(api._handles.items()):
            if isinstance(handle.backend, KubernetesBackend):
                handle.stop()
                del api._handles[key]


@pytest.fixture
def kubeconfig(cluster: KubeDouble, tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cluster.kubeconfig()))
    return str(path)


def backend(kubeconfig: str, **kwargs: Any) -> KubernetesBackend:
    return KubernetesBackend(kubeconfig=kubeconfig, build=False, timeout=10, **kwargs)


def sync_fn() -> Any:
    return make_function("def hello(request):\n    return 'hi'\n", name="hello")


def async_fn() -> Any:
    return make_function("def handle(ctx, data):\n    ctx.send('out', data)\n",
                         name="handle")


def test_deploy_update_logs_and_delete_a_sync_function(cluster: KubeDouble,
                                                       kubeconfig: str) -> None:
    target = backend(kubeconfig)
    assert target.namespace == "demo"  # from the kubeconfig's context
    cluster.calls.clear()
    handle = ofnotebook.deploy(sync_fn(), "hello-k8s", target=target)
    assert len(cluster.calls) <= 10, cluster.calls  # the figure: API calls per deploy
    assert handle.status == "running"
    assert handle.url == "http://hello-k8s.demo.svc.cluster.local/"
    progress = [e.detail for e in handle.events if e.phase == "deploy" and
                e.state == "progress"]
    assert progress[-1] == "build Skipped · serving Running"
    assert "build Skipped · serving Starting" in progress
    stored = cluster.functions[("demo", "hello-k8s")]
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ofnotebook"
    deadline = time.monotonic() + 10
    while "ofnotebook runtime: serving hello-k8s" not in handle.logs():
        assert time.monotonic() < deadline, handle.logs()
        time.sleep(0.05)

    first_ref = stored["status"]["serving"]["resourceRef"]
    edited = make_function("def hello(request):\n    return 'hello'\n", name="hello")
    updated = ofnotebook.deploy(edited, "hello-k8s", target=target)  # replace, new serving
    new_ref = cluster.functions[("demo", "hello-k8s")]["status"]["serving"]["resourceRef"]
    assert new_ref != first_ref and updated.status == "running"
    assert cluster.functions[("demo", "hello-k8s")]["metadata"]["generation"] == 2

    updated.stop()
    assert ("demo", "hello-k8s") not in cluster.functions
    assert not [p for p in cluster.pods if p[0] == "demo"]


def test_an_async_function_waits_for_its_pods_despite_the_early_running(
        cluster: KubeDouble, kubeconfig: str) -> None:
    handle = ofnotebook.deploy(async_fn(), "async-k8s", target=backend(kubeconfig),
                               inputs={"logs": "kafka://kafka.demo.svc:9092/logs?group=g"},
                               outputs={"out": "kafka://kafka.demo.svc:9092/alerts"})
    pods = [p for p in cluster.pods.values()
            if p["metadata"]["labels"]["openfunction.io/serving"] ==
            cluster.functions[("demo", "async-k8s")]["status"]["serving"]["resourceRef"]]
    assert pods and pods[0]["status"]["conditions"][0]["status"] == "True"
    finished = [e.phase for e in handle.events if e.state == "finished"]
    assert finished.index("ready") < finished.index("deploy")  # pods checked inside the rollout
    assert handle.url == ""  # async functions have no address
    spec = cluster.functions[("demo", "async-k8s")]["spec"]["serving"]
    assert spec["workloadType"] == "Deployment" and spec["bindings"]["logs"]
    handle.stop()


def test_a_crashing_http_function_is_failed_with_the_controller_message(
        cluster: KubeDouble, kubeconfig: str) -> None:
    with pytest.raises(DeployError, match="serving is Failed.*RuntimeError: crashed at start"):
        ofnotebook.deploy(sync_fn(), "crash-http", target=backend(kubeconfig))


def test_a_crashing_async_function_is_found_in_its_pods(cluster: KubeDouble,
                                                        kubeconfig: str) -> None:
    with pytest.raises(DeployError, match="CrashLoopBackOff.*kubectl logs"):
        ofnotebook.deploy(async_fn(), "crash-async", target=backend(kubeconfig),
                          inputs={"logs": "kafka://kafka.demo.svc:9092/logs"},
                          outputs={"out": "kafka://kafka.demo.svc:9092/alerts"})


def test_a_serving_timeout_is_terminal(cluster: KubeDouble, kubeconfig: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import ofnotebook.backends.kubernetes as k8s

    real = k8s.function_manifest

    def with_timeout(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = real(*args, **kwargs)
        manifest["spec"]["serving"]["timeout"] = "0.3s"
        return manifest

    monkeypatch.setattr(k8s, "function_manifest", with_timeout)
    with pytest.raises(DeployError, match="serving is Timeout"):
        ofnotebook.deploy(sync_fn(), "slow-http", target=backend(kubeconfig))


@pytest.mark.parametrize("forbidden,expected", [
    (("create", "functions"), "may not do this.*verbs get, list, watch, create"),
    (("watch", "functions"), "watching Function 'rbac' failed: the account may not"),
])
def test_rbac_errors_name_the_missing_permission(cluster: KubeDouble, kubeconfig: str,
                                                 forbidden: tuple[str, str],
                                                 expected: str) -> None:
    cluster.forbid.add(forbidden)
    with pytest.raises(DeployError, match=expected):
        ofnotebook.deploy(sync_fn(), "rbac", target=backend(kubeconfig))


def test_bad_credentials_are_a_clear_error(cluster: KubeDouble, tmp_path: Path) -> None:
    config = cluster.kubeconfig()
    config["users"][0]["user"]["token"] = "wrong"
    path = tmp_path / "bad-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(DeployError, match="did not accept the credentials"):
        ofnotebook.deploy(sync_fn(), "creds", target=backend(str(path)))


def test_a_conflicting_update_is_retried(cluster: KubeDouble, kubeconfig: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = backend(kubeconfig)
    ofnotebook.deploy(sync_fn(), "conflict", target=target)
    real = target.custom.get_namespaced_custom_object
    calls = {"n": 0}

    def stale_once(*args: Any, **kwargs: Any) -> Any:
        got = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:  # someone writes between our read and our replace
            got["metadata"]["resourceVersion"] = "1"
        return got

    monkeypatch.setattr(target.custom, "get_namespaced_custom_object", stale_once)
    edited = make_function("def hello(request):\n    return 'v2'\n", name="hello")
    assert ofnotebook.deploy(edited, "conflict", target=target).status == "running"
    assert ("PUT", "/apis/core.openfunction.io/v1beta2/namespaces/demo/functions/conflict") \
        in cluster.calls


def test_an_invalid_name_is_rejected_before_any_call(cluster: KubeDouble,
                                                     kubeconfig: str) -> None:
    target = backend(kubeconfig)
    cluster.calls.clear()
    with pytest.raises(ConfigError, match="not valid for Kubernetes"):
        ofnotebook.deploy(sync_fn(), "Bad_Name", target=target)
    long_ns = backend(kubeconfig, namespace="a-rather-long-namespace-name-for-dapr")
    with pytest.raises(ConfigError, match="too long for Dapr"):
        ofnotebook.deploy(async_fn(), "also-a-long-function-name", target=long_ns,
                          inputs={"in": "kafka://k:9092/t"})
    assert cluster.calls == []


def test_the_yaml_targets_output_applies_cleanly(cluster: KubeDouble, kubeconfig: str,
                                                 tmp_path: Path) -> None:
    from kubernetes import client, config as kube_config

    from ofnotebook.backends.gitops import YamlBackend

    ofnotebook.deploy(async_fn(), "gitops-apply", target=YamlBackend(tmp_path),
                      inputs={"logs": "kafka://kafka.demo.svc:9092/logs?group=g"},
                      outputs={"out": "kafka://kafka.demo.svc:9092/alerts"})
    manifest = yaml.safe_load((tmp_path / "gitops-apply" / "function.yaml").read_text())
    api = client.CustomObjectsApi(kube_config.new_client_from_config(config_file=kubeconfig))
    created = api.create_namespaced_custom_object("core.openfunction.io", "v1beta2", "demo",
                                                  "functions", manifest)
    # nothing pruned: what was written is what the API server keeps
    assert created["spec"] == manifest["spec"]


@pytest.mark.container
def test_the_image_is_built_pushed_and_declared_by_digest(cluster: KubeDouble,
                                                         kubeconfig: str) -> None:
    """End to end with the real engine and registry of .ci/setup-containers."""
    import requests

    from ofnotebook import images
    from ofnotebook.errors import BackendUnavailableError

    try:
        images.engine()
        requests.get("http://127.0.0.1:5000/v2/", timeout=2).raise_for_status()
    except (BackendUnavailableError, requests.RequestException) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the engine and registry (.ci/setup-containers): {exc}")
        pytest.skip(f"no container engine or registry here: {exc}")
    target = KubernetesBackend(kubeconfig=kubeconfig, registry="127.0.0.1:5000", timeout=30)
    handle = ofnotebook.deploy(sync_fn(), "built-k8s", target=target)
    image = cluster.functions[("demo", "built-k8s")]["spec"]["image"]
    assert image.startswith("127.0.0.1:5000/ofnotebook/built-k8s@sha256:")
    finished = [e.phase for e in handle.events if e.state == "finished"]
    assert finished.index("build") < finished.index("push") < finished.index("apply") \
        < finished.index("deploy")
    handle.stop()
    client = images.engine()
    for found in client.images.list(name="ofnotebook/built-k8s"):
        client.images.remove(found.id)


def test_without_a_registry_the_kubernetes_target_says_what_to_set(cluster: KubeDouble,
                                                                   kubeconfig: str) -> None:
    from ofnotebook.errors import BuildError

    target = KubernetesBackend(kubeconfig=kubeconfig, registry="", timeout=5)
    cluster.calls.clear()
    with pytest.raises(BuildError, match="OFNOTEBOOK_REGISTRY"):
        ofnotebook.deploy(sync_fn(), "no-registry", target=target)
    assert cluster.calls == []


def test_a_cluster_without_openfunction_is_named(cluster: KubeDouble, kubeconfig: str) -> None:
    cluster.crd_installed = False
    with pytest.raises(DeployError, match="is OpenFunction v1.2.0 installed"):
        ofnotebook.deploy(sync_fn(), "no-crd", target=backend(kubeconfig))
    assert ("POST", "/apis/core.openfunction.io/v1beta2/namespaces/demo/functions") \
        not in cluster.calls


def test_an_unreachable_api_server_is_named(tmp_path: Path) -> None:
    from tests.helpers import free_port

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}]}))
    target = KubernetesBackend(kubeconfig=str(path), build=False, timeout=5)
    target.custom.api_client.configuration.retries = 0
    target.extensions.api_client.configuration.retries = 0
    with pytest.raises(DeployError, match="could not be reached; check the kubeconfig"):
        ofnotebook.deploy(sync_fn(), "unreachable", target=target)
