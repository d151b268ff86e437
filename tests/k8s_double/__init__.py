"""A Kubernetes API server double for the kubernetes target (no real cluster runs here).

It serves, on 127.0.0.1 with a bearer token, what the backend uses, behaving as kube-apiserver
v1.36 was measured to behave with OpenFunction v1.2.0's Function CRD (issue 9, part B):

* ``functions.core.openfunction.io/v1beta2``: create, get, list, watch, replace (409 at a stale
  resourceVersion), merge patch, server-side apply (``application/apply-patch+yaml``, a field
  manager, ``force``; per-manager ``managedFields``, fields a manager stops applying removed,
  other managers' fields kept), delete. Bodies are pruned of unknown fields as a structural
  schema prunes them (``Warning: 299 - "unknown field \"spec.foo\""``, or 400 under
  ``fieldValidation=Strict``), defaulted from every ``default:`` of the schema
  (``spec.workloadRuntime: OCIContainer``), validated (422). ``status`` is a subresource: a
  create answers without it, writes to the main resource leave it alone, ``/status`` PUT/PATCH
  change nothing else. ``generation`` moves with the spec (and when deletion starts); a write
  that changes nothing keeps the resourceVersion and sends no event.
* Watches from a bounded watch cache (``watch_cache_size`` events, for all namespaces): an older
  resourceVersion answers one ERROR event with a ``410 Expired`` Status; ``BOOKMARK`` events
  every ``bookmark_interval`` s and before the watch times out, when asked for.
* ``restart(down)``: connections refused for a while, open ones (watches too) cut, then a fresh
  watch cache, so every older resourceVersion gets 410.
* Deletion: ``propagationPolicy: Foreground`` keeps the object with a ``deletionTimestamp`` and
  the ``foregroundDeletion`` finalizer until the garbage collector has removed its pods; other
  finalizers keep it until whoever set them removes them; a create meanwhile is a 409.
* The CRD can be read and deleted; once it is gone, every path under the group answers a
  plain-text ``404 page not found``.
* RBAC: ``grant(*documents)`` with Roles, ClusterRoles and bindings; each request is authorized
  by verb, group, resource (and subresource), namespace and name (``rbac.py``); an apply that
  creates needs ``create`` too. 401 for a wrong token.
* Pods (list by label) and pods/log (followable), played by ``controller.py``, which also plays
  OpenFunction's controller (status through ``/status``) and the garbage collector.
* Dapr ``components.dapr.io/v1alpha1`` (get, server-side apply, delete; garbage-collected with
  their owner Functions) when given Dapr's CRD, else ``404 page not found`` as in a cluster
  without Dapr (``components.py``).

``calls`` and ``requests`` record the user's requests; ``churn(n)`` moves the watch cache on.
"""

from .server import KubeDouble, load_documents

__all__ = ["KubeDouble", "load_documents"]
