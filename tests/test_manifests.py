"""Function manifests against the real OpenFunction v1.2.0 CRD (../shared/schemas) and the
minimal manifests of reference/openfunction-contract.md §1.4."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from ofnotebook.components import parse_items
from ofnotebook.errors import ConfigError
from ofnotebook.manifests import (ClusterOptions, ManifestError, function_manifest, managed,
                                  validate)
from ofnotebook.spec import FunctionSpec
from tests.helpers import shared_file

BROKERS = "kafka-server-kafka-brokers.default.svc:9092"
IMAGE = "registry.example.com/demo/fn@sha256:" + "a" * 64


def log_handler() -> tuple[FunctionSpec, ClusterOptions]:
    """The seed's Kafka log handler, with the KEDA options of the seed."""
    spec = FunctionSpec(
        name="logs-handler", runtime="async", version="v1.0.0",
        inputs=parse_items({"logs": f"kafka://{BROKERS}/logs?group=logs-handler"}, "input",
                           app="logs-handler"),
        outputs=parse_items({"notify": "http://notify.default.svc:8999/api/v2/alerts"},
                            "output", app="logs-handler"))
    options = ClusterOptions(
        namespace="demo", min_replicas=0, max_replicas=10, keda_polling_interval=15,
        keda_cooldown_period=60,
        keda_triggers=({"type": "kafka", "metadata": {
            "topic": "logs", "bootstrapServers": BROKERS, "consumerGroup": "logs-handler",
            "lagThreshold": "20"}},))
    return spec, options


def sync_with_kafka_output() -> FunctionSpec:
    return FunctionSpec(name="sync-out", version="v1.0.0",
                        outputs=parse_items({"kafka-out": f"kafka://{BROKERS}/sample-topic"},
                                            "output", app="sync-out"))


def test_the_async_log_handler_matches_the_reference_and_the_crd(crd: dict[str, Any]) -> None:
    spec, options = log_handler()
    manifest = function_manifest(spec, IMAGE, options)
    validate(manifest, crd)
    assert manifest["apiVersion"] == "core.openfunction.io/v1beta2"
    assert manifest["metadata"] == {"name": "logs-handler", "namespace": "demo"}
    # the kubernetes target marks what it manages; a GitOps folder is managed by its tool
    assert managed(manifest)["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "ofnotebook"}
    serving = manifest["spec"]["serving"]
    # reference §1.4 (b): explicit Deployment, dapr triggers naming inline bindings
    assert serving["workloadType"] == "Deployment"
    assert serving["template"]["containers"][0]["name"] == "function"
    assert serving["triggers"] == {"dapr": [{"name": "logs", "type": "bindings.kafka"}]}
    assert serving["outputs"] == [{"dapr": {"name": "notify", "type": "bindings.http",
                                            "operation": "create"}}]
    kafka = serving["bindings"]["logs"]
    assert kafka["type"] == "bindings.kafka" and kafka["version"] == "v1"
    assert {"name": "topics", "value": "logs"} in kafka["metadata"]
    assert {"name": "consumerGroup", "value": "logs-handler"} in kafka["metadata"]
    assert serving["annotations"]["openfunction.io/enable-dapr"] == "true"
    assert serving["scaleOptions"] == {
        "minReplicas": 0, "maxReplicas": 10,
        "keda": {"triggers": [{"type": "kafka", "metadata": {
            "topic": "logs", "bootstrapServers": BROKERS, "consumerGroup": "logs-handler",
            "lagThreshold": "20"}}],
            "scaledObject": {"pollingInterval": 15, "cooldownPeriod": 60}}}
    assert "states" not in serving and "pubsub" not in serving  # empty ones omitted


def test_the_sync_function_with_a_kafka_output_matches_the_reference(crd: dict[str, Any]
                                                                     ) -> None:
    manifest = function_manifest(sync_with_kafka_output(), IMAGE,
                                 ClusterOptions(namespace="demo", dapr_mode="sidecar",
                                                image_credentials="regcred",
                                                min_replicas=0, max_replicas=5))
    validate(manifest, crd)
    spec = manifest["spec"]
    # reference §1.4 (a)
    assert spec["image"] == IMAGE and spec["imageCredentials"] == {"name": "regcred"}
    assert spec["serving"]["triggers"] == {"http": {"port": 8080}}
    assert spec["serving"]["outputs"] == [{"dapr": {"name": "kafka-out",
                                                    "type": "bindings.kafka",
                                                    "operation": "create"}}]
    assert spec["serving"]["annotations"] == {"openfunction.io/enable-dapr": "true",
                                              "openfunction.io/dapr-service-mode": "sidecar"}
    assert {"name": "publishTopic", "value": "sample-topic"} in \
        spec["serving"]["bindings"]["kafka-out"]["metadata"]
    assert "workloadType" not in spec["serving"]
    assert spec["serving"]["scaleOptions"] == {"minReplicas": 0, "maxReplicas": 5}


def test_a_plain_http_function_has_no_dapr_and_nothing_empty(crd: dict[str, Any]) -> None:
    manifest = function_manifest(FunctionSpec(name="plain"), IMAGE)
    validate(manifest, crd)
    serving = manifest["spec"]["serving"]
    assert set(serving) == {"template", "triggers"}
    assert serving["template"] == {"containers": [{"name": "function",
                                                   "imagePullPolicy": "IfNotPresent"}]}


def test_secrets_are_references_and_gpus_are_limits(crd: dict[str, Any]) -> None:
    spec = FunctionSpec(name="gpu-fn", env=(("MODEL", "small"),))
    manifest = function_manifest(spec, IMAGE, ClusterOptions(
        secrets={"API_TOKEN": ("model-secrets", "token")}, cpu="2", memory="4Gi", gpus=1))
    validate(manifest, crd)
    container = manifest["spec"]["serving"]["template"]["containers"][0]
    assert container["env"] == [
        {"name": "MODEL", "value": "small"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-secrets",
                                                              "key": "token"}}}]
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "4Gi",
                                                 "nvidia.com/gpu": 1}}


