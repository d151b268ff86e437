"""OpenFunction ``Function`` manifests from a :class:`FunctionSpec`, and their validation.

One manifest serves the ``kubernetes`` target (sent to the API server) and the ``yaml`` target
(written for GitOps). The shapes follow ``reference/openfunction-contract.md`` §1.4 and §8:
image by digest, the ``function`` container, ``triggers.http`` for sync functions,
``triggers.dapr`` with ``workloadType: Deployment`` for async ones, inline Dapr components under
``bindings``/``pubsub``/``states`` built from the same component specs the local target uses,
empty lists and maps omitted. :func:`validate` checks a manifest against the CRD's structural
schema and reports every field the API server would prune, before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError
from .spec import ComponentSpec, FunctionSpec

GROUP = "core.openfunction.io"
VERSIONS = ("v1beta2", "v1beta1")
MANAGED_BY = {"app.kubernetes.io/managed-by": "ofnotebook"}
DAPR_MODES = ("standalone", "sidecar")


class ManifestError(ConfigError):
    """A manifest the API server would reject or silently change."""


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """How the function runs in a cluster; everything the spec itself does not say.

    ``secrets`` maps an environment variable to ``(secret name, key)``: the manifest holds a
    ``secretKeyRef``, never the value. ``keda_triggers`` are KEDA ``ScaleTriggers`` (for
    example Kafka lag); a ScaledObject is created only when they are given.
    """

    namespace: str = "default"
    image_credentials: str | None = None
    dapr_mode: str = "standalone"
    min_replicas: int | None = None
    max_replicas: int | None = None
    keda_triggers: tuple[Mapping[str, Any], ...] = ()
    keda_polling_interval: int | None = None
    keda_cooldown_period: int | None = None
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    cpu: str | None = None
    memory: str | None = None
    gpus: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    api_version: str = "v1beta2"  # what the yaml target writes; the cluster stores v1beta2

    def __post_init__(self) -> None:
        if self.dapr_mode not in DAPR_MODES:
            raise ConfigError(f"Dapr mode {self.dapr_mode!r} is not one of "
                              f"{', '.join(DAPR_MODES)}.", key="dapr_mode")
        if (self.min_replicas is not None and self.max_replicas is not None
                and self.min_replicas > self.max_replicas):
            raise ConfigError(f"min_replicas {self.min_replicas} is above max_replicas "
                              f"{self.max_replicas}.", key="replicas")


def component_spec(component: ComponentSpec) -> dict[str, Any]:
    """A Dapr ``ComponentSpec`` (``type``, ``version``, ``metadata``) as the CRD wants it."""
    return {"type": component.type, "version": component.version,
            "metadata": [{"name": k, "value": v} for k, v in component.metadata]}


def _output_fields(c: ComponentSpec, metadata_key: str) -> dict[str, Any]:
    """An output's topic, operation and per-event metadata (``metadata`` in v1beta2,
    ``params`` in v1beta1), each only when set."""
    fields: dict[str, Any] = {}
    if c.topic:
        fields["topic"] = c.topic
    if c.operation:
        fields["operation"] = c.operation
    if c.output_metadata:
        fields[metadata_key] = dict(c.output_metadata)
    return fields


def function_manifest(spec: FunctionSpec, image: str, options: ClusterOptions | None = None,
                      *, api_version: str | None = None) -> dict[str, Any]:
    """The ``Function`` for ``spec`` running ``image`` (prefer a ``repo@sha256:`` reference),
    in ``api_version`` (default: the options', v1beta2)."""
    options = options or ClusterOptions()
    api_version = api_version or options.api_version
    if api_version not in VERSIONS:
        raise ConfigError(f"Function {api_version!r} is not an OpenFunction API version; use "
                          f"v1beta2 (stored by v1.2.0) or v1beta1.", key="api_version")
    container: dict[str, Any] = {"name": "function", "imagePullPolicy": "IfNotPresent"}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for k, (secret, key) in sorted(options.secrets.items())]
    if env:
        container["env"] = env
    limits: dict[str, Any] = {}
    if options.cpu:
        limits["cpu"] = options.cpu
    if options.memory:
        limits["memory"] = options.memory
    if options.gpus:
        limits["nvidia.com/gpu"] = options.gpus
    if limits:
        container["resources"] = {"limits": limits}

    serving: dict[str, Any] = {}
    if spec.uses_components:
        serving["annotations"] = {"openfunction.io/enable-dapr": "true",
                                  "openfunction.io/dapr-service-mode": options.dapr_mode}
    if spec.runtime == "async":
        serving["workloadType"] = "Deployment"  # otherwise "Running" is reported at once
    serving["template"] = {"containers": [container]}
    if spec.runtime == "async":
        triggers = []
        for c in spec.inputs:
            trigger = {"name": c.name, "type": c.type}
            if c.topic:
                trigger["topic"] = c.topic
            triggers.append(trigger)
        serving["triggers"] = {"dapr": triggers}
    else:
        serving["triggers"] = {"http": {"port": spec.port}}
    outputs = [{"dapr": {"name": c.name, "type": c.type, **_output_fields(c, "metadata")}}
               for c in spec.outputs]
    if outputs:
        serving["outputs"] = outputs
    for kind in ("bindings", "pubsub"):
        inline = {c.name: component_spec(c) for c in spec.inputs + spec.outputs
                  if c.kind == kind}
        if inline:
            serving[kind] = inline
    if spec.states:
        serving["states"] = {c.name: {"spec": component_spec(c)} for c in spec.states}
    scale: dict[str, Any] = {}
    if options.min_replicas is not None:
        scale["minReplicas"] = options.min_replicas
    if options.max_replicas is not None:
        scale["maxReplicas"] = options.max_replicas
    if options.keda_triggers:
        scaled_object = {k: v for k, v in (("pollingInterval", options.keda_polling_interval),
                                           ("cooldownPeriod", options.keda_cooldown_period))
                         if v is not None}
        keda: dict[str, Any] = {"triggers": [dict(t) for t in options.keda_triggers]}
        if scaled_object:
            keda["scaledObject"] = scaled_object
        scale["keda"] = keda
    if scale:
        serving["scaleOptions"] = scale

    body: dict[str, Any] = {"version": spec.version, "image": image}
    if options.image_credentials:
        body["imageCredentials"] = {"name": options.image_credentials}
    body["serving"] = serving
    if api_version == "v1beta1":
        body = _as_v1beta1(spec, body)
    return {"apiVersion": f"{GROUP}/{api_version}", "kind": "Function",
            "metadata": {"name": spec.name, "namespace": options.namespace,
                         "labels": {**MANAGED_BY, **dict(options.labels)}},
            "spec": body}


