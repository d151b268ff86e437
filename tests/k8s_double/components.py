"""Dapr ``components.dapr.io/v1alpha1`` in the double, as kube-apiserver serves that CRD.

Served only when the double is given the Dapr CRD (``../shared/schemas/dapr-component-crd.yaml``,
what ``cluster`` does); otherwise, like a cluster without Dapr, every path under ``/apis/dapr.io``
answers the plain-text ``404 page not found`` of an API group nobody serves. Get, server-side
apply (the same structured merge as Functions: per-manager ``managedFields``,
``ownerReferences`` keyed by uid, ``scopes`` an atomic list; 400 under
``fieldValidation=Strict`` for a field the schema would prune; 422 for a schema violation) and
delete, each authorized by RBAC. The resourceVersion is the double's one counter; Components
have no watch here (nothing watches them). The garbage collector's part: a deleted Function's
owner reference is removed from the Components it owned, and a Component whose last owner went
is deleted (as it collects any dependent with no owner left).
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from . import fields
from .schema import prune, status, success, to_json_schema
from .store import USER_META, _now

if TYPE_CHECKING:
    from .server import KubeDouble

GROUP_PATH = "/apis/dapr.io"
PATH = GROUP_PATH + "/v1alpha1/namespaces/<ns>/components/<name>"
API_VERSION = "dapr.io/v1alpha1"


class Components:
    """The Components of one double (``double.components``)."""

    def __init__(self, double: KubeDouble, crd: dict[str, Any] | None) -> None:
        import jsonschema

        self.double = double
        self.installed = crd is not None
        self.schema: dict[str, Any] = {}
        if crd is not None:
            version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
            self.schema = version["schema"]["openAPIV3Schema"]
        self.validator = jsonschema.Draft4Validator(to_json_schema(self.schema))
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def routes(self, app: Flask) -> None:
        @app.before_request
        def _components_served() -> Response | None:
            if request.path.startswith(GROUP_PATH) and not self.installed:
                return Response("404 page not found\n", status=404, mimetype="text/plain")
            return None

        @app.get(PATH)
        def _get_component(ns: str, name: str) -> Any:
            with self.double.cond:
                found = self.items.get((ns, name))
                return copy.deepcopy(found) if found is not None else self._not_found(name)

        @app.delete(PATH)
        def _delete_component(ns: str, name: str) -> Any:
            with self.double.cond:
                found = self.items.pop((ns, name), None)
                if found is None:
                    return self._not_found(name)
                self.double.rv += 1
                return success(name, "dapr.io", "components")

        @app.patch(PATH)
        def _apply_component(ns: str, name: str) -> Any:
            if "apply-patch" not in (request.content_type or ""):
                return status(415, "UnsupportedMediaType", "the double applies Components "
                              "with application/apply-patch+yaml only")
            return self._apply(ns, name)

    def _not_found(self, name: str) -> Response:
        return status(404, "NotFound", f'components.dapr.io "{name}" not found', name=name,
                      group="dapr.io", kind="components")

    def _apply(self, ns: str, name: str) -> Response:
        import yaml

        manager = request.args.get("fieldManager")
        if not manager:
            return status(400, "BadRequest", 'PatchOptions.meta.k8s.io "" is invalid: '
                          'fieldManager: Required value: is required for apply patch')
        raw = yaml.safe_load(request.get_data()) or {}
        config, dropped = prune(raw, self.schema)
        if dropped and request.args.get("fieldValidation") == "Strict":
            return status(400, "BadRequest", f'Component.dapr.io "{name}" is invalid: strict '
                          f'decoding error: ' + ", ".join(f'unknown field "{p}"'
                                                          for p in dropped))
        config["metadata"] = {k: v for k, v in config.get("metadata", {}).items()
                              if k in USER_META or k in ("name", "namespace")}
        config["apiVersion"] = API_VERSION
        with self.double.cond:
            live = self.items.get((ns, name))
            denied = self.double.create_denied(live, "dapr.io", "components", ns, name)
            if denied:
                return denied
            result, managers, conflicts = fields.apply_object(
                live, config, self.schema, "Component", manager,
                request.args.get("force") == "true")
            if conflicts:
                return status(409, "Conflict", "Apply failed with conflicts: " +
                              "; ".join(conflicts))
            errors = sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                            for e in self.validator.iter_errors(result))
            if errors:
                return status(422, "Invalid", f'Component.dapr.io "{name}" is invalid: ' +
                              "; ".join(errors), name=name, group="dapr.io", kind="Component")
            meta = result["metadata"]
            if live is None:
                meta.update(name=name, namespace=ns, uid=str(uuid.uuid4()), generation=1,
                            creationTimestamp=_now())
            meta["managedFields"] = managers.entries(API_VERSION, _now(), set())
            if live is not None and result == live:  # nothing changed: same resourceVersion
                return Response(json.dumps(live), status=200, mimetype="application/json")
            meta["managedFields"] = managers.entries(API_VERSION, _now(),
                                                     {(manager, "Apply", "")})
            self._store(ns, name, result)
            return Response(json.dumps(result), status=201 if live is None else 200,
                            mimetype="application/json")

    def _store(self, ns: str, name: str, component: dict[str, Any]) -> None:
        """Under ``cond``: keep ``component`` with a new resourceVersion."""
        self.double.rv += 1
        component["metadata"]["resourceVersion"] = str(self.double.rv)
        self.items[(ns, name)] = component

    def collect(self, ns: str, owner_uid: str) -> None:
        """The garbage collector, once Function ``owner_uid`` is gone: its owner reference
        leaves the Components it owned; a Component with no owner left is deleted."""
        with self.double.cond:
            for (n, name), component in list(self.items.items()):
                meta = component["metadata"]
                refs = meta.get("ownerReferences") or []
                if n != ns or not any(r.get("uid") == owner_uid for r in refs):
                    continue
                left = [r for r in refs if r.get("uid") != owner_uid]
                if not left:
                    del self.items[(n, name)]
                    self.double.rv += 1
                    continue
                meta["ownerReferences"] = left
                gone = 'k:{"uid":"%s"}' % owner_uid
                managers = fields.Managers(meta.get("managedFields"))
                for paths in managers.sets.values():
                    paths -= {p for p in paths if gone in p}
                meta["managedFields"] = managers.entries(API_VERSION, _now(), set())
                self._store(n, name, component)