def test_state_stores_and_pubsub_are_inline_components(crd: dict[str, Any]) -> None:
    spec = FunctionSpec(
        name="stateful", runtime="async",
        inputs=parse_items({"orders": "redis://redis.default.svc:6379/orders"}, "input",
                           app="stateful"),
        states=parse_items({"cache": "redis://redis.default.svc:6379"}, "state",
                           app="stateful"))
    manifest = function_manifest(spec, IMAGE)
    validate(manifest, crd)
    serving = manifest["spec"]["serving"]
    assert serving["pubsub"]["orders"]["type"] == "pubsub.redis"
    assert serving["triggers"]["dapr"] == [{"name": "orders", "type": "pubsub.redis",
                                            "topic": "orders"}]
    assert serving["states"]["cache"]["spec"]["type"] == "state.redis"


def test_a_field_the_api_server_would_prune_is_an_error(crd: dict[str, Any]) -> None:
    manifest = function_manifest(FunctionSpec(name="plain"), IMAGE)
    bad = copy.deepcopy(manifest)
    bad["spec"]["serving"]["replicas"] = 3  # not a Function field
    bad["spec"]["serving"]["template"]["containers"][0]["gpu"] = 1
    with pytest.raises(ManifestError) as caught:
        validate(bad, crd)
    message = str(caught.value)
    assert "spec.serving.replicas: unknown field, the API server would prune it" in message
    assert "spec.serving.template.containers[0].gpu: unknown field" in message


def test_schema_violations_are_listed(crd: dict[str, Any]) -> None:
    manifest = function_manifest(FunctionSpec(name="plain"), IMAGE,
                                 ClusterOptions(min_replicas=1))
    bad = copy.deepcopy(manifest)
    del bad["spec"]["image"]
    bad["spec"]["serving"]["scaleOptions"]["minReplicas"] = "one"
    with pytest.raises(ManifestError) as caught:
        validate(bad, crd)
    message = str(caught.value)
    assert "'image' is a required property" in message
    assert "spec.serving.scaleOptions.minReplicas: 'one' is not of type 'integer'" in message


def test_bad_cluster_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="--dapr-mode 'proxy' is not one of standalone, "
                                          "sidecar"):
        ClusterOptions(dapr_mode="proxy")
    with pytest.raises(ConfigError, match="--min-replicas 5 is above --max-replicas 2"):
        ClusterOptions(min_replicas=5, max_replicas=2)


def test_v1beta1_on_request_fits_its_schema_and_avoids_the_conversion_traps(
        crd: dict[str, Any]) -> None:
    spec, options = log_handler()
    manifest = function_manifest(spec, IMAGE, options, api_version="v1beta1")
    validate(manifest, crd)
    assert manifest["apiVersion"] == "core.openfunction.io/v1beta1"
    serving = manifest["spec"]["serving"]
    assert serving["runtime"] == "async"
    assert serving["inputs"] == [{"name": "logs", "component": "logs"}]
    # every output's component is inline: the conversion drops the others
    assert serving["outputs"] == [{"name": "notify", "component": "notify",
                                   "operation": "create"}]
    assert set(serving["bindings"]) == {"logs", "notify"}
    # KEDA triggers live in serving.triggers, kept because scaleOptions.keda is set; the
    # replica counts in the scaledObject (the conversion makes them min/maxReplicas), whose
    # presence makes the converted Function a Deployment
    assert serving["triggers"][0]["type"] == "kafka"
    assert serving["scaleOptions"] == {"keda": {"scaledObject": {
        "pollingInterval": 15, "minReplicaCount": 0, "maxReplicaCount": 10,
        "cooldownPeriod": 60}}}
    assert "annotations" not in serving  # v1beta1: the Dapr mode only when given

    sync = function_manifest(sync_with_kafka_output(), IMAGE, api_version="v1beta1")
    validate(sync, crd)
    assert sync["spec"]["port"] == 8080 and sync["spec"]["serving"]["runtime"] == "knative"
    assert "scaleOptions" not in sync["spec"]["serving"]


