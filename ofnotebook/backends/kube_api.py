"""The Kubernetes API as the kubernetes target uses it, made to hold on a real API server.

* Every call is retried with backoff while the API server cannot be reached, cuts the
  connection or answers 429/5xx (a restart, a rolling upgrade), until the caller's deadline;
  the message then names what happened (never answered: check the kubeconfig; stopped
  answering: the last cause).
* Writes are server-side apply (``application/apply-patch+yaml``, field manager
  ``ofnotebook``, ``force``, ``fieldValidation=Strict``): ofnotebook owns only the fields it
  sets, so a GitOps tool's annotations, labels, finalizers and owner references survive, fields
  it stops setting are removed, and an unchanged manifest changes nothing (same
  resourceVersion, no event). :func:`applied_config` reads back what ofnotebook applied (its
  ``managedFields`` entry), to restore it after a failed update.
* Watches ask for bookmarks and resume from the newest resourceVersion seen (an object's or a
  bookmark's); one that expired (``410 Gone``, after a restart or once the watch cache moved
  on) is re-read with a LIST, which gives the current resourceVersion, and watched again.
* Errors become one message naming the fix: the verb and resource a 403 lacks and the Role that
  grants it (:data:`ROLE_RULES`, docs/kubernetes-rbac.yaml), OpenFunction (or Dapr, for the
  standalone ``Component`` of a named component) not installed for an API group nobody serves,
  and so on.

Two resources go through here: OpenFunction ``Function`` s (:data:`FUNCTIONS`, the default)
and Dapr ``Component`` s (:data:`COMPONENTS`); get, apply and delete take either.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import DeployError

GROUP, VERSION, PLURAL = "core.openfunction.io", "v1beta2", "functions"
CRD_NAME = "functions.core.openfunction.io"
FIELD_MANAGER = "ofnotebook"


@dataclass(frozen=True)
class Resource:
    """A custom resource the target writes, and what installs its CRD (for a 404)."""

    group: str
    version: str
    plural: str
    kind: str
    crd: str
    product: str
    install: str


FUNCTIONS = Resource(GROUP, VERSION, PLURAL, "Function", CRD_NAME, "OpenFunction",
                     "install OpenFunction v1.2.0 (docs/kubernetes.md)")
COMPONENTS = Resource("dapr.io", "v1alpha1", "components", "Component", "components.dapr.io",
                      "Dapr", "install Dapr (dapr init -k, or its Helm chart; OpenFunction's "
                              "chart installs it), or use no named component (--component)")
SECRETS = Resource("", "v1", "secrets", "Secret", "(core v1)", "Kubernetes", "")
#: the namespaced Role the target needs (docs/kubernetes-rbac.yaml holds it as YAML)
ROLE_RULES = [
    {"apiGroups": [GROUP], "resources": ["functions"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [GROUP], "resources": ["builders"], "verbs": ["get"]},
    {"apiGroups": [COMPONENTS.group], "resources": ["components"],
     "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"],
     "verbs": ["get", "create", "update", "delete"]},
]
#: the optional ClusterRole: with it the manifest is checked against the CRD before sending
CLUSTER_ROLE_RULES = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "resourceNames": [CRD_NAME], "verbs": ["get"]},
]
RETRIED = (429, 500, 502, 503, 504)
FORBIDDEN = re.compile(r'cannot (\S+) resource "([^"]+)" in API group "([^"]*)"')
WARNING = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def rules_text(rules: list[dict[str, Any]]) -> str:
    """RBAC rules as one readable line, for the message of a 403: the user forwards it to
    whoever can grant the access."""
    return "; ".join(f"{', '.join(r['resources'])}"
                     f"{' (' + r['apiGroups'][0] + ')' if r['apiGroups'][0] else ''}: "
                     f"{', '.join(r['verbs'])}" for r in rules)


def _detail(exc: BaseException) -> str:
    body = getattr(exc, "body", "") or ""
    try:
        return str(json.loads(body).get("message", body)) if body else str(exc)
    except (ValueError, AttributeError):
        return body.strip() or str(exc)


def _cause(exc: BaseException) -> str:
    """What a transport error was, in a few words."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset"
        if type(seen).__name__ in ("ProtocolError", "IncompleteRead", "InvalidChunkLength",
                                   "RemoteDisconnected"):
            return "the connection was cut"
        if type(seen).__name__ in ("ReadTimeoutError", "TimeoutError", "ConnectTimeoutError"):
            return "no answer in time"
        reason = getattr(seen, "reason", None)  # urllib3's MaxRetryError wraps the cause
        seen = reason if isinstance(reason, BaseException) else \
            (seen.__cause__ or seen.__context__)
    status = getattr(exc, "status", None)
    return f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else str(exc)[:200]


