"""The ``kubernetes`` target: an OpenFunction ``Function`` per deployment.

Deploy = build and push the image (as the container target does; the cluster pulls it by
digest from ``OFNOTEBOOK_REGISTRY``), validate the manifest against the CRD the cluster serves,
create or replace the Function, then watch it until OpenFunction reports it ready
(reference/openfunction-contract.md §2.2: build ``Skipped``/``Succeeded``, serving ``Running``
for the current ``resourceRef``; async servings say Running early, so their pods must be
ready too). Every state change is a phase event. Logs follow the pods labelled
``openfunction.io/serving=<resourceRef>``, container ``function``. Stop deletes the Function
(foreground) and waits until it is gone. API errors become one message naming the fix.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .. import config, images
from ..errors import BackendUnavailableError, BuildError, ConfigError, DeployError
from ..manifests import ClusterOptions, function_manifest, uses_dapr, validate
from ..package import Package
from .kube_api import CRD_NAME, GROUP, PLURAL, VERSION, api_error
from .base import (FAILED, RUNNING, STARTING, STOPPED, BufferedDeployment, LogBuffer,
                   PhaseEvent, PhaseRecorder, TrackedBackend)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

READY_BUILD = ("Skipped", "Succeeded")
TERMINAL = ("Failed", "Timeout", "Canceled")
WATCH_WINDOW = 2  # s: how long one watch request stays open before the pods are looked at


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
        self._stopped = False
        self._following: set[str] = set()
        threading.Thread(target=self._follow, name=f"ofnotebook-k8s-logs-{name}",
                         daemon=True).start()

    def _follow(self) -> None:
        """Follow every pod of the serving (pods come and go as it scales)."""
        while not self._stopped:
            try:
                pods = self.backend.core.list_namespaced_pod(
                    self.namespace, label_selector=f"openfunction.io/serving={self.serving_ref}")
            except Exception:
                time.sleep(2)
                continue
            for pod in pods.items:
                if pod.metadata.name not in self._following:
                    self._following.add(pod.metadata.name)
                    threading.Thread(target=self._follow_pod, args=(pod.metadata.name,),
                                     daemon=True).start()
            time.sleep(5)

    def _follow_pod(self, pod: str) -> None:
        try:
            stream = self.backend.core.read_namespaced_pod_log(
                pod, self.namespace, container="function", follow=True,
                _preload_content=False)
            for raw in stream.stream():
                for line in raw.decode(errors="replace").splitlines():
                    self.log_buffer.append(line)
                if self._stopped:
                    break
        except Exception:
            pass
        finally:
            self._following.discard(pod)

    @property
    def status(self) -> str:
        if self._stopped:
            return STOPPED
        try:
            fn = self.backend.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name)
        except Exception as exc:
            return STOPPED if getattr(exc, "status", None) == 404 else FAILED
        state = fn.get("status", {}).get("serving", {}).get("state", "")
        return RUNNING if state == "Running" else FAILED if state in TERMINAL else STARTING

    @property
    def failure(self) -> str | None:
        if self.status != FAILED:
            return None
        serving = self.function.get("status", {}).get("serving", {})
        return (f"the Function {self.name!r} is {serving.get('state')}: "
                f"{serving.get('message') or serving.get('reason') or ''}")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.backend.delete(self.name)


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
                 build: bool = True) -> None:
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
        self.options = ClusterOptions(**{**(options.__dict__ if options else {}),
                                         "namespace": self.namespace})
        self.registry = str(config.get("registry", registry) or "")
        self.timeout = float(config.get("start_timeout", timeout))
        self.log_lines = int(config.get("log_lines"))
        self.build_images = build
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.extensions = client.ApiextensionsV1Api(api)
        self._crd: dict[str, Any] | None = None

    # -- deploy ------------------------------------------------------------------------------

    def image_for(self, package: Package, recorder: PhaseRecorder) -> str:
        """Build and push; the digest reference the cluster pulls."""
        if not self.registry:
            raise BuildError("The kubernetes target needs a registry the cluster pulls from: "
                             "set OFNOTEBOOK_REGISTRY (host[:port]).",
                             function_name=package.spec.name)
        def line(text: str, phase: str) -> None:
            recorder.emit(PhaseEvent(phase, "progress", time.time(), detail=text))

        client = images.engine()
        with recorder.phase("build", detail=images.image_tag(package)):
            built = images.build(package, on_line=lambda t: line(t, "build"), client=client)
        with recorder.phase("push", detail=self.registry):
            return images.push(built, self.registry, client, on_line=lambda t: line(t, "push"))

    def crd(self) -> dict[str, Any]:
        if self._crd is None:
            try:
                crd = self.extensions.read_custom_resource_definition(CRD_NAME)
            except Exception as exc:
                raise api_error(exc, f"reading the CRD {CRD_NAME}", self.namespace) from None
            self._crd = self.extensions.api_client.sanitize_for_serialization(crd)
        return self._crd

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> KubernetesDeployment:
        spec = package.spec
        if uses_dapr(spec) and len(spec.name) + len(self.namespace) > 57:
            raise ConfigError(
                f"{spec.name!r} in namespace {self.namespace!r} is too long for Dapr (its app "
                f"id '<name>-<namespace>-dapr' must fit 63 characters); shorten the name.",
                key="name")
        existing = self._deployments.get(spec.name)
        if (isinstance(existing, KubernetesDeployment) and existing.key == package.digest
                and existing.status == RUNNING):
            return existing
        image = self.image_for(package, recorder) if self.build_images else \
            images.image_tag(package)
        with recorder.phase("apply", detail=f"{self.namespace}/{spec.name}"):
            manifest = function_manifest(spec, image, self.options, api_version=VERSION)
            validate(manifest, self.crd())
            before = self._apply(manifest)
        with recorder.phase("deploy", detail="OpenFunction"):
            function = self._wait_ready(spec.name, before, spec.runtime == "async", recorder)
        deployment = KubernetesDeployment(self, spec.name, package, function, self.log_lines)
        previous = self._track(deployment)
        if isinstance(previous, KubernetesDeployment):
            previous._stopped = True  # the Function itself lives on, updated in place
        return deployment

    def _apply(self, manifest: dict[str, Any]) -> tuple[str, str]:
        """Create, or replace at the current resourceVersion; return (resourceVersion,
        serving resourceRef) from before the change."""
        name = manifest["metadata"]["name"]
        for _attempt in range(2):
            try:
                current = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name)
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise api_error(exc, f"reading Function {name!r}", self.namespace) from None
                current = None
            try:
                if current is None:
                    made = self.custom.create_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, manifest)
                    return made["metadata"]["resourceVersion"], ""
                body = dict(manifest)
                body["metadata"] = {**manifest["metadata"],
                                    "resourceVersion": current["metadata"]["resourceVersion"]}
                made = self.custom.replace_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, body)
                ref = current.get("status", {}).get("serving", {}).get("resourceRef", "")
                return made["metadata"]["resourceVersion"], ref
            except Exception as exc:
                if getattr(exc, "status", None) == 409 and _attempt == 0:
                    continue  # changed under us: read again and retry once
                verb = "creating" if current is None else "updating"
                raise api_error(exc, f"{verb} Function {name!r}", self.namespace) from None
        raise DeployError(f"Kubernetes: Function {name!r} kept changing; run the cell again.")

    def _wait_ready(self, name: str, before: tuple[str, str], is_async: bool,
                    recorder: PhaseRecorder) -> dict[str, Any]:
        """Watch the Function until its current serving runs. The watch is re-opened every
        few seconds from the last resourceVersion; in between, a starting async serving's
        pods are looked at (OpenFunction never reports an async serving Failed)."""
        since, old_ref = before
        deadline = time.monotonic() + self.timeout
        last, state = "", ""
        while time.monotonic() < deadline:
            window = max(1, min(WATCH_WINDOW, int(deadline - time.monotonic()) or 1))
            for fn in self._watch(name, since, window):
                since = fn["metadata"]["resourceVersion"]
                status = fn.get("status", {})
                build = status.get("build", {}).get("state", "")
                serving = status.get("serving", {})
                state = serving.get("state", "")
                seen = f"build {build or '-'} · serving {state or '-'}"
                if seen != last:
                    recorder.emit(PhaseEvent("deploy", "progress", time.time(), detail=seen))
                    last = seen
                if build in TERMINAL or state in TERMINAL:
                    what = "build" if build in TERMINAL else "serving"
                    part = status.get(what, {})
                    raise DeployError(
                        f"Function {name!r}: the {what} is {part.get('state')} "
                        f"({part.get('reason') or ''}: {part.get('message') or 'no message'}). "
                        f"See kubectl describe function {name} -n {self.namespace}.",
                        function_name=name)
                ref = serving.get("resourceRef", "")
                if (build in READY_BUILD and state == "Running" and ref and ref != old_ref
                        and serving.get("lastSuccessfulResourceRef") == ref):
                    if is_async:
                        with recorder.phase("ready", detail="pods"):
                            self._wait_pods(name, ref, deadline)
                    return fn
                if state == "Starting" and is_async and ref:
                    self._pods_ready(name, ref)  # raises on a crashing pod
            if is_async and state == "Starting":
                current = self._get(name)
                ref = current.get("status", {}).get("serving", {}).get("resourceRef", "")
                if ref:
                    self._pods_ready(name, ref)
        raise DeployError(f"Function {name!r} was not ready within {self.timeout:g} s "
                          f"(last: {last or 'no status'}); OFNOTEBOOK_START_TIMEOUT sets the "
                          f"wait.", function_name=name)

    def _watch(self, name: str, since: str, seconds: int) -> Any:
        from kubernetes import watch

        stream = watch.Watch()
        try:
            for event in stream.stream(
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                    PLURAL, field_selector=f"metadata.name={name}", resource_version=since,
                    timeout_seconds=seconds):
                yield event["object"]
        except DeployError:
            raise
        except Exception as exc:
            raise api_error(exc, f"watching Function {name!r}", self.namespace) from None
        finally:
            stream.stop()

    def _get(self, name: str) -> dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, self.namespace, PLURAL, name)
        except Exception as exc:
            raise api_error(exc, f"reading Function {name!r}", self.namespace) from None

    def _pods_ready(self, name: str, ref: str) -> bool:
        """True when every pod of serving ``ref`` is ready; raises on a crashing one."""
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"openfunction.io/serving={ref}").items
        except Exception as exc:
            raise api_error(exc, f"listing the pods of {name!r}", self.namespace) from None
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
            if self._pods_ready(name, ref):
                return
            time.sleep(0.2)
        raise DeployError(f"Function {name!r}: its pods were not ready in time.",
                          function_name=name)

    # -- teardown ----------------------------------------------------------------------------

    def delete(self, name: str) -> None:
        """Delete the Function (children go with it) and wait until it is gone."""
        from kubernetes import client

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name,
                body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return
            raise api_error(exc, f"deleting Function {name!r}", self.namespace) from None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                         PLURAL, name)
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    return
                raise api_error(exc, f"reading Function {name!r}", self.namespace) from None
            time.sleep(0.1)
        raise DeployError(f"Function {name!r} was not gone within {self.timeout:g} s.")
