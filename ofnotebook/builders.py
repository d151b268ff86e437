"""How an image for a cluster comes to be: ``--build auto|engine|registry|cluster``.

Most users of the kubernetes target sit in a JupyterHub pod with no Docker or Podman, so the
default (``auto``) uses a container engine only when one answers and otherwise assembles the
image layer by layer straight in the registry (:mod:`ofnotebook.layers`, no daemon, no root).
``cluster`` hands the build context to OpenFunction's own in-cluster build (a Shipwright
source bundle, built by kaniko); the kubernetes and yaml targets declare it in the Function.
The container target always uses the engine: it runs what it builds.
"""

from __future__ import annotations

import time
from typing import Callable

from . import config, images
from .backends.base import PhaseEvent, PhaseRecorder
from .config import BUILD_MODES
from .errors import BackendUnavailableError, BuildError, ConfigError
from .package import Package
from .requirements import check_index, index_target

NO_BUILD = "none"  # the caller names the image itself (tests, pre-built images)


def build_mode(explicit: str | bool | None = None, *, allowed: tuple[str, ...] = BUILD_MODES
               ) -> str:
    """The build mode from the argument, else ``OFNOTEBOOK_BUILD``, else ``auto``; checked
    here, where it enters, so a typo fails before anything is built. ``False`` means no
    build at all (the image exists already), ``True`` the default."""
    if explicit is False:
        return NO_BUILD
    value = config.get("build", None if explicit is True else explicit)
    mode = str(value).lower()
    if mode not in allowed:
        raise ConfigError(f"--build {value!r} is not one of {', '.join(allowed)}: auto (the "
                          f"engine when a Docker API answers, else registry), engine (Docker "
                          f"or Podman), registry (no engine: layers pushed straight to the "
                          f"registry), cluster (OpenFunction builds it in the cluster).",
                          key="build")
    return mode


def platform(explicit: str | None = None) -> str:
    """The image platform (``--platform``, ``OFNOTEBOOK_PLATFORM``, ``linux/amd64``): the
    cluster's nodes, not this machine's, decide it, hence a default that does not look at the
    notebook's CPU; checked here so a typo fails before a build starts."""
    value = config.get("platform", explicit)
    try:
        return config._platform(str(value))
    except ValueError as exc:
        raise ConfigError(f"--platform {value!r}: {exc}.", key="platform") from None


def engine_answers() -> bool:
    """True when a Docker-compatible engine answers now (``auto`` picks it then). A unix
    socket that does not exist (a JupyterHub pod) is known not to answer without a try."""
    import os

    url = images.engine_url()
    if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
        return False
    try:
        images.engine()
    except BackendUnavailableError:
        return False
    return True


def resolve(mode: str) -> str:
    """``auto`` made concrete for this machine (an engine when one answers, else the
    engine-less registry build a JupyterHub pod needs); other modes unchanged, since the user
    chose them."""
    if mode != "auto":
        return mode
    return "engine" if engine_answers() else "registry"


def push_image(package: Package, registry: str, mode: str, recorder: PhaseRecorder, *,
               platform_name: str) -> str:
    """Build the image of ``package`` with ``mode`` (engine or registry) and push it to
    ``registry``; return the digest reference (``registry/repo@sha256:...``) a cluster pulls.
    Build and push lines become ``progress`` phase events (the live view's Logs tab)."""
    _require_registry(package, registry, "This target needs a registry the cluster pulls from")
    line = _progress(recorder)
    if mode == "registry":
        from . import layers

        return layers.build_and_push(package, registry, platform=platform_name,
                                     phase=recorder.phase, on_line=line)
    if mode != "engine":
        raise ConfigError(f"--build {mode!r} does not make an image here; use engine or "
                          f"registry.", key="build")
    client = images.engine()
    with recorder.phase("build", detail=images.image_tag(package)):
        built = images.build(package, on_line=lambda t: line("build", t), client=client)
    with recorder.phase("push", detail=registry):
        return images.push(built, registry, client, on_line=lambda t: line("push", t))


def push_source_bundle(package: Package, registry: str, recorder: PhaseRecorder,
                       on_line: Callable[[str, str], None] | None = None, *,
                       platform_name: str | None = None) -> str:
    """Push the build context as a Shipwright source bundle for ``--build cluster``; return
    its reference (tag = the package digest, so the same content never rebuilds). The
    requirements are checked for ``platform_name`` (the cluster's nodes: :func:`platform`)."""
    from . import layers

    _require_registry(package, registry, "--build cluster pushes the build context to a "
                      "registry the cluster reads")
    # the cluster's build would fail on it after the push; refused here, nothing pushed
    check_index(package.capture.requirements, package.spec.name,
                index_target(platform(platform_name), package.capture.python_version))
    with recorder.phase("push", detail=f"source bundle to {registry}"):
        return layers.push_bundle(package, registry, on_line=on_line or _progress(recorder))


def _require_registry(package: Package, registry: str, why: str) -> None:
    if not registry:
        raise BuildError(f"{why}: set OFNOTEBOOK_REGISTRY (host[:port]) or --registry.",
                         function_name=package.spec.name)


def _progress(recorder: PhaseRecorder) -> Callable[[str, str], None]:
    """``on_line(phase, text)`` for the builders: a ``progress`` event of that phase."""
    def line(phase: str, text: str) -> None:
        recorder.emit(PhaseEvent(phase, "progress", time.time(), detail=text))
    return line


def output_image(package: Package, registry: str) -> str:
    """Where an in-cluster build pushes its image: the digest-named tag (the controller then
    serves it by the digest it records in ``status.revision.imageDigest``)."""
    repository, _, tag = images.image_tag(package).partition(":")
    return f"{registry.rstrip('/')}/{repository}:{tag}"
