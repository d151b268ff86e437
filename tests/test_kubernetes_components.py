"""Named components on the kubernetes target: one standalone Dapr ``Component`` each, applied
before the Functions that reference it, scoped to and owned by them, gone with the last one
(against the API server double, which serves ``components.dapr.io`` from Dapr's CRD and plays
the garbage collector)."""

from __future__ import annotations

from typing import Any

import pytest

import ofnotebook
from ofnotebook.backends.kubernetes import KubernetesBackend
from ofnotebook.errors import DeployError
from ofnotebook.manifests import validate
from tests.helpers import make_function, wait_for
from tests.k8s_double import KubeDouble
from tests.k8s_double.fixtures import COMPONENTS, call, dapr_crd, rbac_documents

URI = "kafka://kafka.demo.svc:9092/k8s-events"


def backend(kubeconfig: str, **kwargs: Any) -> KubernetesBackend:
    return KubernetesBackend(kubeconfig=kubeconfig, build=False, **{"timeout": 10, **kwargs})


def deploy(target: KubernetesBackend, name: str, reply: str = "x") -> Any:
    fn = make_function(f"def handle(ctx, data):\n    ctx.send('out', {reply!r})\n",
                       name="handle")
    return ofnotebook.deploy(fn, name, target=target, components={"k8s-events": URI},
                             inputs={"in": "@k8s-events"},
                             outputs={"out": "kafka://kafka.demo.svc:9092/alerts"})


def component(cluster: KubeDouble) -> dict[str, Any] | None:
    return cluster.components.items.get(("demo", "k8s-events"))


def test_a_named_component_is_applied_first_scoped_and_owned_by_its_functions(
        cluster: KubeDouble, kubeconfig: str) -> None:
    target = backend(kubeconfig)
    first = deploy(target, "first-fn")
    second = deploy(target, "second-fn")
    stored = component(cluster)
    assert stored is not None
    validate(stored, dapr_crd())
    uids = {n: cluster.functions[("demo", n)]["metadata"]["uid"] for n in ("first-fn",
                                                                            "second-fn")}
    assert stored["scopes"] == ["first-fn-demo", "second-fn-demo"]
    assert [(r["name"], r["uid"]) for r in stored["metadata"]["ownerReferences"]] == \
        [("first-fn", uids["first-fn"]), ("second-fn", uids["second-fn"])]
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "ofnotebook"}
    assert stored["spec"]["type"] == "bindings.kafka"
    serving = cluster.functions[("demo", "second-fn")]["spec"]["serving"]
    assert serving["triggers"]["dapr"] == [{"name": "k8s-events", "type": "bindings.kafka",
                                            "inputName": "in"}]
    assert "k8s-events" not in serving.get("bindings", {})  # referenced, not inline
    # the same code again changes nothing, the Component neither
    rv = stored["metadata"]["resourceVersion"]
    deploy(target, "second-fn")
    assert component(cluster)["metadata"]["resourceVersion"] == rv  # type: ignore[index]

    first.stop()  # the other function still uses it: it stays, scoped to that one alone
    stored = component(cluster)
    assert stored is not None and stored["scopes"] == ["second-fn-demo"]
    assert [r["name"] for r in stored["metadata"]["ownerReferences"]] == ["second-fn"]
    second.stop()  # the last user: the garbage collector removes it with its Function
    wait_for(lambda: component(cluster) is None, message="the Component outlived its owners")


def test_a_cluster_without_dapr_is_named_and_nothing_is_deployed(cluster: KubeDouble,
                                                                 kubeconfig: str) -> None:
    cluster.components.installed = False
    with pytest.raises(DeployError, match=r"Dapr is not installed: the API server serves no "
                                          r"dapr.io/v1alpha1 \(CRD components.dapr.io\); "
                                          r"install Dapr"):
        deploy(backend(kubeconfig), "no-dapr")
    assert ("demo", "no-dapr") not in cluster.functions


def test_someone_elses_component_of_that_name_is_not_taken_over(cluster: KubeDouble,
                                                                kubeconfig: str) -> None:
    theirs = {"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
              "metadata": {"name": "k8s-events"},
              "spec": {"type": "bindings.kafka", "version": "v1",
                       "metadata": [{"name": "brokers", "value": "theirs:9092"}]}}
    got = call(cluster, "PATCH", COMPONENTS.format(ns="demo") + "/k8s-events", theirs,
               content_type="application/apply-patch+yaml", fieldManager="kubectl")
    assert got.status_code == 201, got.text
    with pytest.raises(DeployError, match="A Dapr Component 'k8s-events' exists in namespace "
                                          "'demo' and ofnotebook did not create it"):
        deploy(backend(kubeconfig), "not-mine")
    assert ("demo", "not-mine") not in cluster.functions
    assert component(cluster)["spec"] == theirs["spec"]  # type: ignore[index]