def tls_failure(exc: BaseException) -> BaseException | None:
    """The TLS error inside a transport error (a CA the kubeconfig does not name, a server
    name that does not match, HTTPS to a plain-HTTP port), or None: retrying cannot fix it."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or type(seen).__name__ in ("SSLError",
                                                                      "CertificateError"):
            return seen
        reason = getattr(seen, "reason", None)
        seen = reason if isinstance(reason, BaseException) else \
            (seen.__cause__ or seen.__context__)
    return None


def transient(exc: BaseException) -> bool:
    """An error worth retrying: no answer, a cut connection, 429 or a 5xx (not TLS)."""
    status = getattr(exc, "status", None)
    if status in RETRIED:
        return True
    if status is not None or tls_failure(exc) is not None:
        return False
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


def api_error(exc: Exception, what: str, namespace: str,
              resource: Resource = FUNCTIONS) -> DeployError:
    """One clear message for an ``ApiException`` of a call on ``resource``."""
    status = getattr(exc, "status", None)
    detail = _detail(exc)
    if status == 401:
        hint = "the cluster did not accept the credentials; refresh the kubeconfig's token"
    elif status == 403:
        found = FORBIDDEN.search(detail)
        missing = (f"{found.group(1)} {found.group(2)}"
                   f"{' in API group ' + found.group(3) if found.group(3) else ''}"
                   if found else "do this")
        hint = (f"the account may not {missing}; an admin can grant the Role of "
                f"docs/kubernetes-rbac.yaml in namespace {namespace!r} ({rules_text(ROLE_RULES)})"
                f", and optionally its ClusterRole ({rules_text(CLUSTER_ROLE_RULES)} on "
                f"{CRD_NAME}) so that manifests are checked against the CRD before sending")
    elif status == 404 and (detail.strip() == "404 page not found" or resource.crd in detail):
        hint = (f"{resource.product} is not installed: the API server serves no "
                f"{resource.group}/{resource.version} (CRD {resource.crd}); {resource.install}")
    elif status == 404 and 'namespaces "' in detail:
        hint = f"namespace {namespace!r} does not exist"
    elif status == 404:
        hint = "not found"
    elif status == 409:
        hint = "someone else changed it at the same time; run the cell again"
    elif status in (400, 422):
        hint = "the cluster rejected the manifest"
    else:
        hint = f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return DeployError(f"Kubernetes: {what} failed: {hint}. ({detail})")


class Expired(Exception):
    """A watch's resourceVersion is older than the API server keeps (410 Gone)."""


