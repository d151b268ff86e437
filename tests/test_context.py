"""Function context: written byte-for-byte as the controller writes it, read in every shape."""

from __future__ import annotations

import json

import pytest

from ofnotebook.context import component_name, context_env, serving_name
from ofnotebook.runtime.context import ContextError, parse_context
from ofnotebook.spec import ComponentSpec, FunctionSpec
from tests.contexts import KAFKA_IN_V1, KAFKA_IN_V2, SYNC_OUT_V1, SYNC_OUT_V2

KAFKA_OUT = ComponentSpec(name="kafka-out", type="bindings.kafka", operation="create",
                          metadata=(("brokers", "kafka:9092"), ("publishTopic", "sample-topic")))


def _rename(text: str, spec: FunctionSpec, mapping: dict[str, str]) -> str:
    """Swap our deterministic generated names for the reference's random ones."""
    for component, reference in mapping.items():
        text = text.replace(component, reference)
    return text


def test_sync_function_with_output_matches_the_controller() -> None:
    spec = FunctionSpec(name="sync-out", version="v1.0.0", outputs=(KAFKA_OUT,))
    env = context_env(spec)
    ours = component_name(spec, KAFKA_OUT)
    assert ours.startswith(serving_name(spec) + "-bindings-kafka-out-")
    mapping = {ours: "serving-abcde-bindings-kafka-out-x7k2p"}
    assert _rename(env["FUNC_CONTEXT"], spec, mapping) == SYNC_OUT_V1
    assert _rename(env["FUNC_CONTEXT_V1BETA2"], spec, mapping) == SYNC_OUT_V2


def test_async_function_matches_the_controller() -> None:
    kafka_in = ComponentSpec(name="kafka-in-binding", type="bindings.kafka")
    spec = FunctionSpec(name="kafka-in", version="v1.0.0", runtime="async",
                        inputs=(kafka_in,), outputs=(KAFKA_OUT,))
    env = context_env(spec)
    mapping = {component_name(spec, kafka_in): "serving-fghij-bindings-kafka-in-binding-q9w4z",
               component_name(spec, KAFKA_OUT): "serving-fghij-bindings-kafka-out-m2n8v"}
    assert _rename(env["FUNC_CONTEXT"], spec, mapping) == KAFKA_IN_V1
    assert _rename(env["FUNC_CONTEXT_V1BETA2"], spec, mapping) == KAFKA_IN_V2


def test_minimal_sync_context_and_port_override() -> None:
    spec = FunctionSpec(name="greet")
    env = context_env(spec, port=43210)
    assert env["FUNC_CONTEXT"] == '{"name":"greet","version":"latest","runtime":"Knative","port":"43210"}'
    v2 = json.loads(env["FUNC_CONTEXT_V1BETA2"])
    assert v2["triggers"]["http"]["port"] == 43210 and "port" not in v2 and "runtime" not in v2


def test_pubsub_output_keeps_topic_only_in_v1() -> None:
    out = ComponentSpec(name="events", type="pubsub.redis", topic="orders")
    spec = FunctionSpec(name="pub", outputs=(out,))
    env = context_env(spec)
    assert json.loads(env["FUNC_CONTEXT"])["outputs"]["events"]["uri"] == "orders"
    assert "topic" not in json.loads(env["FUNC_CONTEXT_V1BETA2"])["outputs"]["events"]


def test_generated_names_are_stable() -> None:
    spec = FunctionSpec(name="sync-out", outputs=(KAFKA_OUT,))
    assert component_name(spec, KAFKA_OUT) == component_name(
        FunctionSpec(name="sync-out", outputs=(KAFKA_OUT,)), KAFKA_OUT)


# -- the runtime reads every shape ---------------------------------------------------------


def test_runtime_reads_the_controllers_exact_sync_context() -> None:
    ctx = parse_context({"FUNC_CONTEXT": SYNC_OUT_V1, "FUNC_CONTEXT_V1BETA2": SYNC_OUT_V2})
    assert (ctx.name, ctx.version, ctx.runtime, ctx.port) == ("sync-out", "v1.0.0", "Knative", 8080)
    out = ctx.outputs["kafka-out"]
    assert out.component_name == "serving-abcde-bindings-kafka-out-x7k2p"
    assert (out.component_type, out.operation) == ("bindings.kafka", "create")


def test_runtime_reads_the_controllers_exact_async_context() -> None:
    ctx = parse_context({"FUNC_CONTEXT": KAFKA_IN_V1, "FUNC_CONTEXT_V1BETA2": KAFKA_IN_V2})
    assert ctx.is_async and ctx.port == 8080
    assert list(ctx.inputs) == ["kafka-in-binding"]
    assert ctx.inputs["kafka-in-binding"].component_name.endswith("q9w4z")


def test_runtime_reads_v1beta2_alone_and_in_func_context() -> None:
    only_v2 = parse_context({"FUNC_CONTEXT_V1BETA2": KAFKA_IN_V2})
    assert only_v2.is_async and only_v2.port == 8080
    assert only_v2.inputs["serving-fghij-bindings-kafka-in-binding-q9w4z"].component_type == (
        "bindings.kafka")
    misplaced = parse_context({"FUNC_CONTEXT": SYNC_OUT_V2})
    assert misplaced.runtime == "Knative" and misplaced.port == 8080


def test_pubsub_topic_recovered_from_v1_uri() -> None:
    v1 = {"name": "p", "version": "v1", "runtime": "Knative", "port": "8080",
          "outputs": {"events": {"uri": "orders", "componentName": "c", "componentType": "pubsub.redis"}}}
    ctx = parse_context({"FUNC_CONTEXT": json.dumps(v1)})
    assert ctx.outputs["events"].topic == "orders"


@pytest.mark.parametrize("env, message", [
    ({}, "neither"),
    ({"FUNC_CONTEXT": "{nope"}, "not valid JSON"),
    ({"FUNC_CONTEXT": "[]"}, "JSON object"),
    ({"FUNC_CONTEXT": '{"runtime":"Lambda"}'}, "neither Knative nor Async"),
    ({"FUNC_CONTEXT": '{"port":"http"}'}, "not a number"),
])
def test_bad_contexts(env: dict[str, str], message: str) -> None:
    with pytest.raises(ContextError, match=message):
        parse_context(env)
