"""What the double's API server does with a Function body before it stores it, as
kube-apiserver does for a CRD with a structural schema: prune unknown fields (reporting their
paths, for the ``Warning: 299`` header or a strict 400), fill in every ``default:`` of the
schema, and validate (422). Also the ``Status`` bodies of errors."""

from __future__ import annotations

import copy
import json
from typing import Any

from flask import Response

#: ObjectMeta as server-side apply sees it (the CRD says only ``metadata: {type: object}``):
#: labels and annotations are granular maps, finalizers a set, ownerReferences keyed by uid.
OBJECT_META: dict[str, Any] = {"type": "object", "properties": {
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "finalizers": {"type": "array", "items": {"type": "string"},
                   "x-kubernetes-list-type": "set"},
    "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["uid"],
                        "items": {"type": "object", "properties": {
                            k: {"type": "string"} for k in ("apiVersion", "kind", "name",
                                                            "uid")} | {
                            "controller": {"type": "boolean"},
                            "blockOwnerDeletion": {"type": "boolean"}}}}}}
#: metadata the server owns: never part of what a client applies or is said to manage
SERVER_META = ("name", "namespace", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
               "managedFields", "selfLink", "generateName")


def status(code: int, reason: str, message: str, **details: Any) -> Response:
    """A ``Status`` error body, as kube-apiserver writes it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason,
                            "code": code}
    if details:
        body["details"] = details
    return Response(json.dumps(body), status=code, mimetype="application/json")


def success(name: str, group: str, kind: str, uid: str = "") -> dict[str, Any]:
    """The ``Status`` a delete that removed the object at once answers."""
    details = {"name": name, **({"group": group} if group else {}), "kind": kind,
               **({"uid": uid} if uid else {})}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


def to_json_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def prune(value: Any, schema: dict[str, Any], path: str = "") -> tuple[Any, list[str]]:
    """What a structural schema keeps of ``value``, and the paths it dropped."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value, []
    dropped: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        kept = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if path == "" and key in ("apiVersion", "kind", "metadata"):
                kept[key] = item  # ObjectMeta is not the CRD's to prune
            elif props is not None and key in props:
                kept[key], more = prune(item, props[key], where)
                dropped += more
            elif isinstance(extra, dict):
                kept[key], more = prune(item, extra, where)
                dropped += more
            elif props is None and extra is not False:
                kept[key] = item
            else:
                dropped.append(where)
        return kept, dropped
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        out = []
        for index, item in enumerate(value):
            kept_item, more = prune(item, schema["items"], f"{path}[{index}]")
            out.append(kept_item)
            dropped += more
        return out, dropped
    return value, dropped


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with every ``default:`` of ``schema`` filled in where the field is absent
    (inside objects that are present), as the API server defaults a custom resource."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            if key in props:
                value[key] = apply_defaults(item, props[key])
            elif isinstance(schema.get("additionalProperties"), dict):
                value[key] = apply_defaults(item, schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def child_schema(schema: dict[str, Any], key: str, root: bool = False) -> dict[str, Any]:
    """The schema of field ``key`` of an object with ``schema`` (ObjectMeta for metadata)."""
    if root and key == "metadata":
        return OBJECT_META
    props, extra = schema.get("properties"), schema.get("additionalProperties")
    if props and key in props:
        return props[key]  # type: ignore[no-any-return]
    return extra if isinstance(extra, dict) else {}
