"""RBAC as kube-apiserver's authorizer evaluates it, for the double.

Every request becomes attributes (verb, API group, resource with subresource, namespace, name)
the way the API server's request-info resolver makes them: ``get``/``list``/``watch`` for GET
on an item, a collection, or with ``watch=true``; ``create``, ``update``, ``patch``, ``delete``,
``deletecollection``. A Role's rules apply in its namespace through a RoleBinding; a
ClusterRole's everywhere through a ClusterRoleBinding, or in one namespace through a
RoleBinding. Rules match on ``apiGroups``, ``resources`` (``pods/log`` is its own resource),
``verbs`` and, when given, ``resourceNames``; ``*`` matches anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Attributes:
    verb: str
    group: str
    resource: str  # with the subresource: "pods/log", "functions/status"
    namespace: str  # "" at the cluster scope
    name: str

    def forbidden(self, user: str) -> str:
        """kube-apiserver's message for a denied request."""
        base = self.resource.split("/")[0]
        what = f"{base}.{self.group}" if self.group else base
        subject = f'{what} "{self.name}"' if self.name else what
        where = (f'in the namespace "{self.namespace}"' if self.namespace
                 else "at the cluster scope")
        return (f'{subject} is forbidden: User "{user}" cannot {self.verb} resource '
                f'"{self.resource}" in API group "{self.group}" {where}')


def attributes(method: str, path: str, args: Mapping[str, str]) -> Attributes | None:
    """The request's attributes, or None for a non-resource path."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource += "/" + rest[2]
    if method == "GET":
        verb = "watch" if args.get("watch") in ("true", "1") else "get" if name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}[method]
    return Attributes(verb, group, resource, namespace, name)


def _matches(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    def has(key: str, value: str) -> bool:
        listed = rule.get(key) or []
        return "*" in listed or value in listed
    names = rule.get("resourceNames") or []
    return (has("apiGroups", attrs.group) and has("resources", attrs.resource)
            and has("verbs", attrs.verb) and (not names or attrs.name in names))


class Rbac:
    """Roles, ClusterRoles and their bindings, from Kubernetes YAML documents."""

    def __init__(self, documents: Iterable[Mapping[str, Any]]) -> None:
        docs = [d for d in documents if d]
        self.roles = {(d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
                      for d in docs if d["kind"] == "Role"}
        self.cluster_roles = {d["metadata"]["name"]: d for d in docs
                              if d["kind"] == "ClusterRole"}
        self.bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]

    def allows(self, user: str, attrs: Attributes) -> bool:
        for binding in self.bindings:
            if not any(s.get("kind") == "User" and s.get("name") == user
                       for s in binding.get("subjects") or []):
                continue
            ref = binding["roleRef"]
            if binding["kind"] == "RoleBinding":
                namespace = binding["metadata"].get("namespace", "")
                if attrs.namespace != namespace:
                    continue
                role = (self.roles.get((namespace, ref["name"])) if ref["kind"] == "Role"
                        else self.cluster_roles.get(ref["name"]))
            else:
                role = self.cluster_roles.get(ref["name"]) if ref["kind"] == "ClusterRole" \
                    else None
            if role and any(_matches(rule, attrs) for rule in role.get("rules") or []):
                return True
        return False
