"""The seed's two samples, field by field (issue 11 item 7).

``../shared/reference/seed/`` holds the two v1beta1 Functions of the seed document: a Knative
function forwarding each request to Kafka (``function-front``) and an async one alerting on
the 404s in a Kafka stream of logs (``logs-async-handler``). From Python ports of their
functions, deployed through the real API to the yaml target with ``api_version: v1beta1``
(and, in the last test, through ``%%function`` in an IPython shell and ``%function export``),
the written Functions equal the seed's in every field but ``spec.image`` (ours names the
package's image) and ``spec.build`` (ours is prebuilt, or ``--build cluster``). The magic lines
are the ones docs/cluster-settings.md shows.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

import ofnotebook
from ofnotebook import Component
from tests.helpers import make_function, shared_file

FRONT_SOURCE = '''
def forward_to_kafka(ctx, data):
    """ForwardToKafka: each request's body goes on to Kafka through the output "target"."""
    ctx.send("target", data)
    return "forwarded"
'''
LOGS_SOURCE = '''
import json
import re

NOT_FOUND = re.compile(r'"(?:GET|POST|PUT|DELETE|HEAD) [^"]*" 404 ')


def logs_handler(ctx, data):
    """LogsHandler: an alert to Notification Manager for each 404 in the WordPress logs."""
    line = data.decode() if isinstance(data, bytes) else str(data)
    if NOT_FOUND.search(line):
        alert = {"labels": {"alertname": "HTTP 404", "severity": "warning"},
                 "annotations": {"message": line.strip()}}
        ctx.send("notify", json.dumps([alert]))
'''
#: the named components of the seed, as a notebook declares them (metadata as written there:
#: ``authRequired: "false"`` stays, daprd maps it to ``authType: none``)
COMPONENTS_SOURCE = '''
from ofnotebook import Component

kafka_server = Component("bindings.kafka", {
    "brokers": "kafka-server-kafka-brokers:9092", "authRequired": "false",
    "publishTopic": "sample-topic", "topics": "sample-topic",
    "consumerGroup": "function-front"}, name="kafka-server")
kafka_receiver = Component("bindings.kafka", {
    "brokers": "kafka-server-kafka-brokers:9092", "authRequired": "false",
    "publishTopic": "logs", "topics": "logs", "consumerGroup": "logs-handler"},
    name="kafka-receiver")
notification_manager = Component("bindings.http", {
    "url": "http://notification-manager-svc.kubesphere-monitoring-system.svc.cluster.local"
           ":19093/api/v2/alerts"}, name="notification-manager")
'''
HPA_BEHAVIOR = ("{scaleDown: {stabilizationWindowSeconds: 45, policies: [{type: Percent, "
                "value: 50, periodSeconds: 15}]}, scaleUp: {stabilizationWindowSeconds: 0}}")
KEDA_TRIGGER = ("kafka:topic=logs,bootstrapServers=kafka-server-kafka-brokers.default.svc."
                "cluster.local:9092,consumerGroup=logs-handler,lagThreshold=20")
#: the magic lines of docs/cluster-settings.md ({out} is the folder written)
FRONT_LINE = ("function-front --target yaml --out {out} --api-version v1beta1 "
              "--version v1.0.0 --image-credentials push-secret --pull-policy Always "
              "--min-replicas 0 --max-replicas 5 --output target=@kafka_server")
LOGS_LINE = ("logs-async-handler --target yaml --out {out} --api-version v1beta1 "
             "--version v2.0.0 --image-credentials push-secret --pull-policy Always "
             "--input kafka=@kafka_receiver --output notify=@notification_manager?operation=post "
             f"--min-replicas 0 --max-replicas 10 --keda-trigger {KEDA_TRIGGER} "
             "--keda-polling-interval 15 --keda-cooldown 60 --hpa-behavior '{hpa}'")


def seed(name: str) -> dict[str, Any]:
    return yaml.safe_load(shared_file(f"reference/seed/{name}.yaml").read_text())


def but_image_and_build(function: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(function)
    out["spec"].pop("image")
    out["spec"].pop("build", None)
    return out


def written(folder: Path, name: str) -> dict[str, Any]:
    return yaml.safe_load((folder / name / "function.yaml").read_text())


def assert_as_the_seed(folder: Path, name: str) -> None:
    ours = written(folder, name)
    assert ours["spec"]["image"] and "build" not in ours["spec"]
    assert but_image_and_build(ours) == but_image_and_build(seed(name))


def components() -> dict[str, Component]:
    namespace: dict[str, Any] = {}
    exec(COMPONENTS_SOURCE, namespace)
    return {k: v for k, v in namespace.items() if isinstance(v, Component)}


def test_function_front_from_python_equals_the_seed(tmp_path: Path) -> None:
    fn = make_function(FRONT_SOURCE, name="forward_to_kafka")
    handle = ofnotebook.deploy(
        fn, "function-front", target="yaml", version="v1.0.0",
        outputs={"target": components()["kafka_server"]},
        target_options={"folder": str(tmp_path), "api_version": "v1beta1",
                        "image_credentials": "push-secret", "pull_policy": "Always",
                        "min_replicas": 0, "max_replicas": 5})
    try:
        assert_as_the_seed(tmp_path, "function-front")
        assert not (tmp_path / "_components").exists()  # v1beta1: the component is inline
    finally:
        handle.stop()


def test_logs_async_handler_from_python_equals_the_seed(tmp_path: Path) -> None:
    """The components declared by name and used as ``@NAME`` (the other spelling)."""
    fn = make_function(LOGS_SOURCE, name="logs_handler")
    named = components()
    handle = ofnotebook.deploy(
        fn, "logs-async-handler", target="yaml", version="v2.0.0",
        components=[named["kafka_receiver"], named["notification_manager"]],
        inputs={"kafka": "@kafka-receiver"},
        outputs={"notify": "@notification-manager?operation=post"},
        target_options={
            "folder": str(tmp_path), "api_version": "v1beta1",
            "image_credentials": "push-secret", "pull_policy": "Always",
            "min_replicas": 0, "max_replicas": 10, "keda_polling_interval": 15,
            "keda_cooldown_period": 60,
            "keda_triggers": [{"type": "kafka", "metadata": {
                "topic": "logs", "consumerGroup": "logs-handler", "lagThreshold": 20,
                "bootstrapServers": "kafka-server-kafka-brokers.default.svc.cluster.local:9092"}}],
            "hpa_behavior": {"scaleDown": {"stabilizationWindowSeconds": 45, "policies": [
                {"type": "Percent", "value": 50, "periodSeconds": 15}]},
                "scaleUp": {"stabilizationWindowSeconds": 0}}})
    try:
        assert_as_the_seed(tmp_path, "logs-async-handler")
    finally:
        handle.stop()


def test_both_samples_through_the_magic_and_function_export(ip: Any, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """The cells of docs/cluster-settings.md in a real shell: written by the yaml target,
    then exported again with ``%function export`` from the handles' requests."""
    ip.run_cell(COMPONENTS_SOURCE).raise_error()
    out, exported = tmp_path / "written", tmp_path / "exported"
    ip.run_cell_magic("function", FRONT_LINE.format(out=out), FRONT_SOURCE)
    ip.run_cell_magic("function", LOGS_LINE.format(out=out, hpa=HPA_BEHAVIOR), LOGS_SOURCE)
    for name in ("function-front", "logs-async-handler"):
        assert_as_the_seed(out, name)
        ip.run_line_magic("function", f"export {name} {exported}")
        assert f"written: {exported / name}" in capsys.readouterr().out
        assert_as_the_seed(exported, name)
        assert written(exported, name) == written(out, name)
