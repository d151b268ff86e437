"""The ``kubernetes`` target: an OpenFunction ``Function`` per deployment.

Deploy = the image (:meth:`KubernetesBackend.image_for`: built and pushed as the container
target does, the cluster pulls it by digest from ``OFNOTEBOOK_REGISTRY``), the manifest checked
against the CRD the cluster serves when the account may read it (otherwise the API server's own
strict validation checks it, and a phase event says so), then server-side apply of the
Function and a watch until OpenFunction reports the new serving ready (reference
openfunction-contract.md §2.2: build ``Skipped``/``Succeeded``, serving ``Running`` with
``lastSuccessfulResourceRef == resourceRef``, a new ``resourceRef`` after a spec change; async
servings say Running early, so their pods must be ready too; :mod:`.kube_rollout`). Named
components are standalone Dapr ``Component`` s applied before the Function and owned by the
Functions using them (:mod:`.kube_components`). An apply that changes nothing
(the same code after a kernel restart) is recognised from the object and returns at once when
it already serves. Every state change is a phase event. A failed first deploy deletes what it
created; a failed update applies the previous spec again. A Function still being deleted is
waited for before it is applied again.

Logs follow the pods labelled ``openfunction.io/serving=<resourceRef>``, container
``function``. Stop deletes the Function (foreground) and waits until the garbage collector has
removed it; meanwhile the status is ``stopping``, and the finalizers left are named if it takes
longer than the timeout. The API machinery (retries across API server restarts, expired
watches, RBAC and other errors as one message) is :mod:`.kube_api`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, cast

from .. import builders, config, images
from ..errors import BackendUnavailableError, ConfigError, DeployError, UnsupportedError
from ..cluster import ClusterOptions
from ..manifests import ClusterBuild, add_cluster_build, function_manifest, managed, validate
from ..package import Package
from ..spec import FunctionSpec
from .base import (FAILED, RUNNING, STARTING, STOPPED, STOPPING, BufferedDeployment,
                   LogBuffer, PhaseEvent, PhaseRecorder, TrackedBackend, stream_lines)
from .events import EventTracker
from .kube_components import FunctionSecrets, NamedComponents
from .kube_rollout import TERMINAL, WATCH_WINDOW, Rollout, meta as _meta
from .kube_api import (CLUSTER_ROLE_RULES, CRD_NAME, GROUP, PLURAL, VERSION, KubeApi,
                       applied_config, rules_text, transient)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

CLEANUP_WAIT = 10.0  # s: the most a failed deploy waits to undo what it did
AS_V1BETA2 = (f"applied as {GROUP}/{VERSION}, the version the cluster stores (--api-version "
              f"v1beta1 is what the yaml target and %function export write)")
NO_CRD = (f"the account may not read the CRD {CRD_NAME}: the manifest is not checked before "
          f"sending, the API server's strict validation checks it (to check first, grant the "
          f"optional ClusterRole of docs/kubernetes-rbac.yaml: "
          f"{rules_text(CLUSTER_ROLE_RULES)})")


class KubernetesDeployment(BufferedDeployment):
    """A Function in a cluster; ``url`` comes from ``status.addresses``."""

    def __init__(self, backend: KubernetesBackend, name: str, package: Package,
                 function: dict[str, Any], log_lines: int) -> None:
        self.backend, self.name, self.package = backend, name, package
        self.namespace = backend.namespace
        self.function = function
        self.serving_ref = function.get("status", {}).get("serving", {}).get("resourceRef", "")
        self.url = _url(function, self.namespace)
        self.key = package.digest
        self.log_buffer = LogBuffer(log_lines)
        self._closing = False  # stop() began (or the Function now serves another deployment)
        self._gone = False
        self._superseded = False
        self._last_status = RUNNING
        self._following: set[str] = set()
        self.build_log: list[str] = []  # the in-cluster build's lines, kept after its pod goes
        self.secret_key = ""  # FunctionSecrets.fingerprint of the values it was deployed with
        threading.Thread(target=self._follow, name=f"ofnotebook-k8s-logs-{name}",
                         daemon=True).start()

    def _follow(self) -> None:
        """Follow every pod of the serving (pods come and go as it scales)."""
        while not self._closing:
            try:
                pods = self.backend.core.list_namespaced_pod(
                    self.namespace, label_selector=f"openfunction.io/serving={self.serving_ref}")
            except Exception:
                time.sleep(2)
                continue
            for pod in pods.items:
                name = pod.metadata.name if pod.metadata else None
                if name and name not in self._following:
                    self._following.add(name)
                    threading.Thread(target=self._follow_pod, args=(name,),
                                     daemon=True).start()
            time.sleep(5)

    def _follow_pod(self, pod: str) -> None:
        try:
            # _preload_content=False: a urllib3 response to stream, not the str it is typed as
            stream: Any = self.backend.core.read_namespaced_pod_log(
                pod, self.namespace, container="function", follow=True,
                _preload_content=False)
            for line in stream_lines(stream.stream()):
                self.log_buffer.append(line)
                if self._closing:
                    break
        except Exception:
            pass
        finally:
            self._following.discard(pod)

    @property
    def status(self) -> str:
        if self._gone or self._superseded:
            return STOPPED
        try:
            fn = cast("dict[str, Any]", self.backend.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return STOPPED
            return self._last_status if transient(exc) else FAILED
        self.function = fn
        state = fn.get("status", {}).get("serving", {}).get("state", "")
        self._last_status = (STOPPING if _meta(fn, "deletionTimestamp") else
                             RUNNING if state == "Running" else
                             FAILED if state in TERMINAL else STARTING)
        return self._last_status

    @property
    def failure(self) -> str | None:
        if self.status != FAILED:
            return None
        serving = self.function.get("status", {}).get("serving", {})
        return (f"the Function {self.name!r} is {serving.get('state')}: "
                f"{serving.get('message') or serving.get('reason') or ''}")

    def stop(self) -> None:
        """Delete the Function and wait until it is gone (``stopping`` meanwhile)."""
        if self._gone or self._superseded:
            return
        self._closing = True
        self.backend.delete(self.name, self.package.spec)
        self._gone = True

    # -- what the kernel cannot do in a cluster (its Dapr sidecar is the cluster's) ----------

    def publish(self, input_name: str, data: bytes, content_type: str) -> None:
        raise UnsupportedError(
            f"The kubernetes target does not publish test events from the notebook; publish "
            f"to the broker of input {input_name!r}, or use the local target.",
            target="kubernetes", verb="publish", function_name=self.name)

    def read_state(self, store: str, key: str) -> dict[str, Any]:
        raise UnsupportedError(
            f"The kubernetes target does not read state stores from the notebook; read "
            f"{key!r} from store {store!r} where it lives, or use the local target.",
            target="kubernetes", verb="read_state", function_name=self.name)

    @property
    def events(self) -> EventTracker:
        raise UnsupportedError(
            "The kubernetes target does not report the function's events to the notebook; "
            "read its outputs' broker or handle.logs(), or use the local target.",
            target="kubernetes", verb="events", function_name=self.name)


def _duration(text: str) -> float:
    """Seconds in a Kubernetes duration such as ``15m``, ``900s`` or ``1h30m``."""
    import re

    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or parts is None:
        raise ConfigError(f"Build timeout {text!r} is not a duration such as 15m or 900s.",
                          key="build_timeout")
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _url(function: dict[str, Any], namespace: str) -> str:
    status = function.get("status", {})
    addresses = {a.get("type"): a.get("value") for a in status.get("addresses") or []}
    if addresses.get("Internal") or addresses.get("External"):
        return str(addresses.get("Internal") or addresses.get("External"))
    service = status.get("serving", {}).get("service")
    if service:  # the Knative Service always answers inside the cluster
        return f"http://{service}.{namespace}.svc.cluster.local/"
    return ""


class KubernetesBackend(TrackedBackend):
    """Functions as OpenFunction ``Function`` resources in one namespace."""

    name: ClassVar[str] = "kubernetes"

    def __init__(self, *, namespace: str | None = None, options: ClusterOptions | None = None,
                 registry: str | None = None, kubeconfig: str | None = None,
                 context: str | None = None, timeout: float | None = None,
                 build: str | bool = True, platform: str | None = None,
                 build_timeout: str = "15m") -> None:
        try:
            from kubernetes import client, config as kube_config
        except ImportError as exc:
            raise BackendUnavailableError(
                "The kubernetes target needs: pip install 'ofnotebook[kubernetes]'.") from exc
        super().__init__()
        try:
            api: ApiClient = kube_config.new_client_from_config(config_file=kubeconfig,
                                                                context=context)
            _, active = kube_config.list_kube_config_contexts(config_file=kubeconfig)
            default_ns = (active or {}).get("context", {}).get("namespace")
        except (kube_config.ConfigException, OSError, TypeError) as exc:
            try:
                kube_config.load_incluster_config()
                api = client.ApiClient()
                default_ns = None
            except kube_config.ConfigException:
                raise BackendUnavailableError(
                    f"No kubeconfig or in-cluster credentials ({exc}); set KUBECONFIG or run "
                    f"inside a cluster.") from None
        self.namespace = namespace or (options.namespace if options else None) or \
            default_ns or "default"
        self.options = dataclasses.replace(options or ClusterOptions(), namespace=self.namespace)
        self.registry = str(config.get("registry", registry) or "")
        self.timeout = float(config.get("start_timeout", timeout))
        self.log_lines = int(config.get("log_lines"))
        # engine, registry (no engine needed) or cluster (OpenFunction builds it); False: the
        # image is named by its tag and nothing is built (tests, images built elsewhere)
        self.build = builders.build_mode(build)
        self.platform = builders.platform(platform)
        self.build_timeout = _duration(build_timeout)
        self.api = KubeApi(api, self.namespace)
        self.custom, self.core, self.extensions = \
            self.api.custom, self.api.core, self.api.extensions
        self.components = NamedComponents(self.api, self.namespace)
        self.secrets = FunctionSecrets(self.api, self.namespace)
        self._crd: dict[str, Any] | None = None
        self._crd_forbidden = False

    # -- deploy ------------------------------------------------------------------------------

    def image_for(self, package: Package, recorder: PhaseRecorder) -> str:
        """The image reference the Function runs: built (by the engine, or straight in the
        registry when no engine answers) and pushed, the digest reference the cluster pulls.
        ``--build cluster``: the tag the in-cluster build will push. ``build=False``: the
        local tag, nothing built."""
        if self.build == builders.NO_BUILD:
            return images.image_tag(package)
        if self.build == "cluster":
            return builders.output_image(package, self.registry)
        return builders.push_image(package, self.registry, builders.resolve(self.build),
                                   recorder, platform_name=self.platform)

    def cluster_build(self, package: Package, recorder: PhaseRecorder) -> ClusterBuild | None:
        """``--build cluster``: push the build context as a source bundle (never again for
        the same content) and say how OpenFunction builds it."""
        if self.build != "cluster":
            return None
        bundle = builders.push_source_bundle(package, self.registry, recorder,
                                                 platform_name=self.platform)
        return ClusterBuild(bundle=bundle, credentials=self.options.image_credentials,
                            timeout=f"{int(self.build_timeout)}s")

    def crd(self, deadline: float | None = None) -> dict[str, Any] | None:
        """The Function CRD the cluster serves (read once), or None when the account may not
        read it."""
        if self._crd is None and not self._crd_forbidden:
            self._crd = self.api.crd(deadline or time.monotonic() + self.timeout)
            self._crd_forbidden = self._crd is None
        return self._crd

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> KubernetesDeployment:
        spec = package.spec
        if spec.uses_components and len(spec.name) + len(self.namespace) > 57:
            raise ConfigError(
                f"{spec.name!r} in namespace {self.namespace!r} is too long for Dapr (its app "
                f"id '<name>-<namespace>-dapr' must fit 63 characters); shorten the name.",
                key="name")
        existing = self._deployments.get(spec.name)
        secret_key = self.secrets.fingerprint(spec, env)
        if (isinstance(existing, KubernetesDeployment) and existing.key == package.digest
                and existing.secret_key == secret_key and existing.status == RUNNING):
            return existing
        cluster_build = self.cluster_build(package, recorder)
        image = self.image_for(package, recorder)
        # the calls before the rollout get the usual wait (a wrong kubeconfig says so at
        # once); only the rollout of an in-cluster build waits for the build as well
        deadline = time.monotonic() + self.timeout
        rollout_deadline = deadline + (self.build_timeout if cluster_build else 0)
        name = spec.name
        with recorder.phase("apply", detail=f"{self.namespace}/{name}"):
            manifest = managed(function_manifest(spec, image, self.options,
                                                 api_version=VERSION))
            if cluster_build is not None:
                add_cluster_build(manifest, cluster_build)
            known = self._crd_forbidden
            crd = self.crd(deadline)
            if crd is not None:
                validate(manifest, crd)
            elif not known:
                recorder.emit(PhaseEvent("apply", "progress", time.time(), detail=NO_CRD))
            if self.options.api_version != VERSION:
                recorder.emit(PhaseEvent("apply", "progress", time.time(), detail=AS_V1BETA2))
            before = self._current(name, deadline, recorder)
            # Secrets and named components first: pods read the one, the controller the other
            secrets, versions = self.secrets.write(spec, env, before, deadline)
            self.secrets.annotate(manifest, versions)
            created: list[str] = []
            try:
                unowned, created = self.components.prepare(spec, _meta(before, "uid"),
                                                           deadline)
                fn, warnings = self.api.apply(manifest, deadline)
                self.components.own(spec, unowned, fn, deadline)
                if before is None:
                    self.secrets.own(spec, env, fn, deadline)
            except BaseException:
                self._undo_components(created, secrets)
                raise
            for warning in warnings:
                recorder.emit(PhaseEvent("apply", "progress", time.time(),
                                         detail=f"the API server warns: {warning}"))
        changed = before is None or _meta(fn, "generation") != _meta(before, "generation")
        stale = None
        if changed and before is not None:
            status = before.get("status") or {}
            stale = (status.get("serving", {}).get("resourceRef", ""),
                     status.get("build", {}).get("resourceRef", ""))
        rollout = Rollout(self, name, stale, spec.runtime == "async", recorder,
                           rollout_deadline)
        with recorder.phase("deploy", detail="OpenFunction"):
            try:
                function = rollout.wait(fn)
            except BaseException as exc:
                rollout.stop_following()  # a build still running must not stream on
                note = self._undo(name, before) if changed else ""
                self._undo_components(created, secrets)
                if isinstance(exc, DeployError) and (note or exc.last_logs):
                    tail = "\nLast build lines:\n" + "\n".join(exc.last_logs) \
                        if exc.last_logs else ""
                    raise DeployError(f"{exc} {note}".rstrip() + tail, function_name=name,
                                      last_logs=exc.last_logs) from exc
                raise
        deployment = KubernetesDeployment(self, name, package, function, self.log_lines)
        deployment.build_log = rollout.build_lines()
        deployment.secret_key = secret_key
        previous = self._track(deployment)
        if isinstance(previous, KubernetesDeployment):
            previous._superseded = previous._closing = True  # the Function lives on, updated
        return deployment

    def _current(self, name: str, deadline: float,
                 recorder: PhaseRecorder) -> dict[str, Any] | None:
        """The Function as it is before the apply; one still being deleted is waited for."""
        fn = self.api.get(name, deadline)
        if fn is not None and _meta(fn, "deletionTimestamp"):
            left = ", ".join(_meta(fn, "finalizers", []))
            recorder.emit(PhaseEvent("apply", "progress", time.time(), detail=f"waiting for "
                                     f"the previous Function to be deleted ({left or '-'})"))
            self._wait_gone(name, fn, deadline)
            return None
        return fn

    def _undo(self, name: str, before: dict[str, Any] | None) -> str:
        """After a failed deploy: delete what it created, or apply the previous spec again."""
        deadline = time.monotonic() + min(self.timeout, CLEANUP_WAIT)
        try:
            if before is None:
                self.api.delete(name, deadline)
                return "The Function it created was deleted."
            previous = applied_config(before) or {
                "apiVersion": before["apiVersion"], "kind": before["kind"],
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": before["spec"]}
            self.api.apply(previous, deadline)
            return "The previous spec was applied again."
        except DeployError as exc:
            return f"Undoing it failed too: {exc}"

    def _undo_components(self, created: list[str], secrets: list[str]) -> None:
        """Delete the Components and Secrets a failed deploy created and no Function owns
        (best effort: the deploy's own error is the one to show)."""
        deadline = time.monotonic() + min(self.timeout, CLEANUP_WAIT)
        try:
            self.components.undo(created, deadline)
            self.secrets.undo(secrets, deadline)
        except DeployError:
            pass

    def _pods_ready(self, name: str, ref: str, deadline: float) -> bool:
        """True when every pod of serving ``ref`` is ready; raises on a crashing one."""
        pods = self.api.pods(f"openfunction.io/serving={ref}", deadline)
        for pod in pods:
            for container in pod.status.container_statuses or []:
                waiting = container.state.waiting if container.state else None
                if waiting and waiting.reason in ("CrashLoopBackOff", "ImagePullBackOff",
                                                  "ErrImagePull"):
                    raise DeployError(
                        f"Function {name!r}: pod {pod.metadata.name} is {waiting.reason}; "
                        f"see its logs (kubectl logs {pod.metadata.name} -c function -n "
                        f"{self.namespace}).", function_name=name)
        return bool(pods) and all(any(c.type == "Ready" and c.status == "True"
                                      for c in (p.status.conditions or [])) for p in pods)

    def _wait_pods(self, name: str, ref: str, deadline: float) -> None:
        """Async servings report Running before their pods are: look at the pods."""
        while time.monotonic() < deadline:
            if self._pods_ready(name, ref, deadline):
                return
            time.sleep(0.2)
        raise DeployError(f"Function {name!r}: its pods were not ready in time.",
                          function_name=name)

    # -- teardown ----------------------------------------------------------------------------

    def delete(self, name: str, spec: FunctionSpec | None = None) -> None:
        """Delete the Function (foreground: its servings and pods first) and wait until the
        garbage collector has removed it; then the named components of ``spec`` that other
        Functions still use stop naming it in their scopes (the last user's go with it)."""
        deadline = time.monotonic() + self.timeout
        fn = self.api.delete(name, deadline)
        if fn is not None:
            self._wait_gone(name, fn, deadline)
        if spec is not None:
            self.components.release(spec, deadline)
            self.secrets.delete(spec, deadline)

    def _wait_gone(self, name: str, fn: dict[str, Any], deadline: float) -> None:
        for kind, obj in self.api.follow(name, _meta(fn, "resourceVersion", ""), deadline,
                                         WATCH_WINDOW):
            if kind == "DELETED" or (obj is not None and _meta(obj, "uid") != _meta(fn, "uid")):
                return
            fn = obj or fn
        finalizers = _meta(fn, "finalizers", [])
        why = []
        if "foregroundDeletion" in finalizers:
            why.append("foregroundDeletion: the garbage collector is still removing its "
                       "servings and pods")
        others = [f for f in finalizers if f != "foregroundDeletion"]
        if others:
            why.append(f"{', '.join(others)}: whoever set it has not removed it")
        raise DeployError(
            f"Function {name!r} was still being deleted after {self.timeout:g} s; finalizers "
            f"left: {', '.join(finalizers) or '(none)'} ({'; '.join(why) or 'none'}). See "
            f"kubectl get function {name} -n {self.namespace} -o yaml.", function_name=name)
