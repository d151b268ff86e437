"""The seed's two samples, field by field (issue 11 item 7).

``../shared/reference/seed/`` holds the two v1beta1 Functions of the seed document: a Knative
function forwarding each request to Kafka (``function-front``) and an async one alerting on
the 404s in a Kafka stream of logs (``logs-async-handler``). From Python ports of their
functions, deployed through the real API to the yaml target with ``api_version: v1beta1``
(and, in the last test, through ``%%function`` in an IPython shell and ``%function export``),
the written Functions equal the seed's in every field but ``spec.image`` (ours names the
package's image) and ``spec.build`` (ours is prebuilt, or ``--build cluster``). The cells
(components, ports, magic lines) are docs/cluster-settings.md's, read from there.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import ofnotebook
from ofnotebook import Component
from tests.helpers import make_function, shared_file

DOC = Path(__file__).resolve().parents[1] / "docs" / "cluster-settings.md"
BEGIN, END = "<!-- seed cells:", "<!-- end of the seed cells -->"


def doc_cells() -> list[str]:
    """The python blocks of docs/cluster-settings.md's seed section, in order: the named
    components, the two ``%%function`` cells, the exports."""
    text = DOC.read_text()
    section = text[text.index(BEGIN):text.index(END)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def body(cell: str) -> str:
    """A ``%%function`` cell without its magic line (and the line's continuations)."""
    lines = cell.splitlines(True)
    while lines and lines.pop(0).rstrip().endswith("\\"):
        pass
    return "".join(lines)


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
    exec(doc_cells()[0], namespace)
    return {k: v for k, v in namespace.items() if isinstance(v, Component)}


def test_function_front_from_python_equals_the_seed(tmp_path: Path) -> None:
    fn = make_function(body(doc_cells()[1]), name="forward_to_kafka")
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
    fn = make_function(body(doc_cells()[2]), name="logs_handler")
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


def test_the_docs_cells_through_the_magic_and_function_export(
        ip: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The cells of docs/cluster-settings.md, verbatim, in a real shell: the yaml target
    writes both Functions into ``gitops/``, then ``%function export`` writes them again into
    ``exported/`` from the handles' requests."""
    monkeypatch.chdir(tmp_path)
    cells = doc_cells()
    assert len(cells) == 4 and cells[1].startswith("%%function function-front")
    for cell in cells:
        ip.run_cell(cell).raise_error()
    out = capsys.readouterr().out
    for name in ("function-front", "logs-async-handler"):
        assert_as_the_seed(tmp_path / "gitops", name)
        assert f"written: exported/{name}" in out
        assert written(tmp_path / "exported", name) == written(tmp_path / "gitops", name)
