"""Pytest fixtures for tests against the API server double (imported by the test modules)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.helpers import shared_file

from .server import KubeDouble, load_documents

RBAC_YAML = Path(__file__).resolve().parents[2] / "docs" / "kubernetes-rbac.yaml"


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(shared_file("schemas/openfunction-function-crd.yaml").read_text(),
                     Loader=loader)


@functools.cache
def dapr_crd() -> dict[str, Any]:
    """Dapr's Component CRD (read once): a cluster here has Dapr, as OpenFunction's has."""
    return yaml.safe_load(shared_file("schemas/dapr-component-crd.yaml").read_text())


@pytest.fixture
def cluster(crd: dict[str, Any]) -> Iterator[KubeDouble]:
    from ofnotebook import api
    from ofnotebook.backends.kubernetes import KubernetesBackend

    with KubeDouble(crd, component_crd=dapr_crd()) as double:
        yield double
        double.rbac = None
        # what the test left deployed goes while the API server still answers
        for key, handle in list(api._handles.items()):
            if isinstance(handle.backend, KubernetesBackend):
                if handle.backend.api.server == double.url:
                    handle.stop()
                del api._handles[key]


@pytest.fixture
def kubeconfig(cluster: KubeDouble, tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cluster.kubeconfig()))
    return str(path)


def rbac_documents(user: str, namespace: str, cluster_role: bool = True
                   ) -> list[dict[str, Any]]:
    """docs/kubernetes-rbac.yaml for ``user`` in ``namespace`` (without the optional
    ClusterRole and its binding when ``cluster_role`` is false)."""
    text = RBAC_YAML.read_text().replace("NAMESPACE", namespace).replace("USER", user)
    docs = list(load_documents(text))
    if not cluster_role:
        docs = [d for d in docs if d["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    return docs


FUNCTIONS = "/apis/core.openfunction.io/v1beta2/namespaces/{ns}/functions"
COMPONENTS = "/apis/dapr.io/v1alpha1/namespaces/{ns}/components"


def call(double: KubeDouble, method: str, path: str, body: Any = None,
         content_type: str = "application/json", token: str | None = None,
         **params: Any) -> Any:
    """A raw request to the double as its user (or with ``token``): a ``requests.Response``."""
    import json

    import requests

    return requests.request(method, double.url + path, params=params, timeout=10,
                            data=None if body is None else json.dumps(body),
                            headers={"Authorization": f"Bearer {token or double.token}",
                                     "Content-Type": content_type})