KANIKO_BUILDER = "openfunction/kaniko-executor:v1.7.0"
SOURCE_SUBPATH = "workspace"  # the bundle's layer holds the build context under this folder


@dataclass(frozen=True, kw_only=True)
class ClusterBuild:
    """OpenFunction's own in-cluster build of a pushed Shipwright source bundle with the
    ``kaniko`` ClusterBuildStrategy the v1.2.0 chart ships (reference engine-less-builds.md
    A.2). Only fields the controller passes on are written: ``shipwright.timeout`` (read by
    the webhook only) and ``build.env`` (an ``ENV_VARS`` param kaniko does not declare, so
    Shipwright refuses the Build) are never emitted. ``keep_successful`` keeps the last
    successful Builder, and with it its pod's logs (the default 0 deletes them at once)."""

    bundle: str                       # REGISTRY/REPO:TAG of the source bundle (tag = digest)
    credentials: str | None = None    # dockerconfigjson Secret: bundle pull and image push
    builder_credentials: str | None = None  # pull Secret for the builder image itself
    builder: str = KANIKO_BUILDER
    timeout: str = "15m"
    keep_successful: int = 1
    keep_failed: int = 1


def add_cluster_build(manifest: dict[str, Any], build: ClusterBuild) -> dict[str, Any]:
    """``manifest`` (v1beta2) with ``spec.build`` for ``build``; ``spec.image`` stays the
    build's output image, ``spec.imageCredentials`` its push secret."""
    src: dict[str, Any] = {"bundleContainer": {"image": build.bundle},
                           "sourceSubPath": SOURCE_SUBPATH}
    if build.credentials:
        src["credentials"] = {"name": build.credentials}
    spec_build: dict[str, Any] = {"builder": build.builder}
    if build.builder_credentials:
        spec_build["builderCredentials"] = {"name": build.builder_credentials}
    spec_build.update({
        "dockerfile": "Dockerfile", "srcRepo": src,
        "shipwright": {"strategy": {"kind": "ClusterBuildStrategy", "name": "kaniko"}},
        "timeout": build.timeout,
        "successfulBuildsHistoryLimit": build.keep_successful,
        "failedBuildsHistoryLimit": build.keep_failed})
    if not manifest["apiVersion"].endswith("/v1beta2"):
        raise ConfigError("In-cluster builds are written for Function v1beta2 only.",
                          key="api_version")
    body = manifest["spec"]
    if build.credentials and "imageCredentials" not in body:
        body["imageCredentials"] = {"name": build.credentials}
    ordered = {k: v for k, v in body.items() if k != "serving"}
    ordered["build"] = spec_build
    ordered["serving"] = body["serving"]
    manifest["spec"] = ordered
    return manifest


