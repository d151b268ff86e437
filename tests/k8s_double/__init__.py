"""A Kubernetes API server double for the kubernetes target (no real cluster runs here).

It serves, on 127.0.0.1 with a bearer token, the API subset the backend uses: the Function CRD
(read), ``functions.core.openfunction.io/v1beta2`` (create, get, list+watch, replace, delete,
with resourceVersion and conflict semantics), pods (list by label) and pods/log (followable).
Function bodies are checked against the real CRD schema (422 with the violations) and pruned
of unknown fields as a structural schema prunes. A controller thread plays OpenFunction v1.2.0's
documented state machine (reference §2.2): build ``Skipped`` for image-only functions, serving
``Created`` -> ``Starting`` -> ``Running`` (with ``resourceRef``, ``lastSuccessfulResourceRef``,
``service`` and, for HTTP functions, ``addresses``), ``Failed`` for a crashing HTTP function,
``Timeout`` when ``spec.serving.timeout`` passes, and the async quirk: an async serving reports
``Running`` before its pods are ready, and never ``Failed`` (its pod shows CrashLoopBackOff).

Test knobs: an image containing ``crash`` crashes; ``slow`` never gets ready. ``forbid`` holds
(verb, resource) pairs answered 403; ``crd_installed = False`` plays a cluster without
OpenFunction; ``calls`` records every request.
"""

from .server import KubeDouble

__all__ = ["KubeDouble"]