def test_a_failed_first_deploy_leaves_no_component(cluster: KubeDouble,
                                                   kubeconfig: str) -> None:
    target = backend(kubeconfig)
    target.image_for = lambda package, recorder: "registry.example/named-crash@sha256:" + \
        "c" * 64  # type: ignore[method-assign]
    with pytest.raises(DeployError, match="CrashLoopBackOff.*deleted"):
        deploy(target, "crashing")
    wait_for(lambda: component(cluster) is None and ("demo", "crashing") not in
             cluster.functions, message="the failed deploy left its Component")


def test_the_docs_role_covers_components_and_a_missing_verb_is_named(
        cluster: KubeDouble, kubeconfig: str) -> None:
    cluster.grant(*rbac_documents(cluster.user, "demo"))
    deploy(backend(kubeconfig), "rbac-named").stop()
    wait_for(lambda: component(cluster) is None)
    docs = rbac_documents(cluster.user, "demo")
    rules = next(d for d in docs if d["kind"] == "Role")["rules"]
    next(r for r in rules if r["resources"] == ["components"])["verbs"].remove("get")
    cluster.grant(*docs)
    with pytest.raises(DeployError, match="may not get components in API group dapr.io;.*"
                                          "components \\(dapr.io\\): get, create, patch"):
        deploy(backend(kubeconfig), "rbac-named")
    assert ("demo", "rbac-named") not in cluster.functions


def test_every_cluster_setting_as_plain_values_reaches_the_applied_function(
        cluster: KubeDouble, kubeconfig: str) -> None:
    """``target="kubernetes"`` with the magic's plain values: the Function the double
    stores (schema-checked) carries each of them; v1beta1 asked for, v1beta2 applied."""
    from ofnotebook.backends.kubernetes import AS_V1BETA2

    fn = make_function("def handle(ctx, data):\n    ctx.send('out', data)\n", name="handle")
    handle = ofnotebook.deploy(fn, "all-settings", target="kubernetes",
                               inputs={"in": URI + "?group=g"},
                               outputs={"out": "http://notify.demo.svc/alerts?operation=post"},
                               target_options={
        "kubeconfig": kubeconfig, "build": False, "timeout": 10, "api_version": "v1beta1",
        "min_replicas": 0, "max_replicas": "4", "pull_policy": "Always",
        "keda_triggers": ["kafka:topic=k8s-events,lagThreshold=5"],
        "keda_polling_interval": 10, "keda_cooldown_period": 30,
        "hpa_behavior": "scaleDown: {stabilizationWindowSeconds: 45}",
        "image_credentials": "push-secret", "cpu": "500m", "memory": "256Mi", "gpus": 1,
        "secrets": ["TOKEN=fn-secrets:token"], "dapr_mode": "sidecar", "labels": ["team=data"]})
    assert AS_V1BETA2 in [e.detail for e in handle.events]
    stored = cluster.functions[("demo", "all-settings")]
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "ofnotebook",
                                            "team": "data"}
    spec, serving = stored["spec"], stored["spec"]["serving"]
    assert spec["imageCredentials"] == {"name": "push-secret"}
    container = serving["template"]["containers"][0]
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi",
                                                 "nvidia.com/gpu": 1}}
    assert container["env"] == [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "fn-secrets", "key": "token"}}}]
    assert serving["annotations"]["openfunction.io/dapr-service-mode"] == "sidecar"
    assert serving["outputs"][0]["dapr"]["operation"] == "post"
    assert serving["scaleOptions"] == {
        "minReplicas": 0, "maxReplicas": 4,
        "keda": {"triggers": [{"type": "kafka", "metadata": {"topic": "k8s-events",
                                                             "lagThreshold": "5"}}],
                 "scaledObject": {"pollingInterval": 10, "cooldownPeriod": 30, "advanced": {
                     "horizontalPodAutoscalerConfig": {"behavior": {
                         "scaleDown": {"stabilizationWindowSeconds": 45}}}}}}}
    handle.stop()


def test_a_component_called_by_name_only_is_applied_scoped_and_goes_with_its_function(
        cluster: KubeDouble, kubeconfig: str) -> None:
    fn = make_function("def f(request):\n    return 'ok'\n", name="f")
    handle = ofnotebook.deploy(fn, "caller-fn", target=backend(kubeconfig),
                               components={"st": "redis://redis.demo.svc:6379"})
    stored = cluster.components.items.get(("demo", "st"))
    assert stored is not None and stored["spec"]["type"] == "state.redis"
    validate(stored, dapr_crd())
    assert stored["scopes"] == ["caller-fn-demo"]
    serving = cluster.functions[("demo", "caller-fn")]["spec"]["serving"]
    assert serving["annotations"]["openfunction.io/enable-dapr"] == "true"
    handle.stop()
    wait_for(lambda: ("demo", "st") not in cluster.components.items, 10,
             lambda: str(cluster.components.items))
