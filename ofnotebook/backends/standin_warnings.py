"""The stand-in's warnings about a function's components, as deploy warnings the user sees.

Registering a function with the local Dapr stand-in reads each component's metadata as daprd
does (``sidecar/metadata.py``): a deprecated key (Kafka's ``authRequired``) or one daprd
ignores (a typo: ``brokerss``) is kept and warned about, not refused. The registration's
answer carries those warnings; the local and container targets emit each as a ``progress``
phase event whose detail starts with :data:`WARNING_PREFIX`, which the live view shows in its
log pane and the text progress prints, so the user reads it while deploying, not only in
``handle.logs()``. Each names both the use the user wrote and the Dapr component:
``input 'kafka' (Dapr component 'kafka-receiver', bindings.kafka): ...``.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from ..spec import FunctionSpec
from .base import PhaseEvent, PhaseRecorder
from .standin import components_payload

#: A phase event's detail that is a warning for the user starts with this.
WARNING_PREFIX = "warning: "
#: How a warning names each role of a component.
_ROLE_WORDS = {"input": "input", "output": "output", "state": "state store",
               "component": "component"}


def named(spec: FunctionSpec, warnings: Iterable[str]) -> list[str]:
    """``warnings`` with the role of the use they name: the stand-in names a use by its name
    and Dapr component (``'kafka' (Dapr component 'kafka-receiver', ...``); the spec knows
    whether it is an input, an output or a state store."""
    uses = [(f"{item['name']!r} (Dapr component {item['componentName']!r}, ",
             _ROLE_WORDS.get(item["role"], item["role"])) for item in components_payload(spec)]
    out = []
    for warning in warnings:
        role = next((word for start, word in uses if warning.startswith(start)), "")
        out.append(f"{role} {warning}" if role else warning)
    return out


def emit(recorder: PhaseRecorder, spec: FunctionSpec, answer: Any,
         phase: str = "dapr") -> list[str]:
    """Emit each warning of a registration ``answer`` as a ``progress`` event of ``phase``;
    returns them (named) for the function's log."""
    warnings = named(spec, (answer or {}).get("warnings") or [])
    for warning in warnings:
        recorder.emit(PhaseEvent(phase, "progress", time.time(),
                                 detail=f"{WARNING_PREFIX}{warning}"))
    return warnings
