"""The standalone Dapr ``Component`` of each named component, and the function's
``Secret`` s (:class:`FunctionSecrets`), on the kubernetes target.

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

from typing import Any, Mapping

from ..credentials import env_secret, secret_data, secret_manifest
from ..errors import DeployError
from ..manifests import MANAGED_BY, app_id, component_manifests, managed, named_components
from ..spec import FunctionSpec
from .kube_api import COMPONENTS, GROUP, VERSION, KubeApi


def _owners(component: dict[str, Any] | None) -> list[dict[str, Any]]:
    refs = (component or {}).get("metadata", {}).get("ownerReferences") or []
    return [r for r in refs if r.get("kind") == "Function"
            and str(r.get("apiVersion", "")).startswith(f"{GROUP}/")]


def _managed(live: dict[str, Any]) -> bool:
    labels = live.get("metadata", {}).get("labels") or {}
    return MANAGED_BY.items() <= labels.items()


def refuse_foreign(live: dict[str, Any] | None, what: str, namespace: str, fix: str,
                   function: str) -> None:
    """Someone else's object of the name ofnotebook would write is never taken over."""
    if live is not None and not _managed(live):
        raise DeployError(f"{what} exists in namespace {namespace!r} and ofnotebook did not "
                          f"create it, so it is not replaced; {fix}.", function_name=function)


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
            refuse_foreign(live, f"A Dapr Component {name!r}", self.namespace,
                           "give the named component another name, or delete that Component "
                           f"(kubectl delete component {name} -n {self.namespace})", spec.name)
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


#: A Secret's annotation counting its data changes, and the Function's pod annotation naming
#: the versions it runs with: a changed value changes the Function, so its pods restart and
#: read it (an unchanged one changes nothing, and reveals nothing about the value).
DATA_VERSION = "ofnotebook.io/data-version"
SECRET_VERSIONS = "ofnotebook.io/secret-versions"


class FunctionSecrets:
    """The Secrets of one function (:mod:`ofnotebook.credentials`): its own ``<fn>-env``
    (``--secret-env`` values, inline components' credentials) and each standalone named
    Component's ``<component>-auth``. Written before the Function (its pods read them at
    start), created, or replaced by resourceVersion on a redeploy; owned by the Function so
    the garbage collector removes them with it (a component's with its last user, as the
    Component goes); a Secret of that name ofnotebook did not write is never replaced."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api, self.namespace = api, namespace

    def write(self, spec: FunctionSpec, env: Mapping[str, str], before: dict[str, Any] | None,
              deadline: float) -> tuple[list[str], dict[str, str]]:
        """Write every Secret of ``spec`` (``before``: the Function as it is, whose uid then
        owns them at once); returns the names created (for :meth:`undo`) and each Secret's
        data version (see :data:`DATA_VERSION`). A function without secrets touches none
        (the Role needs no Secret grant for it), unless its previous deploy had one."""
        uid = (before or {}).get("metadata", {}).get("uid")
        had = ((before or {}).get("spec", {}).get("serving", {}).get("annotations") or {}).get(
            SECRET_VERSIONS, "")
        created, versions = [], {}
        wanted = secret_data(spec, env, standalone=True)
        for name, data in wanted.items():
            made, versions[name] = self._put(spec, name, data, uid, deadline)
            if made:
                created.append(name)
        if env_secret(spec) not in wanted and f"{env_secret(spec)}=" in had:
            self.delete(spec, deadline)  # a redeploy without them: the old values go
        return created, versions

    def _put(self, spec: FunctionSpec, name: str, data: Mapping[str, str], uid: str | None,
             deadline: float) -> tuple[bool, str]:
        """Create or replace Secret ``name``: whether it was created, and its data
        version."""
        for _ in range(5):  # a 409: created or changed meanwhile; read it again
            live = self.api.read_secret(name, deadline)
            refuse_foreign(live, f"A Secret {name!r}", self.namespace,
                           "rename the function (or the component), or delete that Secret "
                           f"(kubectl delete secret {name} -n {self.namespace})", spec.name)
            manifest = secret_manifest(name, self.namespace, data, MANAGED_BY)
            before = ((live or {}).get("metadata", {}).get("annotations") or {}).get(
                DATA_VERSION, "0")
            same = live is not None and (live.get("data") or {}) == manifest["data"]
            version = before if same else str(int(before) + 1 if before.isdigit() else 1)
            manifest["metadata"]["annotations"] = {DATA_VERSION: version}
            owners = [o for o in _owners(live) if o["name"] != spec.name]
            if uid:
                owners.append(owner_reference(spec.name, uid))
            if owners:
                manifest["metadata"]["ownerReferences"] = owners
            rv = live["metadata"]["resourceVersion"] if live is not None else None
            if self.api.write_secret(manifest, deadline, rv):
                return live is None, version
        raise DeployError(f"Secret {name!r} kept changing while it was written; run the cell "
                          f"again.", function_name=spec.name)

    @staticmethod
    def annotate(manifest: dict[str, Any], versions: Mapping[str, str]) -> None:
        """Name the Secrets' data versions on the Function's pods (``serving.annotations``)."""
        if versions:
            serving = manifest["spec"]["serving"]
            serving.setdefault("annotations", {})[SECRET_VERSIONS] = ",".join(
                f"{name}={version}" for name, version in sorted(versions.items()))

    @staticmethod
    def fingerprint(spec: FunctionSpec, env: Mapping[str, str]) -> str:
        """A digest of the Secrets' values, kept in memory only: an unchanged redeploy is
        recognised without reading them back."""
        import hashlib

        data = secret_data(spec, env, standalone=True)
        return hashlib.sha256(repr(sorted((k, sorted(v.items())) for k, v in data.items()))
                              .encode()).hexdigest()

    def own(self, spec: FunctionSpec, env: Mapping[str, str], function: dict[str, Any],
            deadline: float) -> None:
        """The just-created Function owns its Secrets from now on."""
        self.write(spec, env, function, deadline)

    def undo(self, names: list[str], deadline: float) -> None:
        """After a failed first deploy: delete the Secrets it created."""
        for name in names:
            self.api.delete_secret(name, deadline)

    def delete(self, spec: FunctionSpec, deadline: float) -> None:
        """After stop: the function's own Secret goes now (not only once the garbage
        collector gets to it); a component's stays while another Function owns it."""
        name = env_secret(spec)
        if name not in secret_data(spec, {}, standalone=True):
            return
        live = self.api.read_secret(name, deadline)
        if live is not None and _managed(live):
            self.api.delete_secret(name, deadline)
