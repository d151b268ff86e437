"""OpenFunction ``Function`` manifests (and Dapr ``Component`` ones) from a
:class:`FunctionSpec` and :class:`~ofnotebook.cluster.ClusterOptions`, and their validation.

One manifest serves the ``kubernetes`` target (sent to the API server) and the ``yaml`` target
(written for GitOps). The shapes follow ``reference/openfunction-contract.md`` §1.4 and §8:
image by digest, the ``function`` container, ``triggers.http`` for sync functions,
``triggers.dapr`` with ``workloadType: Deployment`` for async ones, inline Dapr components under
``bindings``/``pubsub``/``states`` built from the same component specs the local target uses,
empty lists and maps omitted. A component the user named (``--component``) is, in v1beta2, a
standalone ``dapr.io/v1alpha1`` ``Component`` of that name, scoped to the functions using it,
which the Function references by name; v1beta1 keeps it inline under its name (the conversion
webhook drops outputs naming components it cannot see, §1.5). Every cluster setting lands where
docs/cluster-settings.md says. :func:`validate` checks a manifest against its CRD's structural
schema and reports every field the API server would prune, before anything is sent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .cluster import API_VERSIONS
from .credentials import env_secret, has_credentials, metadata_items, secret_for
from .cluster import ClusterOptions as ClusterOptions  # re-exported: users import it here
from .errors import ConfigError
from .spec import ComponentSpec, FunctionSpec

GROUP = "core.openfunction.io"
VERSIONS = API_VERSIONS
MANAGED_BY = {"app.kubernetes.io/managed-by": "ofnotebook"}
COMPONENT_API = "dapr.io/v1alpha1"
DEFAULT_NAMESPACE = "default"


class ManifestError(ConfigError):
    """A manifest the API server would reject or silently change."""


def component_spec(component: ComponentSpec, secret: str | None = None) -> dict[str, Any]:
    """A Dapr ``ComponentSpec`` (``type``, ``version``, ``metadata``) as the CRD wants it;
    with ``secret``, credentials are ``secretKeyRef`` s into that Secret
    (:mod:`ofnotebook.credentials`)."""
    return {"type": component.type, "version": component.version,
            "metadata": metadata_items(component, secret)}


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


def app_id(name: str, namespace: str | None) -> str:
    """The Dapr app id OpenFunction gives a function (``<fn>-<ns>``): what components'
    ``scopes`` name."""
    return f"{name}-{namespace or DEFAULT_NAMESPACE}"


def named_components(spec: FunctionSpec) -> dict[str, ComponentSpec]:
    """The components ``spec`` names itself (``--component``), by their Dapr name, once each
    however many inputs, outputs and states use them; the same name with two definitions is
    refused."""
    return _by_key(spec.name, [c for c in spec.inputs + spec.outputs + spec.states
                               + spec.components if c.component], lambda c: c.component)


def _check_callable(spec: FunctionSpec, api_version: str) -> None:
    """Refuse what a cluster cannot give a component the code calls by name: a local secret
    store (it reads the kernel's environment or a file on this machine, which a pod has not),
    and in v1beta1, a kind OpenFunction cannot hold inline (only bindings, pub/sub, states)."""
    for c in spec.components:
        if c.type.startswith("secretstores.local."):
            raise ConfigError(
                f"Component {c.component!r} is a {c.type} secret store: it reads this "
                f"machine's environment or files, which a pod does not have. On a cluster, "
                f"declare the cluster's own secret store under that name (e.g. "
                f"Component('secretstores.kubernetes', name={c.component!r})), or take "
                f"single values from a Kubernetes Secret with --secret-env VAR=SECRET:KEY.",
                key="components")
        if api_version == "v1beta1" and c.kind not in ("bindings", "pubsub", "state"):
            raise ConfigError(
                f"Component {c.component!r} ({c.type}) cannot be written in a v1beta1 Function, "
                f"which holds components inline under bindings, pubsub and states only; use "
                f"--api-version v1beta2 (a standalone Component).", key="components")


def _by_key(function: str, components: Iterable[ComponentSpec],
            key: Callable[[ComponentSpec], str]) -> dict[str, ComponentSpec]:
    found: dict[str, ComponentSpec] = {}
    for c in components:
        name = key(c)
        seen = found.get(name)
        if seen is not None and (seen.type, seen.version, sorted(seen.metadata)) != \
                (c.type, c.version, sorted(c.metadata)):
            raise ConfigError(f"Function {function!r} declares two different Dapr components "
                              f"named {name!r}; give them different names.", key="component")
        found.setdefault(name, c)
    return found


def check_settings(spec: FunctionSpec, options: ClusterOptions) -> None:
    """Refuse cluster settings that contradict the spec. Run at every deploy, on every
    target, so a cell the local target accepts is not refused later by ``%function export``
    or the kubernetes target."""
    if options.keda_triggers and spec.runtime != "async":
        raise ConfigError(f"--keda-trigger scales asynchronous functions; {spec.name!r} is "
                          f"synchronous, and Knative scales it by its requests: use "
                          f"--min-replicas/--max-replicas.", key="keda_triggers")
    if spec.batch is not None and options.dapr_mode == "standalone":
        raise ConfigError(f"--batch needs Dapr in sidecar mode on a cluster: in standalone "
                          f"mode OpenFunction's dapr-proxy subscribes for {spec.name!r} and "
                          f"forwards one event at a time, so every batch would be of one. "
                          f"Drop --dapr-mode standalone (a batch function defaults to "
                          f"sidecar) or use --dapr-mode sidecar.", key="dapr_mode")


def function_manifest(spec: FunctionSpec, image: str, options: ClusterOptions | None = None,
                      *, api_version: str | None = None) -> dict[str, Any]:
    """The ``Function`` for ``spec`` running ``image`` (prefer a ``repo@sha256:`` reference),
    in ``api_version`` (default: the options', v1beta2). ``metadata.namespace`` is written
    when the options name one, or when standalone Components are scoped to it (v1beta2 named
    components: their ``scopes`` say ``<fn>-<namespace>``)."""
    options = options or ClusterOptions()
    api_version = api_version or options.api_version
    if api_version not in VERSIONS:
        raise ConfigError(f"Function {api_version!r} is not an OpenFunction API version; use "
                          f"v1beta2 (stored by v1.2.0) or v1beta1.", key="api_version")
    check_settings(spec, options)
    _check_callable(spec, api_version)
    container: dict[str, Any] = {"name": "function", "imagePullPolicy": options.pull_policy}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for k, (secret, key) in sorted(options.secrets.items())]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": env_secret(spec), "key": k}}}
            for k in sorted(spec.secret_env)]
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

    body: dict[str, Any] = {"version": spec.version, "image": image}
    if options.image_credentials:
        body["imageCredentials"] = {"name": options.image_credentials}
    if api_version == "v1beta1":
        if spec.runtime != "async":
            body["port"] = spec.port
        body["serving"] = _serving_v1beta1(spec, options, container)
    else:
        body["serving"] = _serving_v1beta2(spec, options, container)
    metadata: dict[str, Any] = {"name": spec.name}
    namespace = options.namespace or (DEFAULT_NAMESPACE if api_version == "v1beta2" and
                                      named_components(spec) else None)
    if namespace:
        metadata["namespace"] = namespace
    if options.labels:
        metadata["labels"] = dict(options.labels)
    return {"apiVersion": f"{GROUP}/{api_version}", "kind": "Function",
            "metadata": metadata, "spec": body}


def managed(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` labelled as the kubernetes target's own (what it may update and delete);
    the yaml target's are not: whoever applies the folder manages them."""
    meta = manifest["metadata"]
    meta["labels"] = {**MANAGED_BY, **meta.get("labels", {})}
    return manifest


def _dapr_annotations(mode: str) -> dict[str, str]:
    return {"openfunction.io/enable-dapr": "true", "openfunction.io/dapr-service-mode": mode}


def dapr_mode(spec: FunctionSpec, options: ClusterOptions) -> str | None:
    """The Dapr mode to write: the one given, else sidecar for a batch function (its own
    daprd reads the runtime's ``bulkSubscribe`` from ``ListTopicSubscriptions``, while
    standalone mode's dapr-proxy subscribes without it and forwards single events), else
    none (OpenFunction's default, standalone)."""
    return options.dapr_mode or ("sidecar" if spec.batch is not None else None)


def _serving_v1beta2(spec: FunctionSpec, options: ClusterOptions,
                     container: dict[str, Any]) -> dict[str, Any]:
    """v1beta2 ``serving``: the Dapr mode always explicit (reference §8), named components
    referenced by their name (their ``Component`` is :func:`component_manifests`), the
    others inline, and the function's own input/output names kept as ``inputName`` /
    ``outputName`` where they differ from the component's."""
    serving: dict[str, Any] = {}
    if spec.uses_components:
        serving["annotations"] = _dapr_annotations(dapr_mode(spec, options) or "standalone")
    if spec.runtime == "async":
        serving["workloadType"] = "Deployment"  # otherwise "Running" is reported at once
    serving["template"] = {"containers": [container]}
    if spec.runtime == "async":
        triggers = []
        for c in spec.inputs:
            trigger = {"name": c.component or c.name, "type": c.type}
            if c.topic:
                trigger["topic"] = c.topic
            if c.component and c.component != c.name:
                trigger["inputName"] = c.name
            triggers.append(trigger)
        serving["triggers"] = {"dapr": triggers}
    else:
        serving["triggers"] = {"http": {"port": spec.port}}
    outputs = []
    for c in spec.outputs:
        output = {"name": c.component or c.name, "type": c.type, **_output_fields(c, "metadata")}
        if c.component and c.component != c.name:
            output["outputName"] = c.name
        outputs.append({"dapr": output})
    if outputs:
        serving["outputs"] = outputs
    for kind in ("bindings", "pubsub"):
        inline = {c.name: component_spec(c, env_secret(spec)) for c in spec.inputs
                  + spec.outputs if c.kind == kind and not c.component}
        if inline:
            serving[kind] = inline
    states: dict[str, Any] = {}
    for c in spec.states:
        if c.component and c.component != c.name:
            raise ConfigError(
                f"State store {c.name!r} uses component {c.component!r}: OpenFunction names a "
                f"state store after its component, so the function would not find "
                f"{c.name!r}; call it {c.component!r} (--state {c.component}=@{c.component}).",
                key="state")
        states[c.name] = {} if c.component else {"spec": component_spec(c, env_secret(spec))}
    if states:
        serving["states"] = states
    scale: dict[str, Any] = {}
    if options.min_replicas is not None:
        scale["minReplicas"] = options.min_replicas
    if options.max_replicas is not None:
        scale["maxReplicas"] = options.max_replicas
    if options.keda_triggers:
        keda: dict[str, Any] = {"triggers": [dict(t) for t in options.keda_triggers]}
        scaled_object = _scaled_object(options)
        if scaled_object:
            keda["scaledObject"] = scaled_object
        scale["keda"] = keda
    if scale:
        serving["scaleOptions"] = scale
    return serving


def _scaled_object(options: ClusterOptions, replicas: bool = False) -> dict[str, Any]:
    """``keda.scaledObject``: polling, (v1beta1: the replica counts,) cooldown and the HPA
    behaviour under ``advanced.horizontalPodAutoscalerConfig.behavior``, as the seed orders
    them."""
    fields = [("pollingInterval", options.keda_polling_interval)]
    if replicas:
        fields += [("minReplicaCount", options.min_replicas),
                   ("maxReplicaCount", options.max_replicas)]
    fields.append(("cooldownPeriod", options.keda_cooldown_period))
    scaled: dict[str, Any] = {k: v for k, v in fields if v is not None}
    if options.hpa_behavior:
        scaled["advanced"] = {"horizontalPodAutoscalerConfig": {
            "behavior": copy.deepcopy(dict(options.hpa_behavior))}}
    return scaled


def component_manifests(spec: FunctionSpec, namespace: str | None,
                        scopes: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The standalone ``dapr.io/v1alpha1`` ``Component`` of each named component of
    ``spec`` (v1beta2), named exactly so and scoped to ``spec``'s app id and ``scopes``
    (the other functions that use it)."""
    namespace = namespace or DEFAULT_NAMESPACE
    apps = sorted({app_id(spec.name, namespace), *scopes})
    return [{"apiVersion": COMPONENT_API, "kind": "Component",
             "metadata": {"name": name, "namespace": namespace},
             "spec": component_spec(c, secret_for(spec, c, standalone=True)),
             **({"auth": {"secretStore": "kubernetes"}} if has_credentials(c) else {}),
             "scopes": apps}
            for name, c in named_components(spec).items()]


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


def _serving_v1beta1(spec: FunctionSpec, options: ClusterOptions,
                     container: dict[str, Any]) -> dict[str, Any]:
    """v1beta1 ``serving``, written so the webhook's conversion to v1beta2 loses nothing
    (reference §1.5): every component is inline (the conversion drops outputs whose
    component is not), named ones keyed by their name as the seed writes them; KEDA
    triggers under ``serving.triggers`` with ``scaleOptions.keda`` set (else dropped); an
    async function's replica counts in ``keda.scaledObject`` (converted to
    ``scaleOptions.min/maxReplicas``), and a ``scaledObject`` in any case (its presence makes
    the converted Function a Deployment, else it reports Running at once). The Dapr mode is
    written only when given (or sidecar for a batch function, :func:`dapr_mode`): OpenFunction
    enables Dapr for a Function with components and defaults to standalone (reference §4.1)."""
    serving: dict[str, Any] = {"runtime": "async" if spec.runtime == "async" else "knative"}
    mode = dapr_mode(spec, options)
    if mode and spec.uses_components:
        serving["annotations"] = _dapr_annotations(mode)
    scale: dict[str, Any] = {}
    if spec.runtime == "async":
        scaled = _scaled_object(options, replicas=True) or {"workloadType": "Deployment"}
        scale["keda"] = {"scaledObject": scaled}
    else:
        scale.update((k, v) for k, v in (("minReplicas", options.min_replicas),
                                         ("maxReplicas", options.max_replicas))
                     if v is not None)
    if scale:
        serving["scaleOptions"] = scale
    if options.keda_triggers:
        serving["triggers"] = [dict(t) for t in options.keda_triggers]
    serving["template"] = {"containers": [container]}
    if spec.runtime == "async":
        serving["inputs"] = [{"name": c.name, "component": c.component or c.name,
                              **({"topic": c.topic} if c.topic else {})} for c in spec.inputs]
    outputs = [{"name": c.name, "component": c.component or c.name,
                **_output_fields(c, "params")} for c in spec.outputs]
    if outputs:
        serving["outputs"] = outputs
    # components the code calls by name are inline too, under their own name (the kinds
    # are checked in _check_callable)
    called = tuple(c for c in spec.components if c.kind != "state")
    inline = _by_key(spec.name, spec.inputs + spec.outputs + called,
                     lambda c: c.component or c.name)
    for kind in ("bindings", "pubsub"):
        found = {name: component_spec(c, env_secret(spec)) for name, c in inline.items()
                 if c.kind == kind}
        if found:
            serving[kind] = found
    states = spec.states + tuple(c for c in spec.components if c.kind == "state")
    if states:
        serving["states"] = {c.name: component_spec(c, env_secret(spec)) for c in states}
    return serving


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
        kind = manifest.get("kind", "Function")
        raise ManifestError(f"The {kind} manifest for {name!r} does not fit the CRD "
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
