"""The standalone Dapr ``Component`` of each named component, on the kubernetes target.

A component the user named (``--component kafka-receiver=URI``) is one ``dapr.io/v1alpha1``
``Component`` of exactly that name in the function's namespace, shared by every function that
uses it; its Function references it by name (:func:`~ofnotebook.manifests.function_manifest`).
How it lives, decided so that nothing is left behind and no function loses it:

* **Before the Function.** It is applied (server-side, field manager ``ofnotebook``) before the
  Function, so the controller, which reads the type of a referenced component from the cluster,
  never sees it missing.
* **Owned by the Functions that use it.** ``metadata.ownerReferences`` lists each of them
  (``controller`` unset, no ``blockOwnerDeletion``, which would need the ``functions/finalizers``
  grant), and ``scopes`` names each one's Dapr app id ``<fn>-<ns>``, so only they see it.
  Kubernetes' garbage collector then does the rest: deleting a Function removes its owner
  reference, and the Component goes with the last one. A new Function is added as an owner
  just after its first apply, once it has a uid.
* **Stop.** Once a Function is gone, a Component that other Functions still use is applied
  again without its app id in ``scopes`` (the garbage collector only drops the owner
  reference).
* **A failed first deploy** deletes the Components it created and nobody owns yet.
* **Someone else's Component** of that name (no ``app.kubernetes.io/managed-by: ofnotebook``
  label) is never taken over: the deploy is refused, naming it.

A cluster without Dapr serves no ``dapr.io`` group: the 404 says to install Dapr
(:data:`~.kube_api.COMPONENTS`).
"""

from __future__ import annotations

from typing import Any

from ..errors import DeployError
from ..manifests import MANAGED_BY, app_id, component_manifests, managed, named_components
from ..spec import FunctionSpec
from .kube_api import COMPONENTS, GROUP, VERSION, KubeApi


def _owners(component: dict[str, Any] | None) -> list[dict[str, Any]]:
    refs = (component or {}).get("metadata", {}).get("ownerReferences") or []
    return [r for r in refs if r.get("kind") == "Function"
            and str(r.get("apiVersion", "")).startswith(f"{GROUP}/")]


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Function", "name": name, "uid": uid}


class NamedComponents:
    """The named components of one kubernetes target (see the module docstring)."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api, self.namespace = api, namespace

    def _manifest(self, base: dict[str, Any], owners: list[dict[str, Any]]) -> dict[str, Any]:
        manifest = managed(dict(base, metadata=dict(base["metadata"])))
        manifest["scopes"] = sorted({app_id(o["name"], self.namespace) for o in owners}
                                    | set(base["scopes"]))
        if owners:
            manifest["metadata"]["ownerReferences"] = owners
        return manifest

    def prepare(self, spec: FunctionSpec, uid: str | None, deadline: float
                ) -> tuple[list[str], list[str]]:
        """Apply ``spec``'s Components before its Function (``uid``: the Function's when it
        exists already, which then owns them at once). Returns the names applied without
        the Function as an owner yet (for :meth:`own`) and the names created (for
        :meth:`undo`)."""
        unowned, created = [], []
        for base in component_manifests(spec, self.namespace):
            name = base["metadata"]["name"]
            live = self.api.get(name, deadline, COMPONENTS)
            labels = (live or {}).get("metadata", {}).get("labels") or {}
            if live is not None and not MANAGED_BY.items() <= labels.items():
                raise DeployError(
                    f"A Dapr Component {name!r} exists in namespace {self.namespace!r} and "
                    f"ofnotebook did not create it, so it is not replaced; give the named "
                    f"component another name, or delete that Component (kubectl delete "
                    f"component {name} -n {self.namespace}).", function_name=spec.name)
            owners = [o for o in _owners(live) if o["name"] != spec.name]
            if uid:
                owners.append(owner_reference(spec.name, uid))
            else:
                unowned.append(name)
            self.api.apply(self._manifest(base, owners), deadline, COMPONENTS)
            if live is None:
                created.append(name)
        return unowned, created

    def own(self, spec: FunctionSpec, names: list[str], function: dict[str, Any],
            deadline: float) -> None:
        """Add the just-created Function as an owner of the Components ``names``."""
        if not names:
            return
        ref = owner_reference(spec.name, function["metadata"]["uid"])
        for base in component_manifests(spec, self.namespace):
            name = base["metadata"]["name"]
            if name in names:
                live = self.api.get(name, deadline, COMPONENTS)
                owners = [o for o in _owners(live) if o["name"] != spec.name] + [ref]
                self.api.apply(self._manifest(base, owners), deadline, COMPONENTS)

    def undo(self, created: list[str], deadline: float) -> None:
        """After a failed first deploy: delete the Components it created that no Function
        owns (an owned one goes with its Function, through the garbage collector)."""
        for name in created:
            if not _owners(self.api.get(name, deadline, COMPONENTS)):
                self.api.delete(name, deadline, COMPONENTS)

    def release(self, spec: FunctionSpec, deadline: float) -> None:
        """After ``spec``'s Function is gone: the Components others still use no longer
        name its app id in ``scopes`` (the garbage collector has dropped its reference)."""
        gone = app_id(spec.name, self.namespace)
        for name, component in named_components(spec).items():
            live = self.api.get(name, deadline, COMPONENTS)
            owners = [o for o in _owners(live) if o["name"] != spec.name]
            if live is None or not owners or gone not in (live.get("scopes") or []):
                continue
            base = {"apiVersion": live["apiVersion"], "kind": "Component",
                    "metadata": {"name": name, "namespace": self.namespace},
                    "spec": live["spec"], "scopes": []}
            self.api.apply(self._manifest(base, owners), deadline, COMPONENTS)