def test_an_unknown_api_version_is_refused() -> None:
    with pytest.raises(ConfigError, match="v1beta2 .* or v1beta1"):
        function_manifest(FunctionSpec(name="x"), IMAGE, api_version="v2")


def test_an_in_cluster_build_fits_the_crd_and_matches_the_reference(crd: dict[str, Any]
                                                                    ) -> None:
    """``--build cluster``: a Shipwright bundle built by kaniko, in exactly the fields the
    controller passes on (reference engine-less-builds.md A.2: no ``shipwright.timeout``,
    which only the webhook reads, and no ``build.env``, which kaniko's strategy refuses)."""
    from ofnotebook.manifests import ClusterBuild, add_cluster_build

    bundle = "registry.example.com/ofnotebook/greet-source:0123456789abcdef"
    manifest = add_cluster_build(
        function_manifest(FunctionSpec(name="greet", version="v1.0.0"),
                          "registry.example.com/ofnotebook/greet:0123456789abcdef",
                          ClusterOptions(namespace="demo")),
        ClusterBuild(bundle=bundle, credentials="push-secret"))
    validate(manifest, crd)  # no schema error, nothing the server would prune
    reference = yaml.safe_load(
        shared_file("reference/examples/function-bundle-kaniko.yaml").read_text())
    build, expected = manifest["spec"]["build"], reference["spec"]["build"]
    for key in ("builder", "dockerfile", "timeout", "successfulBuildsHistoryLimit",
                "failedBuildsHistoryLimit"):
        assert build[key] == expected[key], key
    assert build["srcRepo"] == {**expected["srcRepo"], "bundleContainer": {"image": bundle}}
    assert build["shipwright"] == {"strategy": expected["shipwright"]["strategy"]}
    assert "env" not in build
    assert manifest["spec"]["imageCredentials"] == {"name": "push-secret"}
    assert list(manifest["spec"]) == ["version", "image", "imageCredentials", "build",
                                      "serving"]
    with pytest.raises(Exception, match="v1beta2 only"):
        add_cluster_build(function_manifest(FunctionSpec(name="greet"), "img",
                                            ClusterOptions(api_version="v1beta1")),
                          ClusterBuild(bundle=bundle))


# -- every cluster setting where the manifest keeps it ------------------------------------------

