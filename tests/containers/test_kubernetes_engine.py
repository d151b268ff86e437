"""``--target kubernetes --build engine`` on each engine (Podman's API and Docker Engine): the
image is built and pushed to the real registry, and the Function declares it by digest (the
API server double of tests/k8s_double stands in for the cluster)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

import ofnotebook
from ofnotebook.backends.kubernetes import KubernetesBackend
from tests.helpers import make_function, require_local_registry
from tests.k8s_double import KubeDouble

pytestmark = pytest.mark.container
REGISTRY = "127.0.0.1:5000"


def test_the_image_is_built_pushed_and_declared_by_digest(client: Any, engine_name: str,
                                                         cluster: KubeDouble,
                                                         kubeconfig: str) -> None:
    require_local_registry()
    name = f"built-k8s-{engine_name}"
    fn = make_function(f"def hello(request):\n    return {engine_name!r}\n", name="hello")
    target = KubernetesBackend(kubeconfig=kubeconfig, registry=REGISTRY, build="engine",
                               timeout=30)
    handle = ofnotebook.deploy(fn, name, target=target)
    image = cluster.functions[("demo", name)]["spec"]["image"]
    assert image.startswith(f"{REGISTRY}/ofnotebook/{name}@sha256:")
    digest = image.partition("@")[2]
    stored = requests.head(f"http://{REGISTRY}/v2/ofnotebook/{name}/manifests/{digest}",
                           headers={"Accept": "application/vnd.docker.distribution.manifest"
                                              ".v2+json, application/vnd.oci.image.manifest"
                                              ".v1+json"}, timeout=5)
    assert stored.status_code == 200
    finished = [e.phase for e in handle.events if e.state == "finished"]
    assert finished.index("build") < finished.index("push") < finished.index("apply") \
        < finished.index("deploy")
    handle.stop()
    for found in client.images.list(name=f"ofnotebook/{name}"):
        client.images.remove(found.id, force=True)
