"""Talking to the Kubernetes API server for the kubernetes target: errors as one message."""

from __future__ import annotations

from ..errors import DeployError

GROUP, VERSION, PLURAL = "core.openfunction.io", "v1beta2", "functions"
CRD_NAME = "functions.core.openfunction.io"


def api_error(exc: Exception, what: str, namespace: str) -> DeployError:
    """One clear message for an ``ApiException`` or a transport error."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    body = getattr(exc, "body", "") or ""
    try:
        import json

        detail = json.loads(body).get("message", body) if body else str(exc)
    except ValueError:
        detail = body or str(exc)
    if status == 401:
        hint = "the cluster did not accept the credentials; refresh the kubeconfig's token"
    elif status == 403:
        hint = (f"the account may not do this; an admin can grant it with a Role on "
                f"{CRD_NAME} (verbs get, list, watch, create, update, delete) and pods, "
                f"pods/log in namespace {namespace!r}")
    elif status == 404:
        hint = (f"not found; is OpenFunction v1.2.0 installed (CRD {CRD_NAME}) and does "
                f"namespace {namespace!r} exist?")
    elif status == 409:
        hint = "someone else changed it at the same time; run the cell again"
    elif status == 422:
        hint = "the cluster rejected the manifest"
    elif status is None:
        hint = "the API server could not be reached; check the kubeconfig's server address"
    else:
        hint = f"HTTP {status} {reason}"
    return DeployError(f"Kubernetes: {what} failed: {hint}. ({detail})")