BEHAVIOR = {"scaleDown": {"stabilizationWindowSeconds": 45,
                          "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}]}}


def test_pull_policy_hpa_behaviour_and_the_dapr_mode_in_both_versions(crd: dict[str, Any]
                                                                      ) -> None:
    spec, options = log_handler()
    options = ClusterOptions(**{**vars(options), "pull_policy": "Always",
                                "hpa_behavior": BEHAVIOR})
    v2 = function_manifest(spec, IMAGE, options)
    validate(v2, crd)
    serving = v2["spec"]["serving"]
    assert serving["template"]["containers"][0]["imagePullPolicy"] == "Always"
    scaled = serving["scaleOptions"]["keda"]["scaledObject"]
    assert scaled["advanced"] == {"horizontalPodAutoscalerConfig": {"behavior": BEHAVIOR}}
    # v1beta2 writes the (default) mode explicitly, as reference §8 advises
    assert serving["annotations"] == {"openfunction.io/enable-dapr": "true",
                                      "openfunction.io/dapr-service-mode": "standalone"}
    v1 = function_manifest(spec, IMAGE, options, api_version="v1beta1")
    validate(v1, crd)
    old = v1["spec"]["serving"]
    assert old["scaleOptions"]["keda"]["scaledObject"]["advanced"] == scaled["advanced"]
    assert "annotations" not in old  # OpenFunction enables Dapr and defaults to standalone
    sidecar = function_manifest(spec, IMAGE, ClusterOptions(dapr_mode="sidecar"),
                                api_version="v1beta1")
    assert sidecar["spec"]["serving"]["annotations"][
        "openfunction.io/dapr-service-mode"] == "sidecar"


def test_v1beta1_keeps_a_sync_functions_replicas_in_scale_options(crd: dict[str, Any]) -> None:
    manifest = function_manifest(sync_with_kafka_output(), IMAGE,
                                 ClusterOptions(min_replicas=0, max_replicas=5),
                                 api_version="v1beta1")
    validate(manifest, crd)
    assert manifest["spec"]["serving"]["scaleOptions"] == {"minReplicas": 0, "maxReplicas": 5}


def test_keda_triggers_on_a_sync_function_are_refused() -> None:
    with pytest.raises(ConfigError, match="--keda-trigger scales asynchronous functions; "
                                          "'sync-out' is synchronous"):
        function_manifest(sync_with_kafka_output(), IMAGE,
                          ClusterOptions(keda_triggers=["kafka:topic=t"]))


# -- named components ------------------------------------------------------------------------

def named_spec() -> FunctionSpec:
    """An async function whose input, output and state store are named components."""
    from ofnotebook.spec import ComponentSpec

    receiver = ComponentSpec(name="kafka", type="bindings.kafka", component="kafka-receiver",
                             metadata=(("brokers", BROKERS), ("topics", "logs"),
                                       ("authRequired", "false")))
    notify = ComponentSpec(name="notify", type="bindings.http", operation="post",
                           component="notification-manager",
                           metadata=(("url", "http://notify.default.svc/alerts"),))
    cache = ComponentSpec(name="cache", type="state.redis", component="cache",
                          metadata=(("redisHost", "redis.default.svc:6379"),))
    inline = ComponentSpec(name="audit", type="bindings.kafka",
                           metadata=(("brokers", BROKERS), ("publishTopic", "audit")),
                           operation="create")
    return FunctionSpec(name="named-fn", runtime="async", inputs=(receiver,),
                        outputs=(notify, inline), states=(cache,))


@pytest.fixture(scope="module")
def dapr_crd() -> dict[str, Any]:
    return yaml.safe_load(shared_file("schemas/dapr-component-crd.yaml").read_text())


def test_v1beta2_references_named_components_and_each_is_a_component(
        crd: dict[str, Any], dapr_crd: dict[str, Any]) -> None:
    from ofnotebook.manifests import component_manifests

    spec = named_spec()
    manifest = function_manifest(spec, IMAGE, ClusterOptions(namespace="demo"))
    validate(manifest, crd)
    serving = manifest["spec"]["serving"]
    assert serving["triggers"]["dapr"] == [{"name": "kafka-receiver", "type": "bindings.kafka",
                                            "inputName": "kafka"}]
    assert serving["outputs"] == [
        {"dapr": {"name": "notification-manager", "type": "bindings.http",
                  "operation": "post", "outputName": "notify"}},
        {"dapr": {"name": "audit", "type": "bindings.kafka", "operation": "create"}}]
    assert serving["states"] == {"cache": {}}  # no spec: the Component of that name
    assert list(serving["bindings"]) == ["audit"]  # only the unnamed one is inline
    found = component_manifests(spec, "demo", scopes=["other-fn-demo"])
    for component in found:
        validate(component, dapr_crd)
    assert [c["metadata"] for c in found] == [{"name": n, "namespace": "demo"} for n in
                                              ("kafka-receiver", "notification-manager",
                                               "cache")]
    assert found[0]["spec"] == {"type": "bindings.kafka", "version": "v1", "metadata": [
        {"name": "brokers", "value": BROKERS}, {"name": "topics", "value": "logs"},
        {"name": "authRequired", "value": "false"}]}
    assert all(c["scopes"] == ["named-fn-demo", "other-fn-demo"] for c in found)
    # with no namespace given, the Function is written into the one its scopes name
    assert function_manifest(spec, IMAGE)["metadata"]["namespace"] == "default"


def test_v1beta1_keeps_named_components_inline_under_their_names(crd: dict[str, Any]) -> None:
    manifest = function_manifest(named_spec(), IMAGE, api_version="v1beta1")
    validate(manifest, crd)
    serving = manifest["spec"]["serving"]
    assert serving["inputs"] == [{"name": "kafka", "component": "kafka-receiver"}]
    assert serving["outputs"] == [
        {"name": "notify", "component": "notification-manager", "operation": "post"},
        {"name": "audit", "component": "audit", "operation": "create"}]
    assert list(serving["bindings"]) == ["kafka-receiver", "notification-manager", "audit"]
    assert serving["states"]["cache"]["type"] == "state.redis"
    assert "namespace" not in manifest["metadata"]


def test_a_state_store_named_otherwise_than_its_component_is_refused() -> None:
    from ofnotebook.spec import ComponentSpec

    spec = FunctionSpec(name="state-fn", states=(ComponentSpec(
        name="cache", type="state.redis", component="redis-main"),))
    with pytest.raises(ConfigError, match="State store 'cache' uses component 'redis-main'.*"
                                          "--state redis-main=@redis-main"):
        function_manifest(spec, IMAGE)
