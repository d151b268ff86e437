"""Every cluster setting as the magic sends it (plain values) and as Python gives it (native
types), one clear error per bad value, and the targets that take them (kubernetes, yaml) or
ignore them (local, container)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ofnotebook
from ofnotebook.backends import get_backend
from ofnotebook.cluster import SETTINGS, ClusterOptions, cluster_settings
from ofnotebook.errors import ConfigError
from tests.helpers import make_function

BEHAVIOR = {"scaleDown": {"stabilizationWindowSeconds": 45,
                          "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}]},
            "scaleUp": {"stabilizationWindowSeconds": 0}}
BEHAVIOR_YAML = """
scaleDown:
  stabilizationWindowSeconds: 45
  policies:
    - type: Percent
      value: 50
      periodSeconds: 15
scaleUp:
  stabilizationWindowSeconds: 0
"""
KAFKA = {"type": "kafka", "metadata": {"topic": "logs", "bootstrapServers": "k-0:9092,k-1:9092",
                                       "consumerGroup": "logs-handler", "lagThreshold": "20"}}


def test_the_magics_plain_values_and_pythons_native_ones_give_the_same_options() -> None:
    plain = ClusterOptions(
        min_replicas=0, max_replicas="10",
        keda_triggers=["kafka:topic=logs,bootstrapServers=k-0:9092,k-1:9092,"
                       "consumerGroup=logs-handler,lagThreshold=20"],
        keda_polling_interval=15, keda_cooldown_period="60", hpa_behavior=BEHAVIOR_YAML,
        image_credentials="push-secret", pull_policy="Always", api_version="v1beta1",
        cpu="500m", memory="512Mi", gpus=1, secrets=["API_TOKEN=model-secrets:token"],
        dapr_mode="sidecar", labels=["team=data", "app.kubernetes.io/part-of=logs"])
    native = ClusterOptions(
        min_replicas=0, max_replicas=10,
        keda_triggers=({**KAFKA, "metadata": {**KAFKA["metadata"], "lagThreshold": 20}},),
        keda_polling_interval=15, keda_cooldown_period=60, hpa_behavior=BEHAVIOR,
        image_credentials="push-secret", pull_policy="Always", api_version="v1beta1",
        cpu="500m", memory="512Mi", gpus=1, secrets={"API_TOKEN": ("model-secrets", "token")},
        dapr_mode="sidecar", labels={"team": "data", "app.kubernetes.io/part-of": "logs"})
    assert plain == native and hash(plain) == hash(native)
    assert plain.keda_triggers == (KAFKA,)  # a value's own commas stay in it
    assert plain.hpa_behavior == BEHAVIOR
    assert plain.secrets == {"API_TOKEN": ("model-secrets", "token")}
    assert ClusterOptions(hpa_behavior='{"scaleUp": {"stabilizationWindowSeconds": 0}}',
                          keda_triggers=[KAFKA]).hpa_behavior == {
        "scaleUp": {"stabilizationWindowSeconds": 0}}  # JSON too


def test_unset_settings_keep_their_defaults() -> None:
    options = ClusterOptions(min_replicas=None, cpu="", keda_triggers=[], labels=None)
    assert options == ClusterOptions()
    assert (options.pull_policy, options.api_version, options.dapr_mode, options.namespace,
            options.gpus) == ("IfNotPresent", "v1beta2", None, None, 0)


@pytest.mark.parametrize("key, value, message", [
    ("keda_triggers", ["kafka"], "--keda-trigger 'kafka' needs TYPE:KEY=VALUE"),
    ("keda_triggers", ["kafka:lagThreshold"], "--keda-trigger 'kafka:lagThreshold' needs "
                                              "TYPE:KEY=VALUE"),
    ("keda_triggers", ["Kafka Lag:topic=x"], "needs TYPE:KEY=VALUE"),
    ("keda_triggers", [{"type": "kafka", "metadata": {}}], "non-empty 'metadata'"),
    ("keda_triggers", [{"type": "kafka", "metadata": {"a": "b"}, "meta": 1}],
     "unknown field.*meta; a KEDA trigger has type, name, metadata"),
    ("min_replicas", -1, "--min-replicas -1 needs a whole number"),
    ("max_replicas", "many", "--max-replicas 'many' needs a whole number"),
    ("gpus", True, "--gpus True needs a whole number"),
    ("keda_cooldown_period", 1.5, "--keda-cooldown 1.5 needs a whole number"),
    ("hpa_behavior", "scaleDown: [", "--hpa-behavior 'scaleDown: \\[' is neither JSON nor YAML"),
    ("hpa_behavior", "scaledown: {}", "needs scaleUp and/or scaleDown rules"),
    ("hpa_behavior", {"scaleUp": {"window": 3}}, "scaleUp takes stabilizationWindowSeconds"),
    ("hpa_behavior", {"scaleUp": {"policies": [{"type": "Percent", "value": 0,
                                                "periodSeconds": 15}]}},
     "policies need type \\(Pods or Percent\\), value \\(1 or more\\)"),
    ("hpa_behavior", {"scaleDown": {"stabilizationWindowSeconds": 7200}}, "0 to 3600"),
    ("pull_policy", "always", "--pull-policy 'always' is not one of Always, IfNotPresent, "
                              "Never"),
    ("api_version", "v2", "--api-version 'v2' is not one of v1beta2, v1beta1"),
    ("dapr_mode", "proxy", "--dapr-mode 'proxy' is not one of standalone, sidecar"),
    ("cpu", "half", "--cpu 'half' is not a Kubernetes quantity; write it as e.g. 500m"),
    ("memory", "4GB", "--memory '4GB' is not a Kubernetes quantity; write it as e.g. 512Mi"),
    ("secrets", ["API_TOKEN=model-secrets"], "--secret-env 'API_TOKEN=model-secrets' is not "
                                             "VAR=SECRET:KEY"),
    ("secrets", ["API_TOKEN"], "--secret-env 'API_TOKEN' is not VAR=SECRET:KEY"),
    ("secrets", ["1TOKEN=s:k"], "names no valid environment variable"),
    ("secrets", {"TOKEN": ("Bad_Secret", "k")}, "is not VAR=SECRET:KEY"),
    ("labels", ["team"], "--label 'team' is not K=V"),
    ("labels", {"team": "data science"}, "--label 'team=data science' is not a valid "
                                         "Kubernetes label"),
    ("image_credentials", "Push_Secret", "--image-credentials 'Push_Secret' is not a valid "
                                         "Secret name"),
    ("namespace", "Demo", "--namespace 'Demo' is not a valid namespace"),
])
def test_each_bad_value_is_one_clear_error(key: str, value: Any, message: str) -> None:
    settings: dict[str, Any] = {key: value}
    if key == "hpa_behavior":
        settings["keda_triggers"] = [KAFKA]
    with pytest.raises(ConfigError, match=message) as caught:
        ClusterOptions(**settings)
    assert caught.value.key == key


def test_keda_settings_without_a_trigger_are_refused() -> None:
    for key, value, option in (("keda_polling_interval", 15, "--keda-polling-interval"),
                               ("keda_cooldown_period", 60, "--keda-cooldown"),
                               ("hpa_behavior", BEHAVIOR, "--hpa-behavior")):
        with pytest.raises(ConfigError, match=f"{option} needs a --keda-trigger: OpenFunction "
                                              f"creates the KEDA ScaledObject"):
            ClusterOptions(**{key: value})


def test_target_options_split_into_cluster_settings_and_the_targets_own() -> None:
    base = ClusterOptions(namespace="demo", min_replicas=1)
    options, own = cluster_settings({"options": base, "max_replicas": 3, "registry": "r:5000",
                                     "folder": "out", "cpu": None})
    assert options == ClusterOptions(namespace="demo", min_replicas=1, max_replicas=3)
    assert own == {"registry": "r:5000", "folder": "out"}
    assert cluster_settings({"registry": "r:5000"}) == (None, {"registry": "r:5000"})
    with pytest.raises(ConfigError, match="must be an ofnotebook.manifests.ClusterOptions"):
        cluster_settings({"options": {"min_replicas": 1}})
    assert {"min_replicas", "keda_triggers", "hpa_behavior", "pull_policy", "secrets",
            "labels", "dapr_mode", "api_version", "namespace"} <= SETTINGS


def test_a_cluster_options_object_in_target_options_works(tmp_path: Path) -> None:
    """Once ``unhashable type: 'dict'``: the kernel-wide instance cache keyed on the options."""
    options = ClusterOptions(labels={"team": "data"}, secrets={"T": ("s", "k")})
    first = get_backend("yaml", folder=str(tmp_path), options=options)
    again = get_backend("yaml", folder=str(tmp_path),
                        options=ClusterOptions(labels={"team": "data"},
                                               secrets={"T": ("s", "k")}))
    assert again is first and first.options == options  # type: ignore[attr-defined]
    plain = get_backend("yaml", folder=str(tmp_path), labels=["team=data"],
                        keda_triggers=[KAFKA])
    assert plain is not first
    assert plain.options.keda_triggers == (KAFKA,)  # type: ignore[attr-defined]


def test_local_and_container_take_the_cluster_settings_and_ignore_them() -> None:
    settings = {"min_replicas": 0, "keda_triggers": ["kafka:topic=logs"], "hpa_behavior":
                BEHAVIOR, "pull_policy": "Always", "namespace": "demo", "labels": ["a=b"],
                "options": ClusterOptions(gpus=1)}
    assert get_backend("local", **settings).name == "local"
    container = get_backend("container", registry="127.0.0.1:5000", **settings)
    assert container.name == "container"
    # a bad cluster setting fails on every target; an option of no target's still does
    with pytest.raises(ConfigError, match="--keda-trigger 'kafka' needs TYPE:KEY=VALUE"):
        get_backend("local", keda_triggers=["kafka"])
    with pytest.raises(ConfigError, match="Target 'local' takes no --out \\(folder="):
        get_backend("local", folder="out", min_replicas=1)


def test_a_bad_setting_deploys_nothing(tmp_path: Path) -> None:
    fn = make_function("def f(request):\n    return 1\n")
    with pytest.raises(ConfigError, match="--pull-policy 'sometimes'"):
        ofnotebook.deploy(fn, "bad-setting", target="yaml",
                          target_options={"folder": str(tmp_path), "pull_policy": "sometimes"})
    assert not list(tmp_path.iterdir())


def test_a_misspelt_setting_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match=r"--min-replica option \(did you mean "
                                          r"'min_replicas'\?\).*cluster settings \(") as info:
        get_backend("local", min_replica=0)
    assert "keda_triggers" in str(info.value)  # the settings are listed with the target's own


def test_settings_that_contradict_the_function_are_refused_on_the_local_target_too(
        local_backend: Any) -> None:
    """Not first at ``%function export`` or on the cluster: the cell that deploys locally
    must be one that exports."""
    fn = make_function("def f(request):\n    return 1\n")
    with pytest.raises(ConfigError, match="--keda-trigger scales asynchronous functions"):
        ofnotebook.deploy(fn, "keda-sync", target=local_backend,
                          target_options={"keda_triggers": ["kafka:topic=x"]})
    assert local_backend.deployments() == []