def _as_v1beta1(spec: FunctionSpec, body: dict[str, Any]) -> dict[str, Any]:
    """The same Function in v1beta1, written so the webhook's conversion to v1beta2 loses
    nothing (reference §1.5): every output's component is inline (others are dropped), KEDA
    triggers sit under ``serving.triggers`` with ``scaleOptions.keda`` set (else dropped), and
    async functions get a ``scaledObject`` with ``workloadType: Deployment`` (else the
    converted Function reports Running at once)."""
    serving = dict(body["serving"])
    old: dict[str, Any] = {"runtime": "async" if spec.runtime == "async" else "knative"}
    for key in ("annotations", "template", "bindings", "pubsub"):
        if key in serving:
            old[key] = serving[key]
    if spec.runtime == "async":
        old["inputs"] = [{"name": c.name, "component": c.name, **({"topic": c.topic}
                                                                 if c.topic else {})}
                         for c in spec.inputs]
    outputs = [{"name": c.name, "component": c.name, **_output_fields(c, "params")}
               for c in spec.outputs]
    if outputs:
        old["outputs"] = outputs
    if spec.states:
        old["states"] = {c.name: component_spec(c) for c in spec.states}
    scale = dict(serving.get("scaleOptions", {}))
    keda = dict(scale.pop("keda", {}))
    if keda.get("triggers"):
        old["triggers"] = keda.pop("triggers")
    if spec.runtime == "async" or old.get("triggers"):
        scaled = dict(keda.get("scaledObject", {}))
        if spec.runtime == "async":
            scaled["workloadType"] = "Deployment"
        keda["scaledObject"] = scaled
    if keda:
        scale["keda"] = keda
    if scale:
        old["scaleOptions"] = scale
    result = {k: v for k, v in body.items() if k != "serving"}
    if spec.runtime != "async":
        result["port"] = spec.port
    result["serving"] = old
    return result


# -- validation against the CRD -----------------------------------------------------------------

def crd_schema(crd: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``version`` in a CustomResourceDefinition document."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return dict(entry["schema"]["openAPIV3Schema"])
    raise ManifestError(f"The CRD serves no version {version!r}.")


def validate(manifest: Mapping[str, Any], crd: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` listing every schema violation and every field the API
    server would prune (unknown fields are dropped silently by a structural schema)."""
    import jsonschema

    version = str(manifest.get("apiVersion", "")).rpartition("/")[2]
    schema = crd_schema(crd, version)
    problems = [f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
                for error in jsonschema.Draft4Validator(_json_schema(schema)).iter_errors(
                    manifest)]
    problems += [f"{path}: unknown field, the API server would prune it"
                 for path in pruned_fields(manifest, schema)]
    if problems:
        name = manifest.get("metadata", {}).get("name", "?")
        raise ManifestError(f"The Function manifest for {name!r} does not fit the CRD "
                            f"({version}):\n  " + "\n  ".join(sorted(problems)))


def pruned_fields(value: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Paths in ``value`` that a structural schema does not declare (what pruning removes)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if path == "" and key in ("apiVersion", "kind"):
                continue
            if path == "" and key == "metadata" or where.startswith("metadata."):
                continue  # ObjectMeta is validated by the API server, not the CRD
            if props is not None and key in props:
                found += pruned_fields(item, props[key], where)
            elif isinstance(extra, dict):
                found += pruned_fields(item, extra, where)
            elif props is not None or extra is False:
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += pruned_fields(item, schema["items"], f"{path}[{index}]")
    return found


def _json_schema(schema: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema: ``int-or-string`` and ``nullable``."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out.pop("format", None)
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    return out
