"""Images without a container engine: the package's image assembled layer by layer and pushed
straight to a registry, the way Jib, ko and ``crane append`` do. No daemon, no root.

On top of the base image's own layers (read from its registry, never run):

* **deps**: ``pip install --target`` of the package's ``requirements.txt`` for the image's
  platform and Python (wheels only), at ``/app/deps`` (on ``PYTHONPATH``), plus
  ``/app/requirements.txt``;
* **runtime**: the package's copy of the ofnotebook runtime at ``/app/ofnotebook``;
* **code**: ``/app/function`` (payload, manifest, context).

The layers are reproducible tarballs, cached by the digest of their inputs
(:mod:`ofnotebook.tarlayers`). A code edit thus rebuilds and uploads the code layer, the
config and the manifest, nothing else. The manifest is written last: a failure before it
leaves no tag pointing at a half image.

:func:`push_bundle` pushes the build context itself as a Shipwright source bundle for
OpenFunction's in-cluster build (``--build cluster``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, ContextManager, cast

from . import images
from .errors import BuildError
from .package import Package
from .registry.client import RegistryClient
from .requirements import check_index, index_target
from .registry.reference import (CONFIG_DOCKER, FAMILY, LAYER_DOCKER, MANIFEST_DOCKER,
                                 MANIFEST_OCI, Manifest, Reference, parse_platform, sha256_digest,
                                 split_registry)
from .tarlayers import (APP_DIR, DEPS_DIR, Layer, OnLine, bundle_layer, cache_root, deps_layer,
                        files_layer)

EPOCH = "1970-01-01T00:00:00Z"
LABEL_PACKAGE = "io.ofnotebook.package"
ENTRYPOINT = ["python", "-m", "ofnotebook.runtime"]
#: what the package's Dockerfile sets with ENV, in its order
_ENV = (("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1"), ("OFNOTEBOOK_PACKAGE", APP_DIR))
SOURCE_SUFFIX = "-source"

Phase = Callable[[str, str], ContextManager[Any]]


def _no_phase(name: str, detail: str = "") -> ContextManager[Any]:
    return contextlib.nullcontext()


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


# --------------------------------------------------------------------------------------------
# The image config and manifest


def base_python(base_config: dict[str, Any]) -> str:
    """The Python of a base image from its config: our label, else ``PYTHON_VERSION``."""
    cfg = base_config.get("config") or {}
    label = (cfg.get("Labels") or {}).get(images.LABEL_PYTHON)
    if label:
        return str(label)
    for item in cfg.get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "PYTHON_VERSION" and re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", value):
            return value
    return ""


def _set_env(env: list[str], key: str, value: str) -> None:
    for i, item in enumerate(env):
        if item.split("=", 1)[0] == key:
            env[i] = f"{key}={value}"
            return
    env.append(f"{key}={value}")


def image_config(base_config: dict[str, Any], layers: list[Layer], package: Package) -> dict[str, Any]:
    """The base's config with the package's settings (as its Dockerfile sets them), the new
    diff_ids and one history entry per new layer."""
    cfg = copy.deepcopy(base_config)
    inner = dict(cfg.get("config") or {})
    env = list(inner.get("Env") or [])
    for key, value in _ENV:
        _set_env(env, key, value)
    old_path = next((e.split("=", 1)[1] for e in env if e.startswith("PYTHONPATH=")), "")
    _set_env(env, "PYTHONPATH", f"{APP_DIR}:{DEPS_DIR}" + (f":{old_path}" if old_path else ""))
    inner["Env"] = env
    inner["WorkingDir"] = APP_DIR
    inner["Entrypoint"] = list(ENTRYPOINT)
    inner["Cmd"] = None
    inner["ExposedPorts"] = {**(inner.get("ExposedPorts") or {}),
                             f"{package.spec.port}/tcp": {}}
    inner["StopSignal"] = "SIGINT"
    inner["Labels"] = {**(inner.get("Labels") or {}),
                       images.LABEL_PYTHON: package.capture.python_version,
                       images.LABEL_CLOUDPICKLE: package.capture.cloudpickle_version,
                       LABEL_PACKAGE: package.digest}
    cfg["config"] = inner
    cfg["created"] = EPOCH
    rootfs = dict(cfg.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + [layer.diff_id for layer in layers]
    cfg["rootfs"] = rootfs
    cfg["history"] = list(cfg.get("history") or []) + [
        {"created": EPOCH, "created_by": layer.created_by, "comment": "ofnotebook"}
        for layer in layers]
    return cfg


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass
class Plan:
    """Everything to push, computed before the first upload."""

    base: Reference
    base_manifest: Manifest
    base_layers: list[dict[str, Any]]
    layers: list[Layer]
    config: bytes
    manifest: bytes


def plan_image(package: Package, base: Reference, source: RegistryClient,
               platform: str, on_line: OnLine) -> Plan:
    """Read the base, check it against the notebook, build (or reuse) the layers."""
    base_text = images.base_image_for(package)
    manifest = source.get_manifest(base.repository, base.ref, platform=platform)
    if manifest.media_type not in FAMILY:
        raise BuildError(f"The base image {base_text!r} is a {manifest.media_type}; only OCI "
                         f"and Docker schema 2 images can be appended to.")
    data = manifest.data
    base_config = json.loads(source.get_blob(base.repository, data["config"]["digest"]))
    os_, arch, _ = parse_platform(platform)
    have = (base_config.get("os"), base_config.get("architecture"))
    if have != (os_, arch):
        raise BuildError(f"The base image {base_text!r} is {'/'.join(map(str, have))}, not "
                         f"{platform}: choose a base (or --platform) that matches.")
    python = base_python(base_config)
    if not python:
        raise BuildError(
            f"The base image {base_text!r} does not say which Python it has (no "
            f"{images.LABEL_PYTHON} label, no PYTHON_VERSION env, as official python images "
            f"have), and the registry build never runs an image. Add ENV PYTHON_VERSION=X.Y.Z "
            f"to the base (ofnotebook.layers.derive does it without an engine), or use "
            f"--build engine.")
    images.check_python(package, python, base_text)
    base_layers = list(data.get("layers") or [])
    diff_ids = (base_config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(base_layers):
        raise BuildError(f"The base image {base_text!r} lists {len(base_layers)} layers but "
                         f"{len(diff_ids)} diff_ids: its config does not match its manifest.")
    on_line("build", f"base {base} ({manifest.digest[:19]}), Python {python}, "
                     f"{len(base_layers)} layers")
    layers = [deps_layer(package, python, platform, on_line),
              files_layer(package, "runtime", "ofnotebook"),
              files_layer(package, "code", "function")]
    for layer in layers:
        state = "cached" if layer.cached else "built"
        on_line("build", f"layer {layer.kind} {layer.digest[:19]} {human_size(layer.size)} "
                         f"({state})")
    cfg = _json(image_config(base_config, layers, package))
    config_type, layer_type = FAMILY[manifest.media_type]
    out: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest.media_type,
        "config": {"mediaType": data["config"].get("mediaType") or config_type,
                   "digest": sha256_digest(cfg), "size": len(cfg)},
        "layers": base_layers + [{"mediaType": layer_type, "digest": layer.digest,
                                  "size": layer.size} for layer in layers],
    }
    if manifest.media_type == MANIFEST_OCI:
        out["annotations"] = {"org.opencontainers.image.base.digest": manifest.digest,
                              "org.opencontainers.image.base.name": str(base)}
    return Plan(base, manifest, base_layers, layers, cfg, _json(out))


# --------------------------------------------------------------------------------------------
# Pushing


class _Locations:
    """Where this machine last put each blob in each registry: a repository to mount from."""

    def __init__(self) -> None:
        self.path = cache_root() / "locations.json"
        try:
            self.data: dict[str, dict[str, str]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.changed = False

    def get(self, host: str, digest: str) -> str | None:
        return self.data.get(host, {}).get(digest)

    def put(self, host: str, digest: str, repository: str) -> None:
        if self.data.setdefault(host, {}).get(digest) != repository:
            self.data[host][digest] = repository
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"locations.{os.getpid()}.partial")
            partial.write_text(json.dumps(self.data, sort_keys=True))
            os.replace(partial, self.path)


def _open_local(path: Path) -> IO[bytes]:
    return open(path, "rb")


def _open_remote(source: RegistryClient, repository: str, digest: str) -> IO[bytes]:
    """A base layer's blob as a stream, for copying it into another registry."""
    return cast(IO[bytes], source.open_blob(repository, digest))


