"""The OpenFunction function context, written exactly as the v1.2.0 controller writes it.

The controller injects two variables into the ``function`` container (see
``reference/openfunction-contract.md`` §3): ``FUNC_CONTEXT`` in the v1beta1 shape (``port`` as a
string, ``runtime`` ``Knative``/``Async``, ``uri`` on inputs and outputs) and
``FUNC_CONTEXT_V1BETA2`` (``triggers``, no ``port``, outputs without ``topic``). Key order follows
the controller's Go structs, and empty fields are omitted as ``omitempty`` does, so the local
target feeds the runtime byte-for-byte what a cluster would.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .spec import ComponentSpec, FunctionSpec

#: ``config.tracing`` of the OpenFunction v1.2.0 chart, which the controller merges into the
#: v1beta2 context of every function.
CHART_DEFAULT_TRACING: dict[str, Any] = {
    "enabled": False,
    "provider": {"name": "skywalking", "oapServer": "localhost:xxx"},
    "tags": {"func": "function-with-tracing", "layer": "faas", "tag1": "value1",
             "tag2": "value2"},
    "baggage": {"key": "sw8-correlation",
                "value": "base64(string key):base64(string value),"
                         "base64(string key2):base64(string value2)"},
}
DEFAULT_GATEWAY = {"name": "openfunction", "namespace": "openfunction"}
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the k8s name-generator alphabet


def _suffix(*parts: str, length: int = 5) -> str:
    """Deterministic stand-in for the API server's random ``generateName`` suffix."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:length])


def serving_name(spec: FunctionSpec) -> str:
    """The name of the ``Serving`` the controller would create (``serving-xxxxx``)."""
    return f"serving-{_suffix(spec.name, 'serving')}"


def component_name(spec: FunctionSpec, component: ComponentSpec) -> str:
    """The Dapr component name: the user's own (``--component``), else generated as the
    controller does, ``<serving>-<bindings|pubsub|state>-<name>-<rand5>``."""
    if component.component:
        return component.component
    kind = component.kind if component.kind != "state" else "state"
    return f"{serving_name(spec)}-{kind}-{component.name}-{_suffix(spec.name, component.name)}"


def _uri(component: ComponentSpec) -> str:
    # The controller writes the component name for bindings and the topic for pub/sub.
    if component.kind == "pubsub":
        return component.topic or ""
    return component.name


def _metadata(component: ComponentSpec) -> dict[str, str]:
    return {k: v for k, v in component.output_metadata}


def context_v1beta1(spec: FunctionSpec, *, port: int | None = None) -> dict[str, Any]:
    """The ``FUNC_CONTEXT`` object (v1beta1 shape) for ``spec``."""
    ctx: dict[str, Any] = {"name": spec.name, "version": spec.version}
    if spec.inputs:
        ctx["inputs"] = {
            c.name: {"uri": c.name if c.kind != "pubsub" else (c.topic or ""),
                     "componentName": component_name(spec, c), "componentType": c.type}
            for c in spec.inputs}
    if spec.outputs:
        outputs: dict[str, Any] = {}
        for c in spec.outputs:
            out: dict[str, Any] = {"uri": _uri(c), "componentName": component_name(spec, c),
                                   "componentType": c.type}
            if c.output_metadata:
                out["metadata"] = _metadata(c)
            if c.operation:
                out["operation"] = c.operation
            outputs[c.name] = out
        ctx["outputs"] = outputs
    if spec.states:
        ctx["states"] = {c.name: {"componentName": component_name(spec, c),
                                  "componentType": c.type} for c in spec.states}
    ctx["runtime"] = "Async" if spec.runtime == "async" else "Knative"
    ctx["port"] = str(port if port is not None else spec.port)
    return ctx


def context_v1beta2(spec: FunctionSpec, *, port: int | None = None) -> dict[str, Any]:
    """The ``FUNC_CONTEXT_V1BETA2`` object for ``spec`` (no ``port`` or ``runtime`` keys)."""
    ctx: dict[str, Any] = {"name": spec.name, "version": spec.version}
    if spec.runtime == "async":
        triggers: dict[str, Any] = {"dapr": []}
        for c in spec.inputs:
            trigger: dict[str, Any] = {"name": component_name(spec, c), "type": c.type}
            if c.topic:
                trigger["topic"] = c.topic
            triggers["dapr"].append(trigger)
    else:
        triggers = {"http": {"port": port if port is not None else spec.port,
                             "route": {"gatewayRef": dict(DEFAULT_GATEWAY)}}}
    ctx["triggers"] = triggers
    if spec.outputs:
        outputs: dict[str, Any] = {}
        for c in spec.outputs:
            out: dict[str, Any] = {"componentName": component_name(spec, c),
                                   "componentType": c.type}
            if c.output_metadata:
                out["metadata"] = _metadata(c)
            if c.operation:
                out["operation"] = c.operation
            outputs[c.name] = out
        ctx["outputs"] = outputs
    if spec.states:
        ctx["states"] = {c.name: {"componentName": component_name(spec, c),
                                  "componentType": c.type} for c in spec.states}
    ctx["tracing"] = json.loads(json.dumps(CHART_DEFAULT_TRACING))
    return ctx


def context_env(spec: FunctionSpec, *, port: int | None = None) -> dict[str, str]:
    """Both context variables, serialized compactly as Go's ``encoding/json`` does."""
    return {
        "FUNC_CONTEXT": json.dumps(context_v1beta1(spec, port=port), separators=(",", ":")),
        "FUNC_CONTEXT_V1BETA2": json.dumps(context_v1beta2(spec, port=port),
                                           separators=(",", ":")),
    }
