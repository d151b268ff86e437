"""Read the OpenFunction function context in either shape the controller writes.

``FUNC_CONTEXT`` (v1beta1 shape) gives the port and the runtime kind; ``FUNC_CONTEXT_V1BETA2``
gives the triggers. The controller sets both; older or hand-written set-ups may set only one,
and some tools put the v1beta2 shape into ``FUNC_CONTEXT``. Every combination is accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_PORT = 8080


class ContextError(ValueError):
    """Raised when the context variables are missing or malformed."""


@dataclass(frozen=True)
class Component:
    """One input, output or state store: the name the code uses and what Dapr knows it as."""

    name: str
    component_name: str
    component_type: str
    topic: str = ""
    operation: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.component_type.split(".", 1)[0]


@dataclass(frozen=True)
class FunctionContext:
    """The parts of the context the runtime acts on."""

    name: str
    version: str
    runtime: str  # "Knative" (sync) or "Async"
    port: int
    inputs: dict[str, Component] = field(default_factory=dict)
    outputs: dict[str, Component] = field(default_factory=dict)
    states: dict[str, Component] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        return self.runtime == "Async"


def _load(raw: str | None, var: str) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ContextError(f"{var} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ContextError(f"{var} must be a JSON object, got {type(value).__name__}")
    return value


def _components(raw: Mapping[str, Any] | None) -> dict[str, Component]:
    result = {}
    for name, item in (raw or {}).items():
        item = item or {}
        kind = str(item.get("componentType", ""))
        uri = str(item.get("uri", ""))
        result[name] = Component(
            name=name,
            component_name=str(item.get("componentName") or uri or name),
            component_type=kind,
            topic=str(item.get("topic") or (uri if kind.startswith("pubsub") else "")),
            operation=str(item.get("operation", "")),
            metadata={str(k): str(v) for k, v in (item.get("metadata") or {}).items()},
        )
    return result


def parse_context(env: Mapping[str, str]) -> FunctionContext:
    """Build the runtime's view of the context from environment variables."""
    v1 = _load(env.get("FUNC_CONTEXT"), "FUNC_CONTEXT")
    v2 = _load(env.get("FUNC_CONTEXT_V1BETA2"), "FUNC_CONTEXT_V1BETA2")
    if v1 is not None and "triggers" in v1 and v2 is None:
        v1, v2 = None, v1  # the v1beta2 shape put into FUNC_CONTEXT
    if v1 is None and v2 is None:
        raise ContextError("neither FUNC_CONTEXT nor FUNC_CONTEXT_V1BETA2 is set")
    v1 = v1 or {}
    v2 = v2 or {}
    triggers = v2.get("triggers") or {}

    runtime = str(v1.get("runtime") or ("Async" if "dapr" in triggers and "http" not in triggers
                                        else "Knative"))
    if runtime.lower() not in ("knative", "async"):
        raise ContextError(f"runtime {runtime!r} is neither Knative nor Async")
    runtime = runtime.title()
    raw_port = v1.get("port") or v2.get("port") or (triggers.get("http") or {}).get("port")
    try:
        port = int(raw_port) if raw_port not in (None, "") else DEFAULT_PORT
    except (TypeError, ValueError) as exc:
        raise ContextError(f"port {raw_port!r} is not a number") from exc

    outputs = _components(v1.get("outputs"))
    # v1beta2 outputs lack the topic (a controller omission) but may be the only shape given.
    for name, comp in _components(v2.get("outputs")).items():
        outputs.setdefault(name, comp)
    inputs = _components(v1.get("inputs"))
    for trigger in triggers.get("dapr") or []:
        key = trigger.get("inputName") or trigger.get("name")
        if key and not any(c.component_name == trigger.get("name") for c in inputs.values()):
            inputs[key] = Component(name=key, component_name=trigger["name"],
                                    component_type=str(trigger.get("type", "")),
                                    topic=str(trigger.get("topic", "")))
    states = _components(v1.get("states") or v2.get("states"))
    return FunctionContext(
        name=str(v1.get("name") or v2.get("name") or "function"),
        version=str(v1.get("version") or v2.get("version") or "latest"),
        runtime=runtime, port=port, inputs=inputs, outputs=outputs, states=states)
