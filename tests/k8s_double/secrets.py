"""Core ``v1`` ``Secret`` s in the double, as kube-apiserver serves them.

Create (``POST``: 201, 409 ``AlreadyExists``, 400 when the body's name is missing or
differs, 422 when a ``data`` value is not base64; ``stringData`` is folded into ``data`` as
the API server does), get (404 ``NotFound``), replace (``PUT``: 404 when there is none, 409
``Conflict`` when the body's ``resourceVersion`` is not the live one; none given is the
unconditional update Secrets allow) and delete (200 ``Status``, 404), each authorized by RBAC
through the double's gate. The resourceVersion is the double's one counter. The garbage
collector's part: a deleted Function's owner reference leaves the Secrets it owned, and a
Secret whose last owner went is deleted.
"""

from __future__ import annotations

import base64
import binascii
import copy
import uuid
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from .schema import status, success
from .store import USER_META, _now

if TYPE_CHECKING:
    from .server import KubeDouble

COLLECTION = "/api/v1/namespaces/<ns>/secrets"
ITEM = COLLECTION + "/<name>"


class Secrets:
    """The Secrets of one double (``double.secrets``): ``items[(ns, name)]``."""

    def __init__(self, double: KubeDouble) -> None:
        self.double = double
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def routes(self, app: Flask) -> None:
        @app.post(COLLECTION)
        def _create_secret(ns: str) -> Any:
            body = self._body()
            name = body.get("metadata", {}).get("name", "")
            refused = self._invalid(body, name)
            if refused:
                return refused
            with self.double.cond:
                if (ns, name) in self.items:
                    return status(409, "AlreadyExists", f'secrets "{name}" already exists',
                                  name=name, kind="secrets")
                secret = self._stored(body, ns, name, None)
                return Response(_json(secret), status=201, mimetype="application/json")

        @app.get(ITEM)
        def _get_secret(ns: str, name: str) -> Any:
            with self.double.cond:
                found = self.items.get((ns, name))
                return copy.deepcopy(found) if found is not None else self._not_found(name)

        @app.put(ITEM)
        def _replace_secret(ns: str, name: str) -> Any:
            body = self._body()
            refused = self._invalid(body, name)
            if refused:
                return refused
            with self.double.cond:
                live = self.items.get((ns, name))
                if live is None:
                    return self._not_found(name)
                rv = body.get("metadata", {}).get("resourceVersion")
                if rv and rv != live["metadata"]["resourceVersion"]:
                    return status(409, "Conflict", f'Operation cannot be fulfilled on secrets '
                                  f'"{name}": the object has been modified; please apply your '
                                  f'changes to the latest version and try again',
                                  name=name, kind="secrets")
                return self._stored(body, ns, name, live)

        @app.delete(ITEM)
        def _delete_secret(ns: str, name: str) -> Any:
            with self.double.cond:
                found = self.items.pop((ns, name), None)
                if found is None:
                    return self._not_found(name)
                self.double.rv += 1
                return success(name, "", "secrets", found["metadata"]["uid"])

    def _body(self) -> dict[str, Any]:
        """The request's JSON body (the Python client sends no Content-Type for it, which
        the API server reads as JSON); unreadable, empty."""
        import json

        try:
            body = json.loads(request.get_data() or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _invalid(self, body: dict[str, Any], name: str) -> Response | None:
        """The API server's refusals of a Secret body (named ``name`` by the URL)."""
        given = body.get("metadata", {}).get("name", "")
        if not given:
            return status(422, "Invalid", 'Secret "" is invalid: metadata.name: Required value: '
                          'name or generateName is required', kind="Secret")
        if given != name:
            return status(400, "BadRequest", f'the name of the object ({given}) does not match '
                          f'the name on the URL ({name})')
        for key, value in (body.get("data") or {}).items():
            try:
                base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                return status(422, "Invalid", f'Secret "{name}" is invalid: data[{key}]: '
                              f'Invalid value: illegal base64 data', name=name, kind="Secret")
        return None

    def _stored(self, body: dict[str, Any], ns: str, name: str,
                live: dict[str, Any] | None) -> dict[str, Any]:
        """Under ``cond``: keep ``body`` as Secret ``name`` with a new resourceVersion."""
        data = dict(body.get("data") or {})
        data.update({k: base64.b64encode(str(v).encode()).decode()
                     for k, v in (body.get("stringData") or {}).items()})
        meta = {k: v for k, v in body.get("metadata", {}).items() if k in USER_META}
        old = (live or {}).get("metadata", {})
        meta.update(name=name, namespace=ns, uid=old.get("uid") or str(uuid.uuid4()),
                    creationTimestamp=old.get("creationTimestamp") or _now())
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                  "type": body.get("type") or "Opaque", "data": data}
        if live is not None:  # an update that changes nothing keeps the resourceVersion
            meta["resourceVersion"] = old["resourceVersion"]
            if secret == live:
                return copy.deepcopy(live)
        self.double.rv += 1
        meta["resourceVersion"] = str(self.double.rv)
        self.items[(ns, name)] = secret
        return copy.deepcopy(secret)

    def _not_found(self, name: str) -> Response:
        return status(404, "NotFound", f'secrets "{name}" not found', name=name, kind="secrets")

    def value(self, ns: str, name: str, key: str) -> str:
        """A stored value, decoded (for tests)."""
        return base64.b64decode(self.items[(ns, name)]["data"][key]).decode()

    def collect(self, ns: str, owner_uid: str) -> None:
        """The garbage collector, once Function ``owner_uid`` is gone: its owner reference
        leaves the Secrets it owned; a Secret with no owner left is deleted."""
        with self.double.cond:
            for (n, name), secret in list(self.items.items()):
                refs = secret["metadata"].get("ownerReferences") or []
                if n != ns or not any(r.get("uid") == owner_uid for r in refs):
                    continue
                left = [r for r in refs if r.get("uid") != owner_uid]
                self.double.rv += 1
                if not left:
                    del self.items[(n, name)]
                    continue
                secret["metadata"]["ownerReferences"] = left
                secret["metadata"]["resourceVersion"] = str(self.double.rv)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
