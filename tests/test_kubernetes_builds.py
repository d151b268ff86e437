"""The kubernetes target's three builds against the API server double and the real registry of
.ci/setup-containers (127.0.0.1:5000): ``--build registry`` with no engine reachable (the
JupyterHub case), ``auto`` choosing it, and ``--build cluster`` (a Shipwright source bundle
pushed for real, OpenFunction's kaniko build played by the double with its Builder, BuildRun
pod and step logs)."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests

import ofnotebook
from ofnotebook.backends.kubernetes import KubernetesBackend
from ofnotebook.errors import DeployError
from tests.helpers import (LOCAL_BASE, LOCAL_REGISTRY, MANIFEST_ACCEPT, make_function,
                           require_local_registry)
from tests.k8s_double import KubeDouble
from tests.k8s_double.builds import prune

REGISTRY, BASE, ACCEPT = LOCAL_REGISTRY, LOCAL_BASE, MANIFEST_ACCEPT


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real registry (and the base pushed into it), and no engine: the build must not
    need one."""
    require_local_registry()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("OFNOTEBOOK_BASE_IMAGE", BASE)


def greet(reply: str = "hello") -> Any:
    return make_function(f"def greet(request):\n    return {reply!r}\n", name="greet")


def manifest(repository: str, ref: str) -> requests.Response:
    return requests.get(f"http://{REGISTRY}/v2/{repository}/manifests/{ref}",
                        headers={"Accept": ACCEPT}, timeout=10)


def test_registry_build_with_no_engine_deploys_by_digest(cluster: KubeDouble,
                                                         kubeconfig: str) -> None:
    target = KubernetesBackend(kubeconfig=kubeconfig, build="auto", registry=REGISTRY,
                               timeout=20)
    handle = ofnotebook.deploy(greet(), "no-engine", target=target)
    image = cluster.functions[("demo", "no-engine")]["spec"]["image"]
    repository, _, digest = image.removeprefix(f"{REGISTRY}/").partition("@")
    assert repository == "ofnotebook/no-engine" and digest.startswith("sha256:")
    stored = manifest(repository, digest)
    assert stored.status_code == 200 and stored.headers["Docker-Content-Digest"] == digest
    finished = [e.phase for e in handle.events if e.state == "finished"]
    assert finished.index("build") < finished.index("push") < finished.index("apply")
    build = next(e for e in handle.events if e.phase == "build" and e.state == "started")
    assert BASE in build.detail  # the engine-less builder, on the base from the registry
    assert handle.status == "running"


def test_a_cluster_build_pushes_a_bundle_and_streams_its_log(cluster: KubeDouble,
                                                             kubeconfig: str) -> None:
    target = KubernetesBackend(kubeconfig=kubeconfig, build="cluster", registry=REGISTRY,
                               timeout=20)
    handle = ofnotebook.deploy(greet("built in the cluster"), "in-cluster", target=target)
    assert handle.status == "running"
    spec = cluster.functions[("demo", "in-cluster")]["spec"]
    tag = handle.digest[:16]
    assert spec["image"] == f"{REGISTRY}/ofnotebook/in-cluster:{tag}"
    bundle = spec["build"]["srcRepo"]["bundleContainer"]["image"]
    assert bundle == f"{REGISTRY}/ofnotebook/in-cluster-source:{tag}"
    assert spec["build"]["shipwright"] == {"strategy": {"kind": "ClusterBuildStrategy",
                                                        "name": "kaniko"}}
    assert spec["build"]["timeout"] == "900s"

    # the bundle is in the real registry: one layer of directories and regular files only,
    # the build context under workspace/ (what Shipwright's bundle step unpacks)
    pushed = manifest("ofnotebook/in-cluster-source", tag)
    assert pushed.status_code == 200
    layer = pushed.json()["layers"][0]["digest"]
    blob = requests.get(f"http://{REGISTRY}/v2/ofnotebook/in-cluster-source/blobs/{layer}",
                        timeout=10).content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        members = tar.getmembers()
    assert all(m.isdir() or m.isreg() for m in members)
    names = {m.name.rstrip("/") for m in members}
    for rel in handle.package.files:
        assert f"workspace/{rel}" in names, rel

    # the build has its own phase; the step logs arrive in order, tagged by step
    phases = [(e.phase, e.state) for e in handle.events if e.phase == "build"]
    assert phases[0] == ("build", "started") and phases[-1] == ("build", "finished")
    lines = [e.detail for e in handle.events if e.phase == "build" and e.state == "progress"]
    assert lines[0].startswith("[source-default] Pulling image") and bundle in lines[0]
    push = next(i for i, line in enumerate(lines) if "Pushing image to" in line)
    assert lines[push].startswith("[build-and-push]") and spec["image"] in lines[push]
    assert lines[-1].startswith("[results] digest sha256:")

    # the cluster forgets the build (pruned Builder, pod gone); the handle does not
    builder = cluster.functions[("demo", "in-cluster")]["status"]["build"]["resourceRef"]
    prune(cluster, "demo", builder)
    assert handle.deployment.build_log == lines

    # the same cell again: nothing re-pushed, nothing rebuilt
    again = ofnotebook.deploy(greet("built in the cluster"), "in-cluster", target=target)
    assert again.deployment is handle.deployment
    handle.stop()


def test_a_failed_cluster_build_quotes_the_step_and_pip(cluster: KubeDouble,
                                                        kubeconfig: str) -> None:
    target = KubernetesBackend(kubeconfig=kubeconfig, build="cluster", registry=REGISTRY,
                               timeout=20)
    with pytest.raises(DeployError) as failed:
        ofnotebook.deploy(greet(), "will-fail", target=target)  # the double's knob: "fail"
    message = str(failed.value)
    assert "the build is Failed" in message
    assert "buildrun step build-and-push failed in pod" in message
    assert "[build-and-push] ERROR: No matching distribution found" in message
    assert "The Function it created was deleted" in message
    assert ("demo", "will-fail") not in cluster.functions or \
        cluster.functions[("demo", "will-fail")]["metadata"].get("deletionTimestamp")


def test_cluster_builds_need_a_registry(kubeconfig: str) -> None:
    target = KubernetesBackend(kubeconfig=kubeconfig, build="cluster", timeout=5)
    with pytest.raises(DeployError, match="--build cluster pushes the build context"):
        ofnotebook.deploy(greet(), "no-registry", target=target)


def test_a_stuck_cluster_build_says_why_and_stops_following(cluster: KubeDouble,
                                                            kubeconfig: str) -> None:
    """The bundle cannot be pulled (the double's knob: ``pullfail``): the view is told the
    step's waiting reason, the deploy ends at its deadline, the Function it created goes, and
    no thread keeps following the build's log."""
    import threading

    target = KubernetesBackend(kubeconfig=kubeconfig, build="cluster", registry=REGISTRY,
                               timeout=2, build_timeout="1s")
    lines: list[str] = []
    with pytest.raises(DeployError) as failed:
        ofnotebook.deploy(greet(), "pullfail", target=target,
                          on_event=lambda e: lines.append(e.detail)
                          if e.phase == "build" and e.state == "progress" else None)
    assert "not ready within" in str(failed.value)
    assert "The Function it created was deleted" in str(failed.value)
    assert any(line.startswith("[source-default] waiting: ImagePullBackOff: Back-off pulling")
               for line in lines), lines
    followers = [t for t in threading.enumerate() if t.name.startswith("ofnotebook-build-")]
    assert not [t for t in followers if t.is_alive()], followers