def _ensure_blob(target: RegistryClient, repository: str, digest: str, size: int,
                 opener: Callable[[], IO[bytes]], *, label: str, mount_from: str | None,
                 on_line: OnLine, copying: str = "uploading") -> str:
    """:meth:`RegistryClient.push_blob`, each outcome and the upload's progress told in
    ``on_line``."""
    started, step, shown = [0.0], max(size // 4, 8 << 20), [0]

    def starting() -> None:
        on_line("push", f"{copying} {label}")
        started[0] = time.monotonic()

    def progress(sent: int) -> None:
        if sent - shown[0] >= step and sent < size:
            shown[0] = sent
            on_line("push", f"{label}: {human_size(sent)} of {human_size(size)}")

    state = target.push_blob(repository, digest, size, opener, mount_from=mount_from,
                             progress=progress, on_upload=starting)
    if state == "exists":
        on_line("push", f"{label}: already in {repository}, skipped")
    elif state == "mounted":
        on_line("push", f"{label}: mounted from {mount_from}")
    else:
        on_line("push", f"{label}: uploaded in {time.monotonic() - started[0]:.1f} s")
    return state


def push_plan(plan: Plan, target: RegistryClient, source: RegistryClient,
              repository: str, tag: str, on_line: OnLine) -> str:
    """Blobs first (base layers copied or mounted when absent), then config, then the
    manifest under ``tag``; return the manifest digest."""
    known = _Locations()
    same = source.host == target.host
    host = target.host
    try:
        count = len(plan.base_layers)
        for i, layer in enumerate(plan.base_layers, 1):
            digest, size = str(layer["digest"]), int(layer.get("size") or 0)
            if layer.get("urls") and "foreign" in str(layer.get("mediaType")):
                continue  # non-distributable (Windows) layers stay where they are
            mount_from = plan.base.repository if same else known.get(host, digest)
            _ensure_blob(target, repository, digest, size,
                         functools.partial(_open_remote, source, plan.base.repository, digest),
                         label=f"base layer {i}/{count} {human_size(size)}",
                         mount_from=mount_from, on_line=on_line,
                         copying="copying" if not same else "uploading")
            known.put(host, digest, repository)
        for built in plan.layers:
            _ensure_blob(target, repository, built.digest, built.size,
                         functools.partial(_open_local, built.path),
                         label=f"{built.kind} layer {built.digest[:19]} "
                               f"{human_size(built.size)}",
                         mount_from=known.get(host, built.digest), on_line=on_line)
            known.put(host, built.digest, repository)
        cfg_digest = sha256_digest(plan.config)
        _ensure_blob(target, repository, cfg_digest, len(plan.config),
                     lambda: io.BytesIO(plan.config),
                     label=f"config {cfg_digest[:19]} {human_size(len(plan.config))}",
                     mount_from=None, on_line=on_line)
    finally:
        known.save()
    digest = sha256_digest(plan.manifest)
    if target.manifest_digest(repository, tag) == digest:
        on_line("push", f"manifest {repository}:{tag} already {digest[:19]}, skipped")
        return digest
    pushed = target.put_manifest(repository, tag, plan.manifest, plan.base_manifest.media_type)
    on_line("push", f"manifest {repository}:{tag} {pushed}")
    return pushed


def _clients(base: Reference, host: str) -> tuple[RegistryClient, RegistryClient]:
    target = RegistryClient(host)
    if base.registry == host:
        return target, target
    try:
        return target, RegistryClient(base.registry, use_env_credentials=False)
    except BaseException:
        target.close()
        raise


def _destination(package: Package, registry: str, suffix: str = "") -> tuple[str, str, str]:
    """(host, repository, tag) of the package's image in ``registry`` (``host[:port][/prefix]``):
    ``ofnotebook/NAME`` + ``suffix``, tagged with the package digest's first 16 characters."""
    host, prefix = split_registry(registry)
    return host, prefix + images.REPOSITORY.format(name=package.spec.name) + suffix, \
        package.digest[:16]


def build_and_push(package: Package, registry: str, *, platform: str = "linux/amd64",
                   phase: Phase | None = None,
                   on_line: OnLine = lambda phase, text: None) -> str:
    """Build the package's image without an engine and push it to ``registry``
    (``host[:port][/prefix]``). Returns ``'REGISTRY/ofnotebook/NAME@sha256:...'`` (same
    repository naming as :func:`ofnotebook.images.push`).

    Every check (the requirements against the index, the base's Python, wheels for the
    platform, disk space) happens in the ``build`` phase, before the first upload; the
    manifest is the last call of ``push``.
    """
    phase = phase or _no_phase
    host, repository, tag = _destination(package, registry)
    base = Reference.parse(images.base_image_for(package))
    target, source = _clients(base, host)
    try:
        with phase("build", f"{repository}:{tag} on {base} ({platform})"):
            # for the image's platform; the base's Python is read in plan_image, but must
            # match the kernel's major.minor (check_python), which is all pip's filter uses
            check_index(package.capture.requirements, package.spec.name,
                        index_target(platform, package.capture.python_version))
            plan = plan_image(package, base, source, platform, on_line)
        with phase("push", host):
            digest = push_plan(plan, target, source, repository, tag, on_line)
    finally:
        target.close()
        source.close()
    return f"{host}/{repository}@{digest}"


def derive(base: str, target: str, *, env: dict[str, str] | None = None,
           labels: dict[str, str] | None = None, platform: str = "linux/amd64",
           on_line: OnLine = lambda phase, text: None) -> str:
    """Push ``target`` (a full reference with a tag): ``base`` with a config-only change
    (``env`` and ``labels`` set, no new layer), e.g. to declare ``PYTHON_VERSION`` on a base
    that lacks it. The base's layers are mounted (same registry) or copied. Returns
    ``target``'s registry/repository@digest."""
    src, dst = Reference.parse(base), Reference.parse(target)
    target_client, source = _clients(src, dst.registry)
    try:
        manifest = source.get_manifest(src.repository, src.ref, platform=platform)
        data = manifest.data
        cfg = json.loads(source.get_blob(src.repository, data["config"]["digest"]))
        inner = dict(cfg.get("config") or {})
        env_list = list(inner.get("Env") or [])
        for key, value in (env or {}).items():
            _set_env(env_list, key, value)
        inner["Env"] = env_list
        if labels:
            inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
        cfg["config"] = inner
        cfg_bytes = _json(cfg)
        data["config"] = {**data["config"], "digest": sha256_digest(cfg_bytes),
                          "size": len(cfg_bytes)}
        data = {"schemaVersion": 2, "mediaType": manifest.media_type,
                **{k: v for k, v in data.items() if k not in ("schemaVersion", "mediaType")}}
        plan = Plan(src, manifest, list(data.get("layers") or []), [], cfg_bytes, _json(data))
        digest = push_plan(plan, target_client, source, dst.repository, dst.tag or "latest",
                           on_line)
    finally:
        target_client.close()
        source.close()
    return f"{dst.registry}/{dst.repository}@{digest}"


# --------------------------------------------------------------------------------------------
# Shipwright source bundle


def push_bundle(package: Package, registry: str, *,
                on_line: OnLine = lambda phase, text: None) -> str:
    """Push the build context as a Shipwright source bundle: a scratch image (Docker schema
    2, one gzip layer, directories and regular files under ``workspace/``) tagged with the
    package digest's first 16 characters in ``ofnotebook/NAME-source``. Returns
    ``'REGISTRY/ofnotebook/NAME-source:TAG'``. A re-push of the same content uploads nothing.
    """
    host, repository, tag = _destination(package, registry, SOURCE_SUFFIX)
    layer = bundle_layer(package)
    cfg = _json({"architecture": "", "os": "", "created": EPOCH,
                 "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}, "config": {}})
    manifest = _json({
        "schemaVersion": 2, "mediaType": MANIFEST_DOCKER,
        "config": {"mediaType": CONFIG_DOCKER, "digest": sha256_digest(cfg),
                   "size": len(cfg)},
        "layers": [{"mediaType": LAYER_DOCKER, "digest": layer.digest,
                    "size": layer.size}]})
    digest = sha256_digest(manifest)
    with RegistryClient(host) as target:
        if target.manifest_digest(repository, tag) == digest:
            on_line("push", f"bundle {repository}:{tag} already in the registry, skipped")
            return f"{host}/{repository}:{tag}"
        _ensure_blob(target, repository, layer.digest, layer.size,
                     lambda: open(layer.path, "rb"),
                     label=f"bundle layer {layer.digest[:19]} {human_size(layer.size)}",
                     mount_from=None, on_line=on_line)
        _ensure_blob(target, repository, sha256_digest(cfg), len(cfg),
                     lambda: io.BytesIO(cfg), label="bundle config", mount_from=None,
                     on_line=on_line)
        target.put_manifest(repository, tag, manifest)
        on_line("push", f"bundle {repository}:{tag} {digest}")
    return f"{host}/{repository}:{tag}"
