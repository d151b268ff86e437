"""Schema helpers of the API server double: Status bodies, OpenAPI to JSON Schema, pruning."""

from __future__ import annotations

import json
from typing import Any

from flask import Response


def _status(code: int, reason: str, message: str) -> Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    return Response(json.dumps(body), status=code, mimetype="application/json")


def _to_json_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _to_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _prune(value: Any, schema: dict[str, Any]) -> Any:
    """What a structural schema keeps of ``value``."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and schema.get("type") == "object":
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        kept = {}
        for key, item in value.items():
            if props is not None and key in props:
                kept[key] = _prune(item, props[key])
            elif isinstance(extra, dict):
                kept[key] = _prune(item, extra)
            elif props is None and extra is not False:
                kept[key] = item
        return kept
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"]) for item in value]
    return value