class KubeApi:
    """The calls of the kubernetes target, each retried until a deadline."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.extensions = client.ApiextensionsV1Api(api_client)
        self.server = api_client.configuration.host
        self.answered = False  # has the API server ever answered this client?

    # -- retries -----------------------------------------------------------------------------

    def unreachable(self, what: str, exc: BaseException, waited: float) -> DeployError:
        """The error after retries ran out, worded by what went wrong: an API server that
        kept failing, one never reached (check the kubeconfig) or one that stopped answering.
        """
        if getattr(exc, "status", None) in RETRIED:
            return DeployError(f"Kubernetes: {what} failed: the API server kept answering "
                               f"{_cause(exc)} ({_detail(exc)}); retried for {waited:.0f} s.")
        if not self.answered:
            return DeployError(f"Kubernetes: {what} failed: the API server could not be "
                               f"reached; check the kubeconfig's server address ({self.server}:"
                               f" {_cause(exc)}; retried for {waited:.1f} s).")
        return DeployError(f"Kubernetes: {what} failed: the API server at {self.server} "
                           f"stopped answering ({_cause(exc)}) and was still down when the "
                           f"wait ran out (retried for {waited:.1f} s; OFNOTEBOOK_START_TIMEOUT "
                           f"sets the wait).")

    def call(self, what: str, deadline: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, again with backoff on a transient error until
        ``deadline``; other API errors are raised as they are."""
        delay, started = 0.1, time.monotonic()
        while True:
            try:
                result = fn(*args, **kwargs)
                self.answered = True
                return result
            except Exception as exc:
                if getattr(exc, "status", None):
                    self.answered = True
                tls = tls_failure(exc)
                if tls is not None:
                    raise DeployError(
                        f"Kubernetes: {what} failed: TLS with the API server at {self.server} "
                        f"failed ({str(tls)[:160]}); check the kubeconfig's server address "
                        f"and its certificate-authority(-data).") from None
                if not transient(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.unreachable(what, exc, time.monotonic() - started) from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)

    def error(self, exc: Exception, what: str, resource: Resource = FUNCTIONS) -> DeployError:
        """A failed call as the one ``DeployError`` of this backend's edge (status, RBAC grant
        to ask for, namespace), so no client exception reaches the notebook."""
        return api_error(exc, what, self.namespace, resource)

    # -- Functions ---------------------------------------------------------------------------

    def crd(self, deadline: float) -> dict[str, Any] | None:
        """The Function CRD, or None when the account may not read it."""
        try:
            crd = self.call("reading the CRD", deadline,
                            self.extensions.read_custom_resource_definition, CRD_NAME)
        except DeployError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 403:
                return None
            raise self.error(exc, f"reading the CRD {CRD_NAME}") from None
        return self.extensions.api_client.sanitize_for_serialization(crd)  # type: ignore

    def get(self, name: str, deadline: float, resource: Resource = FUNCTIONS
            ) -> dict[str, Any] | None:
        """``resource`` ``name`` (a Function unless told), or None when there is none."""
        what = f"reading {resource.kind} {name!r}"
        try:
            return self.call(what, deadline,  # type: ignore[no-any-return]
                             self.custom.get_namespaced_custom_object, resource.group,
                             resource.version, self.namespace, resource.plural, name)
        except DeployError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 404 and _detail(exc).strip() != \
                    "404 page not found":
                return None
            raise self.error(exc, what, resource) from None

    def list_one(self, name: str, deadline: float) -> tuple[dict[str, Any] | None, str]:
        """Function ``name`` (or None) and the list's resourceVersion (the current one)."""
        try:
            listed = self.call(f"reading Function {name!r}", deadline,
                               self.custom.list_namespaced_custom_object, GROUP, VERSION,
                               self.namespace, PLURAL, field_selector=f"metadata.name={name}")
        except DeployError:
            raise
        except Exception as exc:
            raise self.error(exc, f"reading Function {name!r}") from None
        items = listed.get("items") or []
        return (items[0] if items else None), listed["metadata"]["resourceVersion"]

    def apply(self, manifest: dict[str, Any], deadline: float,
              resource: Resource = FUNCTIONS) -> tuple[dict[str, Any], list[str]]:
        """Server-side apply ``manifest``; the object and the API server's warnings."""
        what = f"applying {resource.kind} {manifest['metadata']['name']!r}"
        try:
            got = self.call(what, deadline, self.custom.patch_namespaced_custom_object,
                            resource.group, resource.version, self.namespace, resource.plural,
                            manifest["metadata"]["name"], manifest,
                            field_manager=FIELD_MANAGER, force=True, field_validation="Strict",
                            _content_type="application/apply-patch+yaml",
                            _preload_content=False)  # the client drops a 201's body
            data = json.loads(got.data)
        except DeployError:
            raise
        except Exception as exc:
            raise self.error(exc, what, resource) from None
        header = got.headers.get("Warning") or ""
        warnings = [w.replace('\\"', '"') for w in WARNING.findall(header)]
        return data, warnings

    def delete(self, name: str, deadline: float, resource: Resource = FUNCTIONS
               ) -> dict[str, Any] | None:
        """Delete with foreground propagation; the object while it goes, None if gone."""
        from kubernetes import client

        what = f"deleting {resource.kind} {name!r}"
        try:
            got = self.call(what, deadline, self.custom.delete_namespaced_custom_object,
                            resource.group, resource.version, self.namespace, resource.plural,
                            name, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except DeployError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise self.error(exc, what, resource) from None
        return got if isinstance(got, dict) and got.get("kind") != "Status" else None

    # -- Secrets (the --secret-env values and component credentials) -----------------------

    def read_secret(self, name: str, deadline: float) -> dict[str, Any] | None:
        """Secret ``name`` as a dict, or None when there is none."""
        what = f"reading Secret {name!r}"
        try:
            got = self.call(what, deadline, self.core.read_namespaced_secret, name,
                            self.namespace)
        except DeployError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise self.error(exc, what, SECRETS) from None
        return self.core.api_client.sanitize_for_serialization(got)  # type: ignore

    def write_secret(self, manifest: dict[str, Any], deadline: float,
                     resource_version: str | None) -> bool:
        """Create the Secret (``resource_version`` None) or replace the one of that
        resourceVersion; False when the API server answers 409 (it exists already, or
        changed meanwhile: read it again)."""
        name = manifest["metadata"]["name"]
        what = f"writing Secret {name!r}"
        try:
            if resource_version is None:
                self.call(what, deadline, self.core.create_namespaced_secret, self.namespace,
                          manifest)
            else:
                body = dict(manifest, metadata={**manifest["metadata"],
                                                "resourceVersion": resource_version})
                self.call(what, deadline, self.core.replace_namespaced_secret, name,
                          self.namespace, body)
        except DeployError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return False
            raise self.error(exc, what, SECRETS) from None
        return True

    def delete_secret(self, name: str, deadline: float) -> None:
        """Delete Secret ``name`` (gone already is fine)."""
        what = f"deleting Secret {name!r}"
        try:
            self.call(what, deadline, self.core.delete_namespaced_secret, name, self.namespace)
        except DeployError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise self.error(exc, what, SECRETS) from None

    def follow(self, name: str, since: str, deadline: float, window: float
               ) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Changes of Function ``name`` after resourceVersion ``since`` until ``deadline``:
        ``(type, object)``; ``("IDLE", None)`` when a watch window passed quietly; after an
        expired watch the re-read object (``"DELETED", None`` if it is gone). Watches are
        re-opened from the newest resourceVersion seen, bookmarks included."""
        from kubernetes import watch

        what = f"watching Function {name!r}"
        delay, failing_since = 0.1, None
        while time.monotonic() < deadline:
            seconds = max(1, min(int(window), int(deadline - time.monotonic()) or 1))
            stream = watch.Watch()
            quiet = True
            try:
                for event in stream.stream(
                        self.custom.list_namespaced_custom_object, GROUP, VERSION,
                        self.namespace, PLURAL, field_selector=f"metadata.name={name}",
                        resource_version=since, timeout_seconds=seconds,
                        allow_watch_bookmarks=True, _request_timeout=(5, seconds + 5)):
                    self.answered, delay, failing_since = True, 0.1, None
                    obj = event["raw_object"]
                    since = obj.get("metadata", {}).get("resourceVersion") or since
                    if event["type"] != "BOOKMARK":
                        quiet = False
                        yield event["type"], obj
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 410:
                    found, since = self.list_one(name, deadline)
                    yield ("MODIFIED", found) if found else ("DELETED", None)
                    continue
                if not transient(exc):
                    raise self.error(exc, what) from None
                failing_since = failing_since or time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.unreachable(what, exc, time.monotonic() - failing_since) \
                        from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)
                continue
            finally:
                stream.stop()
            if quiet:
                yield "IDLE", None

    def pods(self, selector: str, deadline: float) -> list[Any]:
        """The pods of ``selector``, with the retries of every call: their logs and restarts
        are what explains a function that does not get ready."""
        try:
            return self.call("listing pods", deadline,  # type: ignore[no-any-return]
                             self.core.list_namespaced_pod, self.namespace,
                             label_selector=selector).items
        except DeployError:
            raise
        except Exception as exc:
            raise self.error(exc, f"listing the pods {selector}") from None


def applied_config(obj: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any] | None:
    """What ``manager`` last applied to ``obj``, read from its ``managedFields`` (as client-go's
    extract does), or None when it never applied."""
    entry = next((e for e in obj.get("metadata", {}).get("managedFields") or []
                  if e.get("manager") == manager and e.get("operation") == "Apply"
                  and not e.get("subresource")), None)
    if entry is None:
        return None
    meta = obj["metadata"]
    out: dict[str, Any] = _extract(obj, entry.get("fieldsV1") or {})
    out.update(apiVersion=obj.get("apiVersion"), kind=obj.get("kind"))
    out["metadata"] = {"name": meta["name"], "namespace": meta.get("namespace"),
                       **out.get("metadata", {})}
    return out


def _extract(value: Any, tree: dict[str, Any]) -> Any:
    if not isinstance(value, (dict, list)) or not [k for k in tree if k != "."]:
        return value
    if isinstance(value, dict):
        return {key[2:]: _extract(value[key[2:]], sub) for key, sub in tree.items()
                if key.startswith("f:") and key[2:] in value}
    out = []
    for key, sub in tree.items():
        if key.startswith("v:"):
            out.append(json.loads(key[2:]))
        elif key.startswith("k:"):
            want = json.loads(key[2:])
            item = next((i for i in value if isinstance(i, dict) and
                         all(i.get(k) == v for k, v in want.items())), None)
            if item is not None:
                out.append({**want, **_extract(item, sub)})
    return out
